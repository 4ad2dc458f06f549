"""The skeleton every experiment script shares, so that a script holds only what is its own: its constants,
its data, its networks and its phases in order.

    CONFIG = experiment.configure(globals(), sys.argv[1:])   # overrides, --help, checks, every run's constants
    ... the checks no constant's name says, as config.check(...) ...
    exp = experiment.start("mnist", CONFIG)                   # strategy, results folder, resume, seed
    ... data (data.Task), networks ...
    with exp.run(source, title="MNIST transfer", batch_size=BATCH_SIZE) as run:   # the record
        run.fit("base", model, task_a, epochs=EPOCHS, batch_size=BATCH_SIZE, learning_rate=...)  # one call a phase
    # leaving the block: learning curves, the record's final status, the summary table

A phase is restored when a resumed run had finished it, reused when asked and an earlier run trained it
from the same inputs, else trained, scored and recorded with its weights. A reusable phase's inputs are every
constant but those in the script's LATER_CONSTANTS (read only by later phases) and NOT_INPUTS (where and how
a run is kept, and what the record pins by content), so a constant added to a script counts until it is
named there: forgetting one costs a reuse, never a stale network.
"""

import contextlib

from transferlab import runtime  # first: it starts TensorFlow without its start-up noise
from transferlab import backbones, callbacks, config, distribute, files, litert, metrics, models, phases, plots, records
from transferlab import run_constants

import keras
import numpy as np


# Constants that decide no phase's numbers, or whose effect the record compares by content: the data's and
# the backbone weights' sha256, the distribution strategy's description.
NOT_INPUTS = ("DATA_DIR", "WEIGHTS", "DISTRIBUTE", "TENSORBOARD", "RESULTS_DIR", "RESUME")


def configure(namespace, argv):
    """config.configure with the constants every experiment has (run_constants.py) added to the script's."""
    return config.configure(namespace, argv, shared=run_constants)


def start(name, constants):
    """Everything a run needs before its data: the tf.distribute strategy (before any other TensorFlow work),
    the results folder (the chief's RESULTS_DIR; other workers a temporary one), the record of the run that
    --resume= names (checked against these constants) and the seed. Returns the Experiment."""
    return Experiment(name, constants)


class Experiment:
    def __init__(self, name, constants):
        self.name, self.config, self.seed = name, constants, constants["SEED"]
        config.check_choice(INFERENCE_RUNTIME=(constants["INFERENCE_RUNTIME"], litert.SETTINGS))
        self.strategy = distribute.start(constants["DISTRIBUTE"], constants["MIXED_PRECISION"], constants["RESUME"])
        self.inference = litert.Inference.choose(constants["INFERENCE_RUNTIME"], self.strategy.num_replicas_in_sync)
        self.results_dir = distribute.results_dir(constants["RESULTS_DIR"], self.strategy)
        self.resumed = records.find_resumable(self.results_dir, name, constants["RESUME"], constants)
        runtime.seed_everything(self.seed, constants["DETERMINISTIC"])

    def scope(self):
        """Variables made inside are placed and replicated by the strategy (a backbone's weights, say)."""
        return self.strategy.scope()

    def backbone(self, name, image_size, weights, cut_at=None, fine_tune_at=None):
        """(backbone, its record section): backbones.load inside the strategy's scope (its weights are
        variables the strategy must place), then `fine_tune_at` checked against its layers, before any work."""
        with self.scope():
            backbone, info = backbones.load(name, image_size, weights, cut_at=cut_at)
        if fine_tune_at is not None:
            backbones.layer_index(backbone, fine_tune_at)
        return backbone, info

    @contextlib.contextmanager
    def run(self, data, *, title, batch_size, later_constants=None, **sections):
        """The run's record (records.Run) around its phases, inside the strategy's scope. `data` is the
        record's data section; `sections` more of it (a backbone, say); `later_constants` the script's
        LATER_CONSTANTS. A run that ends well leaves its learning curves and prints its summary table."""
        inputs = {phase: [name for name in self.config if name not in (*later, *NOT_INPUTS)]
                  for phase, later in (later_constants or {}).items()}
        with (Run(self.results_dir, self.name, self.config, runtime.environment(), data, resumed=self.resumed,
                  distribute=distribute.describe(self.strategy, batch_size), tensorboard=self.config["TENSORBOARD"],
                  phase_inputs=inputs, inference=self.inference, **sections) as run,
              self.strategy.scope()):
            print(f"run {run.run_id}: {run.dir}")
            yield run
            plots.learning_curves(run.histories(), run.file("learning_curves.png"), title=f"{title}, run {run.run_id}")
        records.print_summary(run.record, run.path)


class Run(records.Run):
    """A run's record that also runs its phases (`phase`)."""

    def __init__(self, *args, phase_inputs, inference, **kwargs):
        self.phase_inputs = phase_inputs  # {phase: [CONSTANT, ...]}: what a reused phase must share
        self.inference = inference  # litert.Inference: the runtime of the frozen passes, and why
        self.test_classes = {}  # {phase: its model's classes of the test images}, for a phase trained in this run
        super().__init__(*args, inference_runtime=inference.record(), **kwargs)

    def phase(self, name, model, train, task, *, about=None, feed=None, reuse=False, stop=None, **fields):
        """Phase `name` of `model`, whose weights are what the phase leaves, announced by a line
        `== name: <training images> of <classes>, <about>`, then:
        - restored, when a resumed run had finished it (its weights loaded, nothing trained);
        - reused, with `reuse` True, from the newest earlier run that finished it from the same
          inputs (every constant not in LATER_CONSTANTS[name] or NOT_INPUTS), data, code and versions
          (records.Run.reuse);
        - else trained: `train()` returns the phase's PhaseHistory (phases.fit), or (it, info, predicted, test)
          (phases.fit_head, phases.fine_tune). Validation scores are the last epoch's, from the history (`fit`
          measured the final weights in inference mode); test scores are `test` when the phase computed them
          (from its cached features), else from `model` over `task.test` (`task` a data.Task), once, through
          `feed` (backbones.Feed) when given; their classes are kept for evaluate_final. The record
          gets the task's classes and training images, epochs, seconds, scores, info and `fields`, and whether
          `stop` (a callbacks.StopAtValAccuracy the phase trained with) ended it early; the weights are saved.
        Returns the validation images' predicted classes when `train` gave them, else None."""
        names = f"[{', '.join(map(str, task.classes))}]" if len(task.classes) <= 12 else f"{len(task.classes)} classes"
        print(f"\n== {name}: {task.samples} images of {names}" + (f", {about}" if about else ""))
        if self.restore(name, model):
            return None
        if reuse and self.reuse(name, model, self.phase_inputs[name]):
            return None
        trained = train()
        fitted, info, predicted, test = trained if isinstance(trained, tuple) else (trained, {}, None, None)
        history = fitted.history
        validation = (history["val_loss"][-1], history["val_accuracy"][-1]) if "val_accuracy" in history else None
        scores = None
        if task.test is not None:  # one pass at most, its classes kept for evaluate_final's plots
            if test is None:
                inputs = task.test[0] if feed is None else feed(*task.test)
                test = models.predict_scores(model, inputs, task.test[1], batch_size=1024)
            *scores, self.test_classes[name] = test
        if stop is not None:
            fields["stopped_early"] = stop.stopped_at is not None
        entry = phases.summary(task.classes, task.samples, len(history["loss"]), fitted, scores, model,
                               validation=validation, **info, **fields)
        self.add_phase(name, entry, model=model)
        return predicted

    def fit(self, name, model, task, **options):
        """Phase `name` (`phase`): the whole `model` trained on `task` by phases.fit. Takes phases.fit's options
        and `phase`'s (`about`, `reuse`, and `record`: more fields for the record; the batch size goes in by
        itself), and `stop_at_val_accuracy`, a threshold that ends the phase early (callbacks.StopAtValAccuracy,
        the record says whether it did). The task's validation images validate."""
        return self._phase(name, model, task, phases.fit, [model], options, batch_size=options["batch_size"])

    def fit_head(self, name, model, features, head, task, **options):
        """Phase `name` (`phase`): a new `head` trained on the frozen `features` (phases.fit_head), `model` being
        the two stacked; options as `fit`'s. The task's validation images validate, its test images score."""
        return self._phase(name, model, task, phases.fit_head, [features, head], {**options, "test_data": task.test})

    def fine_tune(self, name, model, backbone, pooling, head, task, **options):
        """Phase `name` (`phase`): `model` (`backbone` -> `pooling` -> `head`) trained on after
        backbones.unfreeze (phases.fine_tune); options as `fit`'s."""
        return self._phase(name, model, task, phases.fine_tune, [model, backbone, pooling, head],
                           {**options, "test_data": task.test})

    def _phase(self, name, model, task, train, args, options, **fields):
        """`phase` with `train` (phases.fit, fit_head or fine_tune) on `task`: `options` are the training's but for
        `phase`'s own (about, reuse), `record` (more fields for the record, beside `fields`) and
        stop_at_val_accuracy (a new callback for each phase)."""
        about, reuse, threshold = (options.pop(key, None) for key in ("about", "reuse", "stop_at_val_accuracy"))
        fields.update(options.pop("record", None) or {})
        stop = None if threshold is None else callbacks.StopAtValAccuracy(threshold)
        epochs = f"{'up to ' if stop else ''}{options['epochs']} epoch{'s' if options['epochs'] != 1 else ''}"
        options.update(validation_data=task.validation, more_callbacks=[stop] if stop else [])
        return self.phase(name, model, lambda: train(self, name, *args, *task.train, **options), task,
                          about=f"{about}, {epochs}" if about else epochs, feed=options.get("feed"), reuse=bool(reuse),
                          stop=stop, **fields)

    def evaluate_final(self, model, task, feed, predicted, title):
        """The final model (the last transfer phase's) on held-out images: the task's test images when it has
        them (their classes kept by `phase` when it trained here), else its validation images (`predicted`,
        their classes when the phase gave them); a pass over the images only when neither is known.
        Writes confusion_matrix.png and sample_predictions.png, prints per-class precision, recall and F1, and
        records them as the record's "final" section, with the split they come from."""
        split = "test" if task.test is not None else "validation"
        x, y = getattr(task, split)
        if split == "test":
            predicted = self.test_classes.get(list(self.record["phases"])[-1])
        if predicted is None:
            predicted = models.predict_classes(model, feed(x, y))
        plots.predictions(self.dir, x, y, predicted, task.classes, f"{title}, {split}, run {self.run_id}",
                          seed=self.seed)
        per_class = metrics.per_class(y, predicted, task.classes)
        accuracy = float(np.mean(predicted == y))
        print(f"\nfinal model on {len(y)} {split} images: accuracy {accuracy:.2%}")
        for name, scores in list(per_class.items())[:20]:
            print(f"   {name:<20} precision {scores['precision']:.3f}  recall {scores['recall']:.3f}  "
                  f"f1 {scores['f1']:.3f}  ({scores['support']} images)")
        self.record["final"] = {"phase": list(self.record["phases"])[-1], "split": split, "images": len(y),
                                "accuracy": accuracy, "per_class": per_class}
        self.save()

    def save_model(self, model, image_shape, preprocessing, labels):
        """Leave the model the run's final numbers come from as files anyone can use without transferlab:
        model.keras takes raw images (uint8, `image_shape`, as the run decoded them), scales them with the
        `preprocessing` layers the run applied outside the model, and returns one probability per class (a
        one-unit sigmoid output becomes two); labels.txt names the outputs, one per line. Both are written
        atomically, again on resume; the record's "model" section says where and from which phase."""
        inputs = keras.Input(image_shape, dtype="uint8", name="image")
        x = inputs
        for layer in preprocessing:
            x = layer(x)
        outputs = model(x)
        if outputs.shape[-1] == 1:  # P(class 1) -> [P(class 0), P(class 1)]
            outputs = keras.layers.Concatenate(name="probabilities")(
                [keras.layers.Rescaling(-1.0, offset=1.0, name="complement")(outputs), outputs])
        saved = keras.Model(inputs, outputs, name=f"{self.record['experiment']}_classifier")
        with files.replacing(self.file("model.keras")) as tmp:
            saved.save(tmp)
        files.write_text(self.file("labels.txt"), "".join(f"{label}\n" for label in labels))
        self.record["model"] = {"file": "model.keras", "labels": "labels.txt", "phase": list(self.record["phases"])[-1],
                                "input": {"shape": list(image_shape), "dtype": "uint8"}}
        self.save()
        print(f"model: {self.file('model.keras')}, labels.txt beside it; "
              f"classify images with: python -m transferlab.predict {self.dir} IMAGE...")
