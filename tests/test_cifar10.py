"""cifar10_transfer.py end to end: a tiny generated image tree and a tiny npz always; a real subset of the
CIFAR-10 JPEG tree when ../shared is beside the project."""

import glob
import json
import os
import shutil

import numpy as np
import pytest
from conftest import SHARED, check_the_model_in_use, run_script
from PIL import Image

from transferlab import sources

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
SHARED_CIFAR = os.path.join(SHARED, "datasets", "cifar10")


def synthetic_cifar(per_class, rng):
    """32x32 RGB images whose colour says the class, over noise."""
    images, labels = [], []
    for label in range(10):
        colour = np.array([25 * label, 255 - 25 * label, (80 * label) % 256])
        for _ in range(per_class):
            noise = rng.integers(-30, 30, size=(32, 32, 3))
            images.append(np.clip(colour + noise, 0, 255).astype(np.uint8))
            labels.append(label)
    return np.stack(images), np.array(labels)


def record_of(results):
    paths = glob.glob(os.path.join(results, "cifar10", "*", "record.json"))
    assert len(paths) == 1, paths
    with open(paths[0]) as f:
        return json.load(f)


@pytest.fixture
def cifar_tree(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "data" / "cifar10"
    for split, per_class in (("train", 20), ("test", 4)):
        x, y = synthetic_cifar(per_class, rng)
        for i, (image, label) in enumerate(zip(x, y, strict=True)):
            folder = root / split / CLASSES[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"{i:04d}.{'png' if i % 2 else 'jpg'}")
    return tmp_path / "data"


def test_image_tree_run_records_validation_and_test_and_uses_the_cache(cifar_tree, tmp_path):
    env = {"TRANSFERLAB_CACHE_DIR": str(tmp_path / "cache")}
    results = tmp_path / "results"
    result = run_script("cifar10_transfer.py", "--epochs=2", f"--data_dir={cifar_tree}", f"--results_dir={results}",
                        env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    record = record_of(results)
    assert record["status"] == "complete" and record["experiment"] == "cifar10"
    assert record["data"]["source"] == str(cifar_tree / "cifar10") and record["data"]["cache"] == "miss"
    assert record["data"]["samples"] == {"task_a_train": 80, "task_a_validation": 20, "task_a_test": 20,
                                         "task_b_train": 80, "task_b_validation": 20, "task_b_test": 20}
    assert list(record["phases"]) == ["base", "transfer", "scratch"]
    # The saved model on the tree's raw test images of task B (its five class folders): predict gives the
    # model's probabilities and scores what the run recorded for transfer; LiteRT and SavedModel exports pass.
    folder = os.path.dirname(glob.glob(str(results / "cifar10" / "*" / "record.json"))[0])
    labels = open(os.path.join(folder, "labels.txt")).read().splitlines()
    assert labels == ["dog", "frog", "horse", "ship", "truck"]
    for label in labels:
        shutil.copytree(cifar_tree / "cifar10" / "test" / label, tmp_path / "task_b_test" / label)
    rows, exports = check_the_model_in_use(folder, tmp_path / "task_b_test")
    right = [row["top"][0]["label"] == os.path.basename(os.path.dirname(row["path"])) for row in rows]
    assert len(rows) == 20 and np.mean(right) == pytest.approx(record["phases"]["transfer"]["test_accuracy"])
    assert exports["model.tflite"]["accuracy_keras"] == pytest.approx(np.mean(right))
    for phase in record["phases"].values():
        assert 0 <= phase["val_accuracy"] <= 1 and phase["val_loss"] >= 0
        assert 0 <= phase["test_accuracy"] <= 1 and phase["epochs"] == 2
    transfer = record["phases"]["transfer"]
    assert transfer["classes"] == [5, 6, 7, 8, 9] and transfer["feature_cache"] == "memory"
    assert transfer["trainable_params"] == 800 * 128 + 128 + 128 * 5 + 5  # a new 5-way head on 800 features
    assert "val acc" in result.stdout

    # Second run with another seed: the decoded tree comes from the cache.
    result = run_script("cifar10_transfer.py", "--epochs=1", "--run_scratch=False", "--seed=7",
                        f"--data_dir={cifar_tree}", f"--results_dir={tmp_path / 'again'}", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert record_of(tmp_path / "again")["data"]["cache"] == "hit"


def test_npz_source_with_keras_layout(tmp_path):
    rng = np.random.default_rng(1)
    x, y = synthetic_cifar(10, rng)
    xt, yt = synthetic_cifar(2, rng)
    folder = tmp_path / "data"
    folder.mkdir()
    np.savez(folder / "cifar10.npz", x_train=x, y_train=y.reshape(-1, 1).astype(np.uint8), x_test=xt,
             y_test=yt.reshape(-1, 1).astype(np.uint8))
    result = run_script("cifar10_transfer.py", "--epochs=1", "--run_scratch=False", "--feature_cache=False",
                        f"--data_dir={folder}", f"--results_dir={tmp_path / 'r'}")
    assert result.returncode == 0, result.stderr[-3000:]
    record = record_of(tmp_path / "r")
    assert record["data"]["source"] == str(folder / "cifar10.npz")
    assert record["phases"]["transfer"]["feature_cache"] == "off"
    assert record["data"]["samples"]["task_b_train"] == 40


def test_help_lists_only_the_constants_block():
    result = run_script("cifar10_transfer.py", "--help")
    assert result.returncode == 0
    assert "--validation_split=0.2" in result.stdout and "--batch_size=100" in result.stdout
    assert "--class_names" not in result.stdout  # a fact of the data, defined after the block


def test_missing_data_names_both_layouts(tmp_path):
    result = run_script("cifar10_transfer.py", f"--data_dir={tmp_path}", f"--results_dir={tmp_path / 'r'}")
    assert result.returncode == 2
    assert result.stderr.strip().endswith("put Keras's cifar10.npz (arrays x_train, y_train, x_test, y_test)"
                                          " or a cifar10/train/<class>/ image tree there")


@pytest.mark.skipif(not os.path.isdir(SHARED_CIFAR), reason="the CIFAR-10 JPEG tree is in ../shared only")
def test_real_cifar_subset_transfer_beats_chance_and_scratch(tmp_path, monkeypatch):
    # Task A gets 1,000 real images per class to learn features; task B only 50 per class, too few to
    # learn from scratch. Symlinks build the subset tree without copying the data.
    root = tmp_path / "data" / "cifar10"
    for split in ("train", "test"):
        for label, name in enumerate(CLASSES):
            count = {"train": 1000 if label < 5 else 50, "test": 300}[split]
            folder = root / split / name
            folder.mkdir(parents=True)
            for file in sorted(os.listdir(os.path.join(SHARED_CIFAR, split, name)))[:count]:
                os.symlink(os.path.join(SHARED_CIFAR, split, name, file), folder / file)
    cache = tmp_path / "cache"
    monkeypatch.setenv("TRANSFERLAB_CACHE_DIR", str(cache))
    first = sources.load_image_tree(str(root), CLASSES, (32, 32, 3))
    second = sources.load_image_tree(str(root), CLASSES, (32, 32, 3))
    assert (first[2]["cache"], second[2]["cache"]) == ("miss", "hit")

    result = run_script("cifar10_transfer.py", "--epochs=5", f"--data_dir={tmp_path / 'data'}",
                        f"--results_dir={tmp_path / 'results'}", env={"TRANSFERLAB_CACHE_DIR": str(cache)})
    assert result.returncode == 0, result.stderr[-3000:]
    record = record_of(tmp_path / "results")
    assert record["data"]["cache"] == "hit"
    phases = record["phases"]
    print({name: round(phase["test_accuracy"], 4) for name, phase in phases.items()})
    assert phases["transfer"]["train_samples"] == 200
    assert phases["transfer"]["test_accuracy"] > 0.35  # chance is 0.2
    assert phases["transfer"]["test_accuracy"] > phases["scratch"]["test_accuracy"] + 0.03
