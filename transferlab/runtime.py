"""What a run executes on: a quiet TensorFlow start, one seed for everything, and the machine's description.

Import this module before `keras` or `tensorflow`: it starts TensorFlow with its C++ start-up chatter
(CUDA probing on a machine without a GPU, oneDNN notices) kept off the terminal. Python errors during
the import are still raised and shown.
"""

import contextlib
import os
import platform
import subprocess
import sys

# No log lines from TensorFlow's C++ side (level 3 also drops a spurious ERROR line that op determinism
# prints); real failures still arrive as Python exceptions. Set TF_CPP_MIN_LOG_LEVEL=0 to see them all.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@contextlib.contextmanager
def quiet_stderr():
    """Point file descriptor 2 at /dev/null meanwhile: for C++ code that writes there directly."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _import_tensorflow_quietly():
    # TensorFlow's import and its first device query write to file descriptor 2 from C++ before its
    # logging is configured, so no environment variable silences them.
    with quiet_stderr():
        import tensorflow as tf

        cpus = tf.config.list_physical_devices("CPU")
    # TRANSFERLAB_CPU_DEVICES=N splits the CPU into N logical devices, so that a machine without GPUs can
    # run --distribute=mirrored over several replicas (the tests do). It must happen before TF's first op.
    split = int(os.environ.get("TRANSFERLAB_CPU_DEVICES") or 1)
    if split > 1:
        tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * split)
    return tf


tf = _import_tensorflow_quietly()


def seed_everything(seed, deterministic=False):
    """Seed Python's `random`, numpy and TensorFlow from one number; optionally make TF ops deterministic.

    Determinism (`tf.config.experimental.enable_op_determinism`) makes two runs with the same seed give
    identical numbers, at a cost in speed (docs/reproducibility.md).
    """
    import keras

    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def environment():
    """Versions, CPU and git commit: what a reader needs to know which machine and code made a number."""
    import keras
    import numpy as np

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "gpus": len(tf.config.list_physical_devices("GPU")),
        "git_commit": _git_commit(),
        "command": " ".join(["python", *sys.argv]),
    }


def _cpu_model():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _git_commit():
    """The commit of the code that ran, with "+dirty" when it had uncommitted changes; None outside git."""
    here = os.path.dirname(os.path.abspath(sys.argv[0] or __file__))
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here, capture_output=True, text=True, timeout=10,
        )
        return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None
