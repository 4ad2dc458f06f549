"""MobileNetV2 transfer learning: an ImageNet backbone under a new head, on any image folder or on MNIST.

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
    python mobilenet_transfer.py --help                        # every constant with its default
"""

import sys

from transferlab import experiment  # first: it starts TensorFlow without its start-up noise
from transferlab import backbones, config, data, folders, models

import keras

# -----------------------------------------------------------------------------------------------------
# Constants: edit them here, or override any from the shell as --name=value (each checked: config.RANGES).
# None: the recipe's. Every experiment also has SEED, DISTRIBUTE, MIXED_PRECISION, RESULTS_DIR, ... (--help).
DATASET = "folder"  # "folder": class subfolders of images (cats vs dogs by default); "mnist": digits as RGB
RECIPE: str | None = None  # None: the dataset's own (folder, mnist); "tutorial": the TensorFlow tutorial's, on a folder
DATA_DIR: str | None = None  # <class>/ or train/<class>/ folders, or one holding mnist.npz; None: $TRANSFER_DATA_DIR
VALIDATION_SPLIT: float | None = None  # share of the training images that validates when there is no validation/
WEIGHTS: str | None = "imagenet"  # "imagenet" (Keras's download), a weights file, or None (random init)
IMAGE_SIZE: int | None = None  # input pixels per side
HEAD: list | None = None  # hidden Dense(relu) widths between the pooled features and the output; []: linear
HEAD_DROPOUT: float | None = None  # share of the pooled features dropped while the head trains
EPOCHS: int | None = None  # epochs of the frozen phase "transfer"
BATCH_SIZE: int | None = None  # images per step whenever images go through the backbone
HEAD_BATCH_SIZE = 32  # batch size for the head on cached features
TASK_B_SAMPLES_PER_CLASS: int | None = None  # cut the training images to this many per class (None: all)
CLASS_WEIGHT: str | None = None  # "balanced": each class weighs the same in the loss, however many images it has
LEARNING_RATE: float | None = None  # for the new head in the frozen phase, and for scratch
OPTIMIZER = "adam"  # adam, rmsprop or sgd, in every phase
FINE_TUNE_EPOCHS: int | None = None  # epochs of phase "fine_tune" after the frozen phase; 0 skips it
FINE_TUNE_AT: int | str | None = None  # first backbone layer to unfreeze, by index or name (0: all of it)
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
    # Folders: at the weights' 224 px a linear head on frozen features is as good as more, in far less time.
    "folder": {"IMAGE_SIZE": 224, "HEAD": [], "HEAD_DROPOUT": 0.0, "VALIDATION_SPLIT": 0.2, "BATCH_SIZE": 32,
               "EPOCHS": 10, "LEARNING_RATE": 1e-3, "FINE_TUNE_EPOCHS": 0, "FINE_TUNE_AT": 100,
               "FINE_TUNE_LEARNING_RATE": 1e-5, "SCHEDULE": "constant", "FINE_TUNE_BATCHNORM": False,
               "RUN_SCRATCH": False},
    # The TensorFlow tutorial with the notebook's head: photos like ImageNet's, so its BatchNormalization stays.
    "tutorial": {"IMAGE_SIZE": 160, "HEAD": [1024, 1024, 512], "HEAD_DROPOUT": 0.0, "VALIDATION_SPLIT": 0.2,
                 "BATCH_SIZE": 32, "EPOCHS": 10, "LEARNING_RATE": 1e-4, "FINE_TUNE_EPOCHS": 10, "FINE_TUNE_AT": 100,
                 "FINE_TUNE_LEARNING_RATE": 1e-5, "SCHEDULE": "constant", "FINE_TUNE_BATCHNORM": False,
                 "RUN_SCRATCH": False},
    # MNIST, far from ImageNet: the whole backbone fine-tuned, BatchNormalization adapting, 1e-3 decaying to 0.
    "mnist": {"IMAGE_SIZE": 32, "HEAD": [1024, 1024, 512], "HEAD_DROPOUT": 0.0, "VALIDATION_SPLIT": 0.1,
              "BATCH_SIZE": 64, "EPOCHS": 2, "LEARNING_RATE": 1e-3, "FINE_TUNE_EPOCHS": 5, "FINE_TUNE_AT": 0,
              "FINE_TUNE_LEARNING_RATE": 1e-3, "SCHEDULE": "cosine", "FINE_TUNE_BATCHNORM": True, "RUN_SCRATCH": True},
}
CONFIG = experiment.configure(globals(), sys.argv[1:])

# 1. Check the constants and get the backbone first: a typo or a missing weights file costs a second, not a run.
config.check_choice(DATASET=(DATASET, ("folder", "mnist")), RECIPE=(RECIPE or DATASET, RECIPES))
config.check((RECIPE or DATASET) in ((DATASET,) if DATASET == "mnist" else ("folder", "tutorial")),
             f"--recipe={RECIPE} is not a recipe for --dataset={DATASET}")
CONFIG = config.fill_from_recipe(globals(), CONFIG, RECIPES[RECIPE or DATASET])
if SCRATCH_EPOCHS is None:
    CONFIG["SCRATCH_EPOCHS"] = SCRATCH_EPOCHS = EPOCHS + FINE_TUNE_EPOCHS
