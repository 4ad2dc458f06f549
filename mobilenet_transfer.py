"""MobileNetV2 transfer learning: an ImageNet backbone, frozen under a new head, then fine-tuned.

Reproduces the TensorFlow transfer-learning tutorial on cats vs dogs (MobileNetV2 at 160x160, frozen
phase, then the top of the backbone unfrozen at a low learning rate) with the published notebook's head
(Dense 1024-1024-512), on any folder of class subfolders; `--dataset=mnist` reproduces the published
MobileNetV2-on-MNIST experiment (32x32 RGB digits), done right. Adds the baseline neither had: the same
network trained from random initialisation for as many epochs as transfer had.

The backbone is MobileNetV2 without its classifier; the head is the new dense layers on top. Phases, each
recorded on its own: "transfer" (the head on the frozen backbone), "fine_tune" (the top of the backbone
unfrozen too, at a low learning rate) and "scratch" (the same network from random weights). DATASET picks a
recipe: every constant left at None takes the recipe's value (shown below).

    WEIGHTS=/data/weights/mobilenet_v2_1.0_224_no_top.weights.h5        # offline; online "imagenet" works too
    python mobilenet_transfer.py --data_dir=/data/datasets --weights=$WEIGHTS
    python mobilenet_transfer.py --data_dir=my_photos --weights=$WEIGHTS   # my_photos/train/<class>/*.jpg
    python mobilenet_transfer.py --dataset=mnist --data_dir=/data/datasets --weights=$WEIGHTS
    python mobilenet_transfer.py --help                        # every constant with its default
"""

import functools
import sys

from transferlab import runtime  # first: it starts TensorFlow without its start-up noise
from transferlab import backbones, config, data, distribute, feature_cache, folders, models, phases, plots, records

import keras
import numpy as np
import tensorflow as tf

# -----------------------------------------------------------------------------------------------------
# Constants: edit them here, or override any from the shell as --name=value. None: the dataset's recipe.
DATASET = "folder"  # "folder": class subfolders of images (cats vs dogs by default); "mnist": digits as RGB
DATA_DIR: str | None = None  # train/<class>/ folders, or one holding mnist.npz; None: $TRANSFER_DATA_DIR, else download
VALIDATION_SPLIT: float | None = None  # share of the training images that validates when there is no validation/
WEIGHTS: str | None = "imagenet"  # "imagenet" (Keras's download), a weights file, or None (random init)
IMAGE_SIZE: int | None = None  # input pixels per side
HEAD = [1024, 1024, 512]  # hidden Dense(relu) widths between the pooled features and the output, as published
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
RUN_SCRATCH = True  # train the same network from random init: what did the ImageNet weights buy?
SCRATCH_EPOCHS: int | None = None  # None: EPOCHS + FINE_TUNE_EPOCHS, the epochs transfer had
SEED = 42  # one seed for Python, numpy and TensorFlow, and for the validation split
DETERMINISTIC = False  # also make TensorFlow ops deterministic: identical reruns on the same hardware
DISTRIBUTE = "auto"  # auto (all GPUs if several), none, mirrored, multi_worker (cluster in TF_CONFIG) or tpu
MIXED_PRECISION: str | None = "auto"  # None (float32), mixed_float16 or mixed_bfloat16; auto: float16 with a GPU
TENSORBOARD = True  # TensorBoard logs of every phase in the run folder: tensorboard --logdir results/
RESULTS_DIR = "results"  # each run writes RESULTS_DIR/mobilenet/<run_id>/
RESUME: str | None = None  # a run id, or "latest": finish an interrupted run (same constants) in its folder
# -----------------------------------------------------------------------------------------------------
# The constants a reusable phase depends on: with --reuse_transfer=True a run takes phase "transfer" from an earlier
# run only when these (and the data, code, library versions and distribution) are the same.
PHASE_INPUTS = {"transfer": ["DATASET", "VALIDATION_SPLIT", "IMAGE_SIZE", "HEAD", "EPOCHS", "BATCH_SIZE",
                             "HEAD_BATCH_SIZE", "TASK_B_SAMPLES_PER_CLASS", "LEARNING_RATE", "OPTIMIZER", "AUGMENT",
                             "FEATURE_CACHE", "SEED", "DETERMINISTIC", "MIXED_PRECISION"]}
