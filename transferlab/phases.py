"""Training phases: fitting one (`fit`), the frozen phase on cached features (`fit_head`), fine-tuning on
cached activations (`fine_tune`), and the phase's entry in the record (`summary`).

A phase writes into a run: records.Run, or anything of the shape `RunLike` (tests and the benchmarks pass a
small stand-in that keeps files in a scratch folder).
"""

import os
import statistics
from typing import Protocol

import keras
import numpy as np
import tensorflow as tf

from transferlab import backbones, callbacks, data, distribute, extraction, feature_cache, litert, models, records


class RunLike(Protocol):
    """What a phase needs of its run (records.Run has it all)."""

    seed: int  # every epoch's batch order is a function of it and the epoch
    tensorboard: bool  # write TensorBoard logs of the phase
    inference: litert.Inference  # which runtime the frozen passes use (optional: Keras without it)

    def file(self, name: str) -> str:
        """A path inside the run folder (histories, checkpoints, logs)."""

    def progress(self, phase: str, epochs_finished: int) -> None:
        """Note the last finished epoch of the running phase."""


def fit(run, phase, model, x, y, *, epochs, batch_size, learning_rate, validation_data=None, feed=None,
        steps_per_execution=1, optimizer="adam", schedule="constant", class_weight=None, initial_epoch=0,
        more_callbacks=()):
    """`model.fit` for one phase: compile first (Keras fixes the trainable weights at compile time, so
    this must follow any change to `trainable`), then fit with the phase's PhaseHistory (seconds and metrics
    of each epoch), CSV history, NaN guard and per-epoch checkpoint. A phase that continues another
    (fine-tuning) starts at `initial_epoch`, so its epochs go on numbering; a phase interrupted before goes
    on from its last finished epoch.
    The learning rate follows `schedule` (models.SCHEDULES) over the phase's `epochs`, counted in optimizer
    steps (restored with the checkpoint, so a resumed phase goes on where its schedule was). `class_weight`
    ({class: weight}, data.class_weights) weighs each image's loss by its class.

    Images (`x`, `y` arrays, and `validation_data`) go into the model in batches of `batch_size`, each
    epoch in its own seeded order (data.epoch_batches), or through `feed(x, y, first_epoch)`, a tf.data
    pipeline that does the same plus a backbone's preprocessing (backbones.pipeline).
    Returns the phase's PhaseHistory, with the history of every epoch.
    """
    if tf.distribute.has_strategy():  # Keras 3.15 fails to run several steps per call under a tf.distribute
        steps_per_execution = 1       # strategy ("You must feed a value for placeholder"), so one per call
    steps_per_epoch = -(-len(x) // distribute.global_batch(batch_size))
    rate = models.learning_rate_schedule(schedule, learning_rate, steps_per_epoch, epochs)
    models.compile_classifier(model, rate, steps_per_execution, optimizer)
    end = initial_epoch + epochs
    state = callbacks.restore_checkpoint(run, phase, model)
    history_csv = run.file(f"history_{phase}.csv")
    if state is None:
        fitted = callbacks.PhaseHistory()
    else:
        fitted = callbacks.PhaseHistory(state["epoch_seconds"], state["fit_seconds"], state["history"])
        initial_epoch = state["epochs_finished"]
        records.truncate_history(history_csv, initial_epoch)  # drop any epoch logged after the checkpoint
    if feed is None:  # batch_size is per replica; one step takes a batch for each
        batch = distribute.global_batch(batch_size)
        train = data.epoch_batches(x, y, batch, run.seed, initial_epoch).prefetch(tf.data.AUTOTUNE)
        validation = validation_data and tf.data.Dataset.from_tensor_slices(validation_data).batch(batch)
        train, validation = distribute.sharded(train), validation and distribute.sharded(validation)
    else:
        train, validation = feed(x, y, initial_epoch), validation_data and feed(*validation_data)
    phase_callbacks = [  # in this order: the learning rate is logged, then the CSV row written before the checkpoint
        callbacks.LearningRateLog(),
        fitted,
        keras.callbacks.CSVLogger(history_csv, append=state is not None),
        callbacks.Checkpoint(run, phase, fitted),
        callbacks.EpochLog(end, show=callbacks.VERBOSE == 0),
    ]
    if run.tensorboard:  # epoch-level scalars per phase: `tensorboard --logdir results/` shows every run
        phase_callbacks.append(keras.callbacks.TensorBoard(run.file(os.path.join("tensorboard", phase)),
                                                           write_graph=False, profile_batch=0))
    model.fit(train, epochs=end, initial_epoch=initial_epoch, validation_data=validation, shuffle=False,
              class_weight=class_weight,
              callbacks=[*phase_callbacks, *more_callbacks], verbose=callbacks.VERBOSE)
    if not np.all(np.isfinite(fitted.history.get("loss", []))):  # EpochLog stopped it: the phase failed
        raise FloatingPointError(f"phase {phase}: the loss became NaN or infinite in epoch "
                                 f"{fitted.history['epoch'][-1] + 1}; try a lower learning rate")
    return fitted


def fit_head(run, phase, features, head, x, y, *, cache, epochs, batch_size, head_batch_size, learning_rate,
             validation_data=None, test_data=None, augmentation=(), feed=None, preprocessing=None, optimizer="adam",
             class_weight=None, more_callbacks=()):
    """Train a new `head` on top of the frozen `features` model: the transfer phase.

    With a `cache`, the frozen layers run once over the training (and validation) images in inference
    mode and only the head is fitted, on those features, with `head_batch_size` and several steps per
    call into TensorFlow: "disk" keeps them in the on-disk cache (feature_cache.py) for later runs, for a
    pretrained backbone whose output does not change between runs (`preprocessing` names what `feed`
    does to the images, part of the cache key); "memory" keeps them for this run only, for feature layers
    trained in this run. With `cache` None, the published way: the whole stack (augmentation, frozen
    features, head) is fitted with `batch_size`, paying for the frozen layers in every epoch. `features`
    None (nothing frozen) fits the head, the whole network here, the same way.

    Images are arrays that go into the model as they are, or, with `feed(x, y)` (and for training
    `feed(x, y, first_epoch)`), through the tf.data pipeline it returns (a backbone's preprocessing, and
    for training shuffling and augmentation).

    `preprocessing` (None: the feed's own name for it, backbones.Feed) is part of the disk cache's key.

    Returns (PhaseHistory, info, predicted, test); info goes into the phase record: feature_cache ("hit", "miss",
    "memory" or "off"), batch_size, feature_extraction_seconds, and extra_seconds (training work done outside
    `fit`); predicted, the trained head's classes of the validation images from their cached features (None
    without a cache or validation images); test, with a cache and `test_data`, the trained head's (loss,
    accuracy, classes) on the test images' features (cached like the rest, through the run's inference runtime),
    else None (the caller's pass over the whole model scores them).
    """
    if preprocessing is None:
        preprocessing = getattr(feed, "preprocessing", "")
    options = {"learning_rate": learning_rate, "optimizer": optimizer, "more_callbacks": more_callbacks,
               "validation_data": validation_data, "epochs": epochs, "class_weight": class_weight}
    if cache is None or features is None:  # the published way, or nothing frozen and so nothing to cache
        parts = [*augmentation, head] if features is None else [*augmentation, features, head]
        first = head if features is None else features
        model = models.stack(first.input_shape[1:], parts, name=f"{phase}_frozen")
        fitted = fit(run, phase, model, x, y, batch_size=batch_size, feed=feed, **options)
        return fitted, {"feature_cache": "off", "batch_size": batch_size, "extra_seconds": 0.0}, None, None

    if cache == "disk" and distribute.workers() > 1:
        # Extraction is a collective step every worker must take together; a disk cache could hit on one
        # machine and miss on another, so with several workers each extracts, and nothing is written.
        cache = "memory"

    inference = inference_of(run)
    runtime_info = {}

    def extract(images, labels):
        """(features, where they came from, seconds)."""
        if cache == "disk":
            batches = feed(images, labels) if feed else (images[i:i + extraction.EXTRACT_BATCH]
                                                         for i in range(0, len(images), extraction.EXTRACT_BATCH))
            found, status, seconds, info = feature_cache.cached(features, images, batches, preprocessing, inference)
            runtime_info.update(info)
            return found, status, seconds
        run_batch, info = inference.batch_function(features)
        runtime_info.update(info)
        if feed is None:
            found, seconds = extraction.extract_features(features, images, extraction.EXTRACT_BATCH, run_batch)
        else:
            found, seconds = extraction.extract_features(features, feed(images, labels), run_batch=run_batch)
        return found, "memory", seconds

    f_train, status, seconds = extract(x, y)
    f_val = None
    if validation_data is not None:
        f_val, val_status, val_seconds = extract(*validation_data)
        options["validation_data"], seconds = (f_val, validation_data[1]), seconds + val_seconds
        status = "miss" if "miss" in (status, val_status) else status  # "hit" only when nothing was extracted
    fitted = fit(run, phase, head, f_train, y, batch_size=head_batch_size, steps_per_execution=32, **options)
    info = {"feature_cache": status, "batch_size": head_batch_size,
            "feature_extraction_seconds": round(seconds, 3), "extra_seconds": seconds, **runtime_info}
    test = None
    if test_data is not None:
        test = models.predict_scores(head, extract(*test_data)[0], test_data[1], batch_size=1024)
    return fitted, info, None if f_val is None else models.predict_classes(head, f_val), test


def fine_tune(run, phase, model, backbone, pooling, head, x, y, *, cache, validation_data, feed, batch_size,
              test_data=None, **options):
    """Phase `phase`: go on training `model` (images -> `backbone` -> `pooling` -> `head`) after
    backbones.unfreeze. With `cache`, the backbone's frozen bottom (backbones.frozen_bottom) runs once over the
    training and validation images (`feed(x, y)` pipelines) and the rest of the model (its top, `pooling`
    (a new layer without weights is fine), `head`: the same layers) trains on those activations, held in
    memory: the same computation as the whole model's, without the frozen layers in every epoch. Without
    `cache` (an augmented run, whose images change every epoch), when nothing before the unfrozen layers
    can be cut off, or above extraction.ACTIVATION_CACHE_BYTES, the whole `model` trains as published.

    Returns (PhaseHistory, info, predicted, test): info for the phase record as fit_head's, saying feature_cache
    ("memory" or "off") and where the cut is; predicted, the trained model's classes of the validation
    images (from their activations when cached: no second pass of the backbone for the plots); test, when
    cached and given `test_data` whose activations fit under the cap too, the trained model's (loss, accuracy,
    classes) on the test images, their frozen bottom through the run's inference runtime (else None: the
    caller scores them).
    """
    bottom, top = backbones.frozen_bottom(backbone) if cache else (None, None)
    if bottom is not None:
        per_image = int(np.prod(top.input_shape[1:])) * 4  # float32 activations
        size = (len(x) + len(validation_data[0])) * per_image
        if size > extraction.ACTIVATION_CACHE_BYTES:
            print(f"   {size / 2**30:.1f} GiB of activations: above ACTIVATION_CACHE_BYTES, so every epoch runs the "
                  f"whole backbone")
            bottom = None
    if bottom is None:
        fitted = fit(run, phase, model, x, y, validation_data=validation_data, feed=feed, batch_size=batch_size,
                    **options)
        info = {"feature_cache": "off", "batch_size": batch_size}
        return fitted, info, models.predict_classes(model, feed(*validation_data)), None
    print(f"   the frozen layers up to {bottom.layers[-1].name} run once; the rest trains on their activations")
    inputs = keras.Input(top.input_shape[1:])
    rest = keras.Model(inputs, head(pooling(top(inputs, training=False))), name=f"{phase}_from_cache")
    run_batch, runtime_info = inference_of(run).batch_function(bottom)
    a_train, seconds = extraction.extract_features(bottom, feed(x, y), run_batch=run_batch)
    a_val, val_seconds = extraction.extract_features(bottom, feed(*validation_data), run_batch=run_batch)
    # One step per call: unlike a small head's, these steps are long, and a 32-step loop of the backbone's
    # top took TensorFlow 42 s to trace for predict alone (block 6 on, a side measurement) against 7 s.
    fitted = fit(run, phase, rest, a_train, y, validation_data=(a_val, validation_data[1]), batch_size=batch_size,
                **options)
    info = {"feature_cache": "memory", "batch_size": batch_size, "cached_up_to": bottom.layers[-1].name,
            "feature_extraction_seconds": round(seconds + val_seconds, 3), "extra_seconds": seconds + val_seconds,
            **runtime_info}
    test = None
    if test_data is not None and size + len(test_data[0]) * per_image <= extraction.ACTIVATION_CACHE_BYTES:
        a_test, _ = extraction.extract_features(bottom, feed(*test_data), run_batch=run_batch)
        test = models.predict_scores(rest, a_test, test_data[1], batch_size=batch_size)
    return fitted, info, models.predict_classes(rest, a_val), test


def inference_of(run):
    """The run's litert.Inference; Keras for a stand-in run that has none."""
    return getattr(run, "inference", litert.KERAS)


def trainable_params(model):
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def summary(classes, samples, epochs, fitted, test, model, extra_seconds=0.0, validation=None, **more):
    """The phase's entry in record.json; `samples` is the training images (or their count).

    `test` and `validation` (either may be None: an image folder has no test set) are (loss, accuracy)
    from `model.evaluate`; `extra_seconds` is work done outside `fit` that belongs to training (the
    frozen-feature pass), added to train_seconds. Pass `fit_head`'s info as **info.
    """
    if validation is not None:
        more = {"val_loss": float(validation[0]), "val_accuracy": float(validation[1]), **more}
    if test is not None:
        more = {"test_loss": float(test[0]), "test_accuracy": float(test[1]), **more}
    seconds = fitted.epoch_seconds
    return {
        "classes": list(classes),
        "train_samples": samples if isinstance(samples, int) else len(samples),
        "epochs": epochs,
        "train_seconds": round(fitted.fit_seconds + extra_seconds, 3),
        "first_epoch_seconds": round(seconds[0], 3) if seconds else None,
        "steady_epoch_seconds": round(statistics.median(seconds[1:]), 3) if len(seconds) > 1 else None,
        "trainable_params": trainable_params(model),
        **more,
    }
