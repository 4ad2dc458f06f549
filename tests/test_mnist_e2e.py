"""mnist_transfer.py end to end, as a user runs it: on tiny synthetic data always, on real MNIST when
../shared is beside the project."""

import csv
import glob
import hashlib
import json
import os
import re

import numpy as np
import pytest
from conftest import SHARED_MNIST, check_the_model_in_use, run_script
from PIL import Image

from transferlab import images

PHASE_KEYS = {"classes", "train_samples", "epochs", "train_seconds", "first_epoch_seconds",
              "steady_epoch_seconds", "test_loss", "test_accuracy", "trainable_params", "batch_size"}


def only_record(results):
    paths = glob.glob(os.path.join(results, "mnist", "*", "record.json"))
    assert len(paths) == 1, paths
    with open(paths[0]) as f:
        return json.load(f), os.path.dirname(paths[0])


def test_full_experiment_on_synthetic_data_writes_a_complete_record(mnist_dir, tmp_path):
    results = tmp_path / "results"
    result = run_script("mnist_transfer.py", "--epochs=2", f"--data_dir={mnist_dir}", f"--results_dir={results}",
                        "--head_batch_size=32")
    assert result.returncode == 0, result.stderr[-3000:]
    record, folder = only_record(results)
    for line in ("== base: 280 images of [0, 1, 2, 3, 4, 5, 6], 2 epochs\n",  # each phase says what it learns
                 "== transfer: 120 images of [7, 8, 9], 7 of 7 feature layers frozen, 2 epochs\n",
                 "== scratch: 120 images of [7, 8, 9], random init, 2 epochs\n"):
        assert line in result.stdout

    assert record["experiment"] == "mnist" and record["status"] == "complete"
    assert record["run_id"] == os.path.basename(folder)
    assert record["config"]["EPOCHS"] == 2 and record["config"]["TASK_B_CLASSES"] == [7, 8, 9]
    assert record["config"]["HEAD_BATCH_SIZE"] == 32 and record["config"]["SEED"] == 42
    env = record["environment"]
    assert {"python", "tensorflow", "keras", "numpy", "cpu_count", "platform", "git_commit"} <= set(env)
    assert env["tensorflow"] == "2.21.0"
    npz = os.path.join(mnist_dir, "mnist.npz")
    assert record["data"]["source"] == os.path.abspath(npz)
    assert record["data"]["sha256"] == hashlib.sha256(open(npz, "rb").read()).hexdigest()
    assert record["data"]["samples"] == {"task_a_train": 280, "task_a_test": 70,
                                         "task_b_train": 120, "task_b_test": 30}

    phases = record["phases"]
    assert list(phases) == ["base", "transfer", "scratch"]
    for name, phase in phases.items():
        assert PHASE_KEYS <= set(phase), name
        assert phase["epochs"] == 2 and phase["train_seconds"] > 0
        assert phase["first_epoch_seconds"] > 0 and phase["steady_epoch_seconds"] > 0
        assert 0 <= phase["test_accuracy"] <= 1 and phase["test_loss"] >= 0
    assert phases["base"]["classes"] == [0, 1, 2, 3, 4, 5, 6] and phases["base"]["train_samples"] == 280
    assert phases["transfer"]["train_samples"] == 120 == phases["scratch"]["train_samples"]
    # Only head B trains in transfer: 3200*128+128 + 128*16+16 + 16*3+3 = 411,843 parameters.
    assert phases["transfer"]["trainable_params"] == 411_843
    assert phases["scratch"]["trainable_params"] > phases["transfer"]["trainable_params"]
    transfer = phases["transfer"]
    assert transfer["feature_cache"] == "memory" and transfer["batch_size"] == 32
    assert 0 < transfer["feature_extraction_seconds"] < transfer["train_seconds"]
    # The synthetic bars are easy: trained features must carry over to the held-out classes.
    assert transfer["test_accuracy"] > 0.6

    for name in phases:
        with open(os.path.join(folder, f"history_{name}.csv")) as f:
            rows = list(csv.DictReader(f))
        assert [row["epoch"] for row in rows] == ["0", "1"]
        assert {"accuracy", "loss"} <= set(rows[0])
    assert os.path.getsize(os.path.join(folder, "learning_curves.png")) > 10_000
    # Each finished phase leaves its weights (for a resumed run); no checkpoints remain.
    assert sorted(os.listdir(folder)) == ["base.weights.h5", "confusion_matrix.png", "history_base.csv",
                                          "history_scratch.csv", "history_transfer.csv", "labels.txt",
                                          "learning_curves.png", "mistakes.npz", "model.keras", "predictions.csv",
                                          "record.json", "report.html", "sample_predictions.png",
                                          "scratch.weights.h5", "tensorboard", "transfer.weights.h5"]
    # The final model's digits, one a row, and the report shows the ones it got wrong from the arrays.
    with open(os.path.join(folder, "predictions.csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == record["final"]["images"] and {row["label"] for row in rows} <= {"7", "8", "9"}
    wrong = sum(row["label"] != row["predicted"] for row in rows)
    assert wrong == round((1 - record["final"]["accuracy"]) * len(rows))
    page = open(os.path.join(folder, "report.html")).read()
    assert page.count("<div class=card><img") == min(wrong, 200) and page.count("image ") >= min(wrong, 200)
    # The transferred model, usable on its own: raw 28x28x1 digits in, task B's probabilities out.
    assert open(os.path.join(folder, "labels.txt")).read() == "7\n8\n9\n"
    assert record["model"] == {"file": "model.keras", "labels": "labels.txt", "phase": "transfer",
                               "input": {"shape": [28, 28, 1], "dtype": "uint8", "pixels": images.CONTRACT}}
    # On the raw test digits 7-9 (uint8 PNGs of mnist.npz's arrays, one folder per label) predict gives the
    # model's probabilities and scores what the run recorded for transfer; LiteRT and SavedModel exports pass.
    with np.load(npz, allow_pickle=False) as f:
        x, y = f["x_test"], f["y_test"]
    for i in np.flatnonzero(np.isin(y, [7, 8, 9])):
        (tmp_path / "digits" / str(y[i])).mkdir(parents=True, exist_ok=True)
        Image.fromarray(x[i]).save(tmp_path / "digits" / str(y[i]) / f"{i}.png")
    rows, exports = check_the_model_in_use(folder, tmp_path / "digits")
    right = [row["top"][0]["label"] == os.path.basename(os.path.dirname(row["path"])) for row in rows]
    assert len(rows) == 30 and np.mean(right) == pytest.approx(transfer["test_accuracy"])
    assert exports["model.tflite"]["accuracy_keras"] == pytest.approx(np.mean(right))
    for name in ("base", "transfer", "scratch"):  # TENSORBOARD is on by default: logs per phase, for training
        assert glob.glob(os.path.join(folder, "tensorboard", name, "train", "events.out.tfevents.*")), name
    assert f"record: {os.path.join(folder, 'record.json')}" in result.stdout
    for name in ("base", "transfer", "scratch"):
        assert f"\n{name} " in result.stdout  # the summary table


def test_published_frozen_path_and_no_scratch(mnist_dir, tmp_path):
    result = run_script("mnist_transfer.py", "--epochs=1", "--feature_cache=False", "--run_scratch=False",
                        f"--data_dir={mnist_dir}", f"--results_dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    record, _ = only_record(tmp_path)
    assert list(record["phases"]) == ["base", "transfer"]
    # progress without a terminal: one line per epoch of every phase, with its metrics
    assert re.search(r"^Epoch 1/1 - \d+\.\ds - accuracy: \d\.\d{4} - loss: ", result.stdout, re.M), result.stdout
    transfer = record["phases"]["transfer"]
    assert transfer["feature_cache"] == "off" and "feature_extraction_seconds" not in transfer
    assert transfer["trainable_params"] == 411_843  # frozen features stay frozen inside fit

    # A second run that changes only the transfer phase takes the first one's base network instead of
    # training it again.
    result = run_script("mnist_transfer.py", "--epochs=1", "--reuse_base=True", "--run_scratch=False",
                        f"--data_dir={mnist_dir}", f"--results_dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "reused from run" in result.stdout
    second = [json.loads(p.read_text()) for p in (tmp_path / "mnist").glob("*/record.json")]
    second = [r for r in second if r["run_id"] != record["run_id"]][0]
    assert second["phases"]["base"] == {**record["phases"]["base"], "reused_from": record["run_id"]}
    assert second["phases"]["transfer"]["feature_cache"] == "memory"


def test_augmentation_turns_the_cache_off(mnist_dir, tmp_path):
    result = run_script("mnist_transfer.py", "--epochs=1", "--augment=True", "--run_scratch=False",
                        f"--data_dir={mnist_dir}", f"--results_dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    record, _ = only_record(tmp_path)
    assert record["phases"]["transfer"]["feature_cache"] == "off"


def test_data_dir_from_environment_and_missing_file_message(mnist_dir, tmp_path):
    result = run_script("mnist_transfer.py", "--epochs=1", "--run_scratch=False", f"--results_dir={tmp_path}",
                        env={"TRANSFER_DATA_DIR": str(mnist_dir)})
    assert result.returncode == 0, result.stderr[-3000:]
    record, _ = only_record(tmp_path)
    assert record["data"]["source"] == os.path.abspath(os.path.join(mnist_dir, "mnist.npz"))

    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_script("mnist_transfer.py", f"--data_dir={empty}", f"--results_dir={tmp_path / 'r'}")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: mnist.npz not found in {empty} and the download failed")
    assert lines[0].endswith(
        "put Keras's mnist.npz (arrays x_train, y_train, x_test, y_test) or a mnist/train/<class>/ image tree there")
    assert not (tmp_path / "r").exists()


@pytest.mark.skipif(not os.path.exists(SHARED_MNIST), reason="real MNIST is in ../shared only")
def test_real_mnist_subset_transfer_beats_chance_and_scratch(tmp_path):
    # Task A: 3,000 real digits 0-6 to learn features; task B: only 10 images of each of 7, 8, 9,
    # where training from scratch has too little data and transferred features should shine.
    rng = np.random.default_rng(0)
    with np.load(SHARED_MNIST, allow_pickle=False) as f:
        x, y, x_test, y_test = f["x_train"], f["y_train"], f["x_test"], f["y_test"]
    a = rng.choice(np.flatnonzero(y < 7), 3000, replace=False)
    b = np.concatenate([rng.choice(np.flatnonzero(y == d), 10, replace=False) for d in (7, 8, 9)])
    keep = np.concatenate([a, b])
    data = tmp_path / "data"
    data.mkdir()
    np.savez(data / "mnist.npz", x_train=x[keep], y_train=y[keep], x_test=x_test, y_test=y_test)

    result = run_script("mnist_transfer.py", "--epochs=5", "--batch_size=16", "--head_batch_size=16",
                        f"--data_dir={data}", f"--results_dir={tmp_path / 'results'}")
    assert result.returncode == 0, result.stderr[-3000:]
    record, _ = only_record(tmp_path / "results")
    phases = record["phases"]
    print({name: round(phase["test_accuracy"], 4) for name, phase in phases.items()})
    assert phases["transfer"]["train_samples"] == 30 and phases["transfer"]["classes"] == [7, 8, 9]
    assert phases["base"]["test_accuracy"] > 0.9
    assert phases["transfer"]["test_accuracy"] > 0.7  # chance is 1/3
    assert phases["transfer"]["test_accuracy"] > phases["scratch"]["test_accuracy"] + 0.05


def test_same_seed_with_determinism_gives_identical_numbers(mnist_dir, tmp_path):
    numbers = []
    for attempt in ("first", "second"):
        result = run_script("mnist_transfer.py", "--epochs=2", "--deterministic=True", "--run_scratch=False",
                            f"--data_dir={mnist_dir}", f"--results_dir={tmp_path / attempt}")
        assert result.returncode == 0, result.stderr[-3000:]
        record, _ = only_record(tmp_path / attempt)
        numbers.append({name: (phase["test_loss"], phase["test_accuracy"]) for name, phase in record["phases"].items()})
    assert numbers[0] == numbers[1]
    assert set(numbers[0]) == {"base", "transfer"}
