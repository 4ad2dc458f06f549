import json
import os

import pytest

from transferlab import files, records
from transferlab.errors import UserError


def test_write_json_replaces_atomically_and_leaves_the_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "record.json"
    files.write_json(path, {"status": "running"})
    before = path.read_bytes()
    assert json.loads(before) == {"status": "running"}

    def broken_dump(obj, f, **kwargs):
        f.write('{"status": "compl')  # half a file, then the crash
        raise OSError("disk full")

    monkeypatch.setattr(records.json, "dump", broken_dump)
    with pytest.raises(OSError, match="disk full"):
        files.write_json(path, {"status": "complete"})
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["record.json"]  # no temporary file left behind


def test_run_ids_are_unique_and_sort_by_start_time(tmp_path):
    ids = [records.new_run_dir(tmp_path, "mnist")[0] for _ in range(20)]
    assert len(set(ids)) == 20
    assert ids == sorted(ids)
    assert sorted(os.listdir(tmp_path / "mnist")) == ids


def test_unusable_results_dir_is_a_user_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(UserError, match="cannot create results folder"):
        records.new_run_dir(blocker, "mnist")


def test_a_results_dir_that_refuses_writes_is_a_user_error(tmp_path, monkeypatch):
    def refuse(path, *args):
        raise PermissionError(13, "Permission denied")

    (tmp_path / "mnist").mkdir()
    monkeypatch.setattr(records.os, "mkdir", refuse)
    with pytest.raises(UserError, match="cannot write to results folder .*: Permission denied"):
        records.new_run_dir(tmp_path, "mnist")


def make_run(tmp_path):
    return records.RunRecord(tmp_path, "demo", {"EPOCHS": 1}, {"python": "3"}, {"source": "x"})


def read(run):
    with open(run.path) as f:
        return json.load(f)


def test_run_record_has_the_schema_and_grows_per_phase(tmp_path):
    run = make_run(tmp_path)
    assert read(run)["status"] == "running"
    with run:
        run.add_phase("base", {"test_accuracy": 0.9})
        assert read(run)["phases"] == {"base": {"test_accuracy": 0.9}}
    record = read(run)
    assert set(record) == {"experiment", "run_id", "started_at", "finished_at", "status", "pid", "host",
                           "config", "environment", "data", "phases"}
    assert record["status"] == "complete" and record["experiment"] == "demo"
    assert record["finished_at"] >= record["started_at"]
    assert run.dir == os.path.join(tmp_path, "demo", record["run_id"])


def test_failed_run_records_the_reason_and_reraises(tmp_path):
    run = make_run(tmp_path)
    with pytest.raises(ValueError, match="loss is nan"):
        with run:
            raise ValueError("loss is nan")
    record = read(run)
    assert record["status"] == "failed" and record["error"] == "ValueError: loss is nan"


def test_an_interrupted_run_is_recorded_and_says_how_to_resume(tmp_path, capsys):
    run = make_run(tmp_path)
    with pytest.raises(KeyboardInterrupt), run:  # it goes on: process.py makes it exit code 130
        run.add_phase("base", {"epochs": 1})
        raise KeyboardInterrupt
    record = read(run)
    assert record["status"] == "interrupted" and record["phases"] == {"base": {"epochs": 1}}
    assert capsys.readouterr().err.splitlines()[1:] == [f"interrupted; record saved as {run.path}",
                                                        f"resume with: {records.resume_command(run.run_id)}"]


def test_a_diverged_run_is_recorded_failed(tmp_path, capsys):
    run = make_run(tmp_path)
    with pytest.raises(FloatingPointError), run:  # process.py makes it one line and exit code 1
        raise FloatingPointError("phase base: the loss became NaN")
    record = read(run)
    assert record["status"] == "failed" and record["error"] == "FloatingPointError: phase base: the loss became NaN"
    assert capsys.readouterr().err == f"record saved as {run.path}\n"


def test_a_phase_is_reused_only_from_a_run_with_the_same_inputs(tmp_path):
    import keras
    import numpy as np

    def tiny(seed):
        return keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, kernel_initializer=keras.initializers.
                                                                        GlorotUniform(seed))])

    def start(config=None, sha="abc", commit="c1"):
        return records.RunRecord(tmp_path, "demo", {"SEED": 1, "EPOCHS": 2, "TASK_B": 5, **(config or {})},
                           {"git_commit": commit, "keras": "3"}, {"sha256": sha})

    with start() as first:
        trained = tiny(0)
        with open(first.file("history_base.csv"), "w") as f:
            f.write("epoch,accuracy\n0,0.5\n1,0.75\n")
        first.add_phase("base", {"test_accuracy": 0.9, "train_seconds": 12.0}, model=trained)
    with start({"TASK_B": 7}) as second:  # only a constant outside the phase's own differs: reused
        model = tiny(1)
        assert second.reuse("base", model, ["SEED", "EPOCHS"])
        assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), trained.get_weights(), strict=True))
        assert read(second)["phases"]["base"] == {"test_accuracy": 0.9, "train_seconds": 12.0,
                                                  "reused_from": first.run_id}
        assert second.histories() == {"base": {"epoch": [0, 1], "accuracy": [0.5, 0.75]}}
    with start() as third:  # a reuse of a reuse names the run that trained the phase
        assert third.reuse("base", tiny(2), ["SEED", "EPOCHS"])
        assert read(third)["phases"]["base"]["reused_from"] == first.run_id
    for changed in ({"config": {"EPOCHS": 3}}, {"sha": "other data"}, {"commit": "c2"}):
        with start(**changed) as other:
            model = tiny(3)
            assert not other.reuse("base", model, ["SEED", "EPOCHS"]), changed
            assert read(other)["phases"] == {}
            assert not np.array_equal(model.get_weights()[0], trained.get_weights()[0])