RECIPES = {
    # The tutorial's cats vs dogs: 2,000 photos much like ImageNet's, so ImageNet's BatchNormalization
    # statistics stay; only the top of the backbone (layers 100 on, of 154) is unfrozen.
    "folder": {"IMAGE_SIZE": 160, "VALIDATION_SPLIT": 0.2, "BATCH_SIZE": 32, "EPOCHS": 10, "LEARNING_RATE": 1e-4,
               "FINE_TUNE_EPOCHS": 10, "FINE_TUNE_AT": 100, "FINE_TUNE_LEARNING_RATE": 1e-5,
               "SCHEDULE": "constant", "FINE_TUNE_BATCHNORM": False},
    # MNIST: 60,000 images far from ImageNet. Frozen ImageNet features give only about 61% here
    # (measured here), so the whole backbone is fine-tuned, at Adam's usual 1e-3 (1e-4 reached 84% validation
    # after a fine-tuning epoch, too slow), and its BatchNormalization statistics must adapt.
    "mnist": {"IMAGE_SIZE": 32, "VALIDATION_SPLIT": 0.1, "BATCH_SIZE": 64, "EPOCHS": 2, "LEARNING_RATE": 1e-3,
              "FINE_TUNE_EPOCHS": 5, "FINE_TUNE_AT": 0, "FINE_TUNE_LEARNING_RATE": 1e-3,
              "SCHEDULE": "cosine", "FINE_TUNE_BATCHNORM": True},
}
CONFIG = config.configure(globals(), sys.argv[1:])

# 1. Check the constants and get the backbone first: a typo or a missing weights file costs a second, not a run.
config.check(DATASET in RECIPES, f"--dataset={DATASET}: expected one of {', '.join(RECIPES)}")
CONFIG = config.fill_from_recipe(globals(), CONFIG, RECIPES[DATASET])
if SCRATCH_EPOCHS is None:
    CONFIG["SCRATCH_EPOCHS"] = SCRATCH_EPOCHS = EPOCHS + FINE_TUNE_EPOCHS
config.check_positive(EPOCHS=EPOCHS, BATCH_SIZE=BATCH_SIZE, HEAD_BATCH_SIZE=HEAD_BATCH_SIZE,
                      LEARNING_RATE=LEARNING_RATE, FINE_TUNE_LEARNING_RATE=FINE_TUNE_LEARNING_RATE,
                      IMAGE_SIZE=IMAGE_SIZE, BATCHNORM_MOMENTUM=BATCHNORM_MOMENTUM)
config.check(FINE_TUNE_EPOCHS >= 0 and SCRATCH_EPOCHS >= 0, "--fine_tune_epochs and --scratch_epochs must be >= 0")
config.check(TASK_B_SAMPLES_PER_CLASS is None or TASK_B_SAMPLES_PER_CLASS > 0,
             f"--task_b_samples_per_class must be > 0 or None, got {TASK_B_SAMPLES_PER_CLASS}")
config.check(0 < VALIDATION_SPLIT < 1, f"--validation_split={VALIDATION_SPLIT}: must be in (0, 1)")
config.check(BATCHNORM_MOMENTUM < 1, f"--batchnorm_momentum={BATCHNORM_MOMENTUM}: must be in (0, 1)")
config.check(OPTIMIZER in models.OPTIMIZERS, f"--optimizer={OPTIMIZER}: expected one of {', '.join(models.OPTIMIZERS)}")
config.check(SCHEDULE in models.SCHEDULES, f"--schedule={SCHEDULE}: expected one of {', '.join(models.SCHEDULES)}")
config.check(all(isinstance(w, int) and w > 0 for w in HEAD), f"--head={HEAD}: expected positive layer widths")
strategy = distribute.start(DISTRIBUTE, MIXED_PRECISION, RESUME)  # before any other TensorFlow work
results_dir = distribute.results_dir(RESULTS_DIR, strategy)  # the chief's RESULTS_DIR; other workers a temporary one
resumed = records.find_resumable(results_dir, "mobilenet", RESUME, CONFIG)
runtime.seed_everything(SEED, DETERMINISTIC)
root = folders.find(data.data_dir(DATA_DIR)) if DATASET == "folder" else None  # a mistyped folder: said first
with strategy.scope():  # its weights are variables: under a strategy they must be created inside its scope
    backbone, backbone_info = backbones.load("MobileNetV2", IMAGE_SIZE, WEIGHTS)
backbones.layer_index(backbone, FINE_TUNE_AT)

# 2. Data as uint8 images at the input size, decoded once: an image folder, or MNIST's digits as RGB.
if DATASET == "folder":
    (x_train, y_train), (x_val, y_val), source = folders.load(root, IMAGE_SIZE, VALIDATION_SPLIT, SEED)
    CLASS_NAMES, test = source["class_names"], None  # an image folder has no test set: validation reports
