"""LiteRT for frozen passes: the same features as Keras within 1e-4, the converted file cached and checked,
a missing package said in one line, a model it cannot take run by Keras with the reason recorded."""

import contextlib
import io
import os
import tempfile

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import run_script

from transferlab import backbones, feature_cache, litert, models
from transferlab.errors import UserError

pytestmark = pytest.mark.skipif(litert.interpreter_class() is None, reason="needs ai-edge-litert (requirements.txt)")


def mnist_cnn():
    """The MNIST experiment's frozen feature layers (mnist_transfer.py), with weights made here."""
    keras.utils.set_random_seed(0)
    return models.stack((28, 28, 1), [
        keras.layers.Conv2D(32, 3, activation="relu"), keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.MaxPooling2D(2), keras.layers.Dropout(0.25), keras.layers.Conv2D(128, 3, activation="relu"),
        keras.layers.MaxPooling2D(2), keras.layers.Flatten()], name="features")


def mobilenet_small():
    keras.utils.set_random_seed(0)
    backbone, _ = backbones.load("MobileNetV2", 48, None)
    return backbones.feature_extractor(backbone, keras.layers.GlobalAveragePooling2D())


def inception_mixed7():
    keras.utils.set_random_seed(0)
    backbone, _ = backbones.load("InceptionV3", 75, None)
    return backbones.feature_extractor(backbones.cut(backbone, "mixed7"), keras.layers.Flatten())


@pytest.mark.parametrize("build", [mnist_cnn, mobilenet_small, inception_mixed7])
def test_litert_features_equal_keras_within_1e_4(build, private_litert):
    model = build()
    x = np.random.default_rng(0).uniform(-1, 1, size=(6, *model.input_shape[1:])).astype(np.float32)
    run_batch, info = litert.Inference("litert", "litert", "asked for").batch_function(model)
    assert info["inference_runtime"] == "litert" and info["litert_conversion"] == "miss"
    expected = model.predict(x, verbose=0)
    found = run_batch(x)
    assert found.shape == expected.shape and found.dtype == np.float32
    assert np.abs(found - expected).max() <= 1e-4 * max(1.0, np.abs(expected).max())
    assert np.array_equal(run_batch(x[:5]), found[:5])  # another batch size, the same numbers


def test_the_lean_conversion_computes_what_keras_own_conversion_does_bit_for_bit(tmp_path, monkeypatch):
    # litert.converter saves one function, not Keras's whole export archive: the same file, in half the time.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the SavedModel in between goes
    model = mobilenet_small()  # BatchNorm and Dropout: inference mode in both
    ours = litert.Runner(content=litert.convert(model))
    assert os.listdir(tmp_path) == []  # and is gone
    keras_own = tf.lite.TFLiteConverter.from_keras_model(model)
    with contextlib.redirect_stdout(io.StringIO()):
        theirs = litert.Runner(content=keras_own.convert())
    x = np.random.default_rng(0).uniform(-1, 1, size=(4, *model.input_shape[1:])).astype(np.float32)
    assert np.array_equal(ours(x), theirs(x)) and ours.input["shape_signature"].tolist() == [-1, 48, 48, 3]


def test_a_converted_file_is_reused_and_a_damaged_one_converted_again(cache_dir, private_litert, capsys):
    model = mnist_cnn()
    first, status, _ = litert.runner(model)
    assert status == "miss"
    (converted,) = [name for name in os.listdir(cache_dir / "litert") if name.endswith(".tflite")]
    assert converted == f"{litert.model_key(model)}.tflite"
    again, status, _ = litert.runner(mnist_cnn())  # the same model built again: the same file
    assert status == "hit" and len(os.listdir(cache_dir / "litert")) == 2  # the file and its JSON
    x = np.ones((3, 28, 28, 1), np.float32)
    assert np.array_equal(first(x), again(x))
    with open(cache_dir / "litert" / converted, "r+b") as f:
        f.truncate(100)
    rebuilt, status, _ = litert.runner(model)
    assert status == "miss" and "warning: discarding a damaged LiteRT file" in capsys.readouterr().err
    assert np.array_equal(rebuilt(x), first(x))
    keras.utils.set_random_seed(1)
    other = models.stack((28, 28, 1), [keras.layers.Conv2D(4, 3), keras.layers.Flatten()], name="features")
    assert litert.runner(other)[1] == "miss"  # other weights, another file


def test_auto_takes_litert_on_one_cpu_and_keras_with_several_replicas_or_without_the_package(monkeypatch):
    assert litert.Inference.choose("auto").chosen == "litert"
    several = litert.Inference.choose("auto", replicas=2)
    assert several.chosen == "keras" and several.reason == "2 replicas share the frozen passes in TensorFlow"
    assert litert.Inference.choose("keras").chosen == "keras"
    monkeypatch.setattr(litert, "interpreter_class", lambda: None)
    missing = litert.Inference.choose("auto")
    assert missing.chosen == "keras" and "pip install ai-edge-litert" in missing.reason
    with pytest.raises(UserError, match=r"--inference_runtime=litert needs the LiteRT interpreter: pip install "
                                        r"ai-edge-litert=="):
        litert.Inference.choose("litert")


def test_a_model_the_converter_refuses_runs_with_keras_and_says_why(monkeypatch, capsys, private_litert):
    model = mnist_cnn()

    def refuse(_):
        raise ValueError("an op it does not know")

    monkeypatch.setattr(litert, "convert", refuse)
    run_batch, info = litert.Inference("auto", "litert", "CPU only, one replica").batch_function(model)
    assert info == {"inference_runtime": "keras",
                    "inference_runtime_fallback": "LiteRT cannot convert features: ValueError: an op it does not know"}
    assert "running it with Keras" in capsys.readouterr().err
    x = np.zeros((2, 28, 28, 1), np.float32)
    np.testing.assert_allclose(run_batch(x), model.predict(x, verbose=0), rtol=1e-6)


def test_the_feature_cache_keeps_litert_features_apart_from_keras_ones(cache_dir):
    model, x = mnist_cnn(), np.zeros((4, 28, 28, 1), np.uint8)
    assert feature_cache.key(model, x, "none", "litert") != feature_cache.key(model, x, "none", "keras")
    features, status, _, info = feature_cache.cached(model, x, [x.astype(np.float32)], "none",
                                                     litert.Inference("litert", "litert", "asked for"))
    assert status == "miss" and info["inference_runtime"] == "litert" and features.shape == (4, 3200)
    assert os.path.exists(cache_dir / "features" / f"{feature_cache.key(model, x, 'none', 'litert')}.npy")


def test_asking_for_litert_without_the_package_is_one_line_before_any_work(tmp_path):
    # A package of that name whose import fails stands in for one that is not installed.
    (tmp_path / "fake" / "ai_edge_litert").mkdir(parents=True)
    (tmp_path / "fake" / "ai_edge_litert" / "__init__.py").write_text("raise ImportError('not here')\n")
    result = run_script("mnist_transfer.py", "--inference_runtime=litert", f"--results_dir={tmp_path / 'results'}",
                        env={"PYTHONPATH": str(tmp_path / "fake")})
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == ("error: --inference_runtime=litert needs the LiteRT "
                                                      f"interpreter: pip install {litert.PACKAGE}")
    assert not (tmp_path / "results").exists()
