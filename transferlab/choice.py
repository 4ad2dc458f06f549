"""The input size and the head that fit the user's photos, measured on them before the run trains.

The folder recipe's 224 px and linear head were chosen on cats vs dogs, photos of a few hundred pixels. On photos
of 32 pixels a smaller input scores points more, and which head is best depends on the data (docs/results.md, "A
default that fits the photos"). So when a recipe leaves IMAGE_SIZE or HEAD to the photos (None), `choose` measures:

1. the photos' typical size, the median shorter side of a sample of training files (read from their headers):
   photos at least as large as the backbone's native size are shown to it at that size, where its weights were
   trained (fewer pixels only lose detail); smaller ones are tried at it and at SIZE_SHARES of it (96, 160 and
   224 px for MobileNetV2);
2. a sample of the training photos, SAMPLE_IMAGES shared evenly by the classes, picked by a hash of the file's
   path, cut into FOLDS folds by another hash: the validation photos the run reports play no part;
3. each size's frozen features of the sample (the feature cache; every size through one LiteRT conversion:
   backbones.size_free), a linear head on them trained FOLDS times, each time on all folds but one, as the run
   trains its head (as many passes, the same optimizer, learning rate and batch size), and scored on the fold
   it did not see: every photo of the sample is scored once (cross-validation: a sample of 600 photos cannot
   tell a point apart when only a third of it scores); then the other heads of HEADS, the same way, at the
   size that scored best;
4. the size whose best head scores highest, a smaller one only when it beats the native size by more than a
   standard error (leaving the size the weights were trained at takes evidence), and there the linear head
   unless another beats it by more than a standard error too.

The choice is a function of the files, the backbone, the candidates and the head's training, not of the run's
seed, and is kept in the cache (choices/<key>.json): a rerun, another seed or a resumed run on the same photos
reuses it at no cost.
"""

import dataclasses
import hashlib
import json
import os
import statistics
import time

import transferlab.runtime  # noqa: F401 (first: TensorFlow starts without its start-up noise)

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

from transferlab import backbones, feature_cache, files, folders, litert, models

SIZE_SHARES = (3 / 7, 5 / 7)  # smaller input sizes tried beside the native one (224: 96 and 160), in 8-px steps
HEADS = ([], [256])  # linear, and one hidden layer
SAMPLE_IMAGES = 600  # training photos the candidates are measured on, shared evenly by the classes
FOLDS = 3  # each candidate trains on two thirds of the sample and scores the third it did not see, three times
PHOTO_SAMPLE = 200  # training files whose headers give the photos' typical size
SEED = 0  # the choice's own: the same photos give the same choice whatever the run's seed
VERSION = 6  # of the procedure: a cached choice of another version is not reused


@dataclasses.dataclass(frozen=True)
class Settings:
    """What is measured and how each head trains: the run's head options."""

    sizes: tuple  # input sizes to try; one: the size is given (or the photos are large), only heads are tried
    heads: tuple  # head widths lists to try
    epochs: int  # passes over the sample's fitting part: as many as the run's head makes over its photos
    learning_rate: float
    optimizer: str = "adam"
    batch_size: int = 32
    reason: str = ""  # why these sizes (candidate_sizes)


@dataclasses.dataclass(frozen=True)
class Choice:
    """What was chosen, from what, and why: the record's "choice" section."""

    image_size: int
    head: list
    tried: list  # [{"image_size", "head", "held_out_accuracy", "held_out_loss"}], in the order tried
    reason: str  # why these sizes were tried
    sample: dict  # {"fit": images, "held_out": images}
    seconds: float = 0.0
    cached: bool = False
    # (indices into the training photos, {size: their features}): the sample's frozen features, kept for the run,
    # whose own pass at the chosen size takes them instead of computing them again (not in the record)
    sample_features: tuple = dataclasses.field(default=None, repr=False, compare=False)

    def record(self):
        return {"image_size": self.image_size, "head": self.head, "reason": self.reason, "sample": self.sample,
                "tried": self.tried, "seconds": round(self.seconds, 3), "cached": self.cached}

    @classmethod
    def of(cls, record, cached=True):
        return cls(record["image_size"], list(record["head"]), record["tried"], record["reason"], record["sample"],
                   record["seconds"], cached)

    def table(self):
        """The candidates as printed lines, the chosen one marked."""
        return [f"   {t['image_size']:>4} px, head {describe_head(t['head']):<12} held-out accuracy "
                f"{t['held_out_accuracy']:.2%}, loss {t['held_out_loss']:.3f}"
                + ("   <- chosen" if (t["image_size"], t["head"]) == (self.image_size, self.head) else "")
                for t in self.tried]


