"""Training phases: fitting one (`fit`), the frozen phase on cached features (`fit_head`), fine-tuning on
cached activations (`fine_tune`), and the phase's entry in the record (`summary`).

A script builds its options once from its constants, FitOptions (how any phase trains) and HeadOptions (how
the frozen phase's head does), and passes them whole; a later phase takes a copy with what differs
(`options.replace(epochs=...)`). Every phase returns one PhaseResult.

A phase writes into a run: records.RunRecord, or anything of the shape `RunLike` (tests and the benchmarks pass
tests/bench's one stand-in, `StandInRun`, that keeps files in a scratch folder).
"""

import dataclasses
import os
import statistics
from typing import Protocol

import keras
import numpy as np
import tensorflow as tf

from transferlab import (
    backbones,
    callbacks,
    distribute,
    extraction,
    feature_cache,
    litert,
    models,
    pipelines,
    process,
    records,
)


class RunLike(Protocol):
    """What a phase needs of its run (records.RunRecord has it all)."""

    seed: int  # every epoch's batch order is a function of it and the epoch
    tensorboard: bool  # write TensorBoard logs of the phase
    inference: litert.Inference  # which runtime the frozen passes use (optional: Keras without it)

    def file(self, name: str) -> str:
        """A path inside the run folder (histories, checkpoints, logs)."""

    def progress(self, phase: str, epochs_finished: int) -> None:
        """Note the last finished epoch of the running phase."""


class StandInRun:
    """A RunLike for tests and benchmarks: files in `folder`, the finished epochs noted in `notes`."""

    def __init__(self, folder, seed=0, tensorboard=False):
        self.folder, self.seed, self.tensorboard, self.notes = str(folder), seed, tensorboard, []
        os.makedirs(self.folder, exist_ok=True)

    def file(self, name):
        return os.path.join(self.folder, name)

    def progress(self, phase, epochs_finished):
        self.notes.append((phase, epochs_finished))


@dataclasses.dataclass(frozen=True)
class FitOptions:
    """How a phase trains: built once by the script from its constants, passed whole."""

    epochs: int
    batch_size: int  # images per step and replica
    learning_rate: float
    optimizer: str = "adam"  # models.OPTIMIZERS
    schedule: str = "constant"  # the learning rate over the phase (models.SCHEDULES)
    class_weight: dict | None = None  # {class: weight} of each image's loss (tasks.class_weights)
    initial_epoch: int = 0  # a phase that continues another (fine-tuning) numbers its epochs on from here
    feed: pipelines.Feed | None = None  # images through a backbone's pipelines; None: arrays go in as they are
    stop_at_val_accuracy: float | None = None  # end the phase once validation accuracy reaches this
    steps_per_execution: int = 1  # batches per call into TensorFlow
    passes: int = 1  # over the training arrays an epoch (a head on cached features: head_passes)

    def replace(self, **changes):
        """A copy with `changes`: a later phase's options."""
        return dataclasses.replace(self, **changes)

    def describe(self):
        """"10 epochs", or "up to 20 epochs" when a threshold may end the phase early."""
        return f"{'up to ' if self.stop_at_val_accuracy else ''}{self.epochs} epoch{'s' if self.epochs != 1 else ''}"


@dataclasses.dataclass(frozen=True)
class HeadOptions:
    """How the frozen phase trains its new head (fit_head)."""

    cache: str | None  # "disk", "memory", or None: the whole stack every epoch, as published
    batch_size: int  # images per step of the head on cached features
    augmentation: tuple = ()  # layers before the frozen ones, active in training only (the cache must be off)
    steps: int = 0  # on cached features, at least this many steps in all: each epoch passes over them that often


