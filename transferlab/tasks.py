"""What a phase learns and is scored on (Task), made from a dataset's arrays or files: classes chosen and
relabelled, a seeded validation split, fewer images per class for the data-efficiency studies, class weights."""

import dataclasses

import numpy as np

from transferlab.errors import check


def train_validation_split(x, y, validation_fraction, seed):
    """Shuffle with the seed, then hold out the last `validation_fraction` for validation.

    Shuffling first matters: image trees list each class in turn, so a plain slice would validate on
    the last classes only.
    """
    order = np.random.default_rng(seed).permutation(len(x))
    cut = len(x) - int(round(len(x) * validation_fraction))
    return (x[order[:cut]], y[order[:cut]]), (x[order[cut:]], y[order[cut:]])


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


def take_per_class(x, y, per_class, seed, name="TASK_B_SAMPLES_PER_CLASS"):
    """`per_class` samples of every label in `y`, chosen with the seed (stratified), in their original
    order: the data-efficiency studies' smaller training sets. The same seed takes the same samples. `name`: the
    constant that asked for them, named in the error when a class has fewer."""
    rng = np.random.default_rng(seed)
    keep = []
    for label in np.unique(y):
        where = np.flatnonzero(y == label)
        check(len(where) >= per_class, f"--{name.lower()}={per_class}: class {label} has only "
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

    def at(self, size):
        """The same task with its images (image files: images.Files) decoded to `size` x `size`."""
        def resized(split):
            return None if split is None else (split[0].at(size), split[1])
        return Task(self.classes, resized(self.train), resized(self.validation), resized(self.test))

    def counts(self, prefix=""):
        """{split: images} of the splits it has, the record's data "samples"."""
        return {f"{prefix}{split}": len(getattr(self, split)[1]) for split in ("train", "validation", "test")
                if getattr(self, split) is not None}


def transfer_tasks(train, test, source, task_a_classes, task_b_classes, seed, validation_fraction=None,
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
        train = take_per_class(*train, samples_per_class, seed, "SAMPLES_PER_CLASS")
        source["samples"]["train"] = len(train[1])
    names = source["class_names"]
    print(f"images from {source['source']}: classes {names}, "
          + ", ".join(f"{n} {split}" for split, n in source["samples"].items()))
    source["train_per_class"] = np.bincount(train[1], minlength=len(names)).tolist()
    source["class_weight"] = class_weights(train[1], names, class_weight)
    return Task(names, train, validation, test), source["class_weight"]
