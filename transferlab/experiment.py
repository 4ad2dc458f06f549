"""The skeleton every experiment script shares, so that a script holds only what is its own: its constants,
its data, its networks and its phases in order.

    CONFIG = experiment.configure(globals(), sys.argv[1:])   # overrides, --help, checks, every run's constants
    ... the checks no constant's name says, as config.check(...) ...
    exp = experiment.start("mnist", CONFIG)                   # strategy, results folder, resume, seed
    ... data (tasks.Task), networks ...
    with exp.run(source, title="MNIST transfer", batch_size=BATCH_SIZE) as run:   # the record
        run.fit("base", model, task_a, phases.FitOptions(EPOCHS, BATCH_SIZE, LEARNING_RATE))  # one call a phase
    # leaving the block: learning curves, the record's final status, the summary table

A phase is restored when a resumed run had finished it, reused when asked and an earlier run trained it
from the same inputs, else trained, scored and recorded with its weights. A reusable phase's inputs are every
constant but those in the script's LATER_CONSTANTS (read only by later phases) and NOT_INPUTS (where and how
a run is kept, and what the record pins by content), so a constant added to a script counts until it is
named there: forgetting one costs a reuse, never a stale network.
"""

import contextlib

from transferlab.runtime import environment, seed_everything  # first: TensorFlow starts without its noise

import numpy as np

from transferlab import (
    backbones,
    choice,
    config,
    distribute,
    files,
    folders,
    images,
    litert,
    metrics,
    models,
    phases,
    plots,
    records,
    report,
    run_constants,
    tracking,
)

# Constants that decide no phase's numbers, or whose effect the record compares by content: the data's and
# the backbone weights' sha256, the distribution strategy's description.
NOT_INPUTS = ("DATA_DIR", "WEIGHTS", "DISTRIBUTE", "TENSORBOARD", "TRACKING", "RESULTS_DIR", "RESUME")


def configure(namespace, argv, recipe=None, derive=None):
    """config.configure with the constants every experiment has (run_constants.py) added to the script's: the
    script's constants set once (the shell's, `recipe`'s, `derive`'s), returned as a frozen config.Config."""
    return config.configure(namespace, argv, shared=run_constants, recipe=recipe, derive=derive)


def start(name, constants):
    """Everything a run needs before its data: the tf.distribute strategy (before any other TensorFlow work),
    the results folder (the chief's RESULTS_DIR; other workers a temporary one), the record of the run that
    --resume= names (checked against these constants) and the seed. Returns the Experiment."""
    return Experiment(name, constants)


