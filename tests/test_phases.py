import os
import signal

import keras
import numpy as np
import pytest

from transferlab import backbones, extraction, models, phases, pipelines, process, records, tasks
from transferlab.classifier import Classifier
from transferlab.phases import FitOptions, HeadOptions, StandInRun


def tiny_model():
    return models.stack((4,), [keras.layers.Dropout(0.5), keras.layers.Dense(3, activation="softmax")], name="tiny")


def test_timer_and_summary_describe_the_fit(tmp_path):
    keras.utils.set_random_seed(0)
    x = np.random.rand(64, 4).astype("float32")
    y = np.arange(64) % 3
    model = tiny_model()
    run = StandInRun(tmp_path)
    fitted = phases.fit(run, "demo", model, (x, y), FitOptions(epochs=3, batch_size=16, learning_rate=0.01))
    assert len(fitted.history["loss"]) == 3 and model.optimizer.learning_rate.numpy() == np.float32(0.01)
    assert fitted.history["epoch"] == [0, 1, 2] and run.notes == [("demo", 1), ("demo", 2), ("demo", 3)]
    assert len(fitted.epoch_seconds) == 3
    assert fitted.fit_seconds >= sum(fitted.epoch_seconds) > 0
    assert (tmp_path / "history_demo.csv").read_text().splitlines()[0].startswith("epoch,")

    test = models.predict_scores(model, x, y)
    fitted.extra_seconds = 1.5
    summary = phases.summary(fitted, [7, 8, 9], x, model, test)
    assert summary["classes"] == [7, 8, 9] and summary["train_samples"] == 64 and summary["epochs"] == 3
    assert summary["train_seconds"] == round(fitted.fit_seconds + 1.5, 3)
    assert summary["first_epoch_seconds"] == round(fitted.epoch_seconds[0], 3)
    assert summary["steady_epoch_seconds"] == round(float(np.median(fitted.epoch_seconds[1:])), 3)
    assert summary["trainable_params"] == 4 * 3 + 3 and summary["batch_size"] == 16
    assert summary["test_accuracy"] == test.accuracy


def test_each_epoch_logs_the_learning_rate_of_its_last_step(tmp_path):
    x = np.random.default_rng(0).random((64, 4)).astype("float32")  # 4 steps an epoch at batch 16
    fitted = phases.fit(StandInRun(tmp_path), "demo", tiny_model(), (x, np.arange(64) % 3),
                        FitOptions(epochs=4, batch_size=16, learning_rate=0.01, schedule="cosine"))
    # cosine from 0.01 to 0 over 16 steps, read after steps 4, 8, 12, 16
    expected = [0.01 * (1 + np.cos(np.pi * step / 16)) / 2 for step in (4, 8, 12, 16)]
    assert fitted.history["learning_rate"] == pytest.approx(expected, abs=1e-7)
    logged = records.read_history(tmp_path / "history_demo.csv")["learning_rate"]
    assert logged == pytest.approx(expected, abs=1e-7)


def test_nan_loss_stops_training_and_fails_the_phase(tmp_path):
    x = np.full((32, 4), np.nan, dtype="float32")
    with pytest.raises(FloatingPointError, match="phase nan: the loss became NaN or infinite in epoch 1;"):
        phases.fit(StandInRun(tmp_path), "nan", tiny_model(), (x, np.zeros(32)),
                   FitOptions(epochs=5, batch_size=8, learning_rate=0.01))
    assert len((tmp_path / "history_nan.csv").read_text().splitlines()) == 2  # header + the one epoch


class SignalAt(keras.callbacks.Callback):
    """Sends itself `count` SIGINTs after step `step` of epoch `epoch`; notes every step and what ran after."""

    def __init__(self, epoch, step, count):
        super().__init__()
        self.at, self.count, self.steps, self.after_signals = (epoch, step), count, [], False

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, step, logs=None):
        self.steps.append((self.epoch, step))
        if (self.epoch, step) == self.at:
            for _ in range(self.count):
                os.kill(os.getpid(), signal.SIGINT)
            self.after_signals = True


