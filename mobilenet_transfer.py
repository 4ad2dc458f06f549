"""Transfer learning from an ImageNet backbone under a new head, on any image folder or on MNIST: MobileNetV2 by
default, or any keras.applications family (BACKBONE: MobileNet, EfficientNetB0, ResNet50, ConvNeXtTiny, ...).

Phases, each recorded on its own: "transfer" (a new head on the frozen backbone), "fine_tune" (the top of the
backbone unfrozen too, at a low learning rate) and "scratch" (the same network from random weights: what did
ImageNet buy?). RECIPE fills every constant left at None: "folder" (default for a folder: cats vs dogs, or
yours in <class>/ or train/ folders) is the best measured here, "tutorial" the TensorFlow transfer-learning
tutorial's, "mnist" the published MobileNetV2-on-MNIST experiment, done right (docs/experiments.md). A run
ends with model.keras and labels.txt in its folder: python -m transferlab.predict RUN IMAGE...

    WEIGHTS=/data/weights/mobilenet_v2_1.0_224_no_top.weights.h5        # offline; online "imagenet" works too
    python mobilenet_transfer.py --data_dir=/data/datasets --weights=$WEIGHTS
    python mobilenet_transfer.py --data_dir=my_photos --weights=$WEIGHTS   # my_photos/<class>/*.jpg
    python mobilenet_transfer.py --dataset=mnist --data_dir=/data/datasets --weights=$WEIGHTS
    python mobilenet_transfer.py --data_dir=my_photos --backbone=EfficientNetB0      # ImageNet weights: Keras's
    python mobilenet_transfer.py --help                        # every constant with its default
"""

import sys

import transferlab.runtime  # noqa: F401 (first: TensorFlow starts without its start-up noise)

import keras

from transferlab import backbones, config, experiment, folders, models, phases, sources, tasks
from transferlab.classifier import Classifier

# -----------------------------------------------------------------------------------------------------
# Constants: edit them here, or override any from the shell as --name=value (each checked: config.RANGES).
# None: the recipe's. Every experiment also has SEED, DISTRIBUTE, MIXED_PRECISION, RESULTS_DIR, ... (--help).
DATASET = "folder"  # "folder": class subfolders of images (cats vs dogs by default); "mnist": digits as RGB
BACKBONE = "MobileNetV2"  # a network of backbones.BACKBONES: its preprocessing and native size come with it
RECIPE: str | None = None  # None: the dataset's own (folder, mnist); "tutorial": the TensorFlow tutorial's, on a folder
DATA_DIR: str | None = None  # <class>/ or train/<class>/ folders, or one holding mnist.npz; None: $TRANSFER_DATA_DIR
VALIDATION_SPLIT: float | None = None  # share of the training images that validates when there is no validation/
DROP_DUPLICATES = False  # True: photos also in training (same bytes or same picture) leave validation and test
WEIGHTS: str | None = "imagenet"  # "imagenet" (Keras's download), a weights file, or None (random init)
IMAGE_SIZE: int | None = None  # pixels a side; None: measured on your photos (folder), else the backbone's native size
HEAD: list | None = None  # hidden Dense(relu) widths on the pooled features; []: linear; None: measured (folder)
HEAD_STEPS: int | None = None  # at least this many steps for a head on cached features: epochs pass over them often
HEAD_DROPOUT: float | None = None  # share of the pooled features dropped while the head trains
EPOCHS: int | None = None  # epochs of the frozen phase "transfer"
BATCH_SIZE: int | None = None  # images per step whenever images go through the backbone
HEAD_BATCH_SIZE = 32  # batch size for the head on cached features
SAMPLES_PER_CLASS: int | None = None  # cut the training images to this many per class (None: all)
CLASS_WEIGHT: str | None = None  # "balanced": each class weighs the same in the loss, however many images it has
LEARNING_RATE: float | None = None  # for the new head in the frozen phase, and for scratch
OPTIMIZER = "adam"  # adam, rmsprop or sgd, in every phase
FINE_TUNE_EPOCHS: int | None = None  # epochs of phase "fine_tune" after the frozen phase; 0 skips it
FINE_TUNE_AT: int | float | str | None = None  # first layer to unfreeze: index, name, or share of the layers (0: all)
FINE_TUNE_LEARNING_RATE: float | None = None  # low, so fine-tuning refines ImageNet's features, not erases them
SCHEDULE: str | None = None  # learning rate over fine_tune and scratch: constant, cosine (to 0), warmup_cosine
FINE_TUNE_BATCHNORM: bool | None = None  # let BatchNormalization statistics adapt while fine-tuning?
BATCHNORM_MOMENTUM = 0.9  # for BatchNormalization that trains; Keras's 0.999 lags behind for a few epochs
AUGMENT = False  # random flips/rotations of training images (turns the feature cache off)
FEATURE_CACHE = True  # backbone features once per image (on disk), then the head; fine-tuning: frozen layers once
REUSE_TRANSFER = False  # take phase "transfer" from an earlier run in RESULTS_DIR with the same constants and data
RUN_SCRATCH: bool | None = None  # the same network from random init, every layer training: what did ImageNet buy?
SCRATCH_EPOCHS: int | None = None  # None: EPOCHS + FINE_TUNE_EPOCHS, the epochs transfer had
# -----------------------------------------------------------------------------------------------------
# What only the phases after "transfer" read: --reuse_transfer=True takes one trained with all else the same.
LATER_CONSTANTS = {"transfer": ["FINE_TUNE_EPOCHS", "FINE_TUNE_AT", "FINE_TUNE_LEARNING_RATE", "SCHEDULE",
                                "FINE_TUNE_BATCHNORM", "BATCHNORM_MOMENTUM", "REUSE_TRANSFER", "RUN_SCRATCH",
                                "SCRATCH_EPOCHS"]}
