"""Sweeps: every combination and seed run once, complete runs skipped on a rerun, a failing combination
reported without stopping the others; the stratified cut of task B's training set."""

import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from transferlab import data, sweep
from transferlab.config import UserError


def test_take_per_class_is_stratified_and_seeded():
    y = np.repeat([0, 1, 2], [10, 20, 30])
    x = np.arange(len(y))
    xs, ys = data.take_per_class(x, y, 4, seed=1)
    assert np.bincount(ys).tolist() == [4, 4, 4] and np.all(y[xs] == ys) and np.all(np.diff(xs) > 0)
    assert np.array_equal(data.take_per_class(x, y, 4, seed=1)[0], xs)
    assert not np.array_equal(data.take_per_class(x, y, 4, seed=2)[0], xs)
    with pytest.raises(UserError, match="--task_b_samples_per_class=11: class 0 has only 10 training samples"):
        data.take_per_class(x, y, 11, seed=1)


def test_overrides_match_the_config_the_script_parsed():
    record = {"config": {"TASK_B_SAMPLES_PER_CLASS": 10, "TASK_B_CLASSES": [7, 8], "DATA_DIR": None, "SEED": 0}}
    assert sweep.matches(record, [("TASK_B_SAMPLES_PER_CLASS", "10"), ("TASK_B_CLASSES", "7,8"), ("SEED", "0")])
    assert sweep.matches(record, [("DATA_DIR", "None")])
    assert not sweep.matches(record, [("TASK_B_SAMPLES_PER_CLASS", "30")])


def test_sweep_runs_each_combination_skips_complete_runs_and_reports_failures(mnist_dir, tmp_path):
    results = tmp_path / "results"
    command = [sys.executable, "-m", "transferlab.sweep", "mnist_transfer.py",
               "--vary=task_b_samples_per_class=5,10,1000", "--seeds=1", "--epochs=1", "--run_scratch=False",
               f"--data_dir={mnist_dir}", f"--results_dir={results}"]
    first = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert first.returncode == 1, first.stderr[-3000:]  # one combination failed
    assert "sweep of 3 runs (3 combinations x 1 seeds)" in first.stdout
    assert ("failed: --task_b_samples_per_class=1000 --seed=0: error: --task_b_samples_per_class=1000: class 0 "
            "has only 40 training samples") in first.stdout
    paths = glob.glob(str(results / "sweeps" / "mnist_transfer-*" / "mnist" / "*" / "record.json"))
    recorded = sorted(json.load(open(p))["config"]["TASK_B_SAMPLES_PER_CLASS"] for p in paths)
    assert recorded == [5, 10]
    for path in paths:
        record = json.load(open(path))
        assert record["data"]["samples"]["task_b_train"] == 3 * record["config"]["TASK_B_SAMPLES_PER_CLASS"]
    (folder,) = glob.glob(str(results / "sweeps" / "mnist_transfer-*"))
    assert os.path.getsize(os.path.join(folder, "sweep.png")) > 10_000
    assert f"plot: {os.path.join(folder, 'sweep.png')} (points: base 2, transfer 2)" in first.stdout
    assert "transfer acc" in first.stdout  # the compare table of the sweep's runs

    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.stdout.count("complete already, skipped") == 2 and again.returncode == 1
    assert len(glob.glob(os.path.join(folder, "mnist", "*", "record.json"))) == 2
