"""MobileNetV2 transfer learning: an ImageNet backbone under a new head, on any image folder or on MNIST.

For a folder (cats vs dogs by default, or your own: <class>/ folders, or train/ with optional validation/ and
test/), the default recipe is the best measured here: 224 px, the backbone frozen, a linear head on its pooled
features. `--recipe=tutorial` reproduces the TensorFlow transfer-learning tutorial (160 px, the published
notebook's Dense 1024-1024-512 head, a frozen phase, then the top of the backbone unfrozen at a low learning
rate); `--dataset=mnist` the published MobileNetV2-on-MNIST experiment (32x32 RGB digits), done right. Adds
the baseline neither had: the same network from random initialisation for as many epochs as transfer had.

The backbone is MobileNetV2 without its classifier; the head is the new layers on top. Phases, each recorded
on its own: "transfer" (the head on the frozen backbone), "fine_tune" (the top of the backbone unfrozen too,
at a low learning rate) and "scratch" (the same network from random weights). RECIPE (by default the
dataset's) fills every constant left at None (the values are shown below). A run ends with model.keras and
labels.txt in its folder: python -m transferlab.predict RUN IMAGE...

    WEIGHTS=/data/weights/mobilenet_v2_1.0_224_no_top.weights.h5        # offline; online "imagenet" works too
    python mobilenet_transfer.py --data_dir=/data/datasets --weights=$WEIGHTS
    python mobilenet_transfer.py --data_dir=my_photos --weights=$WEIGHTS   # my_photos/<class>/*.jpg
    python mobilenet_transfer.py --recipe=tutorial --data_dir=/data/datasets --weights=$WEIGHTS
    python mobilenet_transfer.py --dataset=mnist --data_dir=/data/datasets --weights=$WEIGHTS
    python mobilenet_transfer.py --help                        # every constant with its default
"""

import sys

from transferlab import experiment  # first: it starts TensorFlow without its start-up noise
from transferlab import backbones, config, data, folders, models, phases

import keras

# -----------------------------------------------------------------------------------------------------
# Constants: edit them here, or override any from the shell as --name=value. None: the dataset's recipe.
# Every experiment also has SEED, DETERMINISTIC, DISTRIBUTE, MIXED_PRECISION, TENSORBOARD, RESULTS_DIR, RESUME.
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
# The constants only the phases after "transfer" read: with --reuse_transfer=True a run takes phase "transfer"
# from an earlier run only when every other constant (and the data, weights, code and versions) is the same.
LATER_CONSTANTS = {"transfer": ["FINE_TUNE_EPOCHS", "FINE_TUNE_AT", "FINE_TUNE_LEARNING_RATE", "SCHEDULE",
                                "FINE_TUNE_BATCHNORM", "BATCHNORM_MOMENTUM", "REUSE_TRANSFER", "RUN_SCRATCH",
                                "SCRATCH_EPOCHS"]}
