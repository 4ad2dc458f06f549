"""Backbones: weights from a file or nowhere, clear errors, and BatchNormalization that stays frozen when asked."""

import transferlab.runtime  # noqa: F401 (quiet TensorFlow start)

import keras
import numpy as np
import pytest

from transferlab import backbones, files, models, pipelines
from transferlab.errors import UserError


def small_mobilenet():
    backbone = keras.applications.MobileNetV2(input_shape=(32, 32, 3), include_top=False, weights=None, alpha=0.35)
    features = backbones.feature_extractor(backbone, keras.layers.GlobalAveragePooling2D())
    model = models.stack((32, 32, 3), [features, keras.layers.Dense(1, activation="sigmoid")], name="m")
    return backbone, model


def moving_means(backbone):
    return [layer.moving_mean.numpy().copy() for layer in backbones.batchnorm_layers(backbone)]


def fit_one_step(model):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(16, 32, 32, 3)).astype("float32") * 3 + 1  # far from N(0, 1)
    models.compile_classifier(model, 1e-3)
    model.fit(x, rng.integers(0, 2, 16), batch_size=16, epochs=1, verbose=0)


def test_frozen_feature_extractor_trains_only_the_head():
    backbone, model = small_mobilenet()
    models.compile_classifier(model, 1e-3)
    assert [w.name for w in model.trainable_weights] == ["kernel", "bias"]
    before = moving_means(backbone)
    fit_one_step(model)
    assert all(np.array_equal(a, b) for a, b in zip(before, moving_means(backbone), strict=True))


def test_fine_tuning_keeps_batchnorm_in_inference_mode_unless_told_to_adapt():
    backbone, model = small_mobilenet()
    trainable = backbones.unfreeze(backbone, 100)
    assert trainable == sum(1 for layer in backbone.layers[100:] if layer.weights and
                            not isinstance(layer, keras.layers.BatchNormalization))
    assert all(not layer.trainable for layer in backbone.layers[:100])
    kernel = backbone.layers[-3].weights[0].numpy().copy()  # Conv_1, unfrozen
    before = moving_means(backbone)
    fit_one_step(model)
    assert all(np.array_equal(a, b) for a, b in zip(before, moving_means(backbone), strict=True))
    assert not np.array_equal(kernel, backbone.layers[-3].weights[0].numpy())  # the unfrozen layers did train

    backbone, model = small_mobilenet()
    backbones.unfreeze(backbone, "block_16_expand", batchnorm_momentum=0.9)
    start = backbones.layer_index(backbone, "block_16_expand")
    before = moving_means(backbone)
    fit_one_step(model)
    changed = [not np.array_equal(a, b) for a, b in zip(before, moving_means(backbone), strict=True)]
    unfrozen = [backbone.layers.index(layer) >= start for layer in backbones.batchnorm_layers(backbone)]
    assert changed == unfrozen and any(changed)  # adapting: exactly the unfrozen BatchNormalization moved
    assert {layer.momentum for layer in backbones.batchnorm_layers(backbone)} == {0.9}


def test_layer_index_takes_an_index_or_a_name():
    backbone, _ = small_mobilenet()
    assert backbones.layer_index(backbone, 100) == 100
    assert backbone.layers[backbones.layer_index(backbone, "block_16_expand")].name == "block_16_expand"
    with pytest.raises(UserError, match="has no layer 'block_99'"):
        backbones.layer_index(backbone, "block_99")
    with pytest.raises(UserError, match="--fine_tune_at=500: .* has layers 0..153"):
        backbones.layer_index(backbone, 500)


