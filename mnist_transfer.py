"""MNIST transfer learning: a CNN learns digits 0-6, then its frozen feature layers serve digits 7-9.

Reproduces the published MNIST transfer experiment (features Conv32-Conv32-Pool-Dropout-Conv128-Pool,
head A Dense 64-16-7, head B Dense 128-16-3, Adam, 10 epochs per phase) and adds the baseline it never
had: the same network trained from scratch on digits 7-9 for the same epochs.

Task A is the digits the base network learns first (0-6), task B the held-out ones (7-9). The features are
the convolution layers, the head the dense layers on top. A run has three phases, each recorded on its own:
"base" (features and head A on task A), "transfer" (a new head B on the frozen features, task B) and
"scratch" (features and head B from random weights on task B: what did transfer buy?).

    python mnist_transfer.py                                   # the whole experiment
    python mnist_transfer.py --epochs=2 --task_b_classes=5,6,7,8,9
    python mnist_transfer.py --data_dir=/data/datasets         # offline: a folder holding mnist.npz
    python mnist_transfer.py --help                            # every constant with its default
"""

import sys

from transferlab import runtime  # first: it starts TensorFlow without its start-up noise
from transferlab import config, data, distribute, models, phases, plots, records

import keras

# -----------------------------------------------------------------------------------------------------
# Constants: edit them here, or override any from the shell as --name=value.
TASK_A_CLASSES = [0, 1, 2, 3, 4, 5, 6]  # digits the base network learns (phase "base")
TASK_B_CLASSES = [7, 8, 9]  # held-out digits for the new head (phases "transfer" and "scratch")
EPOCHS = 10  # epochs in every phase, as published
BATCH_SIZE = 32  # batch size for base and scratch (Keras's default, as published)
HEAD_BATCH_SIZE = 1024  # batch size for the head on cached features (BATCH_SIZE's 32 scores the same, slower)
LEARNING_RATE = 0.001  # Adam's learning rate in every phase (Keras's default, as published)
SEED = 42  # one seed for Python, numpy and TensorFlow
DETERMINISTIC = False  # also make TensorFlow ops deterministic: identical reruns on the same hardware
TASK_B_SAMPLES_PER_CLASS: int | None = None  # cut task B's training set to this many per class (None: all)
FREEZE_UP_TO: int | str | None = None  # feature layers frozen in transfer: how many (0: none) or a name; None: all
REUSE_BASE = False  # take phase "base" from an earlier run in RESULTS_DIR with the same task A constants
RUN_SCRATCH = True  # train the same network from random init on task B: what did transfer buy?
FEATURE_CACHE = True  # transfer: run the frozen layers once, then train only the head on their output
AUGMENT = False  # random shifts/rotations of the training images (turns the feature cache off)
DATA_DIR: str | None = None  # folder with mnist.npz or mnist/train/<digit>/; None: $TRANSFER_DATA_DIR
DISTRIBUTE = "auto"  # auto (all GPUs if several), none, mirrored, multi_worker (cluster in TF_CONFIG) or tpu
MIXED_PRECISION: str | None = "auto"  # None (float32), mixed_float16 or mixed_bfloat16; auto: float16 with a GPU
TENSORBOARD = True  # TensorBoard logs of every phase in the run folder: tensorboard --logdir results/
RESULTS_DIR = "results"  # each run writes RESULTS_DIR/mnist/<run_id>/
RESUME: str | None = None  # a run id, or "latest": finish an interrupted run (same constants) in its folder
# -----------------------------------------------------------------------------------------------------
# The constants a reusable phase depends on: with --reuse_base=True a run takes phase "base" from an earlier
# run only when these (and the data, code, library versions and distribution) are the same.
PHASE_INPUTS = {"base": ["TASK_A_CLASSES", "EPOCHS", "BATCH_SIZE", "LEARNING_RATE", "SEED", "DETERMINISTIC", "AUGMENT"]}
CONFIG = config.configure(globals(), sys.argv[1:])