class Experiment:
    def __init__(self, name, constants):
        self.name, self.config, self.seed = name, constants, constants["SEED"]
        config.check_choice(INFERENCE_RUNTIME=(constants["INFERENCE_RUNTIME"], litert.SETTINGS),
                            TRACKING=(constants["TRACKING"], tracking.SETTINGS))
        self.strategy = distribute.start(constants["DISTRIBUTE"], constants["MIXED_PRECISION"], constants["RESUME"])
        self.inference = litert.Inference.choose(constants["INFERENCE_RUNTIME"], self.strategy.num_replicas_in_sync)
        self.results_dir = distribute.results_dir(constants["RESULTS_DIR"], self.strategy)
        self.resumed = records.find_resumable(self.results_dir, name, constants["RESUME"], constants)
        self.loaded = None  # (backbone, its record section) of the last `backbone` call
        self.loaded_whole = None  # ((name, weights), (uncut backbone, section)) of it: a reload at another size copies
        self.choice, self.size_free = None, None  # choice.Choice and the backbone's size-free twin, once chosen
        seed_everything(self.seed, constants["DETERMINISTIC"])

    def scope(self):
        """Variables made inside are placed and replicated by the strategy (a backbone's weights, say)."""
        return self.strategy.scope()

    def backbone(self, name, image_size, weights, cut_at=None, fine_tune_at=None):
        """(backbone, its record section): backbones.load inside the strategy's scope (its weights are
        variables the strategy must place), then `fine_tune_at` checked against its layers, before any work."""
        same = self.loaded_whole if self.loaded_whole and self.loaded_whole[0] == (name, weights) else None
        with self.scope():  # the same weights at another size (the choice's): copied, not read again
            whole, whole_info = backbones.load(name, image_size, weights, like=same and same[1])
            backbone, info = backbones.cut_as(whole, whole_info, cut_at)
        if fine_tune_at is not None:
            backbones.layer_index(backbone, fine_tune_at)
        self.loaded, self.loaded_whole = (backbone, info), ((name, weights), (whole, whole_info))
        return backbone, info

    def choose(self, task, feed, training, head, sizes=None, heads=None):
        """The input size and head for these photos (choice.choose) on the backbone last loaded (`backbone`) and
        `task`'s training photos, each candidate head trained as the run's will be (`training`, its
        phases.FitOptions, and `head`, its phases.HeadOptions: as many passes over its features, the same
        learning rate, optimizer and batch size); `sizes` None: those the photos' size calls for, `heads` None:
        choice.HEADS. A resumed run takes its record's choice. What was tried is printed, and goes into the record
        ("choice"); the seed is set again after it, so the run goes on as it would from a cached choice."""
        backbone, info = self.loaded
        name = info["backbone"]
        resumed = self.resumed is not None and "choice" in self.resumed
        if resumed:
            found = choice.Choice.of(self.resumed["choice"])
            tried_sizes = {t["image_size"] for t in found.tried}
        else:
            side = choice.photo_side(task.train[0].paths)
            measured, reason = choice.candidate_sizes(name, side)
            if sizes:
                measured, reason = tuple(sizes), f"input size {sizes[0]} given"
            passes = training.epochs * phases.head_passes(training.epochs, head.steps, task.samples, head.batch_size)
            settings = choice.Settings(measured,
                                       tuple(tuple(h) for h in heads or choice.HEADS), passes,
                                       training.learning_rate, training.optimizer, head.batch_size, reason)
            tried_sizes = set(settings.sizes)
        # Several sizes: each, and the run's, through one LiteRT conversion of the backbone built for any size.
        self.size_free = backbones.size_free(name, backbone) if len(tried_sizes) > 1 else None
        if not resumed:
            print(f"\n== choice: {settings.reason}; {choice.describe(settings)}, on a sample of the training "
                  f"photos, {settings.epochs} passes each")
            found = choice.choose(backbone, info, self.size_free, task.train, len(task.classes), feed, settings,
                                  self.inference)
            seed_everything(self.seed, self.config["DETERMINISTIC"])
        print("\n".join(found.table()))
        print(f"   chosen: {found.image_size} px, head {choice.describe_head(found.head)} "
              + ("(the record's)" if resumed else
                 "(measured before on these photos: the cache)" if found.cached else
                 f"({found.seconds:.1f} s; {found.sample['images']} photos, each scored once in "
                 f"{found.sample['folds']} folds)"))
        self.choice = found
        return found

    @contextlib.contextmanager
    def run(self, data, *, title, batch_size, later_constants=None, backbone=None):
        """The run's record (Run) around its phases, inside the strategy's scope. `data` is the record's data
        section, `backbone` the backbone's (backbones.load); `later_constants` the script's LATER_CONSTANTS. A run
        that ends well leaves its learning curves and prints its summary table."""
        data = folders.settled(data)  # an image folder's duplicates, looked for while the choice went on
        inputs = {phase: [name for name in self.config if name not in (*later, *NOT_INPUTS)]
                  for phase, later in (later_constants or {}).items()}
        sections = {"distribute": distribute.describe(self.strategy, batch_size),
                    "inference_runtime": self.inference.record(), **({"backbone": backbone} if backbone else {}),
                    **({"choice": self.choice.record()} if self.choice else {})}
        run = None
        try:
            with Run(self, data, sections, inputs) as run, self.strategy.scope():
                print(f"run {run.run_id}: {run.dir}")
                if distribute.is_chief(self.strategy):  # one worker of a cluster speaks for the run
                    run.tracker = tracking.start(self.config["TRACKING"], run)
                yield run
                plots.learning_curves(run.histories(), run.file("learning_curves.png"),
                                      title=f"{title}, run {run.run_id}")
                if run.tensorboard:
                    tracking.write_hparams(run)
            records.print_summary(run.record, run.path)
            print(f"report: {report.write(run.dir)}")
        finally:
            if run is not None:  # the end as the record says it: complete, failed or interrupted
                run.tracker.finish(run)