# The last check loads InceptionV3's file into MobileNetV2 on purpose: Keras warns of each container it skips.
@pytest.mark.filterwarnings("ignore:Skipping nested container:UserWarning")
def test_weights_from_a_file_are_loaded_and_pinned_by_sha256(tmp_path):
    saved = keras.applications.InceptionV3(input_shape=(75, 75, 3), include_top=False, weights=None)
    path = tmp_path / "inception.weights.h5"
    saved.save_weights(path)
    loaded, info = backbones.load("InceptionV3", 80, str(path))
    assert np.array_equal(loaded.layers[1].weights[0].numpy(), saved.layers[1].weights[0].numpy())
    assert info["weights"] == str(path) and info["weights_sha256"] == files.sha256(path)
    assert info["backbone"] == "InceptionV3" and info["input_size"] == 80
    cut = backbones.cut(loaded, "mixed7")
    assert cut.layers[-1].name == "mixed7" and cut.output_shape == (None, 3, 3, 768)
    loaded_cut, cut_info = backbones.load("InceptionV3", 80, str(path), cut_at="mixed7")
    assert loaded_cut.layers[-1].name == "mixed7" and loaded_cut.output_shape == (None, 3, 3, 768)
    assert cut_info["cut_layer"] == "mixed7" and cut_info["layers"] == len(cut.layers) < info["layers"]

    with pytest.raises(UserError, match=r"weights file .* does not fit MobileNetV2 without its top"):
        backbones.load("MobileNetV2", 96, str(path))


def test_the_same_weights_at_another_size_are_copied_not_read_again(tmp_path, capsys):
    saved = keras.applications.InceptionV3(input_shape=(75, 75, 3), include_top=False, weights=None)
    path = tmp_path / "inception.weights.h5"
    saved.save_weights(path)
    first = backbones.load("InceptionV3", 80, str(path))
    path.unlink()  # the second load cannot read the file
    again, info = backbones.load("InceptionV3", 99, str(path), cut_at="mixed7", like=first)
    assert info == {**first[1], "input_size": 99, "cut_layer": "mixed7", "layers": len(again.layers)}
    assert again.output_shape == (None, 4, 4, 768)
    kept = first[0].weights[:len(again.weights)]  # the cut keeps the first layers, in order
    for one, other in zip(again.weights, kept, strict=True):
        assert np.array_equal(one.numpy(), other.numpy())
    # Random weights copied to another size are the same random weights: no second warning.
    random = backbones.load("MobileNetV2", 32, None)
    capsys.readouterr()
    copy, _ = backbones.load("MobileNetV2", 48, None, like=random)
    assert capsys.readouterr().out == "" and np.array_equal(copy.weights[0].numpy(), random[0].weights[0].numpy())


def test_random_weights_are_said_so_and_bad_requests_are_one_line_errors(tmp_path, monkeypatch, capsys):
    _, info = backbones.load("MobileNetV2", 32, None, alpha=0.35)
    assert info["weights"] == "random" and info["weights_sha256"] is None and info["alpha"] == 0.35
    assert "warning: --weights=None: the backbone is random, so transfer has nothing to transfer" in \
        capsys.readouterr().out
    with pytest.raises(UserError, match="weights file 'nowhere.h5' not found"):
        backbones.load("MobileNetV2", 96, "nowhere.h5")
    with pytest.raises(UserError, match="--image_size=60: InceptionV3 needs at least 75 pixels"):
        backbones.load("InceptionV3", 60, None)
    with pytest.raises(UserError, match="has no layer 'mixed99'"):
        backbones.cut(backbones.load("InceptionV3", 75, None)[0], "mixed99")


