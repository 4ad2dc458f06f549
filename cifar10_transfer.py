"""CIFAR-10 transfer learning: a small CNN learns 5 classes, then its frozen features serve the other 5.

Reproduces the published CIFAR-10 transfer experiment (Conv32x5-Conv16x5-Pool-Conv8x3-Flatten-Dropout(0.42)
then Dense 128-5; Adam, batch 100, 10 epochs; task A = airplane, automobile, bird, cat, deer, task B = dog,
frog, horse, ship, truck) and adds the baseline it never had: the same network from scratch on task B.
Two departures from the published script, both fixes: each task's training images are shuffled with the
seed before the 80/20 train/validation split (the published script sliced without shuffling), and task B's
labels 5-9 are remapped to 0-4 for a 5-way head (the published head had 10 outputs, 5 of them never used).

Task A is the classes the base network learns first, task B the held-out ones. The features are the
convolution layers, the head the dense layers on top. Phases, each recorded on its own: "base" (the whole
network on task A), "transfer" (a new head on the frozen features, task B), "scratch" (the same network from
random weights on task B: what did transfer buy?).

    python cifar10_transfer.py                                  # the whole experiment
    python cifar10_transfer.py --data_dir=/data/datasets        # offline: cifar10.npz or cifar10/train/...
    python cifar10_transfer.py --help                           # every constant with its default
"""

import sys

from transferlab import runtime  # first: it starts TensorFlow without its start-up noise
from transferlab import config, data, distribute, models, phases, plots, records

import keras

# -----------------------------------------------------------------------------------------------------
# Constants: edit them here, or override any from the shell as --name=value.
TASK_A_CLASSES = [0, 1, 2, 3, 4]  # classes the base network learns: airplane automobile bird cat deer
TASK_B_CLASSES = [5, 6, 7, 8, 9]  # held-out classes for the new head: dog frog horse ship truck
EPOCHS = 10  # epochs in every phase, as published
BATCH_SIZE = 100  # batch size in every phase, as published
HEAD_BATCH_SIZE = 100  # batch size for the head on cached features
LEARNING_RATE = 0.001  # Adam's learning rate in every phase (Keras's default, as published)
VALIDATION_FRACTION = 0.2  # share of each task's training images held out for validation, as published
SEED = 42  # one seed for Python, numpy, TensorFlow and the train/validation shuffle
DETERMINISTIC = False  # also make TensorFlow ops deterministic: identical reruns on the same hardware
TASK_B_SAMPLES_PER_CLASS: int | None = None  # cut task B's training set to this many per class (None: all)
FREEZE_UP_TO: int | str | None = None  # feature layers frozen in transfer: how many (0: none) or a name; None: all
REUSE_BASE = False  # take phase "base" from an earlier run in RESULTS_DIR with the same task A constants
RUN_SCRATCH = True  # train the same network from random init on task B: what did transfer buy?
FEATURE_CACHE = True  # transfer: run the frozen layers once, then train only the head on their output
AUGMENT = False  # random flips and shifts of the training images (turns the feature cache off)
DATA_DIR: str | None = None  # folder with cifar10.npz or cifar10/train/<class>/; None: $TRANSFER_DATA_DIR
DISTRIBUTE = "auto"  # auto (all GPUs if several), none, mirrored, multi_worker (cluster in TF_CONFIG) or tpu
MIXED_PRECISION: str | None = "auto"  # None (float32), mixed_float16 or mixed_bfloat16; auto: float16 with a GPU
TENSORBOARD = True  # TensorBoard logs of every phase in the run folder: tensorboard --logdir results/
RESULTS_DIR = "results"  # each run writes RESULTS_DIR/cifar10/<run_id>/
RESUME: str | None = None  # a run id, or "latest": finish an interrupted run (same constants) in its folder
# -----------------------------------------------------------------------------------------------------
# The constants a reusable phase depends on: with --reuse_base=True a run takes phase "base" from an earlier
# run only when these (and the data, code, library versions and distribution) are the same.
PHASE_INPUTS = {"base": ["TASK_A_CLASSES", "EPOCHS", "BATCH_SIZE", "LEARNING_RATE", "SEED", "DETERMINISTIC", "AUGMENT",
                         "VALIDATION_FRACTION"]}
CONFIG = config.configure(globals(), sys.argv[1:])

