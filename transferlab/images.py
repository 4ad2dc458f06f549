"""Image files: the one list of suffixes every loader reads, what is not a photo, and the one decoder.

The decoder has one rule for a file it cannot read (a truncated download, a text file named .jpg): skip it
and report it, never stop the run. It streams: a tf.data pipeline over the file list decodes and resizes in
parallel, a batch at a time, so a folder is never held in memory unless the caller keeps the batches.
`Files` stands in for the array of a folder's pixels: training and evaluation pipelines decode it batch by
batch, so memory does not grow with the folder; `scan` finds the files that cannot be decoded beforehand.
"""

import hashlib
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


def _check_one(path):
    """Decode the whole file, a truncated one fails, but JPEGs at 1/8 scale: a fifth of a full decode's time."""
    raw = tf.io.read_file(path)
    return tf.cond(tf.io.is_jpeg(raw), lambda: tf.size(tf.io.decode_jpeg(raw, ratio=8)),
                   lambda: tf.size(tf.io.decode_image(raw, expand_animations=False)))


def scan(paths):
    """The indices of `paths` that cannot be decoded, found without keeping any pixels."""
    paths = [str(p) for p in paths]
    if not paths:
        return []
    numbered = tf.data.Dataset.from_tensor_slices((tf.range(len(paths), dtype=tf.int64), paths))
    checked = numbered.map(lambda i, p: (i, _check_one(p)), num_parallel_calls=tf.data.AUTOTUNE)
    batches = iter(checked.ignore_errors().batch(BATCH).prefetch(tf.data.AUTOTUNE).as_numpy_iterator())
    readable = set()
    with progress.Progress("checked", len(paths)) as shown:
        while True:
            with runtime.quiet_stderr():  # libjpeg's "Premature end of JPEG data" for each broken file
                found = next(batches, None)
            if found is None:
                break
            readable.update(found[0].tolist())
            shown.add(len(found[0]))
    return sorted(set(range(len(paths))) - readable)


class Files:
    """Image files in place of the array of their pixels, shape (n, *size, channels) uint8: indexing with an
    index array or a slice gives the Files of those images (so code that subsets an array subsets these),
    `dataset(labels)` decodes them in a pipeline, in order and in parallel, and `np.asarray` decodes them all
    (for a few images: a plot). Every file must be decodable (`scan` first)."""

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, paths, size, channels=3):
        self.paths = np.asarray([str(p) for p in paths], dtype=str)
        self.size, self.channels = tuple(size), channels

    @property
    def shape(self):
        return (len(self.paths), *self.size, self.channels)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            return np.asarray(self[[index]])[0]
        return Files(self.paths[index], self.size, self.channels)

    def __array__(self, dtype=None, copy=None):
        pixels, _, failed = decode(self.paths, self.size, self.channels, show=False)
        if failed:
            raise ValueError(f"{len(failed)} files cannot be decoded any more, e.g. {self.paths[failed[0]]}")
        return pixels if dtype is None else pixels.astype(dtype)

    def digest(self):
        """A sha256 of what the pixels depend on: each file's path, size and modification time, the size and
        channels decoded to. A file rewritten in place changes it."""
        digest = hashlib.sha256(f"{self.size}\t{self.channels}\n".encode())
        for path in self.paths:
            stat = os.stat(path)
            digest.update(f"{os.path.abspath(path)}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
        return digest.hexdigest()

    def load(self, path):
        """One file's pixels, inside a tf.data pipeline."""
        return _decode_one(path, self.size, self.channels)

    def dataset(self, labels):
        """(image, label) pairs in order, decoded in parallel."""
        return tf.data.Dataset.from_tensor_slices((self.paths, labels)).map(
            lambda path, label: (self.load(path), label), num_parallel_calls=tf.data.AUTOTUNE)


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


def decode(paths, size, channels=3, show=True):
    """Every image of `paths` in memory: (images uint8 (n, height, width, channels), the indices of those
    decoded, the indices of those that could not be); progress shown unless `show` is False."""
    kept, arrays = [], []
    with progress.Progress("decoded", len(paths) if show else 0) as shown:  # a total of 0 shows nothing
        for indices, images in stream(paths, size, channels):
            kept.append(indices)
            arrays.append(images)
            shown.add(len(indices))
    kept = np.concatenate(kept) if kept else np.zeros(0, np.int64)
    images = np.concatenate(arrays) if arrays else np.zeros((0, *size, channels), np.uint8)
    failed = sorted(set(range(len(paths))) - set(kept.tolist()))
    return images, kept, failed