def test_imagenet_without_internet_names_the_file_to_put_where(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    with pytest.raises(UserError) as error:
        backbones.load("MobileNetV2", 160, "imagenet")
    message = str(error.value)
    assert "cannot get the ImageNet weights of MobileNetV2" in message
    assert f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_160_no_top.h5 in {tmp_path}/models" in message


def test_pipeline_preprocesses_once_and_shuffles_only_for_training():
    x = np.stack([np.full((4, 4, 3), v, np.uint8) for v in (0, 255, 51, 102)])
    y = np.arange(4)
    preprocess = backbones.preprocess_function("MobileNetV2")
    batches = list(pipelines.pipeline(x, y, preprocess=preprocess, batch_size=3, seed=0))
    images = np.concatenate([b[0].numpy() for b in batches])
    assert [len(b[0]) for b in batches] == [3, 1]
    assert np.allclose(images[:, 0, 0, 0], [-1.0, 1.0, -0.6, -0.2])  # x / 127.5 - 1, applied once
    training = pipelines.pipeline(x, y, 0, preprocess=preprocess, batch_size=4, seed=1)
    epochs = [np.concatenate([b[1].numpy() for b in training]) for _ in range(6)]  # one pass per epoch
    assert all(sorted(epoch) == [0, 1, 2, 3] for epoch in epochs)
    assert len({tuple(epoch) for epoch in epochs}) > 1  # a new order each epoch


def test_split_cuts_where_one_tensor_crosses_and_computes_the_backbone():
    backbone, _ = small_mobilenet()
    backbones.unfreeze(backbone, 100)  # block 11's first trainable layer; its shortcut from block 10 crosses too
    bottom, top = backbones.frozen_bottom(backbone)
    assert bottom.layers[-1].name == "block_10_project_BN" and bottom.trainable_weights == []
    assert [id(w) for w in top.trainable_weights] == [id(w) for w in backbone.trainable_weights]  # the same variables
    x = np.random.default_rng(0).uniform(-1, 1, size=(4, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(top(bottom(x, training=False), training=False), backbone(x, training=False),
                               rtol=1e-5, atol=1e-5)

    backbones.unfreeze(backbone, 56)  # block 6 has no shortcut: the cut is right before its first trainable layer
    # (expand_relu and pad have no weights)
    assert backbones.frozen_bottom(backbone)[0].layers[-1].name == "block_6_pad"
    assert backbone.get_layer("block_6_depthwise").trainable_weights
    backbones.unfreeze(backbone, 0)  # everything trains: nothing to cut off
    assert backbones.frozen_bottom(backbone) == (None, None)
    backbones.unfreeze(backbone, "out_relu")  # nothing with weights trains
    assert backbones.frozen_bottom(backbone) == (None, None)


def test_split_sees_a_shortcut_that_is_an_operation_not_a_layer():
    # ConvNeXt's residual is `x + y` on Keras tensors: an operation of the graph that model.layers leaves out.
    inputs = keras.Input((6,))
    shortcut = keras.layers.Dense(4, name="frozen_dense")(inputs)
    x = keras.layers.Dense(4, name="frozen_too")(shortcut)
    x = keras.layers.Dense(4, name="first_trained")(x) + shortcut
    model = keras.Model(inputs, keras.layers.Dense(2, name="trains")(x))
    backbones.unfreeze(model, "first_trained")
    bottom, top = backbones.frozen_bottom(model)  # not after frozen_too: the shortcut crosses there
    assert bottom.layers[-1].name == "frozen_dense" and [layer.name for layer in top.layers[1:]] == [
        "frozen_too", "first_trained", "trains"]
    x = np.random.default_rng(0).uniform(-1, 1, size=(3, 6)).astype("float32")
    np.testing.assert_allclose(top(bottom(x)), model(x), rtol=1e-6, atol=1e-6)


def test_split_never_caches_past_a_layer_that_is_random_while_training():
    inputs = keras.Input((6,))
    x = keras.layers.Dense(4, name="frozen_dense")(inputs)
    x = keras.layers.Dropout(0.5, name="drop")(x)  # frozen (no weights) but random in every training step
    x = keras.layers.Dense(4, name="also_frozen")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="trains")(x))
    backbones.unfreeze(model, "trains")
    bottom, top = backbones.frozen_bottom(model)
    assert bottom.layers[-1].name == "frozen_dense" and [layer.name for layer in top.layers[1:]] == [
        "drop", "also_frozen", "trains"]
