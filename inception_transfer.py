"""InceptionV3 transfer learning, the course recipe: an ImageNet InceptionV3 cut at mixed7, frozen, under a
new dense head, trained with augmentation on cats vs dogs until validation accuracy reaches a threshold.

Published: 96% validation accuracy on cats vs dogs (InceptionV3 at 150x150, 20 epochs, batch 20,
RMSprop 1e-4). Fine-tuning and the from-scratch baseline are there as constants, off by default: the
course had neither, and InceptionV3 from scratch is expensive on a CPU.

The backbone is InceptionV3 up to CUT_LAYER; the head is the new dense layers on top. Phases, each recorded
on its own: "transfer" (the head on the frozen backbone), "fine_tune" (the backbone from FINE_TUNE_AT on
unfrozen too) and "scratch" (the same network from random weights).

    python inception_transfer.py --data_dir=/data/datasets                   # ImageNet weights: Keras's download
    python inception_transfer.py --data_dir=/data/datasets --weights=None --epochs=2       # runs anywhere
    python inception_transfer.py --help                                       # every constant with its default
"""

import functools
import sys

from transferlab import runtime  # first: it starts TensorFlow without its start-up noise
from transferlab import backbones, config, data, distribute, folders, models, phases, plots, records

import keras

# -----------------------------------------------------------------------------------------------------
# Constants: edit them here, or override any from the shell as --name=value.
DATA_DIR: str | None = None  # a folder with train/<class>/; None: $TRANSFER_DATA_DIR, else cats vs dogs' download
VALIDATION_SPLIT = 0.2  # share of train/ that validates (seeded) when there is no validation/ folder
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
RUN_SCRATCH = False  # train the same network from random init (expensive: every layer trains every epoch)
SCRATCH_EPOCHS = 20  # epochs of phase "scratch"
BATCHNORM_MOMENTUM = 0.9  # for the BatchNormalization of the scratch network; Keras's 0.99 lags for few epochs
SEED = 42  # one seed for Python, numpy and TensorFlow, and for the validation split
DETERMINISTIC = False  # also make TensorFlow ops deterministic: identical reruns on the same hardware
DISTRIBUTE = "auto"  # auto (all GPUs if several), none, mirrored, multi_worker (cluster in TF_CONFIG) or tpu
MIXED_PRECISION: str | None = "auto"  # None (float32), mixed_float16 or mixed_bfloat16; auto: float16 with a GPU
TENSORBOARD = True  # TensorBoard logs of every phase in the run folder: tensorboard --logdir results/
RESULTS_DIR = "results"  # each run writes RESULTS_DIR/inception/<run_id>/
RESUME: str | None = None  # a run id, or "latest": finish an interrupted run (same constants) in its folder
# -----------------------------------------------------------------------------------------------------
CONFIG = config.configure(globals(), sys.argv[1:])

# 1. Check the constants and get the backbone first: a typo or a missing weights file costs a second, not a run.
config.check_positive(EPOCHS=EPOCHS, BATCH_SIZE=BATCH_SIZE, HEAD_BATCH_SIZE=HEAD_BATCH_SIZE, HEAD_WIDTH=HEAD_WIDTH,
                      LEARNING_RATE=LEARNING_RATE, FINE_TUNE_LEARNING_RATE=FINE_TUNE_LEARNING_RATE,
                      BATCHNORM_MOMENTUM=BATCHNORM_MOMENTUM)
config.check(FINE_TUNE_EPOCHS >= 0 and SCRATCH_EPOCHS >= 0, "--fine_tune_epochs and --scratch_epochs must be >= 0")
config.check(TASK_B_SAMPLES_PER_CLASS is None or TASK_B_SAMPLES_PER_CLASS > 0,
             f"--task_b_samples_per_class must be > 0 or None, got {TASK_B_SAMPLES_PER_CLASS}")
config.check(0 <= DROPOUT < 1, f"--dropout={DROPOUT}: must be in [0, 1)")
config.check(0 < STOP_AT_VAL_ACCURACY <= 1, f"--stop_at_val_accuracy={STOP_AT_VAL_ACCURACY}: must be in (0, 1]")
config.check(OPTIMIZER in models.OPTIMIZERS, f"--optimizer={OPTIMIZER}: expected one of {', '.join(models.OPTIMIZERS)}")
strategy = distribute.start(DISTRIBUTE, MIXED_PRECISION, RESUME)  # before any other TensorFlow work
results_dir = distribute.results_dir(RESULTS_DIR, strategy)  # the chief's RESULTS_DIR; other workers a temporary one
resumed = records.find_resumable(results_dir, "inception", RESUME, CONFIG)
runtime.seed_everything(SEED, DETERMINISTIC)
root = folders.find(data.data_dir(DATA_DIR))  # a mistyped folder is said before the backbone loads
with strategy.scope():  # its weights are variables: under a strategy they must be created inside its scope
    backbone, backbone_info = backbones.load("InceptionV3", IMAGE_SIZE, WEIGHTS)
    backbone = backbones.cut(backbone, CUT_LAYER)
