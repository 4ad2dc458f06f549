"""MNIST transfer learning: a CNN learns digits 0-6, then its frozen feature layers serve digits 7-9.

Reproduces the published MNIST transfer experiment (Conv32-Conv32-Pool-Dropout-Conv128-Pool features, Dense
heads 64-16-7 and 128-16-3, Adam, 10 epochs a phase) in three phases, each recorded on its own: "base" (the
network on task A, digits 0-6), "transfer" (a new head on the frozen features, task B, digits 7-9) and
"scratch" (the same network from random weights on task B: what did transfer buy?). More: docs/experiments.md

    python mnist_transfer.py                                   # the whole experiment
    python mnist_transfer.py --epochs=2 --task_b_classes=5,6,7,8,9
    python mnist_transfer.py --data_dir=/data/datasets         # offline: a folder holding mnist.npz
    python mnist_transfer.py --help                            # every constant with its default
"""

import sys

import transferlab.runtime  # noqa: F401 (first: TensorFlow starts without its start-up noise)

import keras

from transferlab import experiment, models, phases, sources, tasks
from transferlab.classifier import Classifier

# -----------------------------------------------------------------------------------------------------
# Constants: edit them here, or override any from the shell as --name=value (each checked: config.RANGES).
# Every experiment also has SEED, DETERMINISTIC, DISTRIBUTE, MIXED_PRECISION, RESULTS_DIR, RESUME, ... (--help).
TASK_A_CLASSES = [0, 1, 2, 3, 4, 5, 6]  # digits the base network learns (phase "base")
TASK_B_CLASSES = [7, 8, 9]  # held-out digits for the new head (phases "transfer" and "scratch")
EPOCHS = 10  # epochs in every phase, as published
BATCH_SIZE = 32  # batch size for base and scratch (Keras's default, as published)
HEAD_BATCH_SIZE = 1024  # batch size for the head on cached features (BATCH_SIZE's 32 scores the same, slower)
LEARNING_RATE = 0.001  # Adam's learning rate in every phase (Keras's default, as published)
TASK_B_SAMPLES_PER_CLASS: int | None = None  # cut task B's training set to this many per class (None: all)
FREEZE_UP_TO: int | str | None = None  # feature layers frozen in transfer: how many (0: none) or a name; None: all
REUSE_BASE = False  # take phase "base" from an earlier run in RESULTS_DIR with the same task A constants
RUN_SCRATCH = True  # train the same network from random init on task B: what did transfer buy?
FEATURE_CACHE = True  # transfer: run the frozen layers once, then train only the head on their output
AUGMENT = False  # random shifts/rotations of the training images (turns the feature cache off)
DATA_DIR: str | None = None  # folder with mnist.npz or mnist/train/<digit>/; None: $TRANSFER_DATA_DIR
# -----------------------------------------------------------------------------------------------------
# What only the phases after "base" read: --reuse_base=True takes a base trained with all else the same.
LATER_CONSTANTS = {"base": ["TASK_B_CLASSES", "HEAD_BATCH_SIZE", "TASK_B_SAMPLES_PER_CLASS", "FREEZE_UP_TO",
                            "REUSE_BASE", "RUN_SCRATCH", "FEATURE_CACHE"]}
CONFIG = experiment.configure(globals(), sys.argv[1:])

# 1. Check the tasks before any work, so a typo costs a second, not a training run.
tasks.check_tasks(TASK_A_CLASSES, TASK_B_CLASSES, 10)
exp = experiment.start("mnist", CONFIG)

# 2. Data: mnist.npz or a mnist/train/<digit>/ image tree in the data directory, else Keras's download.
DIGITS = [str(digit) for digit in range(10)]  # the class names, by label
train, test, source = sources.load_keras_dataset("mnist", sources.data_dir(DATA_DIR), (28, 28), 10,
                                                 keras.datasets.mnist.load_data, class_names=DIGITS)
