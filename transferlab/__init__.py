"""transferlab: the small package behind the transfer-learning experiment scripts.

One module per idea: config (constants and --name=value overrides), runtime (quiet TensorFlow start,
seeds, machine description), data (finding, checking and splitting datasets), models (model helpers),
phases (timing, callbacks, the frozen-feature cache), records (run folders and record.json), plots.
"""
