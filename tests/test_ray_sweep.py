"""Sweeps on Ray (transferlab/ray_engine.py): a real two-node cluster on 127.0.0.1, a worker killed mid-run, the
run resumed by Ray's retry; the same records as the local engine's. The embedded Ray (no address) runs the
MLflow sweep of tests/test_tracking.py."""

import glob
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest
from conftest import ROOT, free_port

pytestmark = [pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                                 reason="Ray is optional: pip install -r requirements-ray.txt"),
              pytest.mark.xdist_group("ray")]  # one Ray at a time on this machine: `ray stop` stops them all
# Ray 2.60 turns token authentication on for a cluster ray.init() starts and keeps the token in ~/.ray: a node
# started later would then find it while the head has none. The tests' clusters say which they use.
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
EPOCHS = 8  # long enough on the tiny data for a worker to be killed in the middle of a phase


@pytest.fixture
def ray_cluster():
    """Two Ray nodes on this machine, one CPU each (`ray start --head`, then a second node joining it): the
    head's address. Stopped afterwards."""
    ray = shutil.which("ray", path=os.path.dirname(sys.executable)) or "ray"
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's sockets live under it
    port = free_port()
    env = {**os.environ, **RAY_ENV}
    common = ["--num-cpus=1", "--disable-usage-stats"]
    try:
        subprocess.run([ray, "start", "--head", f"--port={port}", f"--temp-dir={temp}", "--include-dashboard=false",
                        *common], check=True, capture_output=True, env=env, timeout=120)
        subprocess.run([ray, "start", f"--address=127.0.0.1:{port}", *common], check=True, capture_output=True,
                       env=env, timeout=120)
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True, env=env, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)


def sweep_command(engine, mnist_dir, results, *more):
    return [sys.executable, "-m", "transferlab.sweep", "mnist_transfer.py", "--seeds=2", f"--epochs={EPOCHS}",
            "--deterministic=True", "--run_scratch=False", f"--data_dir={mnist_dir}", f"--results_dir={results}",
            f"--engine={engine}", *more]


def records_in(results):
    found = {}
    for path in glob.glob(str(results / "sweeps" / "*" / "mnist" / "*" / "record.json")):
        with open(path) as f:
            record = json.load(f)
        found[record["config"]["SEED"]] = record
    return found


def numbers(record):
    return {name: (p["test_loss"], p["test_accuracy"], p["epochs"]) for name, p in record["phases"].items()}


def test_a_ray_sweep_on_two_nodes_survives_a_killed_worker_and_gives_the_local_records(ray_cluster, mnist_dir,
                                                                                         tmp_path):
    results = tmp_path / "ray"
    sweep = subprocess.Popen(sweep_command("ray", mnist_dir, results, f"--address={ray_cluster}"), cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **RAY_ENV})
    # Once a run is two epochs into its first phase, kill the Ray worker running it (the script's parent).
    killed, deadline = None, time.time() + 300
    while killed is None and time.time() < deadline and sweep.poll() is None:
        for record in records_in(results).values():
            if record.get("progress", {}).get("epochs_finished", 0) >= 2 and record["status"] == "running":
                with open(f"/proc/{record['pid']}/stat") as f:
                    worker = int(f.read().rsplit(")", 1)[1].split()[1])
                os.kill(worker, signal.SIGKILL)
                killed = record
                break
        time.sleep(0.05)
    out, err = sweep.communicate(timeout=600)
    assert killed is not None, out + err[-3000:]
    assert sweep.returncode == 0, out + err[-3000:]
    assert "Ray: 2 node(s), 2 CPUs; 1 CPU(s) a run" in out
    assert f"(resumed run {killed['run_id']}, which a lost worker left unfinished)" in out
    on_ray = records_in(results)
    assert sorted(on_ray) == [0, 1] and all(r["status"] == "complete" for r in on_ray.values())
    resumed = on_ray[killed["config"]["SEED"]]
    assert resumed["run_id"] == killed["run_id"] and [r["status_before"] for r in resumed["resumed"]] == ["running"]
    # The resumed run, run here straight through (as the local engine runs it): the same numbers.
    seed = killed["config"]["SEED"]
    local = subprocess.run([sys.executable, "mnist_transfer.py", f"--seed={seed}", f"--epochs={EPOCHS}",
                            "--deterministic=True", "--run_scratch=False", f"--data_dir={mnist_dir}",
                            f"--results_dir={tmp_path / 'local'}"], cwd=ROOT, capture_output=True, text=True,
                           timeout=600)
    assert local.returncode == 0, local.stderr[-3000:]
    (path,) = glob.glob(str(tmp_path / "local" / "mnist" / "*" / "record.json"))
    with open(path) as f:
        assert numbers(resumed) == numbers(json.load(f))
    # The same sweep again, on the embedded Ray: every run complete already, skipped, and Ray not even started.
    again = subprocess.run(sweep_command("ray", mnist_dir, results), cwd=ROOT, capture_output=True, text=True,
                           timeout=300, env={**os.environ, **RAY_ENV})
    assert again.returncode == 0 and again.stdout.count("complete already, skipped") == 2, again.stderr[-2000:]
    assert "Ray:" not in again.stdout