else:
    (x_train, y_train), (x_test, y_test), source = data.load_keras_dataset(
        "mnist", data.data_dir(DATA_DIR), (28, 28), 10, keras.datasets.mnist.load_data,
        class_names=[str(digit) for digit in range(10)],
    )

    def as_rgb(x):  # 28x28 grey digits -> IMAGE_SIZE x IMAGE_SIZE RGB, as the backbone expects
        resized = tf.image.resize(x[..., None].astype(np.float32), (IMAGE_SIZE, IMAGE_SIZE))
        return np.repeat(np.round(resized.numpy()).clip(0, 255).astype(np.uint8), 3, axis=-1)

    (x_train, y_train), (x_val, y_val) = data.train_validation_split(as_rgb(x_train), y_train, VALIDATION_SPLIT, SEED)
    CLASS_NAMES, test = [str(digit) for digit in range(10)], (as_rgb(x_test), y_test)
    source["samples"] = {"train": len(x_train), "validation": len(x_val), "test": len(y_test)}
if TASK_B_SAMPLES_PER_CLASS is not None:  # a smaller training set, the same images for the same seed
    x_train, y_train = data.take_per_class(x_train, y_train, TASK_B_SAMPLES_PER_CLASS, SEED)
    source["samples"]["train"] = len(x_train)
print(f"{DATASET} from {source['source']}: classes {CLASS_NAMES}, "
      + ", ".join(f"{n} {split}" for split, n in source["samples"].items()))
source["class_weight"] = CLASS_WEIGHTS = data.class_weights(y_train, CLASS_NAMES, CLASS_WEIGHT)  # or None


# 3. Input pipelines: shuffled and (optionally) augmented for training, the backbone's own preprocessing once.
def augmentation():
    if not AUGMENT:
        return None
    if DATASET == "mnist":  # no flips: a mirrored 2 is not a 2
        return keras.Sequential([keras.layers.RandomRotation(0.05), keras.layers.RandomTranslation(0.1, 0.1)])
    return keras.Sequential([keras.layers.RandomFlip("horizontal"), keras.layers.RandomRotation(0.2)])


feed = functools.partial(backbones.pipeline, preprocess=backbones.preprocess_function("MobileNetV2"),
                         batch_size=BATCH_SIZE, seed=SEED, augmentation=augmentation())


def evaluate(model, history):
    """(validation, test) as (loss, accuracy); test is None for an image folder. Validation is the phase's last
    epoch's, from its `history`: `fit` validated the final weights in inference mode already (on cached features,
    the head on the validation images' features), so a second pass of the backbone over the validation images
    would give the same numbers (on cats vs dogs, 10 to 15 s of every scratch phase)."""
    validation = (history["val_loss"][-1], history["val_accuracy"][-1])
    return validation, test and model.evaluate(feed(*test), verbose=0)


PREPROCESSING = "MobileNetV2 preprocess_input"  # what `feed` does to images: part of the feature cache's key


# 4. The network: backbone -> global average pooling (the features) -> the published dense head.
def new_head():
    layers = [keras.layers.Dense(width, activation="relu") for width in HEAD]
    return models.stack((1280,), [*layers, models.output_layer(len(CLASS_NAMES))], name="head")


