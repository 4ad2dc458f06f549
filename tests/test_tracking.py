"""Runs in the trackers teams use (transferlab/tracking.py): MLflow, a local store and a real server, and
TensorBoard's HParams view."""

import glob
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest
import tensorflow as tf
from conftest import ROOT, free_port, make_image_folder, run_script

needs_mlflow = pytest.mark.skipif(importlib.util.find_spec("mlflow") is None,
                                  reason="MLflow is optional: pip install -r requirements-mlflow.txt")
TINY = ["--weights=None", "--image_size=32", "--head=[]", "--epochs=2", "--head_steps=0", "--fine_tune_epochs=0",
        "--run_scratch=False"]


def tiny_run(tmp_path, *more, env=None):
    """A tiny mobilenet run on a two-class folder, MLFLOW_TRACKING_URI unset unless `env` sets it: (the finished
    process, its folder, its record)."""
    make_image_folder(tmp_path / "photos", bad_files=False)
    results = tmp_path / "results"
    done = run_script("mobilenet_transfer.py", f"--data_dir={tmp_path / 'photos'}", *TINY, *more,
                      f"--results_dir={results}", env={"MLFLOW_TRACKING_URI": "", **(env or {})})
    assert done.returncode == 0, done.stderr[-3000:]
    (path,) = glob.glob(str(results / "mobilenet" / "*" / "record.json"))
    with open(path) as f:
        return done, os.path.dirname(path), json.load(f)


def hparams_sessions(folder):
    """{hparam: value} of each HParams session start in the event files directly in `folder`."""
    from tensorboard.compat.proto import event_pb2
    from tensorboard.plugins.hparams import plugin_data_pb2

    sessions = []
    for path in glob.glob(os.path.join(folder, "events.out.tfevents.*")):
        for raw in tf.data.TFRecordDataset(path):
            event = event_pb2.Event.FromString(raw.numpy())
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "hparams":
                    data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
                    if data.HasField("session_start_info"):
                        sessions.append({k: getattr(v, v.WhichOneof("kind"))
                                         for k, v in data.session_start_info.hparams.items()})
    return sessions


def test_a_run_writes_an_hparams_session_and_a_tracker_that_does_not_answer_costs_a_warning(tmp_path):
    port = free_port()  # nobody listens on it
    done, folder, record = tiny_run(tmp_path, "--seed=3", env={"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"})
    (session,) = hparams_sessions(os.path.join(folder, "tensorboard"))
    assert session["SEED"] == 3 and session["IMAGE_SIZE"] == 32 and session["HEAD"] == "[]"
    assert session["TRACKING"] == "auto"
    # MLFLOW_TRACKING_URI set: tracked, but the server is not there (or MLflow not installed): one warning, and
    # the run is complete and untracked.
    why = (f"the MLflow server http://127.0.0.1:{port} does not answer" if importlib.util.find_spec("mlflow")
           else "MLflow is not installed (pip install -r requirements-mlflow.txt)")
    (said,) = [line for line in done.stdout.splitlines() if line.startswith("warning: MLflow tracking: ")]
    assert said.startswith(f"warning: MLflow tracking: {why}") and said.endswith("; the run goes on without it")
    assert record["status"] == "complete" and "tracking" not in record
    bad = run_script("mobilenet_transfer.py", f"--data_dir={tmp_path / 'photos'}", "--tracking=wandb",
                     f"--results_dir={tmp_path / 'results'}")
    assert bad.returncode == 2 and bad.stderr == "error: --tracking=wandb: expected one of auto, mlflow, none\n"


