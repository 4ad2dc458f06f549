"""DISTRIBUTE, MIXED_PRECISION and TENSORBOARD: the same script on two replicas of one machine, on two worker
processes, in bfloat16, with TensorBoard logs; all on this CPU, on tiny synthetic MNIST."""

import glob
import json
import os
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import ROOT, run_script

from transferlab import distribute, models, phases
from transferlab.errors import UserError

# Four epochs: enough for these tiny tasks to settle, so one device and two replicas (whose Dropout masks
# and summation order differ) end near the same accuracy.
ARGS = ["--epochs=4", "--head_batch_size=64"]


def records_under(results):
    return sorted(glob.glob(os.path.join(results, "mnist", "*", "record.json")))


def accuracies(path):
    with open(path) as f:
        record = json.load(f)
    assert record["status"] == "complete"
    return record, {name: phase["test_accuracy"] for name, phase in record["phases"].items()}


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
    """The reference: one device, batch 32 and head batch 64, the global batches of the distributed runs."""
    from conftest import synthetic_digits

    folder = tmp_path_factory.mktemp("one")
    rng = np.random.default_rng(0)
    (x_train, y_train), (x_test, y_test) = synthetic_digits(40, rng), synthetic_digits(10, rng)
    np.savez(folder / "mnist.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    result = run_script("mnist_transfer.py", *ARGS, "--batch_size=32", "--distribute=none", f"--data_dir={folder}",
                        f"--results_dir={folder / 'results'}")
    assert result.returncode == 0, result.stderr[-3000:]
    [path] = records_under(folder / "results")
    return folder, *accuracies(path)


def assert_close(found, reference):
    assert found.keys() == reference.keys()
    for phase, accuracy in found.items():
        assert abs(accuracy - reference[phase]) <= 0.1, (phase, found, reference)


def test_mirrored_over_two_logical_cpus_matches_one_device(one_device, tmp_path):
    data_dir, _, reference = one_device
    result = run_script("mnist_transfer.py", *ARGS, "--batch_size=16", "--head_batch_size=32", "--distribute=mirrored",
                        "--tensorboard=False", f"--data_dir={data_dir}", f"--results_dir={tmp_path}",
                        env={"TRANSFERLAB_CPU_DEVICES": "2"})
    assert result.returncode == 0, result.stderr[-3000:]
    [path] = records_under(tmp_path)
    record, found = accuracies(path)
    assert record["distribute"] == {"strategy": "mirrored", "replicas": 2, "workers": 1, "global_batch_size": 32,
                                    "mixed_precision": "float32"}
    assert_close(found, reference)
    assert not os.path.exists(os.path.join(os.path.dirname(path), "tensorboard"))  # --tensorboard=False


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_multi_worker_two_processes_only_the_chief_writes(one_device, tmp_path):
    data_dir, _, reference = one_device
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    command = [sys.executable, os.path.join(ROOT, "mnist_transfer.py"), *ARGS, "--batch_size=16",
               "--head_batch_size=32", "--distribute=multi_worker", f"--data_dir={data_dir}",
               f"--results_dir={tmp_path}"]
    workers = []
    for index in range(2):
        env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        workers.append(subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True))
    try:
        outputs = [worker.communicate(timeout=600)[0] for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
    for worker, output in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, output[-3000:]
    [path] = records_under(tmp_path)  # worker 1 wrote into a temporary folder of its own, now gone
    assert os.listdir(tmp_path) == ["mnist"]
    record, found = accuracies(path)
    assert record["distribute"] == {"strategy": "multi_worker", "replicas": 2, "workers": 2,
                                    "global_batch_size": 32, "mixed_precision": "float32"}
    assert_close(found, reference)


def test_mixed_bfloat16_computes_in_bfloat16_and_outputs_float32(tmp_path):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        keras.utils.set_random_seed(0)
        model = models.stack((8, 8, 1), [keras.layers.Conv2D(4, 3, activation="relu"), keras.layers.Flatten(),
                                         models.output_layer(3)], name="m")
        x = np.random.default_rng(0).random((64, 8, 8, 1)).astype(np.float32)
        y = np.arange(64) % 3
        fitted = phases.fit(phases.StandInRun(tmp_path), "p", model, (x, y),
                            phases.FitOptions(epochs=1, batch_size=16, learning_rate=0.01))
        assert model.layers[0].compute_dtype == "bfloat16"
        assert model.layers[-1].compute_dtype == "float32" and model.predict(x, verbose=0).dtype == np.float32
        assert np.isfinite(fitted.history["loss"]).all()
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_a_script_records_mixed_precision_and_tensorboard_logs(one_device, tmp_path):
    data_dir, _, _ = one_device
    result = run_script("mnist_transfer.py", "--epochs=1", "--run_scratch=False", "--mixed_precision=mixed_bfloat16",
                        f"--data_dir={data_dir}", f"--results_dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    [path] = records_under(tmp_path)
    record, _ = accuracies(path)
    assert record["distribute"]["mixed_precision"] == "mixed_bfloat16"
    assert record["distribute"]["strategy"] == "none"  # auto on a machine without GPUs
    assert all(np.isfinite(phase["test_loss"]) for phase in record["phases"].values())
    for phase in ("base", "transfer"):  # TENSORBOARD is on by default: one event file per phase and split
        assert glob.glob(os.path.join(os.path.dirname(path), "tensorboard", phase, "train", "events.out.tfevents.*"))


@pytest.mark.parametrize("args, message", [
    (["--distribute=cluster"], "--distribute=cluster: expected one of auto, none, mirrored, multi_worker, tpu"),
    (["--mixed_precision=float16"], "--mixed_precision=float16: expected one of auto, None, mixed_float16, "
                                    "mixed_bfloat16"),
    (["--distribute=multi_worker", "--resume=latest"], "--resume works on one machine only"),
])
def test_bad_distribute_constants_are_one_line_errors(args, message, tmp_path):
    result = run_script("mnist_transfer.py", *args, f"--results_dir={tmp_path}")
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not os.path.exists(tmp_path / "mnist")


def test_start_checks_before_creating_anything():
    with pytest.raises(UserError, match="--distribute=gpu"):
        distribute.start("gpu", None)
