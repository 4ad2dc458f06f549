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


def fit(run, phase, model, x, y=None, *, epochs, batch_size=None, learning_rate, validation_data=None,
        steps_per_execution=1, optimizer="adam", initial_epoch=0, more_callbacks=()):
    """`model.fit` for one phase: compile first (Keras fixes the trainable weights at compile time, so
    this must follow any change to `trainable`), then fit with the phase's timer, CSV history and NaN
    guard. `x` is an array (with labels `y` and `batch_size`) or a tf.data pipeline of batches; a phase
    that continues another (fine-tuning) starts at `initial_epoch`, so its epochs go on numbering.
    Returns (history dict, timer)."""
    models.compile_classifier(model, learning_rate, steps_per_execution, optimizer)
    timer, phase_callbacks = callbacks(run, phase)
    history = model.fit(x, y, epochs=initial_epoch + epochs, initial_epoch=initial_epoch, batch_size=batch_size,
                        shuffle=y is not None,  # arrays: Keras shuffles; a pipeline shuffles itself
                        validation_data=validation_data, callbacks=[*phase_callbacks, *more_callbacks],
                        verbose=VERBOSE).history
    if not np.all(np.isfinite(history["loss"])):  # TerminateOnNaN stopped it: the phase failed
        raise FloatingPointError(f"phase {phase}: the loss became NaN or infinite in epoch "
                                 f"{initial_epoch + len(history['loss'])}; try a lower learning rate")
    return history, timer


def extract_features(frozen, x, batch_size=None):
    """Run the frozen layers once over `x` (an array, or a pipeline of batches without shuffling) in
    inference mode (Dropout off): (features, seconds).

    This is the bottleneck cache of TF Hub's retrain.py: the head then trains on these features
    instead of paying for the frozen convolutions in every epoch.
    """
    start = time.perf_counter()
    features = frozen.predict(x, batch_size=batch_size, verbose=0)
    return np.asarray(features, dtype=np.float32), time.perf_counter() - start


def fit_head(run, phase, features, head, x, y, *, use_cache, epochs, batch_size, head_batch_size,
             learning_rate, validation_data=None, augmentation=(), feed=None, optimizer="adam", more_callbacks=()):
    """Train a new `head` on top of the frozen `features` model: the transfer phase.

    With `use_cache`, the frozen layers run once over the training (and validation) images in inference
    mode and only the head is fitted, on those features, with `head_batch_size` and several steps per
    call into TensorFlow. Without it, the published way: the whole stack (augmentation, frozen
    features, head) is fitted with `batch_size`, paying for the frozen layers in every epoch.

    Images are arrays that go into the model as they are, or, with `feed(x, y, training)`, through the
    tf.data pipeline it returns (a backbone's preprocessing, and for training shuffling and augmentation).

    Returns (history, timer, info); info goes into the phase record: feature_cache ("memory" or "off"),
    batch_size, feature_extraction_seconds, and extra_seconds (training work done outside `fit`).
    """
    options = {"learning_rate": learning_rate, "optimizer": optimizer, "more_callbacks": more_callbacks}
    if not use_cache:
        model = models.stack(features.input_shape[1:], [*augmentation, features, head], name=f"{phase}_frozen")
        if feed is None:
            history, timer = fit(run, phase, model, x, y, epochs=epochs, batch_size=batch_size,
                                 validation_data=validation_data, **options)
        else:  # a pipeline carries its labels and batches
            validation = validation_data and feed(*validation_data, False)
            history, timer = fit(run, phase, model, feed(x, y, True), epochs=epochs, validation_data=validation,
                                 **options)
        return history, timer, {"feature_cache": "off", "batch_size": batch_size, "extra_seconds": 0.0}

    def extract(images, labels):
        if feed is None:
            return extract_features(features, images, batch_size=1024)
        return extract_features(features, feed(images, labels, False))

    f_train, seconds = extract(x, y)
    if validation_data is not None:
        f_val, val_seconds = extract(*validation_data)
        validation_data, seconds = (f_val, validation_data[1]), seconds + val_seconds
    history, timer = fit(run, phase, head, f_train, y, epochs=epochs, batch_size=head_batch_size,
                         validation_data=validation_data, steps_per_execution=32, **options)
    info = {"feature_cache": "memory", "batch_size": head_batch_size,
            "feature_extraction_seconds": round(seconds, 3), "extra_seconds": seconds}
    return history, timer, info


def trainable_params(model):
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def summary(classes, x_train, epochs, timer, test, model, extra_seconds=0.0, validation=None, **more):
    """The phase's entry in record.json.

    `test` and `validation` (either may be None: an image folder has no test set) are (loss, accuracy)
    from `model.evaluate`; `extra_seconds` is work done outside `fit` that belongs to training (the
    frozen-feature pass), added to train_seconds. Pass `fit_head`'s info as **info.
    """
    if validation is not None:
        more = {"val_loss": float(validation[0]), "val_accuracy": float(validation[1]), **more}
    if test is not None:
        more = {"test_loss": float(test[0]), "test_accuracy": float(test[1]), **more}
    seconds = timer.epoch_seconds
    return {
        "classes": list(classes),
        "train_samples": int(len(x_train)),
        "epochs": epochs,
        "train_seconds": round(timer.fit_seconds + extra_seconds, 3),
        "first_epoch_seconds": round(seconds[0], 3) if seconds else None,
        "steady_epoch_seconds": round(statistics.median(seconds[1:]), 3) if len(seconds) > 1 else None,
        "trainable_params": trainable_params(model),
        **more,
    }
