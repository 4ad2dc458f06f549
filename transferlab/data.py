"""Datasets: finding them (data directory first, then Keras's download), checking them, splitting into tasks."""

import collections
import dataclasses
import hashlib
import os
import time
import zipfile

import keras
import numpy as np
import tensorflow as tf

from transferlab import files, images
from transferlab.config import UserError, check

DATA_DIR_ENV = "TRANSFER_DATA_DIR"  # environment variable naming the data directory when DATA_DIR is None
CACHE_DIR_ENV = "TRANSFERLAB_CACHE_DIR"  # where decoded image trees are cached; default ~/.cache/transferlab
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


def failure(error):
    """Why a download (or another outside call) failed, in one line: the exception's kind and message (Keras's
    names the URL), not the kind alone."""
    message = " ".join(str(error).split())[:300]
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def cache_dir():
    return os.environ.get(CACHE_DIR_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "transferlab")


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
    """A hash of every file's path (relative to the tree), size and label: it changes when the tree does."""
    digest = hashlib.sha256()
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
    path = os.path.join(cache_dir(), f"{os.path.basename(os.path.normpath(root))}-{key[:20]}.npz")
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
        arrays[f"x_{split}"], kept, failed = images.decode(paths, image_shape[:2], image_shape[2] if len(
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
        os.makedirs(cache_dir(), exist_ok=True)
        with files.replacing(path) as tmp:
            np.savez(tmp, **arrays)
    except OSError as error:  # a read-only home is no reason to stop: the run just decodes every time
        print(f"warning: could not write the decoded-image cache {path}: {error.strerror}")
    train = (arrays["x_train"], arrays["y_train"].astype(np.int64))
    test = (arrays["x_test"], arrays["y_test"].astype(np.int64))
    return train, test, {**source, "cache": "miss"}


def train_validation_split(x, y, validation_fraction, seed):
    """Shuffle with the seed, then hold out the last `validation_fraction` for validation.

    Shuffling first matters: image trees list each class in turn, so a plain slice would validate on
    the last classes only.
    """
    order = np.random.default_rng(seed).permutation(len(x))
    cut = len(x) - int(round(len(x) * validation_fraction))
    return (x[order[:cut]], y[order[:cut]]), (x[order[cut:]], y[order[cut:]])


def epoch_batches(x, y, batch_size, seed, first_epoch=0):
    """A tf.data pipeline of shuffled (images, labels) batches for `fit`, one epoch per pass: the first
    pass is epoch `first_epoch`, the next one the epoch after, each in its own order, a function of
    (seed, epoch) alone.

    Keras's own shuffling draws each epoch's order from a random stream that restarts with the process,
    so a run resumed at epoch 5 would see epoch 1's order again; here epoch 5 is epoch 5's, resumed or
    not. `fit` starts a new pass (a new iterator) for every epoch, and the epoch counter advances once
    per pass, inside the pipeline, so it cannot race with the prefetching of the next epoch.
    """
    count, y = len(x), tf.convert_to_tensor(y)
    epoch = tf.Variable(first_epoch - 1, dtype=tf.int64, trainable=False)

    def order(_):
        seed_pair = tf.stack([tf.constant(seed, tf.int64), epoch.assign_add(1)])
        return tf.random.experimental.stateless_shuffle(tf.range(count, dtype=tf.int64), seed=seed_pair)

    indices = tf.data.Dataset.range(1).map(order).flat_map(lambda o: tf.data.Dataset.from_tensor_slices(o))
    cardinality = tf.data.experimental.assert_cardinality(-(-count // batch_size))
    if isinstance(x, images.Files):  # image files: each decoded in parallel as its batch comes up
        paths = tf.constant(x.paths)
        examples = indices.map(lambda i: (x.load(tf.gather(paths, i)), tf.gather(y, i)),
                               num_parallel_calls=tf.data.AUTOTUNE)
        return examples.batch(batch_size).apply(cardinality)
    x = tf.convert_to_tensor(x)
    batches = indices.batch(batch_size).apply(cardinality)
    return batches.map(lambda i: (tf.gather(x, i), tf.gather(y, i)), num_parallel_calls=tf.data.AUTOTUNE)


CLASS_WEIGHTS = (None, "balanced")


def class_weights(y, class_names, kind):
    """Per-class loss weights from the training labels `y`: None (every image counts the same), or
    "balanced": n / (classes x count), so that each class weighs as much in the loss as if the classes
    were equally large (scikit-learn's rule). Warns when the largest class has more than 3 times the
    smallest's images, whatever `kind` is: a classifier trained on it leans toward the large class."""
    check(kind in CLASS_WEIGHTS, f"--class_weight={kind}: expected None or 'balanced'")
    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=len(class_names))
    if counts.min() > 0 and counts.max() > 3 * counts.min():
        large, small = class_names[int(counts.argmax())], class_names[int(counts.argmin())]
        print(f"warning: {large} has {counts.max()} training images, {small} {counts.min()}: more than 3 times as "
              f"many" + ("" if kind else "; --class_weight=balanced weighs the classes equally in the loss"))
    if kind is None:
        return None
    return {c: float(len(y) / (len(class_names) * n)) for c, n in enumerate(counts) if n}


def take_per_class(x, y, per_class, seed):
    """`per_class` samples of every label in `y`, chosen with the seed (stratified), in their original
    order: the data-efficiency studies' smaller training sets. The same seed takes the same samples."""
    rng = np.random.default_rng(seed)
    keep = []
    for label in np.unique(y):
        where = np.flatnonzero(y == label)
        check(len(where) >= per_class, f"--task_b_samples_per_class={per_class}: class {label} has only "
                                       f"{len(where)} training samples")
        keep.append(rng.choice(where, per_class, replace=False))
    keep = np.sort(np.concatenate(keep))
    return x[keep], y[keep]


def of_classes(x, y, classes):
    """The samples whose label is in `classes`, with labels remapped to 0..len(classes)-1 in that order.

    Task B = digits [7, 8, 9] gives labels 7->0, 8->1, 9->2, so a 3-way softmax head can learn them.
    """
    classes = list(classes)
    lookup = np.full(max(int(y.max(initial=0)), *classes) + 1, -1, dtype=np.int64)
    lookup[classes] = np.arange(len(classes))
    keep = np.isin(y, classes)
    return x[keep], lookup[y[keep]]


def check_tasks(task_a, task_b, num_classes):
    """Class splits must name existing classes, not repeat one, and not share any between the tasks (the
    per-class cut, TASK_B_SAMPLES_PER_CLASS, is checked by its name: config.RANGES)."""
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


@dataclasses.dataclass
class Task:
    """What a phase learns and is scored on: class names (or labels), training (x, y), and the validation and
    test (x, y) it is scored on (None where there is none: a folder has no test set, MNIST no validation)."""

    classes: list
    train: tuple
    validation: tuple | None = None
    test: tuple | None = None

    @property
    def samples(self):
        """How many training images."""
        return len(self.train[1])

    def counts(self, prefix=""):
        """{split: images} of the splits it has, the record's data "samples"."""
        return {f"{prefix}{split}": len(getattr(self, split)[1]) for split in ("train", "validation", "test")
                if getattr(self, split) is not None}


def tasks(train, test, source, task_a_classes, task_b_classes, seed, validation_fraction=None,
          task_b_samples_per_class=None):
    """The two tasks of a transfer experiment, (task A, task B) as Tasks, from a dataset's (x, y) `train` and
    `test` arrays: each with only its classes, labels remapped to 0..n-1 (of_classes) and images scaled to
    [0, 1]. With `validation_fraction`, each task's training images are shuffled with `seed` and that share
    held out (train_validation_split); then `task_b_samples_per_class` cuts task B's training images
    (take_per_class). An empty split is a UserError. Each split's count goes into `source` (the record's data
    section, from load_keras_dataset) as its "samples", and is printed."""
    found = []
    for task, classes in (("a", task_a_classes), ("b", task_b_classes)):
        x, y = of_classes(*train, classes)
        splits = {"train": (x, y)}
        if validation_fraction is not None:
            splits["train"], splits["validation"] = train_validation_split(x, y, validation_fraction, seed)
        if task == "b" and task_b_samples_per_class is not None:  # fewer training images; the rest whole
            splits["train"] = take_per_class(*splits["train"], task_b_samples_per_class, seed)
        splits["test"] = of_classes(*test, classes)
        for split, (x, _) in splits.items():
            check(len(x) > 0, f"task {task.upper()} {split} is empty: no images of classes {classes}")
        found.append(Task(list(classes), **{split: (scale_images(x), y) for split, (x, y) in splits.items()}))
    source["samples"] = {**found[0].counts("task_a_"), **found[1].counts("task_b_")}
    print(f"data from {source['source']}: task A {list(task_a_classes)}, task B {list(task_b_classes)}: "
          + ", ".join(f"{n} {name}" for name, n in source["samples"].items()))
    return tuple(found)


def training_task(train, validation, test, source, samples_per_class, class_weight, seed):
    """(task, class weights) of a backbone experiment: a Task of the class names in `source` (the record's data
    section) and the (x, y) splits, its training images cut to `samples_per_class` per class (take_per_class;
    None keeps all), and the class weights of what is left (class_weights; `class_weight` None or "balanced"),
    both noted in `source`. Prints what the data is."""
    if samples_per_class is not None:  # a smaller training set, the same images for the same seed
        train = take_per_class(*train, samples_per_class, seed)
        source["samples"]["train"] = len(train[1])
    names = source["class_names"]
    print(f"images from {source['source']}: classes {names}, "
          + ", ".join(f"{n} {split}" for split, n in source["samples"].items()))
    source["train_per_class"] = np.bincount(train[1], minlength=len(names)).tolist()
    source["class_weight"] = class_weights(train[1], names, class_weight)
    return Task(names, train, validation, test), source["class_weight"]


def mnist_as_rgb(directory, image_size, validation_split, seed):
    """MNIST (load_keras_dataset) as a backbone takes it: uint8 RGB digits at `image_size` x `image_size`.
    Returns (train, validation, test, source) as (x, y) pairs, a seeded `validation_split` of the training
    digits validating; source as load_keras_dataset's, with class names and counts."""
    names = [str(digit) for digit in range(10)]
    train, test, source = load_keras_dataset("mnist", directory, (28, 28), 10, keras.datasets.mnist.load_data,
                                             class_names=names)

    def as_rgb(x):  # 28x28 grey digits -> image_size x image_size RGB
        resized = tf.image.resize(x[..., None].astype(np.float32), (image_size, image_size))
        return np.repeat(np.round(resized.numpy()).clip(0, 255).astype(np.uint8), 3, axis=-1)

    train, validation = train_validation_split(as_rgb(train[0]), train[1], validation_split, seed)
    samples = {"train": len(train[0]), "validation": len(validation[0]), "test": len(test[1])}
    return train, validation, (as_rgb(test[0]), test[1]), {**source, "class_names": names, "samples": samples}