backbone_info.update(cut_layer=CUT_LAYER, layers=len(backbone.layers))
backbones.layer_index(backbone, FINE_TUNE_AT)

# 2. Data: the image folder, decoded once into uint8 images at the input size.
(x_train, y_train), (x_val, y_val), source = folders.load(root, IMAGE_SIZE, VALIDATION_SPLIT, SEED)
if TASK_B_SAMPLES_PER_CLASS is not None:  # a smaller training set, the same images for the same seed
    x_train, y_train = data.take_per_class(x_train, y_train, TASK_B_SAMPLES_PER_CLASS, SEED)
    source["samples"]["train"] = len(x_train)
CLASS_NAMES = source["class_names"]
print(f"images from {source['source']}: classes {CLASS_NAMES}, {len(x_train)} train, {len(x_val)} validation")
source["class_weight"] = CLASS_WEIGHTS = data.class_weights(y_train, CLASS_NAMES, CLASS_WEIGHT)  # or None


# 3. Input pipelines. The course's ImageDataGenerator augmentation as Keras preprocessing layers, in the
#    pipeline before the backbone's preprocessing (which replaces the course's rescale=1/255: InceptionV3
#    was trained on -1..1). Its shear_range=0.2 was in degrees, invisible; RandomShear(0.2) shears for real.
def augmentation():
    if not AUGMENT:
        return None
    return keras.Sequential([
        keras.layers.RandomRotation(40 / 360, fill_mode="nearest"),
        keras.layers.RandomTranslation(0.2, 0.2, fill_mode="nearest"),
        keras.layers.RandomShear(x_factor=0.2, fill_mode="nearest"),
        keras.layers.RandomZoom(0.2, fill_mode="nearest"),
        keras.layers.RandomFlip("horizontal"),
    ])


feed = functools.partial(backbones.pipeline, preprocess=backbones.preprocess_function("InceptionV3"),
                         batch_size=BATCH_SIZE, seed=SEED, augmentation=augmentation())


class StopAtValAccuracy(keras.callbacks.Callback):
    """The course's callback: stop once validation accuracy reaches `threshold`. It reads the metric by the
    name Keras logs for metrics=["accuracy"] ("val_accuracy"), and fails loudly if that name is missing
    instead of never stopping (the course's logs.get('acc') returns None in Keras 3)."""

    def __init__(self, threshold, monitor="val_accuracy"):
        super().__init__()
        self.threshold, self.monitor, self.stopped_at = threshold, monitor, None

    def on_epoch_end(self, epoch, logs=None):
        if self.monitor not in logs:
            raise KeyError(f"{self.monitor!r} is not among the logged metrics {sorted(logs)}")
        if logs[self.monitor] >= self.threshold:
            print(f"{self.monitor} {logs[self.monitor]:.4f} reached {self.threshold}: stopping after epoch {epoch + 1}")
            self.stopped_at = epoch + 1
            self.model.stop_training = True


# 4. The network: InceptionV3 up to CUT_LAYER -> Flatten (the features) -> the course's head.
def new_head(features):
    return models.stack(features.output_shape[1:], [
        keras.layers.Dense(HEAD_WIDTH, activation="relu"),
        keras.layers.Dropout(DROPOUT),
        models.output_layer(len(CLASS_NAMES)),
    ], name="head")


def phase_record(model, epochs_run, timer, stop, **more):
    validation = model.evaluate(feed(x_val, y_val), verbose=0)
    return phases.summary(CLASS_NAMES, x_train, epochs_run, timer, None, model, validation=validation,
                          stopped_early=stop.stopped_at is not None, **more)


IMAGE = (IMAGE_SIZE, IMAGE_SIZE, 3)
if WEIGHTS is None:
    print("warning: --weights=None: the backbone is random, so transfer has nothing to transfer and its accuracy "
          "means nothing (the record says weights: random)")
