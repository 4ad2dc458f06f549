"""Training phases: the callbacks every phase uses, the frozen-feature cache, and the phase's record."""

import statistics
import sys
import time

import keras
import numpy as np

from transferlab import models


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


def fit(run, phase, model, x, y, *, epochs, batch_size, learning_rate, validation_data=None,
        steps_per_execution=1):
    """`model.fit` for one phase: compile first (Keras fixes the trainable weights at compile time, so
    this must follow any change to `trainable`), then fit with the phase's timer, CSV history and NaN
    guard. Returns (history dict, timer)."""
    models.compile_classifier(model, learning_rate, steps_per_execution)
    timer, phase_callbacks = callbacks(run, phase)
    history = model.fit(x, y, epochs=epochs, batch_size=batch_size, validation_data=validation_data,
                        callbacks=phase_callbacks, verbose=VERBOSE).history
    if not np.all(np.isfinite(history["loss"])):  # TerminateOnNaN stopped it: the phase failed
        raise FloatingPointError(f"phase {phase}: the loss became NaN or infinite in epoch "
                                 f"{len(history['loss'])}; try a lower --learning_rate")
    return history, timer


def extract_features(frozen, x, batch_size):
    """Run the frozen layers once over `x` in inference mode (Dropout off): (features, seconds).

    This is the bottleneck cache of TF Hub's retrain.py: the head then trains on these features
    instead of paying for the frozen convolutions in every epoch.
    """
    start = time.perf_counter()
    features = frozen.predict(x, batch_size=batch_size, verbose=0)
    return np.asarray(features, dtype=np.float32), time.perf_counter() - start


def fit_head(run, phase, features, head, x, y, *, use_cache, epochs, batch_size, head_batch_size,
             learning_rate, validation_data=None, augmentation=()):
    """Train a new `head` on top of the frozen `features` model: the transfer phase.

    With `use_cache`, the frozen layers run once over the training (and validation) images in inference
    mode and only the head is fitted, on those features, with `head_batch_size` and several steps per
    call into TensorFlow. Without it, the published way: the whole stack (augmentation, frozen
    features, head) is fitted with `batch_size`, paying for the frozen layers in every epoch.

    Returns (history, timer, info); info goes into the phase record: feature_cache ("memory" or "off"),
    batch_size, feature_extraction_seconds, and extra_seconds (training work done outside `fit`).
    """
    if not use_cache:
        model = models.stack(x.shape[1:], [*augmentation, features, head], name=f"{phase}_frozen")
        history, timer = fit(run, phase, model, x, y, epochs=epochs, batch_size=batch_size,
                             learning_rate=learning_rate, validation_data=validation_data)
        return history, timer, {"feature_cache": "off", "batch_size": batch_size, "extra_seconds": 0.0}
    f_train, seconds = extract_features(features, x, batch_size=1024)
    if validation_data is not None:
        f_val, val_seconds = extract_features(features, validation_data[0], batch_size=1024)
        validation_data, seconds = (f_val, validation_data[1]), seconds + val_seconds
    history, timer = fit(run, phase, head, f_train, y, epochs=epochs, batch_size=head_batch_size,
                         learning_rate=learning_rate, validation_data=validation_data, steps_per_execution=32)
    info = {"feature_cache": "memory", "batch_size": head_batch_size,
            "feature_extraction_seconds": round(seconds, 3), "extra_seconds": seconds}
    return history, timer, info


def trainable_params(model):
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def summary(classes, x_train, epochs, timer, test, model, extra_seconds=0.0, validation=None, **more):
    """The phase's entry in record.json.

    `test` (and `validation`, when the experiment has a validation set) is (loss, accuracy) from
    `model.evaluate`; `extra_seconds` is work done outside `fit` that belongs to training (the
    frozen-feature pass), added to train_seconds. Pass `fit_head`'s info as **info.
    """
    if validation is not None:
        more = {"val_loss": float(validation[0]), "val_accuracy": float(validation[1]), **more}
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
