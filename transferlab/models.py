"""Model helpers shared by the experiments: stacking parts behind an input, and the usual compile."""

import keras


def stack(input_shape, parts, name):
    """A Sequential model of `parts` (layers or whole models) behind an Input of `input_shape`.

    Parts that are models stay models inside it, so the feature extractor can later be frozen, run on
    its own for the feature cache, or reused under a new head.
    """
    return keras.Sequential([keras.Input(shape=input_shape), *parts], name=name)


def compile_classifier(model, learning_rate, steps_per_execution=1):
    """Adam with sparse categorical cross-entropy and accuracy: every phase of the published experiments.

    Call it again after changing any layer's `trainable`: Keras fixes the trainable set at compile time.
    `steps_per_execution` runs several batches per call into TensorFlow; for a small head on cached
    features this removes most of the per-step overhead without changing what is computed.
    """
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution,
    )
    return model
