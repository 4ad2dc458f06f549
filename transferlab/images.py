"""Image files: the one list of suffixes every loader reads, what is not a photo, and the one decoder.

The decoder has one rule for a file it cannot read (a truncated download, a text file named .jpg): skip it
and report it, never stop the run. It streams: a tf.data pipeline over the file list decodes and resizes in
parallel, a batch at a time, so a folder is never held in memory unless the caller keeps the batches.
"""

import os

import numpy as np
import tensorflow as tf

from transferlab import progress, runtime

SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".webp")  # what tf.io.decode_image reads; any case
BATCH = 256  # images per decoded batch: enough to keep both cores busy, small next to any image folder


def is_image(name):
    """Does the file name have an image suffix (any case)?"""
    return name.lower().endswith(SUFFIXES)


def hidden(name):
    """What an operating system or a zip tool adds beside photos (.DS_Store, ._photo.jpg, __MACOSX/,
    Thumbs.db, desktop.ini): neither a class nor a skipped image."""
    return name.startswith((".", "__MACOSX")) or name.lower() in ("thumbs.db", "desktop.ini")


def files_under(folder):
    """(images, others): every file below `folder` (recursively, sorted, hidden entries left out), split into
    those with an image suffix and the rest."""
    images, others = [], []
    for root, folders, names in os.walk(folder):
        folders[:] = sorted(f for f in folders if not hidden(f))
        for name in sorted(names):
            if not hidden(name):
                (images if is_image(name) else others).append(os.path.join(root, name))
    return images, others


def _decode_one(path, size, channels):
    image = tf.io.decode_image(tf.io.read_file(path), channels=channels, expand_animations=False)
    image = tf.image.resize(image, size)  # bilinear, as keras.utils.image_dataset_from_directory
    return tf.cast(tf.round(tf.clip_by_value(image, 0, 255)), tf.uint8)


def stream(paths, size, channels=3, batch=BATCH):
    """Decode image files as (indices, images) batches: images uint8 (n, height, width, channels) resized to
    `size` ((height, width)), grayscale, RGBA and palette images converted to `channels`; indices say which
    of `paths` each is. A file that cannot be decoded is left out (its index is missing)."""
    paths = [str(p) for p in paths]
    if not paths:
        return
    numbered = tf.data.Dataset.from_tensor_slices((tf.range(len(paths), dtype=tf.int64), paths))
    decoded = numbered.map(lambda i, p: (i, _decode_one(p, size, channels)),
                           num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    batches = iter(decoded.ignore_errors().batch(batch).prefetch(tf.data.AUTOTUNE).as_numpy_iterator())
    while True:
        # libpng prints "Input file read error" for each broken file (we report them): quiet while fetching
        # only, so that what the caller does with a batch can still write to stderr.
        with runtime.quiet_stderr():
            found = next(batches, None)
        if found is None:
            return
        yield found


def decode(paths, size, channels=3):
    """Every image of `paths` in memory: (images uint8 (n, height, width, channels), the indices of those
    decoded, the indices of those that could not be)."""
    kept, arrays = [], []
    with progress.Progress("decoded", len(paths)) as shown:
        for indices, images in stream(paths, size, channels):
            kept.append(indices)
            arrays.append(images)
            shown.add(len(indices))
    kept = np.concatenate(kept) if kept else np.zeros(0, np.int64)
    images = np.concatenate(arrays) if arrays else np.zeros((0, *size, channels), np.uint8)
    failed = sorted(set(range(len(paths))) - set(kept.tolist()))
    return images, kept, failed
