"""Interrupted runs: Ctrl-C / SIGTERM and kill -9 mid-phase, then resumed, give the record an uninterrupted
run gives; resuming is refused with one line when it cannot be right."""

import ast
import glob
import json
import os
import shlex
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from conftest import ROOT, make_image_folder, run_script

from transferlab import files, models, phases, records
from transferlab.errors import UserError
from transferlab.phases import StandInRun

EPOCHS = 8  # long enough on the tiny data to be stopped in the middle of a phase


def args(mnist_dir, results):
    return [f"--epochs={EPOCHS}", "--deterministic=True", f"--data_dir={mnist_dir}", f"--results_dir={results}"]


def record_of(results, experiment="mnist"):
    paths = glob.glob(os.path.join(results, experiment, "*", "record.json"))
    assert len(paths) == 1, paths
    with open(paths[0]) as f:
        return json.load(f), os.path.dirname(paths[0])


def start_and_stop(command, results, phase, sig, experiment="mnist"):
    """Start `command` (a script and its arguments), wait until `phase` has finished two epochs, send
    `sig`; returns (exit code, stderr)."""
    process = subprocess.Popen([sys.executable, *command], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        try:
            record, _ = record_of(results, experiment)
            if record.get("progress", {}).get("phase") == phase and record["progress"]["epochs_finished"] >= 2:
                break
        except (AssertionError, ValueError, OSError):  # not created yet
            pass
        time.sleep(0.02)
    process.send_signal(sig)
    _, err = process.communicate(timeout=300)
    return process.returncode, err


def outcome(folder, record):
    """What must not depend on interruptions: every phase's numbers and every epoch's history."""
    histories = {name: open(os.path.join(folder, f"history_{name}.csv")).read() for name in record["phases"]}
    numbers = {name: (p["test_loss"], p["test_accuracy"], p["epochs"]) for name, p in record["phases"].items()}
    return numbers, histories


def test_a_run_interrupted_then_killed_resumes_to_the_uninterrupted_record(mnist_dir, tmp_path):
    result = run_script("mnist_transfer.py", *args(mnist_dir, tmp_path / "straight"))
    assert result.returncode == 0, result.stderr[-3000:]
    expected = outcome(*reversed(record_of(tmp_path / "straight")))

    # SIGINT (Ctrl-C) in the middle of phase "base": status interrupted, the epoch it reached, the command.
    results = tmp_path / "stopped"
    script = os.path.join(ROOT, "mnist_transfer.py")
    code, err = start_and_stop([script, *args(mnist_dir, results)], results, "base", signal.SIGINT)
    record, folder = record_of(results)
    assert code == 130, err[-3000:]
    assert record["status"] == "interrupted" and record["phases"] == {}
    assert record["progress"]["phase"] == "base" and 2 <= record["progress"]["epochs_finished"] < EPOCHS
    command = err.strip().splitlines()[-1]
    assert command == f"resume with: python {script} {' '.join(args(mnist_dir, results))} --resume={record['run_id']}"

    # Resumed, then killed with kill -9 in the middle of phase "scratch": the record stays readable.
    code, _ = start_and_stop(shlex.split(command.removeprefix("resume with: python ")), results, "scratch",
                             signal.SIGKILL)
    record, folder = record_of(results)
    assert code == -signal.SIGKILL and record["status"] == "running" and list(record["phases"]) == ["base", "transfer"]
    assert 2 <= record["progress"]["epochs_finished"] < EPOCHS

    # --resume=latest finds it (its process is gone); base and transfer are restored, scratch goes on.
    resumed = run_script("mnist_transfer.py", *args(mnist_dir, results), "--resume=latest")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.count("weights restored, not trained again") == 2
    assert f"resuming phase scratch after epoch {record['progress']['epochs_finished']}" in resumed.stdout
    record, folder = record_of(results)
    assert record["status"] == "complete" and "progress" not in record
    assert [r["status_before"] for r in record["resumed"]] == ["interrupted", "running"]
    assert outcome(folder, record) == expected
    assert not os.path.exists(os.path.join(folder, "checkpoints"))


def test_fine_tuning_on_cached_activations_resumes_to_the_uninterrupted_record(tmp_path, cache_dir):
    make_image_folder(tmp_path / "images", per_class=24, bad_files=False)
    # BatchNormalization adapting: random weights under their initial statistics pass almost nothing to the
    # top (see test_phases), the adapting layers above the cut bring the signal back, so the histories move.
    common = [f"--data_dir={tmp_path / 'images'}", "--weights=None", "--image_size=32", "--epochs=1", "--head=8",
              "--fine_tune_epochs=6", "--fine_tune_batchnorm=True", "--run_scratch=False", "--batch_size=8",
              "--deterministic=True", "--tensorboard=False"]
    result = run_script("mobilenet_transfer.py", *common, f"--results_dir={tmp_path / 'straight'}")
    assert result.returncode == 0, result.stderr[-3000:]
    record, folder = record_of(tmp_path / "straight", "mobilenet")
    assert record["phases"]["fine_tune"]["feature_cache"] == "memory"
    expected = open(os.path.join(folder, "history_fine_tune.csv")).read()
    assert len(set(records.read_history(os.path.join(folder, "history_fine_tune.csv"))["loss"])) > 1  # it moved

    results = tmp_path / "stopped"
    code, err = start_and_stop([os.path.join(ROOT, "mobilenet_transfer.py"), *common, f"--results_dir={results}"],
                               results, "fine_tune", signal.SIGTERM, "mobilenet")
    record, folder = record_of(results, "mobilenet")
    assert code == 130 and record["status"] == "interrupted", err[-3000:]
    finished = record["progress"]["epochs_finished"]
    resumed = run_script("mobilenet_transfer.py", *common, f"--results_dir={results}", "--resume=latest")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming phase fine_tune after epoch {finished}" in resumed.stdout
    record, folder = record_of(results, "mobilenet")
    assert record["status"] == "complete" and record["phases"]["fine_tune"]["feature_cache"] == "memory"
    assert open(os.path.join(folder, "history_fine_tune.csv")).read() == expected


def test_resume_is_refused_with_one_line_and_the_record_untouched(mnist_dir, tmp_path):
    results = tmp_path / "results"
    folder = results / "mnist" / "20260101-000000-000000-abcd"
    folder.mkdir(parents=True)
    help_text = run_script("mnist_transfer.py", "--help").stdout  # every constant with its default
    config = {line.split("=")[0].strip()[2:].upper(): ast.literal_eval(line.split("=", 1)[1].split("  ")[0])
              for line in help_text.splitlines() if line.startswith("  --") and "=" in line}
    config["EPOCHS"] = 3
    record = {"run_id": folder.name, "status": "interrupted", "pid": 1, "host": "elsewhere", "config": config,
              "environment": {"command": "python mnist_transfer.py --epochs=3"}, "phases": {}}
    (folder / "record.json").write_text(json.dumps(record))
    before = (folder / "record.json").read_bytes()
    cases = [
        (["--resume=latest"], f"error: cannot resume {folder.name} with changed constants: --data_dir was None there"
                              f" and is '{mnist_dir}' now, --epochs was 3 there and is 10 now, --results_dir was "
                              f"'results' there and is '{results}' now; resume with the command that ran it plus "
                              "--resume (python mnist_transfer.py --epochs=3)"),
        (["--resume=nosuchrun"], "error: --resume=nosuchrun: no run record at"),
    ]
    for extra, message in cases:
        result = run_script("mnist_transfer.py", f"--data_dir={mnist_dir}", f"--results_dir={results}", *extra)
        assert result.returncode == 2, result.stderr[-2000:]
        assert result.stderr.strip().startswith(message) and len(result.stderr.strip().splitlines()) == 1
    assert (folder / "record.json").read_bytes() == before and os.listdir(results / "mnist") == [folder.name]


def write_record(results, run_id, **fields):
    folder = os.path.join(results, "demo", run_id)
    os.makedirs(folder)
    files.write_json(os.path.join(folder, "record.json"),
                       {"run_id": run_id, "config": {"SEED": 1}, "environment": {"command": "x"}, **fields})


def test_find_resumable_picks_the_newest_unfinished_run_whose_process_is_gone(tmp_path):
    write_record(tmp_path, "20260101-1", status="interrupted")
    write_record(tmp_path, "20260102-1", status="running", pid=2**22 + 7, host="elsewhere")  # killed elsewhere
    write_record(tmp_path, "20260103-1", status="complete")
    write_record(tmp_path, "20260104-1", status="running", pid=os.getpid(), host=os.uname().nodename)  # alive
    assert records.find_resumable(tmp_path, "demo", "latest", {"SEED": 1, "RESUME": "latest"})["run_id"] == \
        "20260102-1"
    assert records.find_resumable(tmp_path, "demo", None, {"SEED": 1}) is None
    with pytest.raises(UserError, match="that run is complete; there is nothing to resume"):
        records.find_resumable(tmp_path, "demo", "20260103-1", {"SEED": 1})
    with pytest.raises(UserError, match=f"that run is still going \\(pid {os.getpid()}\\); stop it first"):
        records.find_resumable(tmp_path, "demo", "20260104-1", {"SEED": 1})
    with pytest.raises(UserError, match="--seed was 1 there and is 2 now"):
        records.find_resumable(tmp_path, "demo", "20260101-1", {"SEED": 2})
    with pytest.raises(UserError, match="no unfinished other run in"):
        records.find_resumable(tmp_path, "other", "latest", {"SEED": 1})


def test_resume_command_replaces_any_resume_flag():
    assert records.resume_command("R2", ["x.py", "--epochs=2", "--resume=latest", "--data_dir=a b"]) == \
        "python x.py --epochs=2 '--data_dir=a b' --resume=R2"


def dropout_model():
    keras.utils.set_random_seed(0)
    return models.stack((6,), [keras.layers.Dense(16, activation="relu"), keras.layers.Dropout(0.5),
                               keras.layers.Dense(3, activation="softmax")], name="m")


def test_a_phase_resumed_from_its_checkpoint_ends_with_the_same_weights(tmp_path):
    x = np.random.default_rng(0).normal(size=(100, 6)).astype("float32")
    y = np.arange(100) % 3
    straight = dropout_model()
    options = phases.FitOptions(epochs=4, batch_size=16, learning_rate=0.01, steps_per_execution=3)
    fitted = phases.fit(StandInRun(tmp_path / "a", 3), "p", straight, (x, y), options)  # 7 steps an epoch:
    # executions must not cross epochs

    class StopAfterTwo(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        phases.fit(StandInRun(tmp_path / "b", 3), "p", dropout_model(), (x, y), options,
                   more_callbacks=[StopAfterTwo()])
    resumed = dropout_model()
    resumed_timer = phases.fit(StandInRun(tmp_path / "b", 3), "p", resumed, (x, y), options)
    assert resumed_timer.history == fitted.history and len(resumed_timer.epoch_seconds) == 4
    assert int(resumed.optimizer.iterations.numpy()) == int(straight.optimizer.iterations.numpy()) == 28
    for a, b in zip(straight.weights, resumed.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_two_runs_started_at_once_in_one_results_folder_both_complete(mnist_dir, tmp_path):
    command = [sys.executable, os.path.join(ROOT, "mnist_transfer.py"), "--epochs=1", "--run_scratch=False",
               f"--data_dir={mnist_dir}", f"--results_dir={tmp_path}"]
    both = [subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    for process in both:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-3000:]
    paths = sorted(glob.glob(os.path.join(tmp_path, "mnist", "*", "record.json")))
    recorded = [json.load(open(path)) for path in paths]
    assert len(recorded) == 2 and recorded[0]["run_id"] != recorded[1]["run_id"]
    assert all(r["status"] == "complete" and list(r["phases"]) == ["base", "transfer"] for r in recorded)
    assert not glob.glob(os.path.join(tmp_path, "**", "*.tmp"), recursive=True)