with (records.Run(results_dir, "inception", CONFIG, runtime.environment(), source, resumed=resumed,
                  backbone=backbone_info, distribute=distribute.describe(strategy, BATCH_SIZE),
                  tensorboard=TENSORBOARD) as run,
      strategy.scope()):  # models built in here are placed and replicated by the strategy
    print(f"run {run.run_id}: {run.dir}")

    # 5. Phase "transfer": the backbone frozen, in inference mode; only the new head learns, with augmentation
    #    the published way (the backbone runs every epoch), without it on cached features. Each phase saves
    #    its weights when done, so a resumed run restores a finished phase instead of training it again.
    print(f"\n== transfer: {len(x_train)} images, InceptionV3 to {CUT_LAYER} ({backbone_info['weights']}) frozen, "
          f"up to {EPOCHS} epochs")
    features = backbones.feature_extractor(backbone, keras.layers.Flatten())
    head, stop = new_head(features), StopAtValAccuracy(STOP_AT_VAL_ACCURACY)
    model = models.compile_classifier(models.stack(IMAGE, [features, head], name="transfer"), LEARNING_RATE)
    if not run.restore("transfer", model):
        timer, cache = phases.fit_head(
            run, "transfer", features, head, x_train, y_train,
            cache="disk" if FEATURE_CACHE and not AUGMENT else None, preprocessing="InceptionV3 preprocess_input",
            epochs=EPOCHS, batch_size=BATCH_SIZE, head_batch_size=HEAD_BATCH_SIZE, learning_rate=LEARNING_RATE,
            optimizer=OPTIMIZER, validation_data=(x_val, y_val), feed=feed, more_callbacks=[stop],
            class_weight=CLASS_WEIGHTS,
        )
        run.add_phase("transfer", phase_record(model, len(timer.history["loss"]), timer, stop, **cache), model=model)
    epochs_run = run.record["phases"]["transfer"]["epochs"]  # fewer than EPOCHS when the callback stopped it

    # 6. Phase "fine_tune" (off by default): unfreeze the top of the backbone, go on at a low learning rate.
    #    BatchNormalization stays frozen: 2,000 photos cannot re-estimate ImageNet's statistics.
    y_pred = None  # the final model's validation predictions, when fine-tuning in this process made them
    if FINE_TUNE_EPOCHS:
        trainable = backbones.unfreeze(backbone, FINE_TUNE_AT)
        print(f"\n== fine_tune: layers from {FINE_TUNE_AT} on ({trainable} with weights) unfrozen, "
              f"{FINE_TUNE_EPOCHS} epochs")
        stop = StopAtValAccuracy(STOP_AT_VAL_ACCURACY)
        if not run.restore("fine_tune", model):
            timer, cache, y_pred = phases.fine_tune(
                run, "fine_tune", model, backbone, keras.layers.Flatten(), head, x_train, y_train,
                cache=FEATURE_CACHE and not AUGMENT, validation_data=(x_val, y_val), feed=feed, batch_size=BATCH_SIZE,
                epochs=FINE_TUNE_EPOCHS, initial_epoch=epochs_run, learning_rate=FINE_TUNE_LEARNING_RATE,
                optimizer=OPTIMIZER, more_callbacks=[stop], class_weight=CLASS_WEIGHTS,
            )
            run.add_phase("fine_tune", phase_record(model, len(timer.history["loss"]), timer, stop, **cache),
                          model=model)

    # 7. Plots of the final transferred model: where it errs, and what it sees.
    if y_pred is None:
        y_pred = models.predict_classes(model, feed(x_val, y_val))
    plots.predictions(run.dir, x_val, y_val, y_pred, CLASS_NAMES,
                      f"InceptionV3 ({backbone_info['weights']}), validation, run {run.run_id}", seed=SEED)

    # 8. Phase "scratch" (off by default): the same network from random init, every layer training.
    if RUN_SCRATCH and SCRATCH_EPOCHS:
        print(f"\n== scratch: {len(x_train)} images, InceptionV3 to {CUT_LAYER}, random init, {SCRATCH_EPOCHS} epochs")
        random_backbone = backbones.cut(backbones.load("InceptionV3", IMAGE_SIZE, None)[0], CUT_LAYER)
        backbones.set_batchnorm_momentum(random_backbone, BATCHNORM_MOMENTUM)
        scratch_features = backbones.feature_extractor(random_backbone, keras.layers.Flatten(), frozen=False)
        scratch, stop = models.stack(IMAGE, [scratch_features, new_head(scratch_features)], name="scratch"), \
            StopAtValAccuracy(STOP_AT_VAL_ACCURACY)
        if not run.restore("scratch", scratch):
            timer = phases.fit(run, "scratch", scratch, x_train, y_train, validation_data=(x_val, y_val), feed=feed,
                               batch_size=BATCH_SIZE, epochs=SCRATCH_EPOCHS, learning_rate=LEARNING_RATE,
                               optimizer=OPTIMIZER, more_callbacks=[stop], class_weight=CLASS_WEIGHTS)
            run.add_phase("scratch", phase_record(scratch, len(timer.history["loss"]), timer, stop,
                                                  batch_size=BATCH_SIZE), model=scratch)

    # 9. Learning curves of every phase, fine-tuning placed after the frozen phase.
    plots.learning_curves(run.histories(), run.file("learning_curves.png"),
                          title=f"InceptionV3 transfer, run {run.run_id}")

# 10. Summary: what each phase cost and scored.
records.print_summary(run.record, run.path)