@pytest.mark.parametrize("count", [1, 2])
def test_ctrl_c_in_a_phase_ends_its_step_then_stops_before_the_epoch_counts(tmp_path, count):
    x = np.random.default_rng(0).random((64, 4)).astype("float32")  # 4 steps an epoch at batch 16
    run, signals = StandInRun(tmp_path), SignalAt(epoch=1, step=2, count=count)
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt, match="signal 2"), process.interrupted_by_signals():
        phases.fit(run, "demo", tiny_model(), (x, np.arange(64) % 3),
                   FitOptions(epochs=4, batch_size=16, learning_rate=0.01), validation=(x, np.arange(64) % 3),
                   more_callbacks=[signals])
    # One signal: the step it came in finishes, then nothing more runs (no validation, no epoch end);
    # a second signal raises where it lands.
    assert signals.after_signals == (count == 1)
    assert signals.steps == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1), (1, 2)]
    assert run.notes == [("demo", 1)]  # the epoch cut short has no checkpoint
    assert len((tmp_path / "history_demo.csv").read_text().splitlines()) == 2  # header + epoch 1
    assert signal.getsignal(signal.SIGINT) is before and process._deferred is None


def test_features_are_extracted_in_inference_mode_with_frozen_weights():
    keras.utils.set_random_seed(0)
    frozen = models.stack((4,), [keras.layers.Dense(8), keras.layers.Dropout(0.9)], name="frozen")
    frozen.trainable = False
    x = np.random.rand(10, 4).astype("float32")
    first, seconds = extraction.extract_features(frozen, x, batch_size=4)
    second, _ = extraction.extract_features(frozen, x, batch_size=4)
    assert first.shape == (10, 8) and first.dtype == np.float32 and seconds > 0
    np.testing.assert_array_equal(first, second)  # no dropout noise
    np.testing.assert_allclose(first, x @ frozen.layers[0].kernel.numpy() + frozen.layers[0].bias.numpy(),
                               rtol=1e-5, atol=1e-6)
    assert phases.trainable_params(frozen) == 0


@pytest.mark.parametrize("cache", ["memory", "disk"])
def test_validation_and_test_scores_on_cached_features_are_the_whole_models(cache, tmp_path):
    """mobilenet_transfer.py reports the frozen phase's last validation epoch, and scores the test images from
    their cached features, instead of running the whole model over them: that must be what it scores."""
    keras.utils.set_random_seed(0)
    frozen = models.stack((6,), [keras.layers.Dense(8, activation="relu"), keras.layers.Dropout(0.5)], name="f")
    frozen.trainable = False
    head = models.stack((8,), [keras.layers.Dense(3, activation="softmax")], name="h")
    rng = np.random.default_rng(0)
    x, y = rng.random((96, 6)).astype(np.float32), np.arange(96) % 3
    test_x, test_y = rng.random((30, 6)).astype(np.float32), np.arange(30) % 3
    task = tasks.Task([0, 1, 2], (x, y), validation=(x[:40], y[:40]), test=(test_x, test_y))
    fitted = phases.fit_head(StandInRun(tmp_path), "t", frozen, head, task,
                             FitOptions(epochs=3, batch_size=16, learning_rate=0.05), HeadOptions(cache, batch_size=16))
    info, test = fitted.info, fitted.test
    whole = models.compile_classifier(models.stack((6,), [frozen, head], name="whole"), 0.05)
    loss, accuracy = whole.evaluate(x[:40], y[:40], verbose=0)
    assert info["feature_cache"] == ("memory" if cache == "memory" else "miss")
    assert fitted.history["val_accuracy"][-1] == pytest.approx(accuracy)
    assert fitted.history["val_loss"][-1] == pytest.approx(loss, rel=1e-5)
    test_loss, test_accuracy = whole.evaluate(test_x, test_y, verbose=0)
    assert test.loss == pytest.approx(test_loss, rel=1e-5) and test.accuracy == pytest.approx(test_accuracy)
    np.testing.assert_array_equal(test.classes, models.predict_classes(whole, test_x))


@pytest.mark.parametrize("classes", [2, 3])
def test_a_compiled_classifier_traces_its_training_step_once(tmp_path, classes):
    # Metric and optimizer variables created inside the first step made TensorFlow trace it twice (on
    # MobileNetV2 about 12 s of every phase's first epoch); compile_classifier creates them beforehand.
    keras.utils.set_random_seed(0)
    model = models.stack((4,), [keras.layers.Dense(8, activation="relu"), models.output_layer(classes)], name="m")
    x, y = np.random.rand(64, 4).astype("float32"), np.arange(64) % classes
    traced = []
    step = model.train_step
    model.train_step = lambda data: traced.append(1) or step(data)
    phases.fit(StandInRun(tmp_path), "base", model, (x, y), FitOptions(epochs=2, batch_size=16, learning_rate=1e-2))
    assert len(traced) == 1
    assert model.optimizer.iterations.numpy() == 8  # the prebuilt optimizer is the one that trained
    assert set(model.get_metrics_result()) == {"loss", "accuracy"}