@needs_mlflow
def test_a_tracked_run_is_an_mlflow_run_with_its_constants_metrics_per_class_and_files(tmp_path):
    from mlflow.tracking import MlflowClient

    done, folder, record = tiny_run(tmp_path, "--tracking=mlflow")
    tracked = record["tracking"]["mlflow"]
    assert tracked["tracking_uri"] == f"sqlite:///{tmp_path / 'results'}/mlflow.db"  # embedded, beside the runs
    assert f"tracked in MLflow: run {tracked['run_id']}" in done.stdout
    client = MlflowClient(tracked["tracking_uri"])
    found = client.get_run(tracked["run_id"])
    assert found.info.status == "FINISHED" and found.info.run_name == record["run_id"]
    assert client.get_experiment(found.info.experiment_id).name == "mobilenet"
    assert found.data.params["SEED"] == "42" and found.data.params["HEAD"] == "[]"
    assert len(found.data.params) == len(record["config"])
    history = client.get_metric_history(tracked["run_id"], "transfer/val_accuracy")
    assert [m.step for m in history] == [0, 1]
    assert history[-1].value == pytest.approx(record["phases"]["transfer"]["val_accuracy"])
    final = found.data.metrics
    assert final["final/accuracy"] == pytest.approx(record["final"]["accuracy"])
    for name, scores in record["final"]["per_class"].items():
        assert final[f"final/{name}/recall"] == pytest.approx(scores["recall"])
    files = {a.path for a in client.list_artifacts(tracked["run_id"])}
    assert {"record.json", "report.html", "model.keras", "labels.txt", "learning_curves.png"} <= files


@pytest.fixture
def mlflow_server(tmp_path):
    """A real `mlflow server` on 127.0.0.1 with a SQLite store: its URL."""
    port = free_port()
    mlflow_command = shutil.which("mlflow", path=os.path.dirname(sys.executable)) or "mlflow"
    server = subprocess.Popen([mlflow_command, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                               "--backend-store-uri", f"sqlite:///{tmp_path}/server.db",
                               "--artifacts-destination", str(tmp_path / "server-artifacts")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/health", timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        else:
            raise AssertionError("mlflow server did not start in 60 s")
        yield url
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


def rest(url, path, body=None, **query):
    """MLflow's REST API: GET with `query`, or POST `body` as JSON."""
    address = f"{url}/api/2.0/mlflow/{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    request = urllib.request.Request(address, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


@needs_mlflow
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray is optional: requirements-ray.txt")
@pytest.mark.xdist_group("ray")  # one Ray at a time on this machine (tests/test_ray_sweep.py)
def test_a_sweep_on_ray_and_a_tracking_server_is_a_parent_run_with_its_runs_nested(mlflow_server, tmp_path):
    # The sweep's runs are tasks of the embedded Ray: the tracking server and the parent run reach them through
    # the environment the sweep sends with each task.
    make_image_folder(tmp_path / "photos", bad_files=False)
    results = tmp_path / "results"
    command = [sys.executable, "-m", "transferlab.sweep", "mobilenet_transfer.py", "--seeds=2", "--engine=ray",
               f"--data_dir={tmp_path / 'photos'}", *TINY, f"--results_dir={results}"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "MLFLOW_TRACKING_URI": mlflow_server, "RAY_USAGE_STATS_ENABLED": "0",
                               "RAY_AUTH_MODE": "disabled"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "2 runs as Ray tasks" in done.stdout and done.stdout.count(": complete") == 2
    (experiment,) = [e for e in rest(mlflow_server, "experiments/search", {"max_results": 10})["experiments"]
                     if e["name"] == "mobilenet"]
    runs = rest(mlflow_server, "runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
    tags = [{t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in runs]
    (parent,) = [r for r, t in zip(runs, tags, strict=True) if "transferlab.sweep" in t]
    children = [r for r, t in zip(runs, tags, strict=True) if t.get("mlflow.parentRunId") == parent["info"]["run_id"]]
    assert len(runs) == 3 and len(children) == 2 and parent["info"]["status"] == "FINISHED"
    seeds = sorted(next(p["value"] for p in r["data"]["params"] if p["key"] == "SEED") for r in children)
    assert seeds == ["0", "1"]
    for child in children:
        run_id = child["info"]["run_id"]
        history = rest(mlflow_server, "metrics/get-history", run_id=run_id, metric_key="transfer/val_accuracy")
        assert [m["step"] for m in history["metrics"]] == [0, 1]
        files = {f["path"] for f in rest(mlflow_server, "artifacts/list", run_id=run_id)["files"]}
        assert {"record.json", "model.keras"} <= files
    # Every record keeps its MLflow run, on the server.
    records = [json.load(open(p)) for p in glob.glob(str(results / "sweeps" / "*" / "mobilenet" / "*" / "record.json"))]
    assert sorted(r["tracking"]["mlflow"]["run_id"] for r in records) == sorted(c["info"]["run_id"] for c in children)
    assert {r["tracking"]["mlflow"]["tracking_uri"] for r in records} == {mlflow_server}
