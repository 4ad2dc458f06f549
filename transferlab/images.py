"""Image files: the one list of suffixes every loader reads, what is not a photo, and how one file is decoded.

The pixel contract (docs/deploy.md), the same for training, validation, predict and the export checks, and
written down in each export's model card for its clients: JPEGs decoded with libjpeg's accurate integer IDCT
(what Pillow, OpenCV, Android and iOS decoders give; TensorFlow's default fast IDCT differs by up to 4 levels),
then the whole image stretched, never cropped, to the model's size with bilinear interpolation on pixel
centres (output pixel i reads input coordinate (i + 0.5) * in / out - 0.5, edges repeated, no antialiasing:
tf.image.resize's and OpenCV's INTER_LINEAR), rounded to uint8. MediaPipe's ImageClassifier samples at
i * in / out instead, a shift of up to half an input pixel: trained on that, the small-photo folders lost 1.4
to 3.6 points (docs/deploy.md), so its clients are given these pixels rather than the other way round.
"""

import hashlib
import os

import numpy as np
import tensorflow as tf

CONTRACT = "pixels-2: jpeg islow, bilinear stretch on pixel centres"  # in every cache key of decoded pixels
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


def decode(raw, channels):
    """An encoded image's pixels at its own size (uint8, `channels`): JPEGs with the accurate IDCT."""
    return tf.cond(tf.io.is_jpeg(raw),
                   lambda: tf.io.decode_jpeg(raw, channels=channels, dct_method="INTEGER_ACCURATE"),
                   lambda: tf.io.decode_image(raw, channels=channels, expand_animations=False))


def resize(image, size):
    """uint8 image(s), (h, w, c) or (n, h, w, c), stretched to `size` as the contract says (see above)."""
    batch = image if image.shape.rank == 4 else image[None]
    resized = tf.image.resize(batch, size, method="bilinear", antialias=False)
    resized = tf.cast(tf.round(tf.clip_by_value(resized, 0, 255)), tf.uint8)
    return resized if image.shape.rank == 4 else resized[0]


def decode_file(path, size, channels):
    """One file's pixels, uint8 at `size` with `channels`, inside a tf.data pipeline."""
    return resize(decode(tf.io.read_file(path), channels), size)


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
        digest = hashlib.sha256(f"{CONTRACT}\t{self.size}\t{self.channels}\n".encode())
        for path in self.paths:
            stat = os.stat(path)
            digest.update(f"{os.path.abspath(path)}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
        return digest.hexdigest()

    def load(self, path):
        """One file's pixels, inside a tf.data pipeline."""
        return decode_file(path, self.size, self.channels)
