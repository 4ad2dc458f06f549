"""Model helpers shared by the experiments: stacking parts behind an input, the output layer, the usual compile,
the scores of a classifier, and what a frozen model computes (its fingerprint)."""

import dataclasses

import keras
import numpy as np

from transferlab.errors import check

OPTIMIZERS = {"adam": keras.optimizers.Adam, "rmsprop": keras.optimizers.RMSprop, "sgd": keras.optimizers.SGD}

# How the learning rate moves over a phase: "constant"; "cosine", a cosine decay from the rate to 0 at the
# phase's last step; "warmup_cosine", the same after a linear warm-up from 0 over the phase's first epoch.
SCHEDULES = ("constant", "cosine", "warmup_cosine")


def stack(input_shape, parts, name):
    """A Sequential model of `parts` (layers or whole models) behind an Input of `input_shape`.

    Parts that are models stay models inside it, so the feature extractor can later be frozen, run on
    its own for the feature cache, or reused under a new head.
    """
    return keras.Sequential([keras.Input(shape=input_shape), *parts], name=name)


def frozen_count(features, freeze_up_to):
    """How many of the feature layers stay frozen in the transfer phase: FREEZE_UP_TO as an index (the number
    of layers: 0 = none, every layer fine-tunes from the transferred weights), a layer's name (it and every
    layer before it), or None (all of them, as published). Checked here, before any training."""
    names = [layer.name for layer in features.layers]
    if freeze_up_to is None:
        return len(names)
    if isinstance(freeze_up_to, str):
        check(freeze_up_to in names, f"--freeze_up_to={freeze_up_to}: no such feature layer; the layers are "
                                     f"{', '.join(names)} (or give how many stay frozen, 0 to {len(names)})")
        return names.index(freeze_up_to) + 1
    check(isinstance(freeze_up_to, int) and 0 <= freeze_up_to <= len(names),
          f"--freeze_up_to={freeze_up_to}: expected 0 to {len(names)} frozen layers, or a layer name "
          f"({', '.join(names)})")
    return freeze_up_to


def freeze_first(features, count):
    """(frozen, trainable): the first `count` feature layers frozen, as one model for the feature cache
    (None when there are none), and the list of the layers after them, trainable, for the new head to
    start with. The layers keep their weights: both parts are the transferred network, cut in two."""
    for index, layer in enumerate(features.layers):
        layer.trainable = index >= count
    frozen = stack(features.input_shape[1:], features.layers[:count], name="frozen") if count else None
    return frozen, features.layers[count:]


def output_layer(num_classes):
    """Two classes: one sigmoid unit (binary cross-entropy); more: a softmax over them. Always float32,
    also under mixed precision: a float16 softmax rounds small probabilities to 0 and the loss to inf."""
    if num_classes == 2:
        return keras.layers.Dense(1, activation="sigmoid", dtype="float32")
    return keras.layers.Dense(num_classes, activation="softmax", dtype="float32")


def learning_rate_schedule(schedule, learning_rate, steps_per_epoch, epochs):
    """The optimizer's learning rate for a phase of `epochs` epochs of `steps_per_epoch` steps (SCHEDULES):
    a float for "constant", else a keras LearningRateSchedule counted in optimizer steps."""
    check(schedule in SCHEDULES, f"--schedule={schedule}: expected one of {', '.join(SCHEDULES)}")
    if schedule == "constant":
        return learning_rate
    total = max(1, steps_per_epoch * epochs)
    warmup = steps_per_epoch if schedule == "warmup_cosine" and epochs > 1 else 0
    if not warmup:
        return keras.optimizers.schedules.CosineDecay(learning_rate, total)
    return keras.optimizers.schedules.CosineDecay(0.0, total - warmup, warmup_target=learning_rate,
                                                  warmup_steps=warmup)


