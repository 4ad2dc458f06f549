"""InceptionV3 transfer learning, the course recipe: an ImageNet InceptionV3 cut at mixed7, frozen, under a
new dense head, trained with augmentation on cats vs dogs until validation accuracy reaches a threshold.

Published: 96% validation accuracy (150x150, 20 epochs, batch 20, RMSprop 1e-4). Phases, each recorded on its
own: "transfer" (the head on the frozen backbone), and, off by default (the course had neither), "fine_tune"
(the backbone from FINE_TUNE_AT on unfrozen too) and "scratch" (the same network from random weights).

    python inception_transfer.py --data_dir=/data/datasets                   # ImageNet weights: Keras's download
    python inception_transfer.py --data_dir=/data/datasets --weights=None --epochs=2       # runs anywhere
    python inception_transfer.py --help                                       # every constant with its default
"""

import sys

from transferlab import experiment  # first: it starts TensorFlow without its start-up noise
from transferlab import backbones, config, data, folders, models

import keras

# -----------------------------------------------------------------------------------------------------
# Constants: edit them here, or override any from the shell as --name=value (each checked: config.RANGES).
# Every experiment also has SEED, DETERMINISTIC, DISTRIBUTE, MIXED_PRECISION, RESULTS_DIR, RESUME, ... (--help).
DATA_DIR: str | None = None  # <class>/ or train/<class>/ folders; None: $TRANSFER_DATA_DIR, else cats vs dogs' download
VALIDATION_SPLIT = 0.2  # share of each class that validates (by file hash) when there is no validation/ folder
WEIGHTS: str | None = "imagenet"  # "imagenet" (Keras's download), a weights file, or None (random init)
IMAGE_SIZE = 150  # input pixels per side, as published
CUT_LAYER = "mixed7"  # the backbone ends here: mid-level features transfer better than ImageNet's last ones
HEAD_WIDTH = 1024  # Flatten -> Dense(HEAD_WIDTH, relu) -> Dropout -> output, as published
DROPOUT = 0.2  # share of the head's Dense outputs dropped while training, as published
EPOCHS = 20  # epochs of the frozen phase "transfer", as published
BATCH_SIZE = 20  # as published
HEAD_BATCH_SIZE = 20  # batch size for the head on cached features (when AUGMENT is off)
TASK_B_SAMPLES_PER_CLASS: int | None = None  # cut the training images to this many per class (None: all)
CLASS_WEIGHT: str | None = None  # "balanced": each class weighs the same in the loss, however many images it has
LEARNING_RATE = 1e-4  # RMSprop's, as published
OPTIMIZER = "rmsprop"  # adam, rmsprop or sgd, in every phase
STOP_AT_VAL_ACCURACY = 0.97  # stop a phase once validation accuracy reaches this (the course's callback); 1.0: never
AUGMENT = True  # the published augmentation: rotation 40 degrees, shifts 0.2, shear and zoom 0.2, horizontal flips
FEATURE_CACHE = True  # without AUGMENT: backbone features once per image (on disk); fine-tuning: frozen layers once
FINE_TUNE_EPOCHS = 0  # epochs of phase "fine_tune" after the frozen phase (not in the course); 0 skips it
FINE_TUNE_AT: int | str = "mixed6"  # first backbone layer to unfreeze, by index or name: mixed7's block trains
FINE_TUNE_LEARNING_RATE = 1e-5  # low, so fine-tuning refines ImageNet's features, not erases them
REUSE_TRANSFER = False  # take phase "transfer" from an earlier run in RESULTS_DIR with the same constants and data
RUN_SCRATCH = False  # train the same network from random init (expensive: every layer trains every epoch)
SCRATCH_EPOCHS = 20  # epochs of phase "scratch"
BATCHNORM_MOMENTUM = 0.9  # for the BatchNormalization of the scratch network; Keras's 0.99 lags for few epochs
# -----------------------------------------------------------------------------------------------------
# What only the phases after "transfer" read: --reuse_transfer=True takes one trained with all else the same.
LATER_CONSTANTS = {"transfer": ["FINE_TUNE_EPOCHS", "FINE_TUNE_AT", "FINE_TUNE_LEARNING_RATE", "REUSE_TRANSFER",
                                "RUN_SCRATCH", "SCRATCH_EPOCHS", "BATCHNORM_MOMENTUM"]}
CONFIG = experiment.configure(globals(), sys.argv[1:])

# 1. Check the constants and get the backbone first: a typo or a missing weights file costs a second, not a run.
config.check_choice(OPTIMIZER=(OPTIMIZER, models.OPTIMIZERS))
exp = experiment.start("inception", CONFIG)
root = folders.find(data.data_dir(DATA_DIR))  # a mistyped folder is said before the backbone loads
backbone, backbone_info = exp.backbone("InceptionV3", IMAGE_SIZE, WEIGHTS, cut_at=CUT_LAYER, fine_tune_at=FINE_TUNE_AT)

