"""Where a dataset comes from: the data directory (DATA_DIR or $TRANSFER_DATA_DIR), Keras's npz arrays,
an image tree decoded once and cached, Keras's download; checked, with a sha256 that pins what was read.
Image folders in the two common layouts: folders.py."""

import collections
import hashlib
import os
import time
import zipfile

import keras
import numpy as np
import tensorflow as tf

from transferlab import files, images, pipelines, tasks
from transferlab.errors import UserError, check, failure

DATA_DIR_ENV = "TRANSFER_DATA_DIR"  # environment variable naming the data directory when DATA_DIR is None
ARRAY_KEYS = ("x_train", "y_train", "x_test", "y_test")


def data_dir(configured):
    """The data directory to search: the DATA_DIR constant if set, else $TRANSFER_DATA_DIR, else None."""
    chosen = configured or os.environ.get(DATA_DIR_ENV) or None
    if chosen is not None:
        check(os.path.isdir(chosen), f"data directory {chosen!r} does not exist (--data_dir= or ${DATA_DIR_ENV})")
    return chosen


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
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
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


def load_keras_dataset(name, directory, image_shape, num_classes, download, class_names=None):
    """A `keras.datasets` dataset from the first source that has it, in Keras's `load_data` layout.

    1. `<directory>/<name>.npz` (Keras's arrays x_train, y_train, x_test, y_test);
    2. `<directory>/<name>/train/<class>/*.png|jpg` and `.../test/<class>/*` (when `class_names` is given),
       decoded once and cached as an npz (see `load_image_tree`);
    3. Keras's download, `download` being `keras.datasets.<name>.load_data`.

    Returns (train, test, source): source says where the data came from, with a sha256 to pin it.
    """
    filename = f"{name}.npz"
    if directory is not None:
        path = os.path.join(directory, filename)
        if os.path.isfile(path):
            train, test = load_npz(path, image_shape, num_classes)
            return train, test, {"source": os.path.abspath(path), "sha256": files.sha256(path)}
        tree = os.path.join(directory, name)
        if class_names is not None and os.path.isdir(os.path.join(tree, "train")):
            return load_image_tree(tree, class_names, image_shape)
    try:
        (x_train, y_train), (x_test, y_test) = download()
    except Exception as error:  # no internet, proxy, disk full: all mean "put the file here yourself"
        where = directory or f"a folder given by --data_dir= or ${DATA_DIR_ENV}"
        tree = f" or a {name}/train/<class>/ image tree" if class_names is not None else ""
        raise UserError(
            f"{filename} not found in {where} and the download failed ({failure(error)}); "
            f"put Keras's {filename} (arrays {', '.join(ARRAY_KEYS)}){tree} there"
        ) from None
    cached = os.path.join(os.path.expanduser("~"), ".keras", "datasets", filename)
    source = {"source": "download", "sha256": files.sha256(cached) if os.path.isfile(cached) else None}
    train = (x_train, y_train.reshape(-1).astype(np.int64))
    test = (x_test, y_test.reshape(-1).astype(np.int64))
    return train, test, source


def list_image_tree(root, class_names):
    """{split: [(path, size, label)]} for root/train/<class>/* and root/test/<class>/*, sorted by path."""
    listing = {}
    for split in ("train", "test"):
        folder = os.path.join(root, split)
        check(os.path.isdir(folder), f"image tree {root!r} has no {split}/ folder")
        extra = sorted(set(n for n in os.listdir(folder) if not images.hidden(n)) - set(class_names))
        check(not extra, f"{folder}: folders {extra} are not classes of this dataset ({', '.join(class_names)})")
        found = []
        for label, name in enumerate(class_names):
            class_dir = os.path.join(folder, name)
            check(os.path.isdir(class_dir), f"image tree {root!r} has no {split}/{name}/ folder")
            entries = sorted((e for e in os.scandir(class_dir) if images.is_image(e.name)
                              and not images.hidden(e.name)), key=lambda e: e.name)
            found += [(e.path, e.stat().st_size, label) for e in entries]
        check(found, f"{folder} holds no images (.png, .jpg, ...)")
        listing[split] = found
    return listing


def tree_key(root, listing):
    """A hash of every file's path (relative to the tree), size and label, and of the pixel contract they are
    decoded by: it changes when the tree or the decoding does."""
    digest = hashlib.sha256(f"{images.CONTRACT}\n".encode())
    for split, entries in listing.items():
        for path, size, label in entries:
            digest.update(f"{split}\t{os.path.relpath(path, root)}\t{size}\t{label}\n".encode())
    return digest.hexdigest()


