"""Datasets: finding them (data directory first, then Keras's download), checking them, splitting into tasks."""

import hashlib
import os

import numpy as np

from transferlab.config import UserError, check

DATA_DIR_ENV = "TRANSFER_DATA_DIR"  # environment variable naming the data directory when DATA_DIR is None
ARRAY_KEYS = ("x_train", "y_train", "x_test", "y_test")


def data_dir(configured):
    """The data directory to search: the DATA_DIR constant if set, else $TRANSFER_DATA_DIR, else None."""
    chosen = configured or os.environ.get(DATA_DIR_ENV) or None
    if chosen is not None:
        check(os.path.isdir(chosen), f"data directory {chosen!r} does not exist (--data_dir= or ${DATA_DIR_ENV})")
    return chosen


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_npz(path, image_shape, num_classes):
    """Keras's `load_data` layout from an npz file, checked: ((x_train, y_train), (x_test, y_test)).

    Loaded with allow_pickle=False, so a file carrying pickled objects is refused instead of executed.
    Images must be uint8 of `image_shape`; labels integers in [0, num_classes), given as (n,) or (n, 1).
    """
    name = os.path.basename(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in ARRAY_KEYS if k not in f.files]
            check(not missing, f"{path}: missing arrays {missing}; expected keys {list(ARRAY_KEYS)}")
            arrays = {k: f[k] for k in ARRAY_KEYS}
    except UserError:
        raise
    except (OSError, ValueError) as error:
        raise UserError(f"{path}: not a readable npz file ({error})") from None
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        check(
            x.dtype == np.uint8 and x.shape[1:] == tuple(image_shape),
            f"{name}: x_{split} is {x.dtype} {x.shape}, expected uint8 (n, {', '.join(map(str, image_shape))})",
        )
        y = y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y
        check(y.ndim == 1 and len(y) == len(x), f"{name}: y_{split} has shape {y.shape}, expected ({len(x)},)")
        check(np.issubdtype(y.dtype, np.integer), f"{name}: y_{split} is {y.dtype}, expected integer labels")
        check(
            len(y) == 0 or (y.min() >= 0 and y.max() < num_classes),
            f"{name}: y_{split} has labels outside 0..{num_classes - 1}",
        )
        arrays[f"y_{split}"] = y.astype(np.int64)
    return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])


def load_keras_dataset(name, directory, image_shape, num_classes, download):
    """A `keras.datasets` dataset: `<name>.npz` in `directory` if there, else Keras's download.

    Returns (train, test, source) where source records where the data came from and its sha256.
    `download` is the `keras.datasets.<name>.load_data` function.
    """
    filename = f"{name}.npz"
    if directory is not None:
        path = os.path.join(directory, filename)
        if os.path.isfile(path):
            train, test = load_npz(path, image_shape, num_classes)
            return train, test, {"source": os.path.abspath(path), "sha256": sha256(path)}
    try:
        (x_train, y_train), (x_test, y_test) = download()
    except Exception as error:  # no internet, proxy, disk full: all mean "put the file here yourself"
        where = directory or f"a folder given by --data_dir= or ${DATA_DIR_ENV}"
        raise UserError(
            f"{filename} not found in {where} and the download failed ({type(error).__name__}); "
            f"put Keras's {filename} (arrays {', '.join(ARRAY_KEYS)}) there"
        ) from None
    cached = os.path.join(os.path.expanduser("~"), ".keras", "datasets", filename)
    source = {"source": "download", "sha256": sha256(cached) if os.path.isfile(cached) else None}
    train = (x_train, y_train.reshape(-1).astype(np.int64))
    test = (x_test, y_test.reshape(-1).astype(np.int64))
    return train, test, source


def split_task(x, y, classes):
    """The samples whose label is in `classes`, with labels remapped to 0..len(classes)-1 in that order.

    Task B = digits [7, 8, 9] gives labels 7->0, 8->1, 9->2, so a 3-way softmax head can learn them.
    """
    classes = list(classes)
    lookup = np.full(max(int(y.max(initial=0)), *classes) + 1, -1, dtype=np.int64)
    lookup[classes] = np.arange(len(classes))
    keep = np.isin(y, classes)
    return x[keep], lookup[y[keep]]


def check_tasks(task_a, task_b, num_classes):
    """Class splits must name existing classes, not repeat one, and not share any between the tasks."""
    for name, classes in (("TASK_A_CLASSES", task_a), ("TASK_B_CLASSES", task_b)):
        check(len(classes) >= 2, f"--{name.lower()} needs at least 2 classes, got {classes}")
        check(len(set(classes)) == len(classes), f"--{name.lower()} repeats a class: {classes}")
        bad = [c for c in classes if not 0 <= c < num_classes]
        check(not bad, f"--{name.lower()} names classes {bad} not in the data (0..{num_classes - 1})")
    shared = sorted(set(task_a) & set(task_b))
    check(not shared, f"task A and task B share classes {shared}: transfer must go to held-out classes")


def scale_images(x):
    """uint8 images to float32 in [0, 1] with a channel axis: (n, h, w) -> (n, h, w, 1)."""
    x = x.astype(np.float32) / 255.0
    return x[..., None] if x.ndim == 3 else x