RECIPES = {  # each value's measurements: docs/results.md
    # Folders: IMAGE_SIZE and HEAD measured on the user's photos (transferlab/choice.py), the head trained until
    # it has converged (HEAD_STEPS: cheap on cached features) however few photos or EPOCHS.
    "folder": {"HEAD_STEPS": 1500, "HEAD_DROPOUT": 0.0, "VALIDATION_SPLIT": 0.2, "BATCH_SIZE": 32,
               "EPOCHS": 10, "LEARNING_RATE": 1e-3, "FINE_TUNE_EPOCHS": 0, "FINE_TUNE_AT": backbones.FINE_TUNE_SHARE,
               "FINE_TUNE_LEARNING_RATE": 1e-5, "SCHEDULE": "constant", "FINE_TUNE_BATCHNORM": False,
               "RUN_SCRATCH": False},
    # The TensorFlow tutorial with the notebook's head: photos like ImageNet's, so its BatchNormalization stays.
    "tutorial": {"IMAGE_SIZE": 160, "HEAD": [1024, 1024, 512], "HEAD_STEPS": 0, "HEAD_DROPOUT": 0.0,
                 "VALIDATION_SPLIT": 0.2, "BATCH_SIZE": 32, "EPOCHS": 10, "LEARNING_RATE": 1e-4, "FINE_TUNE_EPOCHS": 10,
                 "FINE_TUNE_AT": backbones.FINE_TUNE_SHARE,
                 "FINE_TUNE_LEARNING_RATE": 1e-5, "SCHEDULE": "constant", "FINE_TUNE_BATCHNORM": False,
                 "RUN_SCRATCH": False},
    # MNIST, far from ImageNet: the whole backbone fine-tuned, BatchNormalization adapting, 1e-3 decaying to 0.
    "mnist": {"IMAGE_SIZE": 32, "HEAD": [1024, 1024, 512], "HEAD_STEPS": 0, "HEAD_DROPOUT": 0.0,
              "VALIDATION_SPLIT": 0.1, "BATCH_SIZE": 64, "EPOCHS": 2, "LEARNING_RATE": 1e-3, "FINE_TUNE_EPOCHS": 5,
              "FINE_TUNE_AT": 0,
              "FINE_TUNE_LEARNING_RATE": 1e-3, "SCHEDULE": "cosine", "FINE_TUNE_BATCHNORM": True, "RUN_SCRATCH": True},
}


