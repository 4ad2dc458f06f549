import glob
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared")
SHARED_MNIST = os.path.join(SHARED, "datasets", "mnist.npz")


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


@pytest.fixture(scope="session")
def shared_litert_dir(tmp_path_factory):
    """One folder of LiteRT conversions for the whole session (every xdist worker's too): a file is named by
    the network's content, and the tiny runs' seeded random backbones are the same network, so converting
    MobileNetV2 (8 s, whatever its input size) happens once instead of in every test."""
    root = tmp_path_factory.getbasetemp()
    folder = (root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root) / "litert-shared"
    folder.mkdir(exist_ok=True)
    return folder


@pytest.fixture(autouse=True)
def cache_dir(tmp_path_factory, monkeypatch, shared_litert_dir):
    """Caches (decoded image trees, backbone features) go to the test's own folder, never ~/.cache, and
    scripts run by the test inherit it; its litert/ is the session's (private_litert gives a test its own).
    The folder is beside tmp_path, not in it: tests that list what a run wrote there see only that."""
    folder = tmp_path_factory.mktemp("cache")
    (folder / "litert").symlink_to(shared_litert_dir, target_is_directory=True)
    monkeypatch.setenv("TRANSFERLAB_CACHE_DIR", str(folder))
    return folder


@pytest.fixture
def private_litert(cache_dir):
    """The test's own, empty folder of LiteRT conversions, for a test that counts conversions."""
    (cache_dir / "litert").unlink()
    (cache_dir / "litert").mkdir()
    return cache_dir / "litert"


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


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on (a server a test starts, or one that is not there)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


COLOURS = [(220, 40, 40), (40, 200, 60), (50, 70, 230)]