IMAGE = (IMAGE_SIZE, IMAGE_SIZE, 3)
with (records.Run(results_dir, "mobilenet", CONFIG, runtime.environment(), source, resumed=resumed,
                  backbone=backbone_info, distribute=distribute.describe(strategy, BATCH_SIZE),
                  tensorboard=TENSORBOARD) as run,
      strategy.scope()):  # models built in here are placed and replicated by the strategy
    print(f"run {run.run_id}: {run.dir}")

    # 5. Phase "transfer": the backbone frozen, in inference mode; only the new head learns. Each phase
    #    saves its weights when done, so a resumed run restores a finished phase instead of training it.
    print(f"\n== transfer: {len(x_train)} images, MobileNetV2 ({backbone_info['weights']}) frozen, {EPOCHS} epochs")
    features = backbones.feature_extractor(backbone, keras.layers.GlobalAveragePooling2D())
    head = new_head()
    model = models.compile_classifier(models.stack(IMAGE, [features, head], name="transfer"), LEARNING_RATE)
    # With --reuse_transfer=True a run whose frozen-phase constants, data, weights and code match an earlier
    # run's takes that run's head (the record says which): a study of fine-tuning trains it once per seed.
    reused = REUSE_TRANSFER and run.reuse("transfer", model, PHASE_INPUTS["transfer"])
    if not (run.restore("transfer", model) or reused):
        timer, cache = phases.fit_head(
            run, "transfer", features, head, x_train, y_train,
            cache="disk" if FEATURE_CACHE and not AUGMENT else None, preprocessing=PREPROCESSING,
            epochs=EPOCHS, batch_size=BATCH_SIZE, head_batch_size=HEAD_BATCH_SIZE, learning_rate=LEARNING_RATE,
            optimizer=OPTIMIZER, validation_data=(x_val, y_val), feed=feed, class_weight=CLASS_WEIGHTS,
        )
        validation, test_result = evaluate(model, timer.history)
        run.add_phase("transfer", phases.summary(CLASS_NAMES, x_train, EPOCHS, timer, test_result, model,
                                                 validation=validation, **cache), model=model)

    # 6. Phase "fine_tune": unfreeze the top of the backbone and go on at a low learning rate. Keras fixes
    #    the trainable weights when compiling, so phases.fit compiles again; epochs go on numbering. The
    #    layers below the unfrozen ones stay frozen: their activations are computed once, like the features.
    y_pred = None  # the final model's validation predictions, when a phase of this process made them
    if FINE_TUNE_EPOCHS:
        trainable = backbones.unfreeze(backbone, FINE_TUNE_AT, BATCHNORM_MOMENTUM if FINE_TUNE_BATCHNORM else None)
        print(f"\n== fine_tune: layers {FINE_TUNE_AT} on ({trainable} with weights) unfrozen, BatchNormalization "
              f"{'adapting' if FINE_TUNE_BATCHNORM else 'frozen'}, {FINE_TUNE_EPOCHS} epochs")
        if not run.restore("fine_tune", model):
            timer, cache, y_pred = phases.fine_tune(
                run, "fine_tune", model, backbone, keras.layers.GlobalAveragePooling2D(), head, x_train, y_train,
                cache=FEATURE_CACHE and not AUGMENT, validation_data=(x_val, y_val), feed=feed, batch_size=BATCH_SIZE,
                epochs=FINE_TUNE_EPOCHS, initial_epoch=EPOCHS, learning_rate=FINE_TUNE_LEARNING_RATE,
                optimizer=OPTIMIZER, schedule=SCHEDULE, class_weight=CLASS_WEIGHTS,
            )
            validation, test_result = evaluate(model, timer.history)
            run.add_phase("fine_tune", phases.summary(CLASS_NAMES, x_train, FINE_TUNE_EPOCHS, timer, test_result,
                                                      model, validation=validation, **cache), model=model)

    # 7. Plots of the final transferred model: where it errs, and what it sees. Fine-tuning gave its validation
    #    predictions; without it, the frozen phase's validation features are in the disk cache: only the head runs.
    if y_pred is None and not FINE_TUNE_EPOCHS and run.record["phases"]["transfer"]["feature_cache"] in ("hit", "miss"):
        val_features, _, _ = feature_cache.cached(features, x_val, feed(x_val, y_val), PREPROCESSING)
        y_pred = models.predict_classes(head, val_features)
    elif y_pred is None:  # augmented, or a resumed run's restored fine-tuning: the whole model
        y_pred = models.predict_classes(model, feed(x_val, y_val))
    plots.predictions(run.dir, x_val, y_val, y_pred, CLASS_NAMES,
                      f"MobileNetV2 {DATASET}, validation, run {run.run_id}", seed=SEED)

    # 8. Phase "scratch": the same network from random init, every layer training, as many epochs as transfer had.
    if RUN_SCRATCH and SCRATCH_EPOCHS:
        print(f"\n== scratch: {len(x_train)} images, MobileNetV2 from random init, {SCRATCH_EPOCHS} epochs")
        random_backbone, _ = backbones.load("MobileNetV2", IMAGE_SIZE, None)
        backbones.set_batchnorm_momentum(random_backbone, BATCHNORM_MOMENTUM)
        scratch_features = backbones.feature_extractor(random_backbone, keras.layers.GlobalAveragePooling2D(),
                                                       frozen=False)
        scratch = models.stack(IMAGE, [scratch_features, new_head()], name="scratch")
        if not run.restore("scratch", scratch):
            timer = phases.fit(run, "scratch", scratch, x_train, y_train, validation_data=(x_val, y_val), feed=feed,
                               batch_size=BATCH_SIZE, epochs=SCRATCH_EPOCHS, learning_rate=LEARNING_RATE,
                               optimizer=OPTIMIZER, schedule=SCHEDULE, class_weight=CLASS_WEIGHTS)
            validation, test_result = evaluate(scratch, timer.history)
            run.add_phase("scratch", phases.summary(CLASS_NAMES, x_train, SCRATCH_EPOCHS, timer, test_result,
                                                    scratch, validation=validation, batch_size=BATCH_SIZE),
                          model=scratch)

    # 9. Learning curves of every phase, fine-tuning placed after the frozen phase.
    plots.learning_curves(run.histories(), run.file("learning_curves.png"),
                          title=f"MobileNetV2 {DATASET}, run {run.run_id}")

# 10. Summary: what each phase cost and scored.
records.print_summary(run.record, run.path)
