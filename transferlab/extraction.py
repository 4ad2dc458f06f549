"""Frozen passes: frozen layers run once over images in inference mode, their output kept in memory or in
the disk cache (feature_cache.py), so that only what trains runs every epoch."""

import sys
import time

import numpy as np

from transferlab import pipelines, progress

# Fine-tuning keeps the frozen bottom's activations of the training and validation images in memory up to
# this many bytes; above it the images go through the whole backbone every epoch, as published.
ACTIVATION_CACHE_BYTES = 2 * 2**30

# Images per batch in the one pass of the frozen layers over arrays: larger batches were slower on the CPU
# (docs/design.md, "Measured choices").
EXTRACT_BATCH = 256


def extract_features(frozen, x, batch_size=None, run_batch=None):
    """Run the frozen layers once over `x` (an array, or a pipeline of batches without shuffling) in
    inference mode (Dropout off): (features, seconds). `run_batch` (litert.Inference.batch_function) runs
    each batch; None: Keras's predict.

    This is the bottleneck cache of TF Hub's retrain.py: the head then trains on these features
    instead of paying for the frozen convolutions in every epoch.
    """
    start = time.perf_counter()
    if run_batch is not None:
        batches = ((x[i:i + (batch_size or EXTRACT_BATCH)] for i in range(0, len(x), batch_size or EXTRACT_BATCH))
                   if isinstance(x, np.ndarray) else (batch[0] if isinstance(batch, tuple) else batch
                                                      for batch in pipelines.numpy_batches(x)))
        with progress.Progress("frozen layers run once", len(x) if isinstance(x, np.ndarray) else 0) as shown:
            found = []
            for batch in batches:
                found.append(run_batch(np.asarray(batch)))
                shown.add(len(found[-1]))
        features = np.concatenate(found)
        seconds = time.perf_counter() - start
        if not isinstance(x, np.ndarray):  # a pipeline of unknown length: no bar, the line
            print(f"   frozen layers run once: {len(features)} images in {seconds:.1f} s", flush=True)
        return features, seconds
    on_terminal = sys.stdout.isatty()  # Keras's progress bar there; one line with count and seconds otherwise
    features = np.asarray(frozen.predict(x, batch_size=batch_size, verbose=1 if on_terminal else 0), np.float32)
    seconds = time.perf_counter() - start
    if not on_terminal:
        print(f"   frozen layers run once: {len(features)} images in {seconds:.1f} s", flush=True)
    return features, seconds
