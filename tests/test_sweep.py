"""Sweeps: every combination and seed run once, complete runs skipped on a rerun, a failing combination
reported without stopping the others; the stratified cut of task B's training set."""

import glob
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from conftest import ROOT

from transferlab import sweep, tasks
from transferlab.errors import UserError


def test_take_per_class_is_stratified_and_seeded():
    y = np.repeat([0, 1, 2], [10, 20, 30])
    x = np.arange(len(y))
    xs, ys = tasks.take_per_class(x, y, 4, seed=1)
    assert np.bincount(ys).tolist() == [4, 4, 4] and np.all(y[xs] == ys) and np.all(np.diff(xs) > 0)
    assert np.array_equal(tasks.take_per_class(x, y, 4, seed=1)[0], xs)
    assert not np.array_equal(tasks.take_per_class(x, y, 4, seed=2)[0], xs)
    with pytest.raises(UserError, match="--task_b_samples_per_class=11: class 0 has only 10 training samples"):
        tasks.take_per_class(x, y, 11, seed=1)
    with pytest.raises(UserError, match="--samples_per_class=11: class 0 has only 10 training samples"):
        tasks.take_per_class(x, y, 11, seed=1, name="SAMPLES_PER_CLASS")  # a backbone script's constant


def test_overrides_match_the_config_the_script_parsed():
    record = {"config": {"TASK_B_SAMPLES_PER_CLASS": 10, "TASK_B_CLASSES": [7, 8], "DATA_DIR": None, "SEED": 0}}
    assert sweep.matches(record, [("TASK_B_SAMPLES_PER_CLASS", "10"), ("TASK_B_CLASSES", "7,8"), ("SEED", "0")])
    assert sweep.matches(record, [("DATA_DIR", "None")])
    assert not sweep.matches(record, [("TASK_B_SAMPLES_PER_CLASS", "30")])
    renamed = {"config": {"SAMPLES_PER_CLASS": 10}}  # a backbone script's, asked for by its old name
    assert sweep.matches(renamed, [("TASK_B_SAMPLES_PER_CLASS", "10")])
    assert not sweep.matches(renamed, [("TASK_B_SAMPLES_PER_CLASS", "30")])


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


