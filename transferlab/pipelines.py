"""Every tf.data pipeline of the project, in one place: what feeds `fit`, `predict` and the frozen passes.

- `epoch_batches`: shuffled training batches, each epoch in its own order, a function of (seed, epoch) alone;
- `arrays`: arrays as they are, for `fit` (training in seeded epochs, validation in order);
- `pipeline` and `Feed`: uint8 images through a backbone's preprocessing, augmented for training;
- `stream`, `decode` and `scan`: image files decoded (or checked) in parallel, a batch at a time;
- `numpy_batches`: any of them as numpy batches, for LiteRT and the feature cache.

Images are arrays, or images.Files (decoded in the pipeline as their batch comes up, so a folder is never held
in memory). Batch sizes are per replica (distribute.global_batch gives one step's).
"""

import numpy as np
import tensorflow as tf

from transferlab import distribute, images, progress, runtime

BATCH = 256  # images per decoded batch: enough to keep both cores busy, small next to any image folder


def epoch_batches(x, y, batch_size, seed, first_epoch=0, passes=1):
    """A pipeline of shuffled (images, labels) batches for `fit`, one epoch per pass: the first pass is epoch
    `first_epoch`, the next one the epoch after, each in its own order, a function of (seed, epoch) alone. With
    `passes` > 1 an epoch goes over the data that many times, each in an order of its own.

    Keras's own shuffling draws each epoch's order from a random stream that restarts with the process,
    so a run resumed at epoch 5 would see epoch 1's order again; here epoch 5 is epoch 5's, resumed or
    not. `fit` starts a new pass (a new iterator) for every epoch, and the epoch counter advances once
    per pass, inside the pipeline, so it cannot race with the prefetching of the next epoch.
    """
    count, y = len(x), tf.convert_to_tensor(y)
    epoch = tf.Variable(first_epoch - 1, dtype=tf.int64, trainable=False)

    def shuffled(key):  # the indices in the order of pass number `key` (epoch * passes + pass)
        return tf.random.experimental.stateless_shuffle(tf.range(count, dtype=tf.int64),
                                                        seed=tf.stack([tf.constant(seed, tf.int64), key]))

    def epoch_passes(_):  # each pass a dataset element, not an op of one graph: 1,500 passes trace in no time
        number = epoch.assign_add(1)
        return tf.data.Dataset.range(passes).map(lambda i: shuffled(number * passes + i))

    indices = tf.data.Dataset.range(1).flat_map(epoch_passes).flat_map(tf.data.Dataset.from_tensor_slices)
    cardinality = tf.data.experimental.assert_cardinality(-(-count * passes // batch_size))
    if isinstance(x, images.Files):  # image files: each decoded in parallel as its batch comes up
        paths = tf.constant(x.paths)
        examples = indices.map(lambda i: (x.load(tf.gather(paths, i)), tf.gather(y, i)),
                               num_parallel_calls=tf.data.AUTOTUNE)
        return examples.batch(batch_size).apply(cardinality)
    x = tf.convert_to_tensor(x)
    batches = indices.batch(batch_size).apply(cardinality)
    return batches.map(lambda i: (tf.gather(x, i), tf.gather(y, i)), num_parallel_calls=tf.data.AUTOTUNE)


def arrays(train, validation, batch_size, seed, first_epoch=0, passes=1):
    """(training, validation) pipelines of (x, y) arrays as they are: training from epoch `first_epoch` on in
    seeded epochs of `passes` passes (epoch_batches), validation (None: none) in order; every replica's batch in
    each step."""
    batch = distribute.global_batch(batch_size)
    training = epoch_batches(*train, batch, seed, first_epoch, passes).prefetch(tf.data.AUTOTUNE)
    validating = validation and tf.data.Dataset.from_tensor_slices(validation).batch(batch)
    return distribute.sharded(training), validating and distribute.sharded(validating)


def pipeline(x, y, first_epoch=None, *, preprocess, batch_size, seed, augmentation=None):
    """A pipeline over uint8 images (an array, or images.Files decoded in the pipeline), batched, through the
    backbone's `preprocess` exactly once, overlapped with the model's work by prefetch.

    For evaluation (`first_epoch` None) the images keep their order. For training, from epoch
    `first_epoch` on, every epoch comes in its own seeded order (epoch_batches: the same order whether or
    not the run was resumed) and is augmented when an `augmentation` model is given.
    """
    batch_size = distribute.global_batch(batch_size)
    if first_epoch is None and isinstance(x, images.Files):  # decoded a batch at a time, never all at once
        dataset = files_dataset(x, y).batch(batch_size)
    elif first_epoch is None:
        dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)
    else:
        dataset = epoch_batches(x, y, batch_size, seed, first_epoch)
        if augmentation is not None:
            dataset = dataset.map(lambda images, labels: (augmentation(tf.cast(images, tf.float32), training=True),
                                                          labels), num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.map(lambda images, labels: (preprocess(tf.cast(images, tf.float32)), labels),
                          num_parallel_calls=tf.data.AUTOTUNE)
    return distribute.sharded(dataset.prefetch(tf.data.AUTOTUNE))


class Feed:
    """A backbone experiment's input pipelines (`pipeline` with the backbone's `preprocess` function):
    `feed(x, y)` to evaluate, `feed(x, y, first_epoch)` to train. `preprocessing` names what it does to the
    images: part of the feature cache's key."""

    def __init__(self, preprocessing, preprocess, *, batch_size, seed, augmentation=None):
        self.preprocessing, self.preprocess = preprocessing, preprocess
        self.batch_size, self.seed, self.augmentation = batch_size, seed, augmentation

    def __call__(self, x, y, first_epoch=None):
        return pipeline(x, y, first_epoch, preprocess=self.preprocess, batch_size=self.batch_size, seed=self.seed,
                        augmentation=self.augmentation)


def files_dataset(files, labels):
    """(image, label) pairs of images.Files in order, decoded in parallel."""
    return tf.data.Dataset.from_tensor_slices((files.paths, labels)).map(
        lambda path, label: (files.load(path), label), num_parallel_calls=tf.data.AUTOTUNE)


def scan(paths):
    """The indices of `paths` that cannot be decoded, found without keeping any pixels."""
    paths = [str(p) for p in paths]
    if not paths:
        return []
    numbered = tf.data.Dataset.from_tensor_slices((tf.range(len(paths), dtype=tf.int64), paths))
    checked = numbered.map(lambda i, p: (i, images.check_file(p)), num_parallel_calls=tf.data.AUTOTUNE)
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


def stream(paths, size, channels=3, batch=BATCH):
    """Decode image files as (indices, images) batches: images uint8 (n, height, width, channels) resized to
    `size` ((height, width)), grayscale, RGBA and palette images converted to `channels`; indices say which
    of `paths` each is. A file that cannot be decoded is left out (its index is missing)."""
    paths = [str(p) for p in paths]
    if not paths:
        return
    numbered = tf.data.Dataset.from_tensor_slices((tf.range(len(paths), dtype=tf.int64), paths))
    decoded = numbered.map(lambda i, p: (i, images.decode_file(p, size, channels)),
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
    kept, arrays_ = [], []
    with progress.Progress("decoded", len(paths) if show else 0) as shown:  # a total of 0 shows nothing
        for indices, batch in stream(paths, size, channels):
            kept.append(indices)
            arrays_.append(batch)
            shown.add(len(indices))
    kept = np.concatenate(kept) if kept else np.zeros(0, np.int64)
    decoded = np.concatenate(arrays_) if arrays_ else np.zeros((0, *size, channels), np.uint8)
    failed = sorted(set(range(len(paths))) - set(kept.tolist()))
    return decoded, kept, failed


def numpy_batches(batches):
    """A pipeline's batches as numpy arrays (its numpy iterator: iterating it eagerly was slower beside LiteRT,
    docs/design.md), or `batches` as they are."""
    return batches.as_numpy_iterator() if isinstance(batches, tf.data.Dataset) else batches
