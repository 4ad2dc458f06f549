"""Training phases: the callbacks every phase uses, the frozen-feature cache, and the phase's record."""

import statistics
import sys
import time

import keras
import numpy as np


# Progress bars on a terminal; one line per epoch when output goes to a file or a CI log.
VERBOSE = 1 if sys.stdout.isatty() else 2


class EpochTimer(keras.callbacks.Callback):
    """Wall-clock seconds of each epoch and of the whole `fit`."""

    def __init__(self):
        super().__init__()
        self.epoch_seconds = []
        self.fit_seconds = 0.0

    def on_train_begin(self, logs=None):
        self._fit_start = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_seconds.append(time.perf_counter() - self._epoch_start)

    def on_train_end(self, logs=None):
        self.fit_seconds = time.perf_counter() - self._fit_start


def callbacks(run, phase):
    """(timer, callbacks) for one phase's `fit`: timing, a CSV history in the run folder, stop on NaN."""
    timer = EpochTimer()
    return timer, [
        timer,
        keras.callbacks.CSVLogger(run.file(f"history_{phase}.csv")),
        keras.callbacks.TerminateOnNaN(),
    ]


def extract_features(frozen, x, batch_size):
    """Run the frozen layers once over `x` in inference mode (Dropout off): (features, seconds).

    This is the bottleneck cache of TF Hub's retrain.py: the head then trains on these features
    instead of paying for the frozen convolutions in every epoch.
    """
    start = time.perf_counter()
    features = frozen.predict(x, batch_size=batch_size, verbose=0)
    return np.asarray(features, dtype=np.float32), time.perf_counter() - start


def trainable_params(model):
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def summary(classes, x_train, epochs, timer, test, model, extra_seconds=0.0, **more):
    """The phase's entry in record.json.

    `test` is (loss, accuracy) from `model.evaluate`; `extra_seconds` is work done outside `fit` that
    belongs to training (the frozen-feature pass), added to train_seconds.
    """
    seconds = timer.epoch_seconds
    return {
        "classes": list(classes),
        "train_samples": int(len(x_train)),
        "epochs": epochs,
        "train_seconds": round(timer.fit_seconds + extra_seconds, 3),
        "first_epoch_seconds": round(seconds[0], 3) if seconds else None,
        "steady_epoch_seconds": round(statistics.median(seconds[1:]), 3) if len(seconds) > 1 else None,
        "test_loss": float(test[0]),
        "test_accuracy": float(test[1]),
        "trainable_params": trainable_params(model),
        **more,
    }
