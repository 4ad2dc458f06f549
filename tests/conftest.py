import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared")
SHARED_MNIST = os.path.join(SHARED, "datasets", "mnist.npz")
sys.path.insert(0, ROOT)


def synthetic_digits(per_class, rng, num_classes=10):
    """28x28 uint8 'digits' a small CNN can tell apart in one epoch: a bright bar whose place and
    direction depend on the class, over noise."""
    images, labels = [], []
    for label in range(num_classes):
        for _ in range(per_class):
            image = rng.integers(0, 60, size=(28, 28)).astype(np.uint8)
            row = 3 + 2 * (label % 5) + int(rng.integers(0, 2))
            if label < 5:
                image[row:row + 3, 4:24] = 255
            else:
                image[4:24, row:row + 3] = 255
            images.append(image)
            labels.append(label)
    order = rng.permutation(len(labels))
    return np.stack(images)[order], np.array(labels, dtype=np.uint8)[order]


@pytest.fixture
def mnist_dir(tmp_path):
    """A data directory holding a tiny synthetic mnist.npz in Keras's layout (40 train, 10 test per digit)."""
    rng = np.random.default_rng(0)
    x_train, y_train = synthetic_digits(40, rng)
    x_test, y_test = synthetic_digits(10, rng)
    folder = tmp_path / "data"
    folder.mkdir()
    np.savez(folder / "mnist.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return folder


def run_script(script, *args, cwd=None, timeout=600, env=None):
    """Run a top-level script as a user would; returns the CompletedProcess (text output).

    Downloads go to a closed local port, so a missing file fails the same way with or without internet.
    """
    env = {**{k: v for k, v in os.environ.items() if k != "TRANSFER_DATA_DIR"},
           "https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", **(env or {})}
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, script), *map(str, args)],
        cwd=cwd or ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )
