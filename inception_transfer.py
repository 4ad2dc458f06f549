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

import transferlab.runtime  # noqa: F401 (first: TensorFlow starts without its start-up noise)

import keras

from transferlab import backbones, config, experiment, folders, models, phases, sources, tasks
from transferlab.classifier import Classifier

# -----------------------------------------------------------------------------------------------------
# Constants: edit them here, or override any from the shell as --name=value (each checked: config.RANGES).
# Every experiment also has SEED, DETERMINISTIC, DISTRIBUTE, MIXED_PRECISION, RESULTS_DIR, RESUME, ... (--help).
DATA_DIR: str | None = None  # <class>/ or train/<class>/ folders; None: $TRANSFER_DATA_DIR, else cats vs dogs' download
VALIDATION_SPLIT = 0.2  # share of each class that validates (by file hash) when there is no validation/ folder
DROP_DUPLICATES = False  # True: photos also in training (same bytes or same picture) leave validation and test
BACKBONE = "InceptionV3"  # as published; any network of backbones.BACKBONES (then CUT_LAYER, FINE_TUNE_AT its own)
WEIGHTS: str | None = "imagenet"  # "imagenet" (Keras's download), a weights file, or None (random init)
IMAGE_SIZE = 150  # input pixels per side, as published
CUT_LAYER: str | None = "mixed7"  # the backbone ends here: mid-level features transfer better; None: whole
HEAD = [1024]  # Flatten -> Dense(width, relu) for each width -> Dropout -> output: one of 1024, as published
HEAD_DROPOUT = 0.2  # share of the last Dense layer's outputs dropped while the head trains, as published
EPOCHS = 20  # epochs of the frozen phase "transfer", as published
BATCH_SIZE = 20  # as published
HEAD_BATCH_SIZE = 20  # batch size for the head on cached features (when AUGMENT is off)
SAMPLES_PER_CLASS: int | None = None  # cut the training images to this many per class (None: all)
CLASS_WEIGHT: str | None = None  # "balanced": each class weighs the same in the loss, however many images it has
LEARNING_RATE = 1e-4  # RMSprop's, as published
OPTIMIZER = "rmsprop"  # adam, rmsprop or sgd, in every phase
STOP_AT_VAL_ACCURACY = 0.97  # stop a phase once validation accuracy reaches this (the course's callback); 1.0: never
AUGMENT = True  # the published augmentation: rotation 40 degrees, shifts 0.2, shear and zoom 0.2, horizontal flips
FEATURE_CACHE = True  # without AUGMENT: backbone features once per image (on disk); fine-tuning: frozen layers once
FINE_TUNE_EPOCHS = 0  # epochs of phase "fine_tune" after the frozen phase (not in the course); 0 skips it
FINE_TUNE_AT: int | float | str = "mixed6"  # first layer to unfreeze: index, name or share; mixed7's block trains
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
backbones.family(BACKBONE)  # an unknown name: one line that names the nearest ones
config.check(all(isinstance(w, int) and w > 0 for w in HEAD), f"--head={HEAD}: expected positive layer widths")
exp = experiment.start("inception", CONFIG)
root = folders.find(sources.data_dir(DATA_DIR))  # a mistyped folder is said before the backbone loads
backbone, backbone_info = exp.backbone(BACKBONE, IMAGE_SIZE, WEIGHTS, cut_at=CUT_LAYER, fine_tune_at=FINE_TUNE_AT)

# 2. Data: the folder's images (<class>/, or train/ and optional validation/, test/), decoded a batch at a time.
*splits, source = folders.read_folder(root, IMAGE_SIZE, VALIDATION_SPLIT, DROP_DUPLICATES, later=True)
task, CLASS_WEIGHTS = tasks.training_task(*splits, source, SAMPLES_PER_CLASS, CLASS_WEIGHT, exp.seed)


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


feed = backbones.feed(BACKBONE, batch_size=BATCH_SIZE, seed=exp.seed, augmentation=augmentation())
training = phases.FitOptions(EPOCHS, BATCH_SIZE, LEARNING_RATE, OPTIMIZER, class_weight=CLASS_WEIGHTS, feed=feed,
                             stop_at_val_accuracy=STOP_AT_VAL_ACCURACY)


# 4. The network: InceptionV3 up to CUT_LAYER -> Flatten (the features) -> the course's head.
def head_layers():
    return [*(keras.layers.Dense(width, activation="relu") for width in HEAD), keras.layers.Dropout(HEAD_DROPOUT),
            models.output_layer(len(task.classes))]


preprocessing = backbones.preprocessing_layers(BACKBONE)
with exp.run(source, title=f"{BACKBONE} transfer", batch_size=BATCH_SIZE, later_constants=LATER_CONSTANTS,
             backbone=backbone_info) as run:
    # 5. Phase "transfer": only the new head learns, over the frozen backbone (every epoch with augmentation, as
    #    published, else on cached features), until validation accuracy reaches STOP_AT_VAL_ACCURACY.
    classifier = Classifier.on_backbone(backbone, keras.layers.Flatten(), head_layers(), preprocessing)
    head = phases.HeadOptions(cache="disk" if FEATURE_CACHE and not AUGMENT else None, batch_size=HEAD_BATCH_SIZE)
    run.fit_head("transfer", classifier, task, training, head, reuse=REUSE_TRANSFER,
                 about=f"{BACKBONE} to {CUT_LAYER or 'its end'} ({backbone_info['weights']}) frozen")
    epochs_run = run.record["phases"]["transfer"]["epochs"]  # fewer than EPOCHS when the callback stopped it

    # 6. Phase "fine_tune" (off by default): unfreeze the top of the backbone, go on at a low learning rate.
    #    BatchNormalization stays frozen: 2,000 photos cannot re-estimate ImageNet's statistics.
    if FINE_TUNE_EPOCHS:
        trainable = classifier.unfreeze(FINE_TUNE_AT)
        run.fine_tune("fine_tune", classifier, task, training.replace(
            epochs=FINE_TUNE_EPOCHS, initial_epoch=epochs_run, learning_rate=FINE_TUNE_LEARNING_RATE),
            cache=FEATURE_CACHE and not AUGMENT, about=f"layers from {FINE_TUNE_AT} on ({trainable} with weights) "
            "unfrozen")

    # 7. The final model on the test images (or validation): per-class scores, plots; model.keras + labels.txt.
    run.evaluate_final(classifier.model, task, feed, f"{BACKBONE} ({backbone_info['weights']})")
    run.save_model(classifier, task.classes)

    # 8. Phase "scratch" (off by default): the same network from random init, every layer training.
    if RUN_SCRATCH and SCRATCH_EPOCHS:
        random_backbone = backbones.scratch(BACKBONE, IMAGE_SIZE, BATCHNORM_MOMENTUM, cut_at=CUT_LAYER)
        scratch = Classifier.on_backbone(random_backbone, keras.layers.Flatten(), head_layers(), preprocessing,
                                         frozen=False, name="scratch")
        run.fit("scratch", scratch.model, task, training.replace(epochs=SCRATCH_EPOCHS), about="random init")
# Leaving the run: learning curves of every phase (learning_curves.png), then what each phase cost and scored.