# 1. Check the constants before any work, so a typo costs a second, not a training run.
config.check_positive(EPOCHS=EPOCHS, BATCH_SIZE=BATCH_SIZE, HEAD_BATCH_SIZE=HEAD_BATCH_SIZE,
                      LEARNING_RATE=LEARNING_RATE)
config.check(TASK_B_SAMPLES_PER_CLASS is None or TASK_B_SAMPLES_PER_CLASS > 0,
             f"--task_b_samples_per_class must be > 0 or None, got {TASK_B_SAMPLES_PER_CLASS}")
config.check(0 < VALIDATION_FRACTION < 1, f"--validation_fraction must be in (0, 1), got {VALIDATION_FRACTION}")
data.check_tasks(TASK_A_CLASSES, TASK_B_CLASSES, num_classes=10)
strategy = distribute.start(DISTRIBUTE, MIXED_PRECISION, RESUME)  # before any other TensorFlow work
results_dir = distribute.results_dir(RESULTS_DIR, strategy)  # the chief's RESULTS_DIR; other workers a temporary one
resumed = records.find_resumable(results_dir, "cifar10", RESUME, CONFIG)
runtime.seed_everything(SEED, DETERMINISTIC)

# 2. Data: cifar10.npz or a cifar10/ image tree in the data directory (decoded once, then cached), else
#    Keras's download. Each task: its classes, labels remapped, shuffled 80/20 into train and validation.
# Keras's label order; defined after the constants block, so it is a fact of the data, not an override.
CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
(x_train, y_train), (x_test, y_test), source = data.load_keras_dataset(
    "cifar10", data.data_dir(DATA_DIR), (32, 32, 3), 10, keras.datasets.cifar10.load_data,
    class_names=CLASS_NAMES,
)
tasks = {}
for task, classes in (("a", TASK_A_CLASSES), ("b", TASK_B_CLASSES)):
    x, y = data.split_task(x_train, y_train, classes)
    train, validation = data.train_validation_split(x, y, VALIDATION_FRACTION, SEED)
    if task == "b" and TASK_B_SAMPLES_PER_CLASS is not None:  # fewer training images; validation, test whole
        train = data.take_per_class(*train, TASK_B_SAMPLES_PER_CLASS, SEED)
    test = data.split_task(x_test, y_test, classes)
    for split, (x, y) in (("train", train), ("validation", validation), ("test", test)):
        config.check(len(x) > 0, f"task {task.upper()} {split} is empty: no images of classes {classes}")
        tasks[f"{task}_{split}"] = (data.scale_images(x), y)
source["samples"] = {f"task_{name}": len(x) for name, (x, _) in tasks.items()}
print(f"CIFAR-10 from {source['source']}: " + ", ".join(f"{k} {v}" for k, v in source["samples"].items()))
xa_train, ya_train = tasks["a_train"]
xb_train, yb_train = tasks["b_train"]


# 3. The published network. Transfer freezes everything up to and including the Dropout(0.42) and trains
#    a new Dense(128) -> Dense(5) head. A Dropout has no weights, so here it opens the head instead of
#    closing the feature layers: the same network, but the frozen-feature cache can stop at the Flatten
#    and the new head still trains with dropout on its input, as it does in the published frozen model.
def feature_layers():
    # Named, so that --freeze_up_to= can name one.
    return [
        keras.layers.Conv2D(32, 5, activation="relu", name="conv1"),
        keras.layers.Conv2D(16, 5, activation="relu", name="conv2"),
        keras.layers.MaxPooling2D(2, name="pool"),
        keras.layers.Conv2D(8, 3, activation="relu", name="conv3"),
        keras.layers.Flatten(name="flatten"),
    ]


def head(num_classes):
    return [
        keras.layers.Dropout(0.42),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(num_classes, activation="softmax", dtype="float32"),  # float32 under mixed precision
    ]


def augmentation():
    # Active only in training: mirror images and small shifts keep every class what it is.
    return [keras.layers.RandomFlip("horizontal"), keras.layers.RandomTranslation(0.1, 0.1)] if AUGMENT else []


def evaluate(model, task):
    """(validation, test) as (loss, accuracy) pairs on one task's held-out images."""
    return [model.evaluate(*tasks[f"{task}_{split}"], batch_size=1000, verbose=0) for split in ("validation", "test")]