def test_fine_tuning_on_cached_activations_trains_what_the_whole_model_does(tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, size=(24, 32, 32, 3), dtype=np.uint8), np.arange(24) % 3
    feed = pipelines.Feed("scaled", lambda images: images / 127.5 - 1, batch_size=8, seed=0)
    runs = {}
    # 512 bytes of activations an image at the cut (2x2x32 float32): 24 training and validation images fit under
    # 15,000 bytes, the 12 test images on top do not, so those are left to the caller's pass
    for name, cache, limit in [("whole", False, extraction.ACTIVATION_CACHE_BYTES), ("cached", True, 2**30),
                               ("over the limit", True, 1000), ("test over the limit", True, 15_000)]:
        monkeypatch.setattr(extraction, "ACTIVATION_CACHE_BYTES", limit)
        keras.utils.set_random_seed(0)
        backbone = keras.applications.MobileNetV2(input_shape=(32, 32, 3), include_top=False, weights=None,
                                                  alpha=0.35)
        # Random weights under BatchNormalization's initial statistics shrink activations to ~1e-11 by the top
        # (no gradient, nothing would train): one pass at momentum 0 sets the statistics to this data's.
        backbones.set_batchnorm_momentum(backbone, 0.0)
        backbone(x / 127.5 - 1, training=True)
        classifier = Classifier.on_backbone(backbone, keras.layers.GlobalAveragePooling2D(), [models.output_layer(3)],
                                            [], name="model")
        model = classifier.model
        classifier.unfreeze(100)
        task = tasks.Task([0, 1, 2], (x[:18], y[:18]), validation=(x[18:], y[18:]), test=(x[12:], y[12:]))
        options = FitOptions(epochs=2, batch_size=8, learning_rate=1e-3, initial_epoch=1, feed=feed)
        fitted = phases.fine_tune(StandInRun(tmp_path / name), "fine_tune", classifier, task, options, cache)
        info, predicted, test = fitted.info, models.classes_of(fitted.validation_probabilities), fitted.test
        runs[name] = model.get_weights(), fitted.history, info, fitted.extra_seconds
        # the validation predictions it returns (for the plots) are the trained whole model's; so are the test
        # scores it gives from the cached bottom (none without the cache: the caller's pass scores them)
        np.testing.assert_array_equal(predicted, models.predict_classes(model, feed(x[18:], y[18:])))
        if name == "cached":
            np.testing.assert_array_equal(test.classes, models.predict_classes(model, feed(x[12:], y[12:])))
            assert test.accuracy == pytest.approx(np.mean(test.classes == y[12:]))
        else:
            assert test is None
    assert runs["test over the limit"][2]["feature_cache"] == "memory"
    cached = runs["cached"][2]
    assert cached["feature_cache"] == "memory" and cached["cached_up_to"] == "block_10_project_BN"
    assert runs["cached"][3] == pytest.approx(cached["feature_extraction_seconds"], abs=1e-3)
    assert runs["whole"][2] == runs["over the limit"][2] == {"feature_cache": "off", "batch_size": 8}
    assert "above ACTIVATION_CACHE_BYTES, so every epoch runs the whole backbone" in capsys.readouterr().out
    for name in ("cached", "over the limit"):
        assert runs[name][1]["epoch"] == [1, 2]
        np.testing.assert_allclose(runs[name][1]["val_loss"], runs["whole"][1]["val_loss"], rtol=1e-4)
        for a, b in zip(runs[name][0], runs["whole"][0], strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)  # Adam moved them up to 6e-3
        assert runs[name][1]["loss"][1] < runs[name][1]["loss"][0]  # it did train
    keras.utils.set_random_seed(0)
    fresh = keras.applications.MobileNetV2(input_shape=(32, 32, 3), include_top=False, weights=None, alpha=0.35)
    for layer in ("Conv_1", "block_11_depthwise"):  # the unfrozen layers trained
        assert not np.allclose(fresh.get_layer(layer).weights[0].numpy(), backbone.get_layer(layer).weights[0].numpy())
    assert np.array_equal(fresh.get_layer("block_10_project").kernel.numpy(),
                          backbone.get_layer("block_10_project").kernel.numpy())  # and the frozen ones did not