def image_mode(path):
    """A readable image file's own colour mode, from its header alone (None if Pillow cannot open it)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.mode
    except (OSError, UnidentifiedImageError, ValueError):
        return None


def report_conversions(modes, wanted, where):
    """From the images' own colour `modes` ({mode: count}, or a list with one per image), the
    {mode: count} of those not in `wanted` mode, which were converted; with one warning line when there
    are any. It goes into the record as "converted_images"."""
    modes = collections.Counter(modes) if isinstance(modes, list) else modes
    counts = {mode: n for mode, n in sorted(modes.items()) if mode and mode != wanted}
    if counts:
        listed = ", ".join(f"{n} {mode}" for mode, n in counts.items())
        print(f"warning: converted {sum(counts.values())} images in {where} to {wanted}: {listed}")
    return counts


def load_image_tree(root, class_names, image_shape):
    """An image-folder tree as Keras's arrays, decoded once and then read from an npz cache.

    The cache file is named by a hash of the tree's file list and sizes, so a changed tree is decoded
    again; it is written to a temporary name and renamed, and loaded with allow_pickle=False.
    Returns (train, test, source) like `load_keras_dataset`, with source["cache"] "hit" or "miss".
    """
    listing = list_image_tree(root, class_names)
    key = tree_key(root, listing)
    path = os.path.join(files.cache_dir(), f"{os.path.basename(os.path.normpath(root))}-{key[:20]}.npz")
    source = {"source": os.path.abspath(root), "sha256": key, "cache_file": path}
    wanted = "RGB" if len(image_shape) == 3 else "L"
    if os.path.isfile(path):
        try:
            train, test = load_npz(path, image_shape, len(class_names))
            with np.load(path, allow_pickle=False) as f:  # the colour modes the images had (older caches: none)
                modes = (dict(zip(f["converted_modes"].tolist(), f["converted_counts"].tolist(), strict=True))
                         if "converted_modes" in f.files else {})
            converted = report_conversions(modes, wanted, root)
            return train, test, {**source, "converted_images": converted, "cache": "hit"}
        except UserError as error:
            print(f"warning: ignoring a damaged cache file and decoding again: {error}")
    print(f"decoding {sum(len(f) for f in listing.values())} images under {root} (cached for next time) ...")
    start = time.perf_counter()
    arrays, modes, skipped = {}, [], []
    for split, entries in listing.items():
        paths = [f[0] for f in entries]
        arrays[f"x_{split}"], kept, failed = pipelines.decode(paths, image_shape[:2], image_shape[2] if len(
            image_shape) == 3 else 1)
        if len(image_shape) == 2:
            arrays[f"x_{split}"] = arrays[f"x_{split}"][..., 0]
        arrays[f"y_{split}"] = np.array([entries[i][2] for i in kept], dtype=np.uint8)
        modes += [image_mode(paths[i]) for i in kept]
        skipped += [os.path.relpath(paths[i], root) for i in failed]
    if skipped:
        print(f"warning: skipped {len(skipped)} files that cannot be decoded: {', '.join(skipped[:10])}"
              + (f" and {len(skipped) - 10} more" if len(skipped) > 10 else ""))
        source["skipped_files"] = skipped
    source["decode_seconds"] = round(time.perf_counter() - start, 3)
    source["converted_images"] = report_conversions(modes, wanted, root)
    arrays["converted_modes"] = np.array(list(source["converted_images"]), dtype=str)
    arrays["converted_counts"] = np.array(list(source["converted_images"].values()), dtype=np.int64)
    try:
        os.makedirs(files.cache_dir(), exist_ok=True)
        with files.replacing(path) as tmp:
            np.savez(tmp, **arrays)
    except OSError as error:  # a read-only home is no reason to stop: the run just decodes every time
        print(f"warning: could not write the decoded-image cache {path}: {error.strerror}")
    train = (arrays["x_train"], arrays["y_train"].astype(np.int64))
    test = (arrays["x_test"], arrays["y_test"].astype(np.int64))
    return train, test, {**source, "cache": "miss"}


def mnist_as_rgb(directory, image_size, validation_split, seed):
    """MNIST (load_keras_dataset) as a backbone takes it: uint8 RGB digits at `image_size` x `image_size`.
    Returns (train, validation, test, source) as (x, y) pairs, a seeded `validation_split` of the training
    digits validating; source as load_keras_dataset's, with class names and counts."""
    names = [str(digit) for digit in range(10)]
    train, test, source = load_keras_dataset("mnist", directory, (28, 28), 10, keras.datasets.mnist.load_data,
                                             class_names=names)

    def as_rgb(x):  # 28x28 grey digits -> image_size x image_size RGB
        return np.repeat(images.resize(tf.constant(x[..., None]), (image_size, image_size)).numpy(), 3, axis=-1)

    train, validation = tasks.train_validation_split(as_rgb(train[0]), train[1], validation_split, seed)
    samples = {"train": len(train[0]), "validation": len(validation[0]), "test": len(test[1])}
    return train, validation, (as_rgb(test[0]), test[1]), {**source, "class_names": names, "samples": samples}