IMAGE = (32, 32, 3)
frozen_count = models.frozen_count(models.stack(IMAGE, feature_layers(), name="features"), FREEZE_UP_TO)  # checked now
with (records.Run(results_dir, "cifar10", CONFIG, runtime.environment(), source, resumed=resumed,
                  distribute=distribute.describe(strategy, BATCH_SIZE), tensorboard=TENSORBOARD) as run,
      strategy.scope()):  # models built in here are placed and replicated by the strategy
    print(f"run {run.run_id}: {run.dir}")

    # 4. Phase "base": feature layers and head learn task A from random init. Each phase saves its
    #    weights when done, so a resumed run restores a finished phase instead of training it again.
    print(f"\n== base: {len(xa_train)} images of {[CLASS_NAMES[c] for c in TASK_A_CLASSES]}, {EPOCHS} epochs")
    features = models.stack(IMAGE, feature_layers(), name="features")
    base = models.stack(IMAGE, [*augmentation(), features, *head(len(TASK_A_CLASSES))], name="base")
    # With --reuse_base=True a run whose base constants, data and code match an earlier run's takes that
    # run's base network (the record says which) instead of training the same network again: a study that
    # varies only task B then trains the base once per seed.
    if not (run.restore("base", base) or REUSE_BASE and run.reuse("base", base, PHASE_INPUTS["base"])):
        timer = phases.fit(run, "base", base, xa_train, ya_train, epochs=EPOCHS, batch_size=BATCH_SIZE,
                           learning_rate=LEARNING_RATE, validation_data=tasks["a_validation"])
        validation, test = evaluate(base, "a")
        run.add_phase("base", phases.summary(TASK_A_CLASSES, xa_train, EPOCHS, timer, test, base,
                                             validation=validation, batch_size=BATCH_SIZE), model=base)

    # 5. Phase "transfer": freeze the feature layers (the first FREEZE_UP_TO of them), train a new head,
    #    on top of the feature layers left trainable, on task B.
    print(f"\n== transfer: {len(xb_train)} images of {[CLASS_NAMES[c] for c in TASK_B_CLASSES]}, {frozen_count} of "
          f"{len(features.layers)} feature layers frozen")
    frozen, trainable = models.split_frozen(features, frozen_count)
    new_head = models.stack(frozen.output_shape[1:] if frozen else IMAGE, [*trainable, *head(len(TASK_B_CLASSES))],
                            name="head_b")
    transfer = models.compile_classifier(
        models.stack(IMAGE, [frozen, new_head] if frozen else [new_head], name="transfer"), LEARNING_RATE)
    if not run.restore("transfer", transfer):
        # The frozen layers run once over the images (in memory: they were trained in this run, so no
        # other run could reuse their features), then only the rest trains on their output.
        timer, cache = phases.fit_head(
            run, "transfer", frozen, new_head, xb_train, yb_train,
            cache="memory" if FEATURE_CACHE and not AUGMENT else None,
            epochs=EPOCHS, batch_size=BATCH_SIZE, head_batch_size=HEAD_BATCH_SIZE, learning_rate=LEARNING_RATE,
            validation_data=tasks["b_validation"], augmentation=augmentation(),
        )
        # Validation and test on raw images through features + head: the numbers belong to the whole model.
        validation, test = evaluate(transfer, "b")
        run.add_phase("transfer", phases.summary(TASK_B_CLASSES, xb_train, EPOCHS, timer, test, transfer,
                                                 validation=validation, frozen_layers=frozen_count, **cache),
                      model=transfer)

    # 6. Phase "scratch": the same network from random init on task B, same epochs: the baseline.
    if RUN_SCRATCH:
        print(f"\n== scratch: {len(xb_train)} images of task B, random init, {EPOCHS} epochs")
        scratch = models.stack(IMAGE, [*augmentation(), *feature_layers(), *head(len(TASK_B_CLASSES))],
                               name="scratch")
        if not run.restore("scratch", scratch):
            timer = phases.fit(run, "scratch", scratch, xb_train, yb_train, epochs=EPOCHS, batch_size=BATCH_SIZE,
                               learning_rate=LEARNING_RATE, validation_data=tasks["b_validation"])
            validation, test = evaluate(scratch, "b")
            run.add_phase("scratch", phases.summary(TASK_B_CLASSES, xb_train, EPOCHS, timer, test, scratch,
                                                    validation=validation, batch_size=BATCH_SIZE), model=scratch)

    # 7. Learning curves of every phase (from their CSV histories in the run folder), next to the record.
    plots.learning_curves(run.histories(), run.file("learning_curves.png"),
                          title=f"CIFAR-10 transfer, run {run.run_id}")

# 8. Summary: what each phase cost and scored.
records.print_summary(run.record, run.path)
