"""Image files: the one list of suffixes every loader reads, what is not a photo, and how one file is decoded.

The decoder has one rule for a file it cannot read (a truncated download, a text file named .jpg): skip it
and report it, never stop the run. `Files` stands in for the array of a folder's pixels: the pipelines
(pipelines.py) decode it batch by batch, so memory does not grow with the folder; `pipelines.scan` finds the
files that cannot be decoded beforehand.
"""

import hashlib
import os

import numpy as np
import tensorflow as tf

SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".webp")  # what tf.io.decode_image reads; any case


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


def decode_file(path, size, channels):
    """One file's pixels, uint8 at `size` with `channels`, inside a tf.data pipeline."""
    image = tf.io.decode_image(tf.io.read_file(path), channels=channels, expand_animations=False)
    image = tf.image.resize(image, size)  # bilinear, as keras.utils.image_dataset_from_directory
    return tf.cast(tf.round(tf.clip_by_value(image, 0, 255)), tf.uint8)


def check_file(path):
    """Decode the whole file, a truncated one fails, but JPEGs at 1/8 scale: a fifth of a full decode's time."""
    raw = tf.io.read_file(path)
    return tf.cond(tf.io.is_jpeg(raw), lambda: tf.size(tf.io.decode_jpeg(raw, ratio=8)),
                   lambda: tf.size(tf.io.decode_image(raw, expand_animations=False)))


class Files:
    """Image files in place of the array of their pixels, shape (n, *size, channels) uint8: indexing with an
    index array or a slice gives the Files of those images (so code that subsets an array subsets these),
    `load` decodes one in a pipeline (pipelines.files_dataset), and `np.asarray` decodes them all, one by one
    (for a few images: a plot). Every file must be decodable (pipelines.scan first)."""

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
        pixels = np.zeros(self.shape, np.uint8)
        for i, path in enumerate(self.paths):  # a few images (a plot's): a folder goes through pipelines.py
            try:
                pixels[i] = decode_file(path, self.size, self.channels).numpy()
            except tf.errors.OpError:
                raise ValueError(f"{path} cannot be decoded any more") from None
        return pixels if dtype is None else pixels.astype(dtype)

    def at(self, size):
        """The same files decoded to `size` x `size` pixels."""
        return Files(self.paths, (size, size), self.channels)

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
        return decode_file(path, self.size, self.channels)