task_a, task_b = tasks.transfer_tasks(train, test, source, TASK_A_CLASSES, TASK_B_CLASSES, exp.seed,
                                      task_b_samples_per_class=TASK_B_SAMPLES_PER_CLASS)


# 3. The published network: feature layers shared by both tasks, a small dense head per task.
def feature_layers():
    # Named, so that --freeze_up_to= can name one.
    return [
        keras.layers.Conv2D(32, 3, activation="relu", name="conv1"),
        keras.layers.Conv2D(32, 3, activation="relu", name="conv2"),
        keras.layers.MaxPooling2D(2, name="pool1"),
        keras.layers.Dropout(0.25, name="dropout1"),
        keras.layers.Conv2D(128, 3, activation="relu", name="conv3"),
        keras.layers.MaxPooling2D(2, name="pool2"),
        keras.layers.Flatten(name="flatten"),
    ]


def dense_head(width, dropout, num_classes):
    # Both published heads have this shape: head A is dense_head(64, 0.25, 7), head B is dense_head(128, 0.1, 3).
    return [
        keras.layers.Dense(width, activation="relu"),
        keras.layers.Dropout(dropout),
        keras.layers.Dense(16, activation="relu"),
        keras.layers.Dense(num_classes, activation="softmax", dtype="float32"),  # float32 under mixed precision
    ]


def augmentation():
    # Active only in training; small enough that a 7 stays a 7.
    return [keras.layers.RandomRotation(0.05), keras.layers.RandomTranslation(0.1, 0.1)] if AUGMENT else []


IMAGE = (28, 28, 1)
frozen_count = models.frozen_count(models.stack(IMAGE, feature_layers(), name="features"), FREEZE_UP_TO)  # checked now
training = phases.FitOptions(EPOCHS, BATCH_SIZE, LEARNING_RATE)
with exp.run(source, title="MNIST transfer", batch_size=BATCH_SIZE, later_constants=LATER_CONSTANTS) as run:
    # 4. Phase "base": feature layers and head A learn task A from random init (or, with --reuse_base=True,
    #    come from an earlier run: a study that varies only task B trains it once a seed).
    features = models.stack(IMAGE, feature_layers(), name="features")
    base = models.stack(IMAGE, [*augmentation(), features, *dense_head(64, 0.25, len(TASK_A_CLASSES))], name="base")
    run.fit("base", base, task_a, training, reuse=REUSE_BASE)

    # 5. Phase "transfer": a new head B on task B, over the feature layers, the first FREEZE_UP_TO frozen. The
    #    frozen layers run once (cached in memory: no other run has these weights), then the rest trains.
    #    The transferred model takes raw images when saved: the run scaled them to [0, 1].
    transfer = Classifier.cut_from(features, frozen_count, dense_head(128, 0.1, len(TASK_B_CLASSES)),
                                   [keras.layers.Rescaling(1 / 255)])
    head = phases.HeadOptions(cache="memory" if FEATURE_CACHE and not AUGMENT else None, batch_size=HEAD_BATCH_SIZE,
                              augmentation=tuple(augmentation()))
    run.fit_head("transfer", transfer, task_b, training, head, record={"frozen_layers": frozen_count},
                 about=f"{frozen_count} of {len(features.layers)} feature layers frozen")
    # The final model on task B's test digits: per-class scores, plots, each digit's prediction (the report's
    # mistakes); then model.keras + labels.txt.
    run.evaluate_final(transfer.model, task_b, None, "MNIST transfer", [str(digit) for digit in TASK_B_CLASSES])
    run.save_model(transfer, [str(digit) for digit in TASK_B_CLASSES])

    # 6. Phase "scratch": the same network from random init on task B, same epochs: the baseline.
    if RUN_SCRATCH:
        scratch = models.stack(IMAGE, [*augmentation(), *feature_layers(), *dense_head(128, 0.1, len(TASK_B_CLASSES))],
                               name="scratch")
        run.fit("scratch", scratch, task_b, training, about="random init")
# Leaving the run: learning curves of every phase (learning_curves.png), then what each phase cost and scored.