def make_image_folder(root, classes=2, per_class=8, validation=True, bad_files=True):
    """A tiny image folder in the image_dataset_from_directory layout: root/train/<class>/ (and validation/).

    Each class is a colour (red, green, blue squares over noise) saved in a mix of formats and modes
    (RGB PNG and JPEG, grayscale, RGBA, palette); with `bad_files`, train/ also holds a corrupt JPEG,
    a truncated PNG, an empty file and a text file: 4 files to skip.
    """
    from PIL import Image

    rng = np.random.default_rng(1)
    names = [f"class_{chr(97 + c)}" for c in range(classes)]
    splits = {"train": per_class, **({"validation": max(2, per_class // 2)} if validation else {})}
    for split, count in splits.items():
        for c, name in enumerate(names):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 80, size=(24 + i, 30, 3), dtype=np.uint8)
                pixels[4:20, 6:24] = COLOURS[c]
                image = Image.fromarray(pixels)
                kind = i % 5
                if kind == 0:
                    image.save(folder / f"{i}.jpg")
                elif kind == 1:
                    image.convert("L").save(folder / f"{i}.png")
                elif kind == 2:
                    image.convert("RGBA").save(folder / f"{i}.png")
                elif kind == 3:
                    image.convert("P").save(folder / f"{i}.png")
                else:
                    image.save(folder / f"{i}.png")
    if bad_files:
        first = root / "train" / names[0]
        (first / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
        whole = (first / "4.png").read_bytes()
        (first / "truncated.png").write_bytes(whole[: len(whole) // 2])
        (root / "train" / names[-1] / "empty.jpg").write_bytes(b"")
        (root / "train" / names[-1] / "notes.txt").write_text("not an image")
    return names


@pytest.fixture
def image_folder(tmp_path):
    """Two classes with a validation/ folder and four bad files in train/."""
    root = tmp_path / "images"
    make_image_folder(root)
    return root


@pytest.fixture
def image_folder_3(tmp_path):
    """Three classes, no validation/ folder (the scripts split train/), four bad files."""
    root = tmp_path / "images3"
    make_image_folder(root, classes=3, per_class=10, validation=False)
    return root


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, shared_litert_dir):
    """A tiny mobilenet run on a two-class folder (random weights, 32 px, 2 epochs): (run folder, record, data)."""
    root = tmp_path_factory.mktemp("predict")
    (root / "cache").mkdir()
    (root / "cache" / "litert").symlink_to(shared_litert_dir, target_is_directory=True)
    make_image_folder(root / "photos", per_class=10)
    results = root / "results"
    result = run_script("mobilenet_transfer.py", f"--data_dir={root / 'photos'}", "--weights=None", "--image_size=32",
                        "--epochs=2", "--head=8", f"--results_dir={results}",
                        env={"TRANSFERLAB_CACHE_DIR": str(root / "cache")})
    assert result.returncode == 0, result.stderr[-3000:]
    (path,) = glob.glob(str(results / "mobilenet" / "*" / "record.json"))
    with open(path) as f:
        return os.path.dirname(path), json.load(f), root / "photos", results


def check_the_model_in_use(folder, image_root, export_images=True):
    """What a user does with a run's model, checked on `image_root`'s <label>/ image files: model.keras loads in a
    process that cannot import transferlab, predict gives the loaded model's own probabilities (within 1e-5) for
    every file, and LiteRT and SavedModel exports pass their checks (on those files, or with `export_images`
    False on the run's own validation images). Returns predict's rows and the exports' export.json entries."""
    import transferlab.runtime  # noqa: F401 (quiet TensorFlow start)

    import keras

    from transferlab import pipelines

    code = ("import sys; sys.modules['transferlab'] = None\n"  # any import of transferlab now fails
            f"import keras; print(keras.saving.load_model({os.path.join(folder, 'model.keras')!r}).input.dtype)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.split()[-1] == "uint8", result.stderr[-2000:]
    model = keras.saving.load_model(os.path.join(folder, "model.keras"))
    labels = open(os.path.join(folder, "labels.txt")).read().splitlines()
    result = subprocess.run([sys.executable, "-m", "transferlab.predict", folder, image_root, "--format=json",
                             f"--top_k={len(labels)}"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(result.stdout)
    assert len(rows) == len(glob.glob(os.path.join(image_root, "*", "*")))
    x, _, failed = pipelines.decode([row["path"] for row in rows], model.input_shape[1:3], model.input_shape[3],
                                 show=False)
    assert failed == []
    got = np.array([[{t["label"]: t["probability"] for t in row["top"]}[label] for label in labels] for row in rows])
    assert np.abs(got - model.predict(x, verbose=0)).max() < 1e-5
    for fmt in ("tflite", "saved_model"):
        result = subprocess.run([sys.executable, "-m", "transferlab.export", folder, f"--format={fmt}",
                                 *([f"--images={image_root}"] if export_images else [])],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    with open(os.path.join(folder, "export", "export.json")) as f:
        entries = json.load(f)
    for entry in entries.values():
        assert entry["passed"] is True and entry["top1_agreement"] == 1.0
        assert entry["max_probability_difference"] < 1e-4
    return rows, entries


def check_export_entry(entry, record, out, fmt, quantize, name):
    """An export.json entry of a passed export of the tiny run, checked on its 10 validation images."""
    assert entry["passed"] is True and entry["format"] == fmt and entry["quantization"] == quantize
    assert entry["images"] == record["final"]["images"] == 10  # the run's validation images
    assert entry["accuracy_keras"] == pytest.approx(record["final"]["accuracy"])
    for key in ("ms_per_image_keras_batch1", "ms_per_image_export_batch1", "ms_per_image_export_batch32"):
        assert entry[key] > 0
    if quantize == "none":  # a float export: the same answers
        assert entry["top1_agreement"] == 1.0 and entry["max_probability_difference"] < 1e-4
    if fmt == "tflite":
        assert open(os.path.join(out, "labels.txt")).read() == "class_a\nclass_b\n"
        assert entry["bytes"] == os.path.getsize(os.path.join(out, name))