config.check_choice(OPTIMIZER=(OPTIMIZER, models.OPTIMIZERS), SCHEDULE=(SCHEDULE, models.SCHEDULES))
config.check(all(isinstance(w, int) and w > 0 for w in HEAD), f"--head={HEAD}: expected positive layer widths")
exp = experiment.start("mobilenet", CONFIG)
root = folders.find(data.data_dir(DATA_DIR)) if DATASET == "folder" else None  # a mistyped folder: said first
backbone, backbone_info = exp.backbone("MobileNetV2", IMAGE_SIZE, WEIGHTS, fine_tune_at=FINE_TUNE_AT)

# 2. Data, uint8 RGB at the input size: a folder's files, decoded a batch at a time, or MNIST's digits in memory.
*splits, source = (folders.load(root, IMAGE_SIZE, VALIDATION_SPLIT) if DATASET == "folder" else
                   data.mnist_as_rgb(data.data_dir(DATA_DIR), IMAGE_SIZE, VALIDATION_SPLIT, exp.seed))
task, CLASS_WEIGHTS = data.training_task(*splits, source, TASK_B_SAMPLES_PER_CLASS, CLASS_WEIGHT, exp.seed)


# 3. Input pipelines: shuffled and (optionally) augmented for training, the backbone's own preprocessing once.
def augmentation():
    if not AUGMENT:
        return None
    if DATASET == "mnist":  # no flips: a mirrored 2 is not a 2
        return keras.Sequential([keras.layers.RandomRotation(0.05), keras.layers.RandomTranslation(0.1, 0.1)])
    return keras.Sequential([keras.layers.RandomFlip("horizontal"), keras.layers.RandomRotation(0.2)])


feed = backbones.Feed("MobileNetV2", batch_size=BATCH_SIZE, seed=exp.seed, augmentation=augmentation())


# 4. The network: backbone -> global average pooling (the features) -> the head: dropout, HEAD's dense layers.
def new_head():
    layers = [keras.layers.Dropout(HEAD_DROPOUT)] if HEAD_DROPOUT else []
    layers += [keras.layers.Dense(width, activation="relu") for width in HEAD]
    return models.stack((1280,), [*layers, models.output_layer(len(task.classes))], name="head")


IMAGE = (IMAGE_SIZE, IMAGE_SIZE, 3)
options = {"batch_size": BATCH_SIZE, "feed": feed, "optimizer": OPTIMIZER, "class_weight": CLASS_WEIGHTS}
with exp.run(source, title=f"MobileNetV2 {DATASET}", batch_size=BATCH_SIZE, later_constants=LATER_CONSTANTS,
             backbone=backbone_info) as run:
    # 5. Phase "transfer": the backbone frozen, in inference mode; only the new head learns, on the backbone's
    #    features computed once (on disk for later runs, as the head for a study: --reuse_transfer=True).
    features = backbones.feature_extractor(backbone, keras.layers.GlobalAveragePooling2D())
    head = new_head()
    model = models.compile_classifier(models.stack(IMAGE, [features, head], name="transfer"), LEARNING_RATE)
    y_pred = run.fit_head("transfer", model, features, head, task, epochs=EPOCHS, reuse=REUSE_TRANSFER,
                          cache="disk" if FEATURE_CACHE and not AUGMENT else None, head_batch_size=HEAD_BATCH_SIZE,
                          learning_rate=LEARNING_RATE, about=f"backbone ({backbone_info['weights']}) frozen", **options)

    # 6. Phase "fine_tune": unfreeze the top of the backbone and go on at a low learning rate, epochs numbered on.
    #    The layers below the unfrozen ones stay frozen: their activations are computed once, like the features.
    if FINE_TUNE_EPOCHS:
        trainable = backbones.unfreeze(backbone, FINE_TUNE_AT, BATCHNORM_MOMENTUM if FINE_TUNE_BATCHNORM else None)
        y_pred = run.fine_tune(
            "fine_tune", model, backbone, keras.layers.GlobalAveragePooling2D(), head, task, epochs=FINE_TUNE_EPOCHS,
            cache=FEATURE_CACHE and not AUGMENT, initial_epoch=EPOCHS, learning_rate=FINE_TUNE_LEARNING_RATE,
            schedule=SCHEDULE, about=f"layers {FINE_TUNE_AT} on ({trainable} with weights) unfrozen, "
            f"BatchNormalization {'adapting' if FINE_TUNE_BATCHNORM else 'frozen'}", **options)

    # 7. The final model on the test images (or validation): per-class scores, plots; model.keras + labels.txt.
    run.evaluate_final(model, task, feed, y_pred, f"MobileNetV2 {DATASET}")
    run.save_model(model, IMAGE, backbones.preprocessing_layers("MobileNetV2"), task.classes)

    # 8. Phase "scratch": the same network from random init, every layer training, as many epochs as transfer had.
    if RUN_SCRATCH and SCRATCH_EPOCHS:
        scratch_features = backbones.scratch_features("MobileNetV2", IMAGE_SIZE, keras.layers.GlobalAveragePooling2D(),
                                                      BATCHNORM_MOMENTUM)
        scratch = models.stack(IMAGE, [scratch_features, new_head()], name="scratch")
        run.fit("scratch", scratch, task, epochs=SCRATCH_EPOCHS, learning_rate=LEARNING_RATE, schedule=SCHEDULE,
                about="random init", **options)
# Leaving the run: learning curves of every phase (learning_curves.png), then what each phase cost and scored.
