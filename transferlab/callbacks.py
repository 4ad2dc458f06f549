"""The callbacks every phase uses (timing, per-epoch log, learning-rate log) and the per-epoch checkpoint
that lets an interrupted phase go on exactly where it stopped."""

import json
import os
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from transferlab import files, records

# A progress bar on a terminal. Elsewhere (a file, a CI log) EpochLog prints one line per epoch instead of
# fit's verbose=2, whose logger still has a per-step hook (see EpochLog).
VERBOSE = 1 if sys.stdout.isatty() else 0


class PhaseHistory(keras.callbacks.Callback):
    """Wall-clock seconds of each epoch and of the whole `fit`, and the history of every epoch.

    A phase resumed after an interruption starts from the times and history of the epochs it had
    finished, so its record covers the whole phase.
    """

    def __init__(self, epoch_seconds=(), fit_seconds=0.0, history=None):
        super().__init__()
        self.epoch_seconds = list(epoch_seconds)
        self.fit_seconds = fit_seconds
        self.history = {key: list(values) for key, values in (history or {}).items()}

    def on_train_begin(self, logs=None):
        self._fit_start = time.perf_counter()
        self._seconds_before = self.fit_seconds

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_seconds.append(time.perf_counter() - self._epoch_start)
        self.fit_seconds = self._seconds_before + time.perf_counter() - self._fit_start
        self.history.setdefault("epoch", []).append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))

    def on_train_end(self, logs=None):
        self.fit_seconds = self._seconds_before + time.perf_counter() - self._fit_start


class EpochLog(keras.callbacks.Callback):
    """What TerminateOnNaN and fit's verbose=2 do, at the end of each epoch only: stop after an epoch whose
    loss is NaN or infinite (the phase then fails, see `fit`), and print one line per epoch unless a
    progress bar shows it already.

    Keras runs callbacks that have a per-step hook (TerminateOnNaN's and verbose=2's both do) synchronously
    after every step, each time turning the step's logs into Python numbers; with epoch hooks only, steps
    run back to back (the cost of such hooks: docs/design.md, "Measured choices").
    """

    def __init__(self, epochs, show):
        super().__init__()
        self.epochs, self.show = epochs, show

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if "loss" in logs and not np.isfinite(logs["loss"]):
            self.model.stop_training = True
        if self.show:
            shown = " - ".join(f"{key}: {value:.4f}" for key, value in logs.items() if np.isscalar(value))
            print(f"Epoch {epoch + 1}/{self.epochs} - {time.perf_counter() - self._start:.1f}s - {shown}", flush=True)


class StopOnSignal(keras.callbacks.Callback):
    """Ctrl-C or SIGTERM during `fit` (process.deferred_interrupts calls `request`): the running step ends,
    then KeyboardInterrupt is raised where Keras calls back, before validation or before the epoch's end
    callbacks, so an epoch cut short writes no history row and no checkpoint. Must come first. Epoch and
    test hooks only: a per-step hook would make every step wait for Python (see EpochLog)."""

    def __init__(self):
        super().__init__()
        self.signum = None

    def request(self, signum):
        self.signum = signum
        if self.model is not None:
            self.model.stop_training = True  # checked after every step
            self.model.stop_evaluating = True

    def _raise_if_requested(self, *args, **kwargs):
        if self.signum is not None:
            raise KeyboardInterrupt(f"signal {self.signum}")

    on_epoch_begin = on_epoch_end = on_test_begin = _raise_if_requested


class LearningRateLog(keras.callbacks.Callback):
    """Adds the learning rate of each epoch's last step to its logs (so to the history CSV and the record):
    under a schedule (models.learning_rate_schedule) it changes every step. Must come before the callbacks
    that write the logs."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            rate = self.model.optimizer.learning_rate  # a Variable (under a strategy its value is mirrored) or a tensor
            logs["learning_rate"] = float(tf.convert_to_tensor(getattr(rate, "value", rate)))


class StopAtValAccuracy(keras.callbacks.Callback):
    """The Coursera course's callback: stop once validation accuracy reaches `threshold`. It reads the metric
    by the name Keras logs for metrics=["accuracy"] ("val_accuracy"), and fails loudly if that name is missing
    instead of never stopping (the course's logs.get('acc') returns None in Keras 3)."""

    def __init__(self, threshold, monitor="val_accuracy"):
        super().__init__()
        self.threshold, self.monitor, self.stopped_at = threshold, monitor, None

    def on_epoch_end(self, epoch, logs=None):
        if self.monitor not in logs:
            raise KeyError(f"{self.monitor!r} is not among the logged metrics {sorted(logs)}")
        if logs[self.monitor] >= self.threshold:
            print(f"{self.monitor} {logs[self.monitor]:.4f} reached {self.threshold}: stopping after epoch {epoch + 1}")
            self.stopped_at = epoch + 1
            self.model.stop_training = True


def random_states(model):
    """The model's random-number states (the seed generators of Dropout and random augmentation layers):
    variables that are not weights, so `save_weights` leaves them out."""
    weights = {id(w) for w in model.weights}
    return [v for v in model.variables if id(v) not in weights]


class Checkpoint(keras.callbacks.Callback):
    """After every epoch, everything an interrupted phase needs to go on exactly where it stopped: the
    weights with the optimizer's state, the random-number states, the epoch times and history, in
    `checkpoints/<phase>/` of the run folder; and the record notes the epoch.

    Keras's BackupAndRestore does this too, but writes its files in place: a kill -9 while it writes
    leaves half a file, or weights of one epoch with the epoch number of another. Here each epoch's files
    are written under a temporary name and renamed, weights first, then the JSON that makes them count.
    """

    def __init__(self, run, phase, fitted):
        super().__init__()
        self.run, self.phase, self.fitted = run, phase, fitted
        self.folder = run.file(os.path.join("checkpoints", phase))

    def on_epoch_end(self, epoch, logs=None):
        os.makedirs(self.folder, exist_ok=True)
        done = epoch + 1
        records.save_weights(self.model, os.path.join(self.folder, f"epoch-{done:04d}.weights.h5"))
        files.write_json(os.path.join(self.folder, f"epoch-{done:04d}.json"), {
            "epochs_finished": done,
            "random_states": [np.asarray(v.numpy()).tolist() for v in random_states(self.model)],
            "epoch_seconds": self.fitted.epoch_seconds,
            "fit_seconds": self.fitted.fit_seconds,
            "history": self.fitted.history,
        })
        for name in os.listdir(self.folder):  # only the newest checkpoint is needed
            if name.startswith("epoch-") and not name.startswith(f"epoch-{done:04d}."):
                os.unlink(os.path.join(self.folder, name))
        self.run.progress(self.phase, done)


def restore_checkpoint(run, phase, model):
    """Load the newest checkpoint of `phase` into the `model` compiled by models.compile_classifier (which built
    the optimizer, so its saved moments have somewhere to go); returns its JSON, or None."""
    folder = run.file(os.path.join("checkpoints", phase))
    found = sorted(n for n in os.listdir(folder) if n.endswith(".json")) if os.path.isdir(folder) else []
    if not found:
        return None
    with open(os.path.join(folder, found[-1]), encoding="utf-8") as f:
        state = json.load(f)
    model.load_weights(os.path.join(folder, found[-1].replace(".json", ".weights.h5")))
    for variable, value in zip(random_states(model), state["random_states"], strict=True):
        variable.assign(value)
    print(f"   resuming phase {phase} after epoch {state['epochs_finished']}")
    return state