SLOW_RUN = """
import os, signal, sys, time
folder = [a.split("=", 1)[1] for a in sys.argv if a.startswith("--results_dir=")][0]
os.makedirs(folder, exist_ok=True)

def stop(signum, frame):  # as records.RunRecord does: note the interruption, then exit
    with open(os.path.join(folder, "stopped"), "w") as f:
        f.write(str(signum))
    sys.exit(130)

signal.signal(signal.SIGINT, stop)
signal.signal(signal.SIGTERM, stop)
with open(os.path.join(folder, "started"), "w") as f:
    f.write(str(os.getpid()))
time.sleep(120)
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_the_sweep_interrupts_its_running_run_once_and_stops(tmp_path, sig):
    script = tmp_path / "slow.py"
    script.write_text(textwrap.dedent(SLOW_RUN))
    process = subprocess.Popen([sys.executable, "-m", "transferlab.sweep", str(script), "--vary=x=1,2", "--seeds=1",
                                f"--results_dir={tmp_path / 'results'}"], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not glob.glob(str(tmp_path / "results" / "sweeps" / "*" / "started")) and time.time() < deadline:
        time.sleep(0.05)
    (folder,) = glob.glob(str(tmp_path / "results" / "sweeps" / "*"))
    process.send_signal(sig)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err[-2000:]
    assert "[1/2] --x=1 --seed=0: interrupted; run the same command again to finish the sweep" in err
    assert "[2/2]" not in out  # the sweep stopped there
    with open(os.path.join(folder, "stopped")) as f:
        assert f.read() == str(int(sig))  # the run got the signal and recorded itself stopped
    with open(os.path.join(folder, "started")) as f:
        with pytest.raises(ProcessLookupError):  # and is gone, not left running
            os.kill(int(f.read()), 0)


def test_where_transfer_and_scratch_cross_and_what_transfer_saves(tmp_path):
    def on_log_axis(x0, x1, fraction):  # the point `fraction` of the way from x0 to x1 on a log axis
        return 10 ** (math.log10(x0) + fraction * (math.log10(x1) - math.log10(x0)))

    transfer = [(10, 0.80), (100, 0.90), (1000, 0.95)]
    scratch = [(10, 0.50), (100, 0.85), (1000, 0.97)]
    answers = sweep.samples_for_same_accuracy(transfer, scratch)
    assert [how for *_, how in answers] == ["=", "=", "="]
    # 80% lies 0.30 / 0.35 of the way from scratch's 50% at 10 to its 85% at 100: about 72 per class
    assert [a[2] for a in answers] == [pytest.approx(on_log_axis(10, 100, 0.30 / 0.35)),
                                       pytest.approx(on_log_axis(100, 1000, 0.05 / 0.12)),
                                       pytest.approx(on_log_axis(100, 1000, 0.10 / 0.12))]
    # the gap goes from +5 points at 100 to -2 at 1000
    assert sweep.crossings(transfer, scratch) == [pytest.approx(on_log_axis(100, 1000, 0.05 / 0.07))]
    assert sweep.samples_for_same_accuracy([(10, 0.4)], scratch) == [(10, 0.4, 10, "<=")]
    assert sweep.samples_for_same_accuracy([(10, 0.99)], scratch) == [(10, 0.99, 1000, ">")]
    assert sweep.crossings([(10, 0.9), (100, 0.95)], [(10, 0.5), (100, 0.6)]) == []

    def record(run_id, per_class, transfer_acc, scratch_acc, samples):
        phase = {"train_samples": samples, "classes": [7, 8, 9], "train_seconds": 1.0, "steady_epoch_seconds": 0.1}
        return {"experiment": "mnist", "run_id": run_id, "status": "complete",
                "config": {"SEED": 0, "TASK_B_SAMPLES_PER_CLASS": per_class},
                "phases": {"transfer": {**phase, "test_accuracy": transfer_acc},
                           "scratch": {**phase, "test_accuracy": scratch_acc}}}

    records = [record("a", 10, 0.80, 0.50, 30), record("b", 100, 0.90, 0.85, 300),
               record("c", None, 0.99, 0.995, 6000)]
    assert sweep.all_samples_per_class(records, "task_b_samples_per_class") == 2000  # None: all, 6,000 / 3
    _, rows = sweep.compare.build_table(records)
    lines = sweep.data_efficiency(records, rows, "task_b_samples_per_class")
    assert len(lines) == 4
    cross = on_log_axis(100, 2000, 0.05 / 0.055)
    assert lines[0] == f"transfer and scratch cross near {cross:,.0f} samples per class"
    assert lines[1] == "transfer with 10 per class (80.00%): scratch needs about 72 per class for that"
    assert lines[3] == (f"transfer with 2,000 per class (99.00%): scratch needs about "
                        f"{on_log_axis(100, 2000, 0.14 / 0.145):,.0f} per class for that")
    assert sweep.data_efficiency(records, rows, "epochs") == []
    assert sweep.plot(records, ["TASK_B_SAMPLES_PER_CLASS"], tmp_path / "sweep.png") == {"transfer": 3, "scratch": 3}
    assert (tmp_path / "sweep.png").stat().st_size > 10_000


RECORDING_RUN = """
import json, os, sys
args = dict(a[2:].split("=", 1) for a in sys.argv[1:])
folder = os.path.join(args["results_dir"], "demo", "run-" + args["seed"])
os.makedirs(folder)
record = {"experiment": "demo", "run_id": "run-" + args["seed"], "status": "complete",
          "config": {"SEED": int(args["seed"]), "EPOCHS": int(args["epochs"])},
          "phases": {"transfer": {"train_samples": 10, "classes": [0, 1], "train_seconds": 1.0,
                                  "steady_epoch_seconds": 0.1, "test_accuracy": 0.5 + int(args["seed"]) / 10}}}
with open(os.path.join(folder, "record.json"), "w") as f:
    json.dump(record, f)
"""


def test_a_sweep_without_vary_runs_the_defaults_once_per_seed_and_groups_them(tmp_path):
    script = tmp_path / "demo.py"
    script.write_text(textwrap.dedent(RECORDING_RUN))
    result = subprocess.run([sys.executable, "-m", "transferlab.sweep", str(script), "--seeds=3", "--epochs=2",
                             f"--results_dir={tmp_path / 'results'}"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "sweep of 3 runs (1 combinations x 3 seeds)" in result.stdout
    assert [line.split(" ...")[0] for line in result.stdout.splitlines() if line.endswith(" ...")] == [
        "[1/3] --seed=0", "[2/3] --seed=1", "[3/3] --seed=2"]
    assert "60.00% ± 10.00" in result.stdout  # one row: the mean and std of the seeds' 50, 60, 70%
    assert not glob.glob(str(tmp_path / "results" / "sweeps" / "*" / "sweep.png"))  # nothing varied to plot against


@pytest.mark.parametrize("flag, said", [
    ("--address=127.0.0.1:6379", "error: --address is for --engine=ray"),
    ("--tracking=wandb", "error: --tracking=wandb: expected one of auto, mlflow, none"),
])
def test_a_sweep_refuses_an_engine_or_tracker_it_does_not_have_in_one_line(flag, said, tmp_path):
    result = subprocess.run([sys.executable, "-m", "transferlab.sweep", "mnist_transfer.py", flag,
                             f"--results_dir={tmp_path}"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and result.stderr == said + "\n" and not os.listdir(tmp_path)
