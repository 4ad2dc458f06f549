"""The private Keras API the project touches (transferlab/compat.py) works with the installed Keras."""

import transferlab.runtime  # noqa: F401 (quiet TensorFlow start)

import keras

from transferlab import compat, models


def test_compat_was_checked_against_the_installed_keras():
    # Fails on purpose after a Keras upgrade: check each function in compat.py, then raise the version.
    assert keras.__version__ == compat.CHECKED_WITH_KERAS


def test_nested_layers_and_the_graph_are_found():
    inner = keras.Sequential([keras.Input((4,)), keras.layers.BatchNormalization(name="bn")], name="inner")
    inputs = keras.Input((4,))
    dense = keras.layers.Dense(3, name="dense")
    outputs = dense(inner(inputs))
    model = keras.Model(inputs, outputs)
    assert "bn" in [layer.name for layer in models.all_layers(model)]  # model.layers shows only "inner"
    assert "bn" not in [layer.name for layer in model.layers]
    (taken,) = compat.inbound_tensors(dense)
    assert compat.producer(taken) is inner