def describe(settings):
    """What `measure` tries, in words: "sizes 96, 160, 224 with a linear head, then head 256 at the best"."""
    sizes = ", ".join(map(str, settings.sizes))
    heads = [describe_head(h) for h in settings.heads]
    if len(settings.sizes) == 1 or len(heads) == 1:
        return f"size{'s' * (len(settings.sizes) > 1)} {sizes} x head{'s' * (len(heads) > 1)} {', '.join(heads)}"
    return f"sizes {sizes} with head {heads[0]}, then head{'s' * (len(heads) > 2)} {', '.join(heads[1:])} at the best"


def describe_head(head):
    return "linear" if not head else "-".join(map(str, head))


def photo_side(paths, count=PHOTO_SAMPLE):
    """The median shorter side, in pixels, of up to `count` of the files (evenly spread), from their headers."""
    step = max(1, len(paths) // count)
    sides = []
    for path in list(paths)[::step][:count]:
        with Image.open(path) as image:  # the header only: nothing is decoded
            sides.append(min(image.size))
    return int(statistics.median(sides))


def candidate_sizes(name, side):
    """(sizes to try, why) for photos whose typical shorter side is `side` pixels, on backbone `name`."""
    family = backbones.family(name)
    if side >= family.native:
        return (family.native,), f"photos of {side} px are at least {name}'s native {family.native}: that size"
    sizes = sorted({family.native, *(max(family.smallest, round(family.native * share / 8) * 8)
                                     for share in SIZE_SHARES)}, reverse=True)  # the native size first
    return tuple(sizes), f"photos of {side} px, below {name}'s native {family.native}: sizes measured"


def hash_share(path, salt):
    """Where a file falls in [0, 1) for `salt`: a function of its path's last two parts (class folder and name)."""
    return folders.hash_share(f"{salt}:" + "/".join(os.path.normpath(path).split(os.sep)[-2:]))


def sample(paths, labels, images=SAMPLE_IMAGES, folds=FOLDS):
    """(indices into the training files, the fold of each): up to `images` shared evenly by the classes (at least
    `folds` a class), picked by a hash of the path, each in a fold by another hash (every fold has every class
    that has `folds` photos: a class's photos are dealt to the folds in the order of that hash)."""
    picked, fold = [], []
    per_class = max(folds, images // len(np.unique(labels)))
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        chosen = sorted(members, key=lambda i: hash_share(paths[i], "sample"))[:per_class]
        dealt = sorted(chosen, key=lambda i: hash_share(paths[i], "fold"))
        picked += dealt
        fold += [n % folds for n in range(len(dealt))]
    return np.array(picked), np.array(fold)


def key(name, weights_sha256, train, settings):
    """The cache key: the backbone and its weights, the training files (paths, sizes, times) and labels, and what
    is tried and how."""
    digest = hashlib.sha256(json.dumps({"version": VERSION, "backbone": name, "weights": weights_sha256,
                                        "settings": dataclasses.asdict(settings), "images": SAMPLE_IMAGES,
                                        "folds": FOLDS, "seed": SEED}, sort_keys=True).encode())
    digest.update(train[0].digest().encode())
    digest.update(np.ascontiguousarray(train[1], dtype=np.int64).data)
    return digest.hexdigest()


def folder():
    return os.path.join(files.cache_dir(), "choices")


def score(features, labels, fold, heads, classes, settings):
    """[(held-out accuracy, held-out loss)] of every (size, head) pair, sizes in the order of `features` (one
    array of rows a size, all of one width), heads of `heads` (widths): each trained once a fold on the other
    folds' rows for `settings.epochs` passes and scored on its own fold's, the scores pooled over the folds.
    Every candidate of a head shape trains at once: its weights are one tensor a layer with a leading (size,
    fold) axis, each candidate's loss weighs only the rows outside its fold, the loss is their sum, so each
    learns as it would alone (the optimizers are elementwise: Adam scales each weight's step by its own
    gradients). One small tf.function step over them all, not Keras's fit: the same training (batches, Glorot
    initialisation, the run's optimizer), a third of the time (docs/design.md)."""
    folds, sizes = int(fold.max()) + 1, len(features)
    rng = np.random.default_rng(SEED)
    x = tf.constant(np.stack(features).astype(np.float32))  # (size, row, feature)
    binary = classes == 2
    nets = []  # a head: [(kernel, bias)] a layer, each (size, fold, in, out) and (size, fold, 1, out)
    for head in heads:
        widths = [x.shape[-1], *head, 1 if binary else classes]
        layers = []
        for n, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            limit = (6 / (fan_in + fan_out)) ** 0.5  # Keras Dense's default, glorot_uniform, and zero bias
            layers.append((keras.Variable(rng.uniform(-limit, limit, (sizes, folds, fan_in, fan_out)),
                                          dtype="float32", name=f"kernel_{len(nets)}_{n}"),
                           keras.Variable(np.zeros((sizes, folds, 1, fan_out)), dtype="float32",
                                          name=f"bias_{len(nets)}_{n}")))
        nets.append(layers)
    weights = [v for layers in nets for pair in layers for v in pair]
    optimizer = models.OPTIMIZERS[settings.optimizer](learning_rate=settings.learning_rate)
    optimizer.build(weights)
    truth = tf.constant(labels, tf.int32)

    def logits(layers, h):  # h: (size, fold or 1, row, feature) -> (size, fold, row, out)
        for n, (kernel, bias) in enumerate(layers):
            h = tf.matmul(h, kernel) + bias
            h = tf.nn.relu(h) if n < len(layers) - 1 else h
        return h

    def losses(out, y):  # (size, fold, row) cross-entropy, from logits as Keras computes it from probabilities
        y = tf.broadcast_to(y, tf.shape(out)[:3])
        if binary:
            return tf.nn.sigmoid_cross_entropy_with_logits(tf.cast(y, tf.float32), out[..., 0])
        return tf.nn.sparse_softmax_cross_entropy_with_logits(y, out)

    @tf.function(input_signature=[tf.TensorSpec([None, folds, None], tf.int32)])
    def train(batches):  # (step, fold, row): each step a batch of each fold's candidates' own training rows
        for rows in batches:  # a tf.while_loop: no Python between the steps
            h = tf.gather(x, rows, axis=1)  # (size, fold, row, feature)
            with tf.GradientTape() as tape:
                loss = sum(tf.reduce_mean(losses(logits(layers, h), tf.gather(truth, rows)), axis=-1)
                           for layers in nets)
                loss = tf.reduce_sum(loss)  # the candidates' weights are disjoint: each gets its own loss's gradient
            optimizer.apply(tape.gradient(loss, weights), weights)

    # Each fold's candidates go over the rows outside it `epochs` times in batches of the run's size, shuffled a
    # pass at a time; the folds' streams are cut to one length (they differ by a few rows at most).
    fitting = [np.flatnonzero(fold != k) for k in range(folds)]
    steps = -(-settings.epochs * max(map(len, fitting)) // settings.batch_size)
    streams = [np.concatenate([rng.permutation(rows) for _ in range(-(-steps * settings.batch_size // len(rows)))])
               [:steps * settings.batch_size] for rows in fitting]
    batches = np.stack(streams).astype(np.int32).reshape(folds, steps, settings.batch_size)
    train(batches.transpose(1, 0, 2))
    own = np.eye(folds, dtype=bool)[fold]  # (row, fold): the candidate that did not see the row scores it
    scores = []
    everything = [logits(layers, x[:, None]) for layers in nets]  # every row through every candidate
    for s in range(sizes):
        for out in everything:
            out = out[s]  # (fold, row, out)
            loss = np.asarray(losses(out[None], truth)[0])[own.T]  # each row's loss under its own fold's candidate
            out = np.asarray(out).transpose(1, 0, 2)[own]  # (row, out), rows in order
            predicted = (out[:, 0] > 0).astype(int) if binary else out.argmax(axis=1)
            scores.append((float(np.mean(predicted == labels)), float(np.mean(loss))))
    return scores


def measure(extractors, train, classes, feed, settings, inference=litert.KERAS):
    """(the tried list, sample counts, the sample's features): every size of `settings` (the preferred first)
    through `extractors(size)` (a features model taking that size), every head of it, on the sample of `train`
    (images.Files, labels). With one size, the features of every training photo are computed, through the
    feature cache, and the sample's rows taken from them: they are the run's own (the same network, photos and
    key), so the run finds them on disk and the choice extracts nothing it would not; the sample's features
    are then None. With several, (the sample's indices into `train`, {size: their features})."""
    x, y = train
    picked, fold = sample(x.paths, y)
    labels = y[picked]
    features = []
    whole = len(settings.sizes) == 1
    for size in settings.sizes:
        images, their = (x.at(size), y) if whole else (x[picked].at(size), labels)
        found, _, _, _ = feature_cache.cached(extractors(size), images, feed(images, their), feed.preprocessing,
                                              inference)
        features.append(np.asarray(found[picked] if whole else found))
    # Sizes under the first head (linear: the cheapest), then the other heads at the best size: a hidden layer
    # trained three times at every size cost three times the rest of the choice (docs/design.md).
    first, others = (settings.heads, ()) if len(settings.sizes) == 1 else (settings.heads[:1], settings.heads[1:])
    tried = entries(settings.sizes, first, score(features, labels, fold, first, classes, settings))
    if others:
        size = best(tried, len(picked))["image_size"]
        tried += entries([size], others, score([features[settings.sizes.index(size)]], labels, fold, others,
                                               classes, settings))
    kept = None if whole else (picked, dict(zip(settings.sizes, features, strict=True)))  # whole: on disk already
    return tried, {"images": len(picked), "folds": int(fold.max()) + 1}, kept


def entries(sizes, heads, scores):
    """The tried list's entries of `sizes` x `heads`, in that order, from their (accuracy, loss) `scores`."""
    scores = iter(scores)
    return [{"image_size": size, "head": list(head), **dict(zip(("held_out_accuracy", "held_out_loss"),
                                                                 next(scores), strict=True))}
            for size in sizes for head in heads]


def best(tried, images):
    """The entry to train, of `tried` in order of preference (the native size first, then smaller; the linear
    head first): at the size whose best entry scores highest, the first head unless a later one beats it. Both
    take evidence, more than a standard error of the accuracy they would leave over `images` photos: a size
    other than the first must beat the first size's best (the native size is where the weights were trained),
    a head other than the first must beat the first head at that size (a hidden layer costs training time and
    is fitted to fewer examples a weight; one photo of 600 is not evidence)."""
    sizes = list(dict.fromkeys(t["image_size"] for t in tried))
    top = {size: max(t["held_out_accuracy"] for t in tried if t["image_size"] == size) for size in sizes}
    native = top[sizes[0]]
    size = max(sizes, key=lambda s: (s == sizes[0] or top[s] > native + standard_error(native, images), top[s],
                                     -sizes.index(s)))
    first, *others = [t for t in tried if t["image_size"] == size]
    bar = first["held_out_accuracy"] + standard_error(first["held_out_accuracy"], images)
    better = [t for t in others if t["held_out_accuracy"] > bar]
    return max(better, key=lambda t: (round(t["held_out_accuracy"], 6), -others.index(t))) if better else first


def standard_error(accuracy, images):
    return (accuracy * (1 - accuracy) / images) ** 0.5


def choose(model, info, twin, train, classes, feed, settings, inference=litert.KERAS):
    """The Choice on the training photos `train` ((images.Files, labels)) of `classes` classes for the backbone
    `model` (`info` its record section, backbones.load's: its name and weights' sha256; `twin` its size-free
    twin, backbones.size_free, or None: each size is rebuilt): from the cache when these photos were measured
    before with the same settings, else measured, and cached."""
    name = info["backbone"]
    entry = os.path.join(folder(), key(name, info["weights_sha256"], train, settings))
    found, damaged = files.read_entry(entry, ".json", lambda path, meta: Choice.of(meta))
    if damaged:
        print(f"warning: discarding a damaged choice {entry}.json ({damaged}); measuring again")
    if found is not None:
        return found
    start = time.perf_counter()

    def extractor(size):
        if twin is not None:  # every size through one conversion
            return backbones.feature_extractor(twin, keras.layers.GlobalAveragePooling2D())
        if size == model.input_shape[1]:  # the backbone as loaded: the run's own frozen pass, its conversion
            return backbones.feature_extractor(model, keras.layers.GlobalAveragePooling2D())
        fixed, _ = backbones.load(name, size, None, like=(model, info))  # the model's weights, not random ones
        return backbones.feature_extractor(fixed, keras.layers.GlobalAveragePooling2D())

    tried, counts, kept = measure(extractor, train, classes, feed, settings, inference)
    chosen = best(tried, counts["images"])
    choice = Choice(chosen["image_size"], chosen["head"], tried, settings.reason, counts, time.perf_counter() - start,
                    sample_features=kept)
    os.makedirs(folder(), exist_ok=True)
    files.write_json(f"{entry}.json", choice.record())
    return choice
