"""Image folders as users keep them, `DATA_DIR/train/<class>/*.jpg` and `DATA_DIR/validation/<class>/*`,
decoded once by `keras.utils.image_dataset_from_directory` into uint8 arrays at the input size.

Files that cannot be decoded are skipped and reported, never fatal: a folder of photos gathered by hand
nearly always holds one truncated download or a stray text file.
"""

import os
import time

import keras
import numpy as np
import tensorflow as tf

from transferlab import data, runtime
from transferlab.config import UserError, check

FORMATS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")  # what image_dataset_from_directory reads
TUTORIAL_URL = "https://storage.googleapis.com/mledu-datasets/cats_and_dogs_filtered.zip"


def find(data_dir, name="cats_and_dogs_filtered", url=TUTORIAL_URL):
    """The image folder to use: `data_dir` itself when it has train/, else `data_dir/<name>`. Only when no data
    directory is given at all, the tutorial's zip fetched with `keras.utils.get_file` (cached in
    ~/.keras/datasets): a folder that was given but holds no images is the user's mistake, and training on
    another dataset instead would hide it."""
    if data_dir is not None:
        for folder in (data_dir, os.path.join(data_dir, name)):
            if os.path.isdir(os.path.join(folder, "train")):
                return folder
        found = sorted(e.name + ("/" if e.is_dir() else "") for e in os.scandir(data_dir)
                       if not e.name.startswith("."))
        shown = ", ".join(found[:8]) + (f" and {len(found) - 8} more" if len(found) > 8 else "") or "nothing"
        raise UserError(f"no image folder in {data_dir}: found {shown}; expected train/<class>/*.jpg "
                        f"(and optionally validation/<class>/) there, or a {name}/ folder holding them")
    try:
        extracted = keras.utils.get_file(f"{name}.zip", origin=url, extract=True)
    except Exception as error:  # no internet, proxy, disk full: all mean "put the folder there yourself"
        raise UserError(
            f"no data directory given (--data_dir= or ${data.DATA_DIR_ENV}) and the download of {name} from {url} "
            f"failed ({data.failure(error)}); download it yourself, or pass --data_dir=FOLDER"
        ) from None
    for folder, subfolders, _ in os.walk(extracted):
        if "train" in subfolders:
            return folder
    raise UserError(f"the download {extracted} holds no train/ folder")


def hidden(name):
    """What an operating system or a zip tool adds beside photos (.DS_Store, ._photo.jpg, __MACOSX/,
    Thumbs.db, desktop.ini): neither a class nor a skipped image."""
    return name.startswith((".", "__MACOSX")) or name.lower() in ("thumbs.db", "desktop.ini")


def class_names(folder):
    """The class folder names under `folder`, sorted (Keras's label order); at least two."""
    check(os.path.isdir(folder), f"image folder {folder!r} does not exist")
    names = sorted(e.name for e in os.scandir(folder) if e.is_dir() and not hidden(e.name))
    check(len(names) >= 2, f"{folder} has {len(names)} class folder(s) {names}; need at least 2 (<class>/*.jpg)")
    return names


def not_images(folder, classes):
    """Files in the class folders that image_dataset_from_directory passes over (no image suffix)."""
    found = []
    for name in classes:
        for root, folders, files in os.walk(os.path.join(folder, name)):
            folders[:] = [f for f in folders if not hidden(f)]
            found += [os.path.join(root, f) for f in sorted(files) if not f.lower().endswith(FORMATS) and not hidden(f)]
    return found