# 2. Data: the folder's images (<class>/, or train/ and optional validation/, test/), decoded a batch at a time.
*splits, source = folders.load(root, IMAGE_SIZE, VALIDATION_SPLIT)
task, CLASS_WEIGHTS = data.training_task(*splits, source, TASK_B_SAMPLES_PER_CLASS, CLASS_WEIGHT, exp.seed)


# 3. Input pipelines. The course's ImageDataGenerator augmentation as Keras preprocessing layers, in the
#    pipeline before the backbone's preprocessing (which replaces the course's rescale=1/255: InceptionV3
#    was trained on -1..1). Its shear_range=0.2 was in degrees, invisible; RandomShear(0.2) shears for real.
def augmentation():
    return keras.Sequential([
        keras.layers.RandomRotation(40 / 360, fill_mode="nearest"),
        keras.layers.RandomTranslation(0.2, 0.2, fill_mode="nearest"),
        keras.layers.RandomShear(x_factor=0.2, fill_mode="nearest"),
        keras.layers.RandomZoom(0.2, fill_mode="nearest"),
        keras.layers.RandomFlip("horizontal"),
    ]) if AUGMENT else None


feed = backbones.Feed("InceptionV3", batch_size=BATCH_SIZE, seed=exp.seed, augmentation=augmentation())


# 4. The network: InceptionV3 up to CUT_LAYER -> Flatten (the features) -> the course's head.
def new_head(features):
    return models.stack(features.output_shape[1:], [
        keras.layers.Dense(HEAD_WIDTH, activation="relu"),
        keras.layers.Dropout(DROPOUT),
        models.output_layer(len(task.classes)),
    ], name="head")


IMAGE = (IMAGE_SIZE, IMAGE_SIZE, 3)
options = {"batch_size": BATCH_SIZE, "feed": feed, "optimizer": OPTIMIZER, "class_weight": CLASS_WEIGHTS,
           "stop_at_val_accuracy": STOP_AT_VAL_ACCURACY}
with exp.run(source, title="InceptionV3 transfer", batch_size=BATCH_SIZE, later_constants=LATER_CONSTANTS,
             backbone=backbone_info) as run:
    # 5. Phase "transfer": only the new head learns, over the frozen backbone (every epoch with augmentation, as
    #    published, else on cached features), until validation accuracy reaches STOP_AT_VAL_ACCURACY.
    features = backbones.feature_extractor(backbone, keras.layers.Flatten())
    head = new_head(features)
    model = models.compile_classifier(models.stack(IMAGE, [features, head], name="transfer"), LEARNING_RATE)
    y_pred = run.fit_head("transfer", model, features, head, task, epochs=EPOCHS, reuse=REUSE_TRANSFER,
                          cache="disk" if FEATURE_CACHE and not AUGMENT else None, head_batch_size=HEAD_BATCH_SIZE,
                          learning_rate=LEARNING_RATE, about=f"InceptionV3 to {CUT_LAYER} ({backbone_info['weights']}) "
                          "frozen", **options)
    epochs_run = run.record["phases"]["transfer"]["epochs"]  # fewer than EPOCHS when the callback stopped it

    # 6. Phase "fine_tune" (off by default): unfreeze the top of the backbone, go on at a low learning rate.
    #    BatchNormalization stays frozen: 2,000 photos cannot re-estimate ImageNet's statistics.
    if FINE_TUNE_EPOCHS:
        trainable = backbones.unfreeze(backbone, FINE_TUNE_AT)
        y_pred = run.fine_tune("fine_tune", model, backbone, keras.layers.Flatten(), head, task,
                               cache=FEATURE_CACHE and not AUGMENT, epochs=FINE_TUNE_EPOCHS, initial_epoch=epochs_run,
                               learning_rate=FINE_TUNE_LEARNING_RATE,
                               about=f"layers from {FINE_TUNE_AT} on ({trainable} with weights) unfrozen", **options)

    # 7. The final model on the test images (or validation): per-class scores, plots; model.keras + labels.txt.
    run.evaluate_final(model, task, feed, y_pred, f"InceptionV3 ({backbone_info['weights']})")
    run.save_model(model, IMAGE, backbones.preprocessing_layers("InceptionV3"), task.classes)

    # 8. Phase "scratch" (off by default): the same network from random init, every layer training.
    if RUN_SCRATCH and SCRATCH_EPOCHS:
        scratch_features = backbones.scratch_features("InceptionV3", IMAGE_SIZE, keras.layers.Flatten(),
                                                      BATCHNORM_MOMENTUM, cut_at=CUT_LAYER)
        scratch = models.stack(IMAGE, [scratch_features, new_head(scratch_features)], name="scratch")
        run.fit("scratch", scratch, task, epochs=SCRATCH_EPOCHS, learning_rate=LEARNING_RATE, about="random init",
                **options)
# Leaving the run: learning curves of every phase (learning_curves.png), then what each phase cost and scored.
