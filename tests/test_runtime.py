import random

import keras
import numpy as np

from transferlab import runtime


def draws():
    return random.random(), float(np.random.rand()), float(keras.random.uniform(()).numpy())


def test_one_seed_drives_python_numpy_and_tensorflow():
    runtime.seed_everything(123)
    first = draws()
    runtime.seed_everything(123)
    assert draws() == first
    runtime.seed_everything(124)
    assert all(a != b for a, b in zip(draws(), first, strict=True))


def test_environment_names_versions_machine_and_command():
    env = runtime.environment()
    assert env["tensorflow"] == runtime.tf.__version__ and env["keras"] == keras.__version__
    assert env["numpy"] == np.__version__ and env["cpu_count"] >= 1
    assert env["python"].count(".") == 2 and env["command"].startswith("python ")
    assert env["git_commit"] is None or len(env["git_commit"].split("+")[0]) == 40