# 1. Check the constants before any work, so a typo costs a second, not a training run.
config.check_positive(EPOCHS=EPOCHS, BATCH_SIZE=BATCH_SIZE, HEAD_BATCH_SIZE=HEAD_BATCH_SIZE,
                      LEARNING_RATE=LEARNING_RATE)
config.check(TASK_B_SAMPLES_PER_CLASS is None or TASK_B_SAMPLES_PER_CLASS > 0,
             f"--task_b_samples_per_class must be > 0 or None, got {TASK_B_SAMPLES_PER_CLASS}")
data.check_tasks(TASK_A_CLASSES, TASK_B_CLASSES, num_classes=10)
strategy = distribute.start(DISTRIBUTE, MIXED_PRECISION, RESUME)  # before any other TensorFlow work
results_dir = distribute.results_dir(RESULTS_DIR, strategy)  # the chief's RESULTS_DIR; other workers a temporary one
resumed = records.find_resumable(results_dir, "mnist", RESUME, CONFIG)
runtime.seed_everything(SEED, DETERMINISTIC)

# 2. Data: mnist.npz or a mnist/train/<digit>/ image tree in the data directory, else Keras's download;
#    then split into the two tasks.
(x_train, y_train), (x_test, y_test), source = data.load_keras_dataset(
    "mnist", data.data_dir(DATA_DIR), (28, 28), 10, keras.datasets.mnist.load_data,
    class_names=[str(digit) for digit in range(10)],
)
xa_train, ya_train = data.split_task(x_train, y_train, TASK_A_CLASSES)
xa_test, ya_test = data.split_task(x_test, y_test, TASK_A_CLASSES)
xb_train, yb_train = data.split_task(x_train, y_train, TASK_B_CLASSES)
if TASK_B_SAMPLES_PER_CLASS is not None:  # a smaller task B training set, the same for the same seed
    xb_train, yb_train = data.take_per_class(xb_train, yb_train, TASK_B_SAMPLES_PER_CLASS, SEED)
xb_test, yb_test = data.split_task(x_test, y_test, TASK_B_CLASSES)
for name, x in (("task A train", xa_train), ("task A test", xa_test), ("task B train", xb_train),
                ("task B test", xb_test)):
    config.check(len(x) > 0, f"{name} is empty: no images of those classes in {source['source']}")
xa_train, xa_test, xb_train, xb_test = map(data.scale_images, (xa_train, xa_test, xb_train, xb_test))
source["samples"] = {"task_a_train": len(xa_train), "task_a_test": len(xa_test),
                     "task_b_train": len(xb_train), "task_b_test": len(xb_test)}
print(f"MNIST from {source['source']}: task A {TASK_A_CLASSES} {len(xa_train)} train / {len(xa_test)} test,"
      f" task B {TASK_B_CLASSES} {len(xb_train)} train / {len(xb_test)} test")


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


def head_a():
    return dense_head(64, 0.25, len(TASK_A_CLASSES))


def head_b():
    return dense_head(128, 0.1, len(TASK_B_CLASSES))


def augmentation():
    # Active only in training; small enough that a 7 stays a 7.
    return [keras.layers.RandomRotation(0.05), keras.layers.RandomTranslation(0.1, 0.1)] if AUGMENT else []