def recipe(c):  # the dataset's own recipe, or the one RECIPE names: it fills every constant left at None
    name = c.RECIPE or c.DATASET
    config.check_choice(DATASET=(c.DATASET, ("folder", "mnist")), RECIPE=(name, RECIPES))
    config.check(name in ((c.DATASET,) if c.DATASET == "mnist" else ("folder", "tutorial")),
                 f"--recipe={c.RECIPE} is not a recipe for --dataset={c.DATASET}")
    return RECIPES[name]


def derived(c):  # unless told or measured: the backbone's native size; scratch: the epochs transfer had
    measured = c.DATASET == "folder" and c.RECIPE in (None, "folder")  # the folder recipe measures it
    native = backbones.family(c.BACKBONE).native
    return {"IMAGE_SIZE": native if c.IMAGE_SIZE is None and not measured else c.IMAGE_SIZE,
            "SCRATCH_EPOCHS": c.EPOCHS + c.FINE_TUNE_EPOCHS if c.SCRATCH_EPOCHS is None else c.SCRATCH_EPOCHS}


CONFIG = experiment.configure(globals(), sys.argv[1:], recipe=recipe, derive=derived)

# 1. Check the constants and get the backbone first: a typo or a missing weights file costs a second, not a run.
config.check_choice(OPTIMIZER=(OPTIMIZER, models.OPTIMIZERS), SCHEDULE=(SCHEDULE, models.SCHEDULES))
config.check(HEAD is None or all(isinstance(w, int) and w > 0 for w in HEAD),
             f"--head={HEAD}: expected positive layer widths")
exp = experiment.start("mobilenet", CONFIG)
root = folders.find(sources.data_dir(DATA_DIR)) if DATASET == "folder" else None  # a mistyped folder: said first
size = IMAGE_SIZE or backbones.family(BACKBONE).native
backbone, backbone_info = exp.backbone(BACKBONE, size, WEIGHTS, fine_tune_at=FINE_TUNE_AT)

# 2. Data, uint8 RGB at the input size: a folder's files, decoded a batch at a time, or MNIST's digits in memory.
#    The same photo in two splits is looked for meanwhile (later=True): the record says what was found.
if DATASET == "folder":
    *splits, source = folders.read_folder(root, size, VALIDATION_SPLIT, DROP_DUPLICATES, later=True)
else:
    *splits, source = sources.mnist_as_rgb(sources.data_dir(DATA_DIR), size, VALIDATION_SPLIT, exp.seed)
task, CLASS_WEIGHTS = tasks.training_task(*splits, source, SAMPLES_PER_CLASS, CLASS_WEIGHT, exp.seed)


# 3. Input pipelines: shuffled and (optionally) augmented for training, the backbone's own preprocessing once.
def augmentation():
    if not AUGMENT:
        return None
    if DATASET == "mnist":  # no flips: a mirrored 2 is not a 2
        return keras.Sequential([keras.layers.RandomRotation(0.05), keras.layers.RandomTranslation(0.1, 0.1)])
    return keras.Sequential([keras.layers.RandomFlip("horizontal"), keras.layers.RandomRotation(0.2)])


feed = backbones.feed(BACKBONE, batch_size=BATCH_SIZE, seed=exp.seed, augmentation=augmentation())
training = phases.FitOptions(EPOCHS, BATCH_SIZE, LEARNING_RATE, OPTIMIZER, class_weight=CLASS_WEIGHTS, feed=feed)
# The head on features computed once (on disk for later runs): HEAD_STEPS there cost next to nothing.
cached = FEATURE_CACHE and not AUGMENT
head = phases.HeadOptions(cache="disk" if cached else None, batch_size=HEAD_BATCH_SIZE, steps=HEAD_STEPS)