RECIPES = {
    # Folders: the best measured here (docs/results.md). The weights are the 224-px checkpoint's, and at 224 px
    # a linear head on ImageNet's features scores with the published 3-layer head on cats vs dogs, its 10
    # epochs in a tenth of the time; dropout and a lower rate scored lower. Fine-tuning is off (0.1 point, one
    # image, for 169 s), and so is the scratch baseline (about 35 minutes for 2,000 photos).
    "folder": {"IMAGE_SIZE": 224, "HEAD": [], "HEAD_DROPOUT": 0.0, "VALIDATION_SPLIT": 0.2, "BATCH_SIZE": 32,
               "EPOCHS": 10, "LEARNING_RATE": 1e-3, "FINE_TUNE_EPOCHS": 0, "FINE_TUNE_AT": 100,
               "FINE_TUNE_LEARNING_RATE": 1e-5, "SCHEDULE": "constant", "FINE_TUNE_BATCHNORM": False,
               "RUN_SCRATCH": False},
    # The TensorFlow tutorial on cats vs dogs, with the published notebook's head: 2,000 photos much like
    # ImageNet's, so ImageNet's BatchNormalization statistics stay; only layers 100 on (of 154) are unfrozen.
    "tutorial": {"IMAGE_SIZE": 160, "HEAD": [1024, 1024, 512], "HEAD_DROPOUT": 0.0, "VALIDATION_SPLIT": 0.2,
                 "BATCH_SIZE": 32, "EPOCHS": 10, "LEARNING_RATE": 1e-4, "FINE_TUNE_EPOCHS": 10, "FINE_TUNE_AT": 100,
                 "FINE_TUNE_LEARNING_RATE": 1e-5, "SCHEDULE": "constant", "FINE_TUNE_BATCHNORM": False,
                 "RUN_SCRATCH": False},
    # MNIST: 60,000 images far from ImageNet. Frozen ImageNet features give only about 61% here
    # (measured here), so the whole backbone is fine-tuned, at Adam's usual 1e-3 (1e-4 reached 84% validation
    # after a fine-tuning epoch, too slow), and its BatchNormalization statistics must adapt.
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
config.check_positive(EPOCHS=EPOCHS, BATCH_SIZE=BATCH_SIZE, HEAD_BATCH_SIZE=HEAD_BATCH_SIZE, IMAGE_SIZE=IMAGE_SIZE,
                      LEARNING_RATE=LEARNING_RATE, FINE_TUNE_LEARNING_RATE=FINE_TUNE_LEARNING_RATE,
                      TASK_B_SAMPLES_PER_CLASS=TASK_B_SAMPLES_PER_CLASS)
config.check_non_negative(FINE_TUNE_EPOCHS=FINE_TUNE_EPOCHS, SCRATCH_EPOCHS=SCRATCH_EPOCHS)
config.check_fraction(VALIDATION_SPLIT=VALIDATION_SPLIT, BATCHNORM_MOMENTUM=BATCHNORM_MOMENTUM)
config.check(0 <= HEAD_DROPOUT < 1, f"--head_dropout={HEAD_DROPOUT}: must be in [0, 1)")
config.check_choice(OPTIMIZER=(OPTIMIZER, models.OPTIMIZERS), SCHEDULE=(SCHEDULE, models.SCHEDULES))
config.check(all(isinstance(w, int) and w > 0 for w in HEAD), f"--head={HEAD}: expected positive layer widths")
exp = experiment.start("mobilenet", CONFIG)
root = folders.find(data.data_dir(DATA_DIR)) if DATASET == "folder" else None  # a mistyped folder: said first
with exp.scope():  # its weights are variables: under a strategy they must be created inside its scope
    backbone, backbone_info = backbones.load("MobileNetV2", IMAGE_SIZE, WEIGHTS)
backbones.layer_index(backbone, FINE_TUNE_AT)

# 2. Data as uint8 RGB images at the input size: an image folder (<class>/, or train/ with optional validation/
#    and test/), its files decoded in the pipelines a batch at a time (memory does not grow with the folder),
#    or MNIST's digits as RGB in memory (a seeded share of the training digits validates).
if DATASET == "folder":
    splits = folders.load(root, IMAGE_SIZE, VALIDATION_SPLIT)
else:
    splits = data.mnist_as_rgb(data.data_dir(DATA_DIR), IMAGE_SIZE, VALIDATION_SPLIT, exp.seed)
task, CLASS_WEIGHTS = data.training_task(*splits, TASK_B_SAMPLES_PER_CLASS, CLASS_WEIGHT, exp.seed)
source, CLASS_NAMES = splits[-1], task.classes


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
    return models.stack((1280,), [*layers, models.output_layer(len(CLASS_NAMES))], name="head")


IMAGE = (IMAGE_SIZE, IMAGE_SIZE, 3)
options = {"validation_data": task.validation, "feed": feed, "optimizer": OPTIMIZER, "class_weight": CLASS_WEIGHTS}
with exp.run(source, title=f"MobileNetV2 {DATASET}", batch_size=BATCH_SIZE, later_constants=LATER_CONSTANTS,
             backbone=backbone_info) as run:
    # 5. Phase "transfer": the backbone frozen, in inference mode; only the new head learns, on the backbone's
    #    features computed once (kept on disk for later runs). Each phase saves its weights when done, so a
    #    resumed run restores a finished phase. With --reuse_transfer=True an earlier run's head with the same
    #    constants but LATER_CONSTANTS, data, weights and code is taken: a fine-tuning study trains it once a seed.
    print(f"\n== transfer: {task.samples} images, MobileNetV2 ({backbone_info['weights']}) frozen, {EPOCHS} epochs")
    features = backbones.feature_extractor(backbone, keras.layers.GlobalAveragePooling2D())
    head = new_head()
    model = models.compile_classifier(models.stack(IMAGE, [features, head], name="transfer"), LEARNING_RATE)
    y_pred = run.phase("transfer", model, lambda: phases.fit_head(
        run, "transfer", features, head, *task.train, cache="disk" if FEATURE_CACHE and not AUGMENT else None,
        epochs=EPOCHS, batch_size=BATCH_SIZE, head_batch_size=HEAD_BATCH_SIZE, learning_rate=LEARNING_RATE,
        test_data=task.test, **options), task, feed=feed, reuse=REUSE_TRANSFER)

    # 6. Phase "fine_tune": unfreeze the top of the backbone and go on at a low learning rate, epochs numbered on.
    #    The layers below the unfrozen ones stay frozen: their activations are computed once, like the features.
    if FINE_TUNE_EPOCHS:
        trainable = backbones.unfreeze(backbone, FINE_TUNE_AT, BATCHNORM_MOMENTUM if FINE_TUNE_BATCHNORM else None)
        print(f"\n== fine_tune: layers {FINE_TUNE_AT} on ({trainable} with weights) unfrozen, BatchNormalization "
              f"{'adapting' if FINE_TUNE_BATCHNORM else 'frozen'}, {FINE_TUNE_EPOCHS} epochs")
        y_pred = run.phase("fine_tune", model, lambda: phases.fine_tune(
            run, "fine_tune", model, backbone, keras.layers.GlobalAveragePooling2D(), head, *task.train,
            cache=FEATURE_CACHE and not AUGMENT, batch_size=BATCH_SIZE, epochs=FINE_TUNE_EPOCHS, initial_epoch=EPOCHS,
            learning_rate=FINE_TUNE_LEARNING_RATE, schedule=SCHEDULE, test_data=task.test, **options), task, feed=feed)

    # 7. The final transferred model on the test images (validation for a folder without test/): per-class
    #    precision, recall and F1 in the record, the plots beside it; then saved as model.keras + labels.txt.
    run.evaluate_final(model, task, feed, y_pred, f"MobileNetV2 {DATASET}")
    run.save_model(model, IMAGE, backbones.preprocessing_layers("MobileNetV2"), CLASS_NAMES)

    # 8. Phase "scratch": the same network from random init, every layer training, as many epochs as transfer had.
    if RUN_SCRATCH and SCRATCH_EPOCHS:
        print(f"\n== scratch: {task.samples} images, MobileNetV2 from random init, {SCRATCH_EPOCHS} epochs")
        scratch_features = backbones.scratch_features("MobileNetV2", IMAGE_SIZE, keras.layers.GlobalAveragePooling2D(),
                                                      BATCHNORM_MOMENTUM)
        scratch = models.stack(IMAGE, [scratch_features, new_head()], name="scratch")
        run.phase("scratch", scratch, lambda: phases.fit(
            run, "scratch", scratch, *task.train, batch_size=BATCH_SIZE, epochs=SCRATCH_EPOCHS,
            learning_rate=LEARNING_RATE, schedule=SCHEDULE, **options), task, feed=feed, batch_size=BATCH_SIZE)
# Leaving the run: learning curves of every phase (learning_curves.png), then what each phase cost and scored.