def head_passes(epochs, steps, samples, batch_size):
    """Passes over `samples` cached features in each of `epochs` epochs, at `batch_size`, for the head to take at
    least `steps` optimizer steps in all: a small folder's head, or a short run's, converges too."""
    return max(1, -(-steps // (epochs * -(-samples // batch_size)))) if steps and epochs else 1


@dataclasses.dataclass
class PhaseResult:
    """What a phase gives back: its history (each epoch's metrics, "epoch" included), seconds, the fields it
    adds to its record, and the scores it could compute without another pass over the images."""

    history: dict
    epoch_seconds: list
    fit_seconds: float
    info: dict = dataclasses.field(default_factory=dict)  # feature_cache, batch_size, ... for the record
    extra_seconds: float = 0.0  # training work done outside `fit` (the frozen pass), added to train_seconds
    # The trained model's probabilities of the validation images (models.class_probabilities), when computed here
    validation_probabilities: np.ndarray | None = None
    test: models.Scores | None = None  # on the test images, when the phase scored them from cached features
    stopped_early: bool | None = None  # did stop_at_val_accuracy end it? (None: no threshold)

    @classmethod
    def of(cls, fitted, stop=None, **fields):
        """From the callbacks.PhaseHistory of `fit` (and its StopAtValAccuracy, if any)."""
        stopped = None if stop is None else stop.stopped_at is not None
        return cls(fitted.history, fitted.epoch_seconds, fitted.fit_seconds, stopped_early=stopped, **fields)

    def validation(self):
        """(loss, accuracy) of the last epoch's validation, or None without validation images."""
        return (self.history["val_loss"][-1], self.history["val_accuracy"][-1]) if "val_accuracy" in self.history \
            else None


def fit(run, phase, model, train, options, validation=None, more_callbacks=()):
    """`model.fit` for one phase: compile first (Keras fixes the trainable weights at compile time, so
    this must follow any change to `trainable`), then fit with the phase's PhaseHistory (seconds and metrics
    of each epoch), CSV history, NaN guard and per-epoch checkpoint. A phase that continues another
    (fine-tuning) starts at `options.initial_epoch`, so its epochs go on numbering; a phase interrupted before
    goes on from its last finished epoch.
    The learning rate follows `options.schedule` over the phase's epochs, counted in optimizer steps (restored
    with the checkpoint, so a resumed phase goes on where its schedule was).

    Images (`train` and `validation`, (x, y) pairs) go into the model through `options.feed`, a backbone's
    pipelines, or as they are (pipelines.arrays); every epoch in its own seeded order.
    Returns the PhaseResult, with the history of every epoch.
    """
    steps_per_execution = options.steps_per_execution
    if tf.distribute.has_strategy():  # Keras 3.15 fails to run several steps per call under a tf.distribute
        steps_per_execution = 1       # strategy ("You must feed a value for placeholder"), so one per call
    steps_per_epoch = -(-len(train[0]) * options.passes // distribute.global_batch(options.batch_size))
    rate = models.learning_rate_schedule(options.schedule, options.learning_rate, steps_per_epoch, options.epochs)
    models.compile_classifier(model, rate, steps_per_execution, options.optimizer)
    initial_epoch = options.initial_epoch
    end = initial_epoch + options.epochs
    state = callbacks.restore_checkpoint(run, phase, model)
    history_csv = run.file(f"history_{phase}.csv")
    if state is None:
        fitted = callbacks.PhaseHistory()
    else:
        fitted = callbacks.PhaseHistory(state["epoch_seconds"], state["fit_seconds"], state["history"])
        initial_epoch = state["epochs_finished"]
        records.truncate_history(history_csv, initial_epoch)  # drop any epoch logged after the checkpoint
    if options.feed is None:
        training, validating = pipelines.arrays(train, validation, options.batch_size, run.seed, initial_epoch,
                                                options.passes)
    else:
        training, validating = options.feed(*train, initial_epoch), validation and options.feed(*validation)
    stop = options.stop_at_val_accuracy and callbacks.StopAtValAccuracy(options.stop_at_val_accuracy)
    guard = callbacks.StopOnSignal()
    phase_callbacks = [  # in this order: the learning rate is logged, then the CSV row written before the checkpoint
        guard,
        callbacks.LearningRateLog(),
        fitted,
        keras.callbacks.CSVLogger(history_csv, append=state is not None),
        callbacks.Checkpoint(run, phase, fitted),
        callbacks.EpochLog(end, show=callbacks.VERBOSE == 0),
        *([stop] if stop else []),
    ]
    if run.tensorboard:  # epoch-level scalars per phase: `tensorboard --logdir results/` shows every run
        phase_callbacks.append(keras.callbacks.TensorBoard(run.file(os.path.join("tensorboard", phase)),
                                                           write_graph=False, profile_batch=0))
    with process.deferred_interrupts(guard.request):
        model.fit(training, epochs=end, initial_epoch=initial_epoch, validation_data=validating, shuffle=False,
                  class_weight=options.class_weight, callbacks=[*phase_callbacks, *more_callbacks],
                  verbose=callbacks.VERBOSE)
    if not np.all(np.isfinite(fitted.history.get("loss", []))):  # EpochLog stopped it: the phase failed
        raise FloatingPointError(f"phase {phase}: the loss became NaN or infinite in epoch "
                                 f"{fitted.history['epoch'][-1] + 1}; try a lower learning rate")
    return PhaseResult.of(fitted, stop or None, info={"batch_size": options.batch_size})


def fit_head(run, phase, features, head, task, options, head_options, known=None):
    """Train a new `head` on top of the frozen `features` model on `task` (tasks.Task): the transfer phase.

    With a cache (`head_options.cache`), the frozen layers run once over the training (and validation) images
    in inference mode and only the head is fitted, on those features, with `head_options.batch_size` and
    several steps per call into TensorFlow: "disk" keeps them in the on-disk cache (feature_cache.py) for later
    runs, for a pretrained backbone whose output does not change between runs (the feed's `preprocessing`
    name is part of the key); "memory" keeps them for this run only, for feature layers trained in this run.
    Without a cache, the published way: the whole stack (augmentation, frozen features, head) is fitted with
    `options.batch_size`, paying for the frozen layers in every epoch. `features` None (nothing frozen) fits
    the head, the whole network here, the same way.

    Images go into the model as they are, or through `options.feed` (a backbone's pipelines).

    `known`: (indices into the training images, their features), rows the `features` network computed already
    (the choice's sample, choice.Choice.sample_features, through the same LiteRT program: bit for bit the rows
    a pass would give); a disk-cache miss extracts only the other images.

    Returns the PhaseResult; its info says feature_cache ("hit", "miss", "memory" or "off"), batch_size and
    feature_extraction_seconds; with a cache, validation_probabilities (from the validation images' cached features)
    and test (the trained head's Scores on the test images' features, cached like the rest, through the run's
    inference runtime); without one, neither: the caller's pass over the whole model scores them.
    """
    cache, feed = head_options.cache, options.feed
    if cache is None or features is None:  # the published way, or nothing frozen and so nothing to cache
        parts = [*head_options.augmentation, head] if features is None else [*head_options.augmentation, features,
                                                                             head]
        first = head if features is None else features
        model = models.stack(first.input_shape[1:], parts, name=f"{phase}_frozen")
        result = fit(run, phase, model, task.train, options, task.validation)
        result.info = {"feature_cache": "off", "batch_size": options.batch_size}
        return result

    if cache == "disk" and distribute.workers() > 1:
        # Extraction is a collective step every worker must take together; a disk cache could hit on one
        # machine and miss on another, so with several workers each extracts, and nothing is written.
        cache = "memory"

    inference = inference_of(run)
    runtime_info = {}

    def extract(images, labels, known=None):
        """(features, where they came from, seconds)."""
        if cache == "disk":
            rest, their = images, labels
            if known is not None:  # only the images whose features are not known yet go through the network
                others = np.setdiff1d(np.arange(len(images)), known[0])
                rest, their = images[others], labels[others]
            batches = (() if not len(rest) else feed(rest, their) if feed else
                       (rest[i:i + extraction.EXTRACT_BATCH] for i in range(0, len(rest), extraction.EXTRACT_BATCH)))
            preprocessing = feed.preprocessing if feed else ""
            found, status, seconds, info = feature_cache.cached(features, images, batches, preprocessing, inference,
                                                                known)
            runtime_info.update(info)
            return found, status, seconds
        run_batch, info = inference.batch_function(features)
        runtime_info.update(info)
        if feed is None:
            found, seconds = extraction.extract_features(features, images, extraction.EXTRACT_BATCH, run_batch)
        else:
            found, seconds = extraction.extract_features(features, feed(images, labels), run_batch=run_batch)
        return found, "memory", seconds

    f_train, status, seconds = extract(*task.train, known)
    validation = None
    if task.validation is not None:
        f_val, val_status, val_seconds = extract(*task.validation)
        validation, seconds = (f_val, task.validation[1]), seconds + val_seconds
        status = "miss" if "miss" in (status, val_status) else status  # "hit" only when nothing was extracted
    passes = head_passes(options.epochs, head_options.steps, len(f_train), head_options.batch_size)
    on_features = options.replace(batch_size=head_options.batch_size, feed=None, steps_per_execution=32, passes=passes)
    if passes > 1:
        print(f"   the head goes over its features {passes} times an epoch: {head_options.steps} steps at least")
    result = fit(run, phase, head, (f_train, task.train[1]), on_features, validation)
    result.info = {"feature_cache": status, "batch_size": head_options.batch_size, "passes_per_epoch": passes,
                   "feature_extraction_seconds": round(seconds, 3), **runtime_info,
                   **({"features_from_choice": len(known[0])} if known is not None and status == "miss" else {})}
    result.extra_seconds = seconds
    if task.test is not None:
        result.test = models.predict_scores(head, extract(*task.test)[0], task.test[1], batch_size=1024)
    if validation is not None:
        result.validation_probabilities = models.predict_probabilities(head, validation[0])
    return result


def fine_tune(run, phase, classifier, task, options, cache):
    """Phase `phase`: go on training the `classifier` (classifier.Classifier: images -> backbone -> pooling ->
    head) after its `unfreeze`, on `task` through `options.feed`. With `cache`, the backbone's frozen bottom
    (backbones.frozen_bottom) runs once over the training and validation images and the rest of the model (its
    top, the pooling, the head: the same layers) trains on those activations, held in memory: the same
    computation as the whole model's, without the frozen layers in every epoch. Without `cache` (an augmented
    run, whose images change every epoch), when nothing before the unfrozen layers can be cut off, or above
    extraction.ACTIVATION_CACHE_BYTES, the whole model trains as published.

    Returns the PhaseResult: info as fit_head's, saying feature_cache ("memory" or "off") and where the cut
    is; validation_probabilities, the trained model's (from their activations when cached: no second pass of the
    backbone for the plots); test, when cached and the test images' activations fit under the cap too, the
    trained model's Scores on them, their frozen bottom through the run's inference runtime (else None: the
    caller scores them).
    """
    model, feed, (x, y), validation = classifier.model, options.feed, task.train, task.validation
    bottom, top = backbones.frozen_bottom(classifier.backbone) if cache else (None, None)
    if bottom is not None:
        per_image = int(np.prod(top.input_shape[1:])) * 4  # float32 activations
        size = (len(x) + len(validation[0])) * per_image
        if size > extraction.ACTIVATION_CACHE_BYTES:
            print(f"   {size / 2**30:.1f} GiB of activations: above ACTIVATION_CACHE_BYTES, so every epoch runs the "
                  f"whole backbone")
            bottom = None
    if bottom is None:
        result = fit(run, phase, model, task.train, options, validation)
        result.info = {"feature_cache": "off", "batch_size": options.batch_size}
        result.validation_probabilities = models.predict_probabilities(model, feed(*validation))
        return result
    print(f"   the frozen layers up to {bottom.layers[-1].name} run once; the rest trains on their activations")
    inputs = keras.Input(top.input_shape[1:])
    rest = keras.Model(inputs, classifier.head(classifier.pooling(top(inputs, training=False))),
                       name=f"{phase}_from_cache")
    run_batch, runtime_info = inference_of(run).batch_function(bottom)
    a_train, seconds = extraction.extract_features(bottom, feed(x, y), run_batch=run_batch)
    a_val, val_seconds = extraction.extract_features(bottom, feed(*validation), run_batch=run_batch)
    # One step per call: unlike a small head's, these steps are long, and a many-step loop of the backbone's
    # top takes TensorFlow far longer to trace than it saves (docs/design.md, "Measured choices").
    result = fit(run, phase, rest, (a_train, y), options.replace(feed=None, steps_per_execution=1),
                 (a_val, validation[1]))
    result.info = {"feature_cache": "memory", "batch_size": options.batch_size, "cached_up_to": bottom.layers[-1].name,
                   "feature_extraction_seconds": round(seconds + val_seconds, 3), **runtime_info}
    result.extra_seconds = seconds + val_seconds
    if task.test is not None and size + len(task.test[0]) * per_image <= extraction.ACTIVATION_CACHE_BYTES:
        a_test, _ = extraction.extract_features(bottom, feed(*task.test), run_batch=run_batch)
        result.test = models.predict_scores(rest, a_test, task.test[1], batch_size=options.batch_size)
    result.validation_probabilities = models.predict_probabilities(rest, a_val)
    return result


def inference_of(run):
    """The run's litert.Inference; Keras for a stand-in run that has none."""
    return getattr(run, "inference", litert.KERAS)


def trainable_params(model):
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def summary(result, classes, samples, model, test=None):
    """The phase's entry in record.json from its PhaseResult: `classes` and `samples` (the training images, or
    their count) of its task, `model` (its trainable parameters), and `test`, its Scores on the test images
    (None: an image folder has no test set); validation scores are the last epoch's. The frozen pass's
    seconds count as training.
    """
    more = {}
    validation = result.validation()
    if validation is not None:
        more.update(val_loss=float(validation[0]), val_accuracy=float(validation[1]))
    if test is not None:
        more = {"test_loss": float(test.loss), "test_accuracy": float(test.accuracy), **more}
    seconds = result.epoch_seconds
    return {
        "classes": list(classes),
        "train_samples": samples if isinstance(samples, int) else len(samples),
        "epochs": len(result.history["loss"]),
        "train_seconds": round(result.fit_seconds + result.extra_seconds, 3),
        "first_epoch_seconds": round(seconds[0], 3) if seconds else None,
        "steady_epoch_seconds": round(statistics.median(seconds[1:]), 3) if len(seconds) > 1 else None,
        "trainable_params": trainable_params(model),
        **more,
        **result.info,
        **({} if result.stopped_early is None else {"stopped_early": result.stopped_early}),
    }