IMAGE = (28, 28, 1)
frozen_count = models.frozen_count(models.stack(IMAGE, feature_layers(), name="features"), FREEZE_UP_TO)  # checked now
with (records.Run(results_dir, "mnist", CONFIG, runtime.environment(), source, resumed=resumed,
                  distribute=distribute.describe(strategy, BATCH_SIZE), tensorboard=TENSORBOARD) as run,
      strategy.scope()):  # models built in here are placed and replicated by the strategy
    print(f"run {run.run_id}: {run.dir}")

    # 4. Phase "base": feature layers and head A learn task A from random init. Each phase saves its
    #    weights when done, so a resumed run restores a finished phase instead of training it again.
    print(f"\n== base: {len(xa_train)} images of digits {TASK_A_CLASSES}, {EPOCHS} epochs")
    features = models.stack(IMAGE, feature_layers(), name="features")
    base = models.stack(IMAGE, [*augmentation(), features, *head_a()], name="base")
    # With --reuse_base=True a run whose base constants, data and code match an earlier run's takes that
    # run's base network (the record says which) instead of training the same network again: a study that
    # varies only task B then trains the base once per seed.
    if not (run.restore("base", base) or REUSE_BASE and run.reuse("base", base, PHASE_INPUTS["base"])):
        timer = phases.fit(run, "base", base, xa_train, ya_train, epochs=EPOCHS, batch_size=BATCH_SIZE,
                           learning_rate=LEARNING_RATE)
        test = base.evaluate(xa_test, ya_test, batch_size=1024, verbose=0)
        run.add_phase("base", phases.summary(TASK_A_CLASSES, xa_train, EPOCHS, timer, test, base,
                                             batch_size=BATCH_SIZE), model=base)

    # 5. Phase "transfer": freeze the feature layers (the first FREEZE_UP_TO of them), train a new head B,
    #    on top of the feature layers left trainable, on task B.
    print(f"\n== transfer: {len(xb_train)} images of digits {TASK_B_CLASSES}, {frozen_count} of "
          f"{len(features.layers)} feature layers frozen, {EPOCHS} epochs")
    frozen, trainable = models.split_frozen(features, frozen_count)
    head = models.stack(frozen.output_shape[1:] if frozen else IMAGE, [*trainable, *head_b()], name="head_b")
    transfer = models.compile_classifier(models.stack(IMAGE, [frozen, head] if frozen else [head], name="transfer"),
                                         LEARNING_RATE)
    if not run.restore("transfer", transfer):
        # With the cache the frozen layers run once, in inference mode, and only the rest trains on their
        # output; augmented images differ every epoch, so then there is nothing to cache. The cache lives in
        # memory: these layers were trained in this run, so no other run could reuse their features.
        timer, cache = phases.fit_head(
            run, "transfer", frozen, head, xb_train, yb_train,
            cache="memory" if FEATURE_CACHE and not AUGMENT else None,
            epochs=EPOCHS, batch_size=BATCH_SIZE, head_batch_size=HEAD_BATCH_SIZE, learning_rate=LEARNING_RATE,
            augmentation=augmentation(),
        )
        # Test on raw images through features + head: the number belongs to the whole model, not the cache.
        test = transfer.evaluate(xb_test, yb_test, batch_size=1024, verbose=0)
        run.add_phase("transfer", phases.summary(TASK_B_CLASSES, xb_train, EPOCHS, timer, test, transfer,
                                                 frozen_layers=frozen_count, **cache), model=transfer)

    # 6. Phase "scratch": the same network from random init on task B, same epochs: the baseline.
    if RUN_SCRATCH:
        print(f"\n== scratch: {len(xb_train)} images of digits {TASK_B_CLASSES}, random init, {EPOCHS} epochs")
        scratch = models.stack(IMAGE, [*augmentation(), *feature_layers(), *head_b()], name="scratch")
        if not run.restore("scratch", scratch):
            timer = phases.fit(run, "scratch", scratch, xb_train, yb_train, epochs=EPOCHS, batch_size=BATCH_SIZE,
                               learning_rate=LEARNING_RATE)
            test = scratch.evaluate(xb_test, yb_test, batch_size=1024, verbose=0)
            run.add_phase("scratch", phases.summary(TASK_B_CLASSES, xb_train, EPOCHS, timer, test, scratch,
                                                    batch_size=BATCH_SIZE), model=scratch)

    # 7. Learning curves of every phase (from their CSV histories in the run folder), next to the record.
    plots.learning_curves(run.histories(), run.file("learning_curves.png"), title=f"MNIST transfer, run {run.run_id}")

# 8. Summary: what each phase cost and scored.
records.print_summary(run.record, run.path)
