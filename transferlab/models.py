"""Model helpers shared by the experiments: stacking parts behind an input, the output layer, the usual compile."""

import keras
import numpy as np

OPTIMIZERS = ("adam", "rmsprop", "sgd")


def stack(input_shape, parts, name):
    """A Sequential model of `parts` (layers or whole models) behind an Input of `input_shape`.

    Parts that are models stay models inside it, so the feature extractor can later be frozen, run on
    its own for the feature cache, or reused under a new head.
    """
    return keras.Sequential([keras.Input(shape=input_shape), *parts], name=name)


def output_layer(num_classes):
    """Two classes: one sigmoid unit (binary cross-entropy); more: a softmax over them. Always float32,
    also under mixed precision: a float16 softmax rounds small probabilities to 0 and the loss to inf."""
    if num_classes == 2:
        return keras.layers.Dense(1, activation="sigmoid", dtype="float32")
    return keras.layers.Dense(num_classes, activation="softmax", dtype="float32")


def compile_classifier(model, learning_rate, steps_per_execution=1, optimizer="adam"):
    """Compile for integer class labels with accuracy: every phase of every experiment here.

    The loss follows the output: one sigmoid unit gets binary cross-entropy, a softmax gets sparse
    categorical cross-entropy; the metric is logged as "accuracy" (and "val_accuracy") either way.
    Call it again after changing any layer's `trainable`: Keras fixes the trainable set at compile time.
    `steps_per_execution` runs several batches per call into TensorFlow; for a small head on cached
    features this removes most of the per-step overhead without changing what is computed.
    """
    binary = model.output_shape[-1] == 1
    model.compile(
        optimizer=keras.optimizers.get({"class_name": optimizer, "config": {"learning_rate": learning_rate}}),
        loss="binary_crossentropy" if binary else "sparse_categorical_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution,
    )
    return model


def predict_classes(model, inputs, batch_size=None):
    """Predicted class indices: the softmax's arg max, or sigmoid > 0.5 for a one-unit output."""
    probabilities = model.predict(inputs, batch_size=batch_size, verbose=0)
    if probabilities.shape[-1] == 1:
        return (probabilities[:, 0] > 0.5).astype(np.int64)
    return probabilities.argmax(axis=-1)
