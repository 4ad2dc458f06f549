"""CIFAR-10 transfer learning: a small CNN learns 5 classes, then its frozen features serve the other 5.

Reproduces the published CIFAR-10 transfer experiment (Conv32x5-Conv16x5-Pool-Conv8x3-Flatten-Dropout(0.42)
then Dense 128-5; Adam, batch 100, 10 epochs) in three phases, each recorded on its own: "base" (the network
on task A: airplane, automobile, bird, cat, deer), "transfer" (a new head on the frozen features, task B: dog,
frog, horse, ship, truck) and "scratch" (the same network from random weights on task B: what did transfer
buy?). Its two fixes of the published script (a shuffled validation split, a 5-way head): docs/experiments.md.

    python cifar10_transfer.py                                  # the whole experiment
    python cifar10_transfer.py --data_dir=/data/datasets        # offline: cifar10.npz or cifar10/train/...
    python cifar10_transfer.py --help                           # every constant with its default
"""

import sys

import transferlab.runtime  # noqa: F401 (first: TensorFlow starts without its start-up noise)

import keras

from transferlab import experiment, models, phases, sources, tasks
from transferlab.classifier import Classifier

# -----------------------------------------------------------------------------------------------------
# Constants: edit them here, or override any from the shell as --name=value (each checked: config.RANGES).
# Every experiment also has SEED, DETERMINISTIC, DISTRIBUTE, MIXED_PRECISION, RESULTS_DIR, RESUME, ... (--help).
TASK_A_CLASSES = [0, 1, 2, 3, 4]  # classes the base network learns: airplane automobile bird cat deer
TASK_B_CLASSES = [5, 6, 7, 8, 9]  # held-out classes for the new head: dog frog horse ship truck
EPOCHS = 10  # epochs in every phase, as published
BATCH_SIZE = 100  # batch size in every phase, as published
HEAD_BATCH_SIZE = 100  # batch size for the head on cached features
LEARNING_RATE = 0.001  # Adam's learning rate in every phase (Keras's default, as published)
VALIDATION_SPLIT = 0.2  # share of each task's training images held out for validation, as published
TASK_B_SAMPLES_PER_CLASS: int | None = None  # cut task B's training set to this many per class (None: all)
FREEZE_UP_TO: int | str | None = None  # feature layers frozen in transfer: how many (0: none) or a name; None: all
REUSE_BASE = False  # take phase "base" from an earlier run in RESULTS_DIR with the same task A constants
RUN_SCRATCH = True  # train the same network from random init on task B: what did transfer buy?
FEATURE_CACHE = True  # transfer: run the frozen layers once, then train only the head on their output
AUGMENT = False  # random flips and shifts of the training images (turns the feature cache off)
DATA_DIR: str | None = None  # folder with cifar10.npz or cifar10/train/<class>/; None: $TRANSFER_DATA_DIR
# -----------------------------------------------------------------------------------------------------
# What only the phases after "base" read: --reuse_base=True takes a base trained with all else the same.
LATER_CONSTANTS = {"base": ["TASK_B_CLASSES", "HEAD_BATCH_SIZE", "TASK_B_SAMPLES_PER_CLASS", "FREEZE_UP_TO",
                            "REUSE_BASE", "RUN_SCRATCH", "FEATURE_CACHE"]}
CONFIG = experiment.configure(globals(), sys.argv[1:])

# 1. Check the tasks before any work, so a typo costs a second, not a training run.
CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]  # by label
tasks.check_tasks(TASK_A_CLASSES, TASK_B_CLASSES, len(CLASS_NAMES))
exp = experiment.start("cifar10", CONFIG)

# 2. Data: cifar10.npz or a cifar10/ image tree in the data directory (decoded once, then cached), else
#    Keras's download. Each task: its classes, labels remapped, shuffled 80/20 into train and validation.
train, test, source = sources.load_keras_dataset("cifar10", sources.data_dir(DATA_DIR), (32, 32, 3), 10,
                                                 keras.datasets.cifar10.load_data, class_names=CLASS_NAMES)
task_a, task_b = tasks.transfer_tasks(train, test, source, TASK_A_CLASSES, TASK_B_CLASSES, exp.seed,
                                      VALIDATION_SPLIT, TASK_B_SAMPLES_PER_CLASS)


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


def dense_head(num_classes):
    return [
        keras.layers.Dropout(0.42),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(num_classes, activation="softmax", dtype="float32"),  # float32 under mixed precision
    ]


def augmentation():
    # Active only in training: mirror images and small shifts keep every class what it is.
    return [keras.layers.RandomFlip("horizontal"), keras.layers.RandomTranslation(0.1, 0.1)] if AUGMENT else []


IMAGE = (32, 32, 3)
frozen_count = models.frozen_count(models.stack(IMAGE, feature_layers(), name="features"), FREEZE_UP_TO)  # checked now
training = phases.FitOptions(EPOCHS, BATCH_SIZE, LEARNING_RATE)
with exp.run(source, title="CIFAR-10 transfer", batch_size=BATCH_SIZE, later_constants=LATER_CONSTANTS) as run:
    # 4. Phase "base": the network learns task A from random init (or, --reuse_base=True, an earlier run's).
    features = models.stack(IMAGE, feature_layers(), name="features")
    base = models.stack(IMAGE, [*augmentation(), features, *dense_head(len(TASK_A_CLASSES))], name="base")
    run.fit("base", base, task_a, training, reuse=REUSE_BASE)

    # 5. Phase "transfer": a new head on task B, over the feature layers, the first FREEZE_UP_TO frozen. The
    #    frozen layers run once (cached in memory: no other run has these weights), then the rest trains.
    #    The transferred model takes raw images when saved: the run scaled them to [0, 1].
    transfer = Classifier.cut_from(features, frozen_count, dense_head(len(TASK_B_CLASSES)),
                                   [keras.layers.Rescaling(1 / 255)])
    head = phases.HeadOptions(cache="memory" if FEATURE_CACHE and not AUGMENT else None, batch_size=HEAD_BATCH_SIZE,
                              augmentation=tuple(augmentation()))
    run.fit_head("transfer", transfer, task_b, training, head, record={"frozen_layers": frozen_count},
                 about=f"{frozen_count} of {len(features.layers)} feature layers frozen")
    # The final model on task B's test images: per-class scores, plots, each image's prediction (the report's
    # mistakes); then model.keras + labels.txt.
    run.evaluate_final(transfer.model, task_b, None, "CIFAR-10 transfer", [CLASS_NAMES[c] for c in TASK_B_CLASSES])
    run.save_model(transfer, [CLASS_NAMES[c] for c in TASK_B_CLASSES])

    # 6. Phase "scratch": the same network from random init on task B, same epochs: the baseline.
    if RUN_SCRATCH:
        scratch = models.stack(IMAGE, [*augmentation(), *feature_layers(), *dense_head(len(TASK_B_CLASSES))],
                               name="scratch")
        run.fit("scratch", scratch, task_b, training, about="random init")
# Leaving the run: learning curves of every phase (learning_curves.png), then what each phase cost and scored.
