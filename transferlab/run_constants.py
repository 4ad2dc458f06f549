"""The constants every experiment has. A script takes them from here (`experiment.configure` adds them to its
constants), and may set any of them in its own constants block to give it another default; `--name=value`
overrides either, and `--help` lists them after the script's own.
"""

SEED = 42  # one seed for Python, numpy and TensorFlow, and for any shuffle or split of the data
DETERMINISTIC = False  # also make TensorFlow ops deterministic: identical reruns on the same hardware
DISTRIBUTE = "auto"  # auto (all GPUs if several), none, mirrored, multi_worker (cluster in TF_CONFIG) or tpu
MIXED_PRECISION: str | None = "auto"  # None (float32), mixed_float16 or mixed_bfloat16; auto: float16 with a GPU
INFERENCE_RUNTIME = "auto"  # frozen passes in litert (XNNPACK) or keras; auto: litert on a CPU with one replica
TENSORBOARD = True  # TensorBoard logs of every phase in the run folder: tensorboard --logdir results/
TRACKING = "auto"  # mlflow: each run also an MLflow run (tracking.py); auto: when MLFLOW_TRACKING_URI is set; none
RESULTS_DIR = "results"  # each run writes RESULTS_DIR/<experiment>/<run_id>/
RESUME: str | None = None  # a run id, or "latest": finish an interrupted run (same constants) in its folder