class Run(records.RunRecord):
    """A run's record that also runs its phases: `fit`, `fit_head` and `fine_tune`, one call a phase, each with
    the script's phases.FitOptions, then `evaluate_final` and `save_model`."""

    def __init__(self, experiment, data, sections, phase_inputs):
        self.phase_inputs = phase_inputs  # {phase: [CONSTANT, ...]}: what a reused phase must share
        self.inference = experiment.inference  # litert.Inference: the runtime of the frozen passes, and why
        self.size_free = experiment.size_free  # the backbone built for any size, when the choice measured sizes
        self.choice = experiment.choice  # choice.Choice, when the recipe measured one
        self.tracker = tracking.Tracker()  # MLflow's run, when tracked (tracking.start)
        self.test_probabilities = {}  # {phase: its model's probabilities of the test images}, trained in this run
        self.validation_probabilities = {}  # {phase: ... of the validation images}, when the phase computed them
        super().__init__(experiment.results_dir, experiment.name, experiment.config, environment(), data,
                         resumed=experiment.resumed, sections=sections)

    def fit(self, name, model, task, options, about=None, reuse=False, record=None):
        """Phase `name` (`phase`): the whole `model` trained on `task` by phases.fit with `options`
        (phases.FitOptions). The task's validation images validate."""
        return self.phase(name, model, task, options, lambda: phases.fit(self, name, model, task.train, options,
                                                                         task.validation), about, reuse, record)

    def fit_head(self, name, classifier, task, options, head, about=None, reuse=False, record=None):
        """Phase `name` (`phase`): the `classifier`'s head trained on its frozen features (phases.fit_head, with
        `head` its phases.HeadOptions). The task's validation images validate, its test images score. The
        backbone's frozen pass runs as its size-free twin when the choice built one: converted once for both."""
        known = None
        if self.size_free is not None and classifier.backbone is not None:
            self.inference.share(classifier.features,
                                 backbones.feature_extractor(self.size_free, type(classifier.pooling)()))
            # The choice's sample went through this very LiteRT program at this size: its rows are the pass's own
            sample = self.choice.sample_features if self.choice is not None else None
            size = classifier.features.input_shape[1]
            if sample is not None and size in sample[1] and self.inference.chosen == "litert":
                known = sample[0], sample[1][size]
        return self.phase(name, classifier.model, task, options, lambda: phases.fit_head(
            self, name, classifier.features, classifier.head, task, options, head, known), about, reuse, record)

    def fine_tune(self, name, classifier, task, options, cache, about=None):
        """Phase `name` (`phase`): the `classifier` trained on after its `unfreeze` (phases.fine_tune; `cache`:
        its frozen bottom's activations computed once)."""
        return self.phase(name, classifier.model, task, options, lambda: phases.fine_tune(
            self, name, classifier, task, options, cache), about)

    def phase(self, name, model, task, options, train, about=None, reuse=False, record=None):
        """Phase `name` of `model`, whose weights are what the phase leaves, announced by a line
        `== name: <training images> of <classes>, <about>, <epochs>`, then:
        - restored, when a resumed run had finished it (its weights loaded, nothing trained);
        - reused, with `reuse` True, from the newest earlier run that finished it from the same
          inputs (every constant not in LATER_CONSTANTS[name] or NOT_INPUTS), data, code and versions
          (records.RunRecord.reuse);
        - else trained: `train()` returns the phase's phases.PhaseResult. Test scores are the result's when the
          phase computed them (from its cached features), else from `model` over `task.test` (`task` a
          tasks.Task), once, through `options.feed` when given; their probabilities are kept for evaluate_final,
          and so are the validation images' when the phase gave them. The record gets phases.summary, and `record`'s
          fields; the weights are saved.
        Returns the PhaseResult, or None when the phase was restored or reused."""
        names = f"[{', '.join(map(str, task.classes))}]" if len(task.classes) <= 12 else f"{len(task.classes)} classes"
        print(f"\n== {name}: {task.samples} images of {names}, " + (f"{about}, " if about else "") + options.describe())
        if self.restore(name, model):
            return None
        if reuse and self.reuse(name, model, self.phase_inputs[name]):
            return None
        result = train()
        test = result.test
        if task.test is not None:  # one pass at most, its probabilities kept for evaluate_final's plots
            if test is None:
                inputs = task.test[0] if options.feed is None else options.feed(*task.test)
                test = models.predict_scores(model, inputs, task.test[1], batch_size=1024)
            self.test_probabilities[name] = test.probabilities
        if result.validation_probabilities is not None:
            self.validation_probabilities[name] = result.validation_probabilities
        self.add_phase(name, {**phases.summary(result, task.classes, task.samples, model, test), **(record or {})},
                       model=model)
        self.tracker.phase(self, name)
        return result

    def evaluate_final(self, model, task, feed, title, class_names=None):
        """The final model (the last phase's) on held-out images: the task's test images when it has them, else
        its validation images; their probabilities as the phase left them when it trained here, else from a pass
        over the images (through `feed` when given).
        Writes confusion_matrix.png and sample_predictions.png, prints per-class precision, recall and F1, and
        records them as the record's "final" section, with the split they come from; each image's prediction goes
        to predictions.csv (report.py). `class_names`: the classes' names, when task.classes are label numbers."""
        split = "test" if task.test is not None else "validation"
        names = list(class_names or task.classes)
        x, y = getattr(task, split)
        last = list(self.record["phases"])[-1]
        probabilities = (self.test_probabilities if split == "test" else self.validation_probabilities).get(last)
        if probabilities is None:
            probabilities = models.predict_probabilities(model, x if feed is None else feed(x, y))
        predicted = models.classes_of(probabilities)
        paths = x.paths.tolist() if isinstance(x, images.Files) else None
        report.write_predictions(self.dir, probabilities, y, names, paths)  # the report's mistakes
        if paths is None:
            report.write_mistake_pixels(self.dir, x, probabilities, y)
        plots.predictions(self.dir, x, y, predicted, names, f"{title}, {split}, run {self.run_id}",
                          seed=self.seed)
        per_class = metrics.per_class(y, predicted, names)
        accuracy = float(np.mean(predicted == y))
        print(f"\nfinal model on {len(y)} {split} images: accuracy {accuracy:.2%}")
        for name, scores in list(per_class.items())[:20]:
            print(f"   {name:<20} precision {scores['precision']:.3f}  recall {scores['recall']:.3f}  "
                  f"f1 {scores['f1']:.3f}  ({scores['support']} images)")
        self.record["final"] = {"phase": list(self.record["phases"])[-1], "split": split, "images": len(y),
                                "accuracy": accuracy, "per_class": per_class}
        self.save()

    def save_model(self, classifier, labels):
        """Leave the model the run's final numbers come from as files anyone can use without transferlab:
        model.keras takes raw images and returns one probability per class, labels.txt names the outputs
        (classifier.Classifier.save). Both are written atomically, again on resume; the record's "model" section
        says where and from which phase."""
        section = classifier.save(self.dir, labels, f"{self.record['experiment']}_classifier")
        self.record["model"] = {**section, "phase": list(self.record["phases"])[-1]}
        self.save()
        print(f"model: {self.file(files.MODEL)}, {files.LABELS} beside it; "
              f"classify images with: python -m transferlab.predict {self.dir} IMAGE...")