def compile_classifier(model, learning_rate, steps_per_execution=1, optimizer="adam"):
    """Compile for integer class labels with accuracy: every phase of every experiment here.

    The loss follows the output: one sigmoid unit gets binary cross-entropy, a softmax gets sparse
    categorical cross-entropy; the metric is logged as "accuracy" (and "val_accuracy") either way.
    Call it again after changing any layer's `trainable`: Keras fixes the trainable set at compile time.
    `learning_rate` is a float or a schedule (learning_rate_schedule).
    `steps_per_execution` runs several batches per call into TensorFlow; for a small head on cached
    features this removes most of the per-step overhead without changing what is computed.
    The metric's and the optimizer's variables are created here, not in the first training step: a variable
    created while `fit` traces its step makes TensorFlow trace the step a second time (docs/design.md).
    """
    binary = model.output_shape[-1] == 1
    accuracy = keras.metrics.BinaryAccuracy if binary else keras.metrics.SparseCategoricalAccuracy
    model.compile(
        optimizer=OPTIMIZERS[optimizer](learning_rate=learning_rate),
        loss="binary_crossentropy" if binary else "sparse_categorical_crossentropy",
        metrics=[accuracy(name="accuracy")],  # an object: its variables exist now ("accuracy" made them in `fit`)
        steps_per_execution=steps_per_execution,
    )
    model.optimizer.build(model.trainable_variables)
    return model


def class_probabilities(outputs):
    """One probability per class from a classifier's outputs: a one-unit sigmoid's P(class 1) becomes
    [P(class 0), P(class 1)]."""
    outputs = np.asarray(outputs, np.float32)
    return np.concatenate([1 - outputs, outputs], axis=1) if outputs.shape[-1] == 1 else outputs


def predict_probabilities(model, inputs, batch_size=None):
    """class_probabilities of a classifier on `inputs`."""
    return class_probabilities(model.predict(inputs, batch_size=batch_size, verbose=0))


def classes_of(probabilities):
    """Predicted class indices: the arg max (for a one-unit sigmoid, P(class 1) > 0.5)."""
    return np.asarray(probabilities).argmax(axis=-1).astype(np.int64)


def predict_classes(model, inputs, batch_size=None):
    """Predicted class indices: the softmax's arg max, or sigmoid > 0.5 for a one-unit output."""
    return classes_of(predict_probabilities(model, inputs, batch_size))


@dataclasses.dataclass(frozen=True)
class Scores:
    """A classifier's scores on labelled images: mean loss, accuracy, its class for each image and its
    probabilities (class_probabilities)."""

    loss: float
    accuracy: float
    classes: np.ndarray
    probabilities: np.ndarray


def predict_scores(model, inputs, y, batch_size=None):
    """The Scores (loss, accuracy, classes) of a classifier on `inputs` with labels `y`, from one pass: what `evaluate`
    gives (the loss compile_classifier chose), with the predicted classes too, so a held-out set that is also
    plotted goes through the network once."""
    probabilities = np.asarray(model.predict(inputs, batch_size=batch_size, verbose=0), np.float32)
    y = np.asarray(y)
    if probabilities.shape[-1] == 1:
        losses = keras.losses.binary_crossentropy(y[:, None].astype(np.float32), probabilities)
        classes = (probabilities[:, 0] > 0.5).astype(np.int64)
    else:
        losses = keras.losses.sparse_categorical_crossentropy(y, probabilities)
        classes = probabilities.argmax(axis=-1)
    return Scores(float(np.mean(keras.ops.convert_to_numpy(losses))), float(np.mean(classes == y)), classes,
                  class_probabilities(probabilities))


def fingerprint(model, digest):
    """Feed what a frozen model computes into the hashlib `digest`: each layer's kind and output shape (nested
    models' layers too) and its weights. Two models with equal fingerprints give the same outputs."""
    for layer in all_layers(model):
        digest.update(f"{type(layer).__name__}\t{_output_shape(layer)}\n".encode())
        for weight in layer.weights:
            digest.update(np.ascontiguousarray(weight.numpy()).tobytes())
    return digest


def all_layers(model):
    """Every layer of `model`, nested models' layers too, depth first (`model.layers` lists a nested backbone as
    one layer, and fine-tuning must reach each BatchNormalization layer inside it)."""
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):  # a nested model (a backbone inside the feature extractor)
            yield from all_layers(layer)


def _output_shape(layer):
    try:
        return tuple(layer.output.shape)
    except (AttributeError, ValueError):
        return None