def decode(folder, classes, image_size):
    """Every image under folder/<class>/ resized to image_size x image_size RGB, as (x uint8, y, paths, failed).

    image_dataset_from_directory decodes in parallel (grayscale, RGBA and palette images become RGB); a
    file that fails to decode would stop the whole dataset, so each image is numbered and
    `ignore_errors` drops the failures, whose numbers then name the files.
    """
    images = keras.utils.image_dataset_from_directory(
        folder, class_names=classes, batch_size=None, shuffle=False, image_size=(image_size, image_size),
        verbose=False,
    )
    paths = images.file_paths
    numbered = tf.data.Dataset.zip(tf.data.Dataset.range(len(paths)), images).ignore_errors()
    numbered = numbered.map(lambda i, xy: (i, tf.cast(tf.round(xy[0]), tf.uint8), xy[1]),
                            num_parallel_calls=tf.data.AUTOTUNE).batch(256)
    kept, xs, ys = [], [], []
    with runtime.quiet_stderr():  # libpng prints "Input file read error" for each broken file: we report them
        for i, x, y in numbered.as_numpy_iterator():
            kept.append(i)
            xs.append(x)
            ys.append(y)
    kept = np.concatenate(kept) if kept else np.zeros(0, np.int64)
    failed = sorted(set(range(len(paths))) - set(kept.tolist()))
    x = np.concatenate(xs) if xs else np.zeros((0, image_size, image_size, 3), np.uint8)
    y = np.concatenate(ys).astype(np.int64) if ys else np.zeros(0, np.int64)
    return x, y, [paths[i] for i in kept], [paths[i] for i in failed]


def load(directory, image_size, validation_split, seed):
    """((x_train, y_train), (x_val, y_val), test, info) from directory/train/<class>/ and directory/validation/;
    test is None (a folder has no test split yet).

    Without a validation/ folder, a seeded `validation_split` of train/ validates. info goes into the
    record: where the data came from, a hash of the files used, class names, counts, skipped files.
    """
    train_dir, val_dir = os.path.join(directory, "train"), os.path.join(directory, "validation")
    check(os.path.isdir(train_dir), f"{directory} has no train/ folder (expected train/<class>/*.jpg)")
    classes = class_names(train_dir)
    has_val = os.path.isdir(val_dir)
    if has_val:
        val_classes = class_names(val_dir)
        check(val_classes == classes, f"{val_dir} has classes {val_classes}, train/ has {classes}")
    else:
        check(0 < validation_split < 1, f"--validation_split={validation_split}: must be in (0, 1) "
                                        f"when {directory} has no validation/ folder")
    folders = {"train": train_dir, **({"validation": val_dir} if has_val else {})}
    print(f"decoding the images under {directory} at {image_size}x{image_size} ...")
    start = time.perf_counter()
    splits, skipped, listing, modes = {}, [], {}, []
    for split, folder in folders.items():
        x, y, paths, failed = decode(folder, classes, image_size)
        modes += [data.image_mode(p) for p in paths]
        skipped += [(p, "cannot be decoded") for p in failed]
        skipped += [(p, "not an image file") for p in not_images(folder, classes)]
        for name in classes:
            check(np.any(y == classes.index(name)), f"{os.path.join(folder, name)} holds no readable images")
        splits[split] = (x, y)
        listing[split] = [(p, os.path.getsize(p), int(label)) for p, label in zip(paths, y, strict=True)]
    seconds = time.perf_counter() - start
    converted = data.report_conversions(modes, "RGB", directory)
    if not has_val:
        splits["train"], splits["validation"] = data.train_validation_split(*splits["train"], validation_split, seed)
    if skipped:
        shown = ", ".join(f"{os.path.relpath(p, directory)} ({why})" for p, why in skipped[:10])
        more = f" and {len(skipped) - 10} more (all in the record)" if len(skipped) > 10 else ""
        print(f"warning: skipped {len(skipped)} files: {shown}{more}")
    info = {
        "source": os.path.abspath(directory),
        "sha256": data.tree_key(directory, listing),
        "class_names": classes,
        "validation": "validation/ folder" if has_val else f"{validation_split:g} of train/, seed {seed}",
        "samples": {split: len(x) for split, (x, _) in splits.items()},
        "skipped_count": len(skipped),
        "skipped_files": [{"path": os.path.relpath(p, directory), "reason": why} for p, why in skipped],
        "converted_images": converted,  # {colour mode: count} of images converted to RGB
        "decode_seconds": round(seconds, 3),
    }
    return splits["train"], splits["validation"], None, info