# 4. What the recipe leaves to the photos (IMAGE_SIZE, HEAD None): the input size and head that score best on a
#    sample of the training photos, part of it set aside to score them (the validation photos play no part).
if IMAGE_SIZE is None or HEAD is None:
    choice = exp.choose(task, feed, training, head, sizes=None if IMAGE_SIZE is None else [IMAGE_SIZE],
                        heads=None if HEAD is None else [HEAD])
    IMAGE_SIZE, HEAD = choice.image_size, choice.head
    if IMAGE_SIZE != size:
        backbone, backbone_info = exp.backbone(BACKBONE, IMAGE_SIZE, WEIGHTS, fine_tune_at=FINE_TUNE_AT)
        task = task.at(IMAGE_SIZE)


# 5. The network: backbone -> global average pooling (the features) -> the head: dropout, HEAD's dense layers.
def head_layers():
    layers = [keras.layers.Dropout(HEAD_DROPOUT)] if HEAD_DROPOUT else []
    return [*layers, *(keras.layers.Dense(width, activation="relu") for width in HEAD),
            models.output_layer(len(task.classes))]


preprocessing = backbones.preprocessing_layers(BACKBONE)
with exp.run(source, title=f"{BACKBONE} {DATASET}", batch_size=BATCH_SIZE, later_constants=LATER_CONSTANTS,
             backbone=backbone_info) as run:
    # 6. Phase "transfer": the backbone frozen, in inference mode; only the new head learns, on the backbone's
    #    features computed once (on disk for later runs, as the head for a study: --reuse_transfer=True).
    classifier = Classifier.on_backbone(backbone, keras.layers.GlobalAveragePooling2D(), head_layers(), preprocessing)
    run.fit_head("transfer", classifier, task, training, head, about=f"backbone ({backbone_info['weights']}) frozen",
                 reuse=REUSE_TRANSFER)

    # 7. Phase "fine_tune": unfreeze the top of the backbone and go on at a low learning rate, epochs numbered on.
    #    The layers below the unfrozen ones stay frozen: their activations are computed once, like the features.
    if FINE_TUNE_EPOCHS:
        trainable = classifier.unfreeze(FINE_TUNE_AT, BATCHNORM_MOMENTUM if FINE_TUNE_BATCHNORM else None)
        start = backbones.layer_index(backbone, FINE_TUNE_AT)
        later = training.replace(epochs=FINE_TUNE_EPOCHS, initial_epoch=EPOCHS,
                                 learning_rate=FINE_TUNE_LEARNING_RATE, schedule=SCHEDULE)
        run.fine_tune("fine_tune", classifier, task, later,
            cache=cached, about=f"layers {start} on ({trainable} with weights) unfrozen, "
            f"BatchNormalization {'adapting' if FINE_TUNE_BATCHNORM else 'frozen'}")

    # 8. The final model on the test images (or validation): per-class scores, plots; model.keras + labels.txt.
    run.evaluate_final(classifier.model, task, feed, f"{BACKBONE} {DATASET}")
    run.save_model(classifier, task.classes)

    # 9. Phase "scratch": the same network from random init, every layer training, as many epochs as transfer had.
    if RUN_SCRATCH and SCRATCH_EPOCHS:
        random_backbone = backbones.scratch(BACKBONE, IMAGE_SIZE, BATCHNORM_MOMENTUM)
        scratch = Classifier.on_backbone(random_backbone, keras.layers.GlobalAveragePooling2D(), head_layers(),
                                         preprocessing, frozen=False, name="scratch")
        run.fit("scratch", scratch.model, task, training.replace(epochs=SCRATCH_EPOCHS, schedule=SCHEDULE),
                about="random init")
# Leaving the run: learning curves of every phase (learning_curves.png), then what each phase cost and scored.
