"""FREEZE_UP_TO: how many of the transferred feature layers stay frozen in the transfer phase."""

import glob
import json
import os

import keras
import numpy as np
import pytest
from conftest import run_script

from transferlab import models
from transferlab.errors import UserError


def features():
    return models.stack((10, 10, 1), [keras.layers.Conv2D(4, 3, name="c1"), keras.layers.Conv2D(4, 3, name="c2"),
                                      keras.layers.Flatten(name="flat")], name="features")


@pytest.mark.parametrize("value, count", [(None, 3), (0, 0), (2, 2), (3, 3), ("c1", 1), ("flat", 3)])
def test_frozen_count_takes_a_count_or_a_name(value, count):
    assert models.frozen_count(features(), value) == count


@pytest.mark.parametrize("value, message", [
    (4, "--freeze_up_to=4: expected 0 to 3 frozen layers, or a layer name (c1, c2, flat)"),
    (-1, "--freeze_up_to=-1: expected 0 to 3"),
    ("conv9", "--freeze_up_to=conv9: no such feature layer; the layers are c1, c2, flat"),
])
def test_frozen_count_refuses_what_is_not_there(value, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        models.frozen_count(features(), value)


def test_freeze_first_keeps_the_weights_and_freezes_only_the_first_layers():
    model = features()
    frozen, trainable = models.freeze_first(model, 1)
    assert [layer.name for layer in frozen.layers] == ["c1"] and [layer.name for layer in trainable] == ["c2", "flat"]
    assert frozen.trainable_weights == [] and all(layer.trainable for layer in trainable)
    x = np.random.default_rng(0).random((2, 10, 10, 1)).astype(np.float32)
    rest = models.stack(frozen.output_shape[1:], trainable, name="rest")
    np.testing.assert_allclose(rest(frozen(x)), model(x), rtol=1e-6)  # the same network, cut in two
    assert models.freeze_first(model, 0)[0] is None and not any(w for w in model.non_trainable_weights)


def transfer_phase(results):
    [path] = glob.glob(os.path.join(results, "mnist", "*", "record.json"))
    with open(path) as f:
        return json.load(f)["phases"]["transfer"]


def test_mnist_transfer_with_part_or_none_of_the_features_frozen(mnist_dir, tmp_path):
    all_frozen = 411_843  # head B alone (test_mnist_e2e)
    conv3 = 3 * 3 * 32 * 128 + 128
    for value, frozen, trainable, cache in (("pool1", 3, all_frozen + conv3, "memory"),
                                            (0, 0, all_frozen + conv3 + 3 * 3 * 32 + 32 + 3 * 3 * 32 * 32 + 32, "off")):
        results = tmp_path / str(value)
        result = run_script("mnist_transfer.py", "--epochs=1", "--run_scratch=False", f"--freeze_up_to={value}",
                            f"--data_dir={mnist_dir}", f"--results_dir={results}", "--tensorboard=False")
        assert result.returncode == 0, result.stderr[-3000:]
        phase = transfer_phase(results)
        assert phase["frozen_layers"] == frozen and phase["trainable_params"] == trainable
        assert phase["feature_cache"] == cache and 0 <= phase["test_accuracy"] <= 1
    result = run_script("mnist_transfer.py", "--freeze_up_to=conv9", f"--data_dir={mnist_dir}",
                        f"--results_dir={tmp_path / 'bad'}")
    assert result.returncode == 2 and "--freeze_up_to=conv9: no such feature layer" in result.stderr
    assert not (tmp_path / "bad").exists()
