"""A run's numbers in the trackers teams already use: MLflow, and TensorBoard's HParams view.

MLflow (optional: `pip install -r requirements-mlflow.txt`): with TRACKING "mlflow", or "auto" (the default) and
MLFLOW_TRACKING_URI set, each run is an MLflow run in the experiment of its script's name ("mobilenet", ...),
named by its run id: its constants as params, every phase's per-epoch metrics ("transfer/val_accuracy" at
step = epoch) as each phase ends, the final per-class precision, recall and F1, and the record, plots, report,
predictions, labels and model.keras as artifacts. Without MLFLOW_TRACKING_URI the store is a SQLite file beside
the runs, RESULTS_DIR/mlflow.db (`mlflow ui --backend-store-uri sqlite:///results/mlflow.db`). A sweep's runs
nest under a parent run of the sweep (PARENT_ENV). The record keeps the MLflow run's id ("tracking"). A tracking
server that does not answer costs a warning, never the run.

TensorBoard: with TENSORBOARD on, every run also writes its constants and final numbers as an HParams session
into its tensorboard/ folder, so `tensorboard --logdir results/` compares the runs of a sweep in its HParams
view, beside the per-phase curves the phases write.
"""

import json
import os
import re
import time
import urllib.request

from transferlab.errors import UserError

SETTINGS = ("auto", "mlflow", "none")
PARENT_ENV = "TRANSFERLAB_MLFLOW_PARENT"  # a sweep's MLflow run id: its runs nest under it
ARTIFACTS = ("record.json", "report.html", "predictions.csv", "labels.txt", "model.keras")  # and every .png


def uri(results_dir):
    """Where runs are tracked: MLFLOW_TRACKING_URI, else the SQLite store beside the runs."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{os.path.abspath(results_dir)}/mlflow.db"


def wanted(setting):
    """Is MLflow tracking asked for? "mlflow" always; "auto" when MLFLOW_TRACKING_URI is set."""
    if setting not in SETTINGS:
        raise UserError(f"--tracking={setting!r}: expected one of {', '.join(SETTINGS)}")
    return setting == "mlflow" or (setting == "auto" and bool(os.environ.get("MLFLOW_TRACKING_URI")))


def client(tracking_uri):
    """An MlflowClient for `tracking_uri`, after a quick check that a server answers (MLflow's own client would
    retry for minutes): (client, None), or (None, why not)."""
    try:
        import mlflow  # noqa: F401 (the optional requirement)
    except ImportError:
        return None, "MLflow is not installed (pip install -r requirements-mlflow.txt)"
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")  # a server that went away: fail fast
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    if tracking_uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(tracking_uri.rstrip("/") + "/health", timeout=3):
                pass
        except OSError as error:
            return None, f"the MLflow server {tracking_uri} does not answer ({getattr(error, 'reason', error)})"
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri), None


def experiment_id(mlflow_client, name, tracking_uri, results_dir):
    """The MLflow experiment `name` in the store at `tracking_uri`, made when missing (a local store's artifacts
    beside the runs in `results_dir`)."""
    found = mlflow_client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    local = not tracking_uri.startswith(("http://", "https://", "databricks"))
    location = f"file://{os.path.abspath(results_dir)}/mlartifacts" if local else None
    try:
        return mlflow_client.create_experiment(name, artifact_location=location)
    except Exception:  # made meanwhile by another run of the sweep
        return mlflow_client.get_experiment_by_name(name).experiment_id


def metric_name(text):
    """MLflow allows letters, digits, _ - . / and spaces in a metric's name."""
    return re.sub(r"[^\w\-./ ]", "_", str(text))


def param_value(value):
    return (value if isinstance(value, str) else json.dumps(value))[:6000]


class Tracker:
    """Nothing tracked: what a run gets when tracking is off or its store cannot be reached."""

    run_id = None

    def phase(self, run, name):
        pass

    def finish(self, run):
        pass


class MLflowRun(Tracker):
    """One run of ours as one MLflow run. Every call is guarded: a failure warns once, then tracking stops."""

    def __init__(self, mlflow_client, tracking_uri, run):
        from mlflow.entities import Param

        self.client, self.uri, self.logged = mlflow_client, tracking_uri, set()
        record = run.record
        previous = record.get("tracking", {}).get("mlflow", {})
        if previous.get("tracking_uri") == tracking_uri:  # a resumed run goes on logging into its MLflow run
            self.run_id = previous["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            self.logged = set(record["phases"])
            return
        environment = record.get("environment", {})
        tags = {"transferlab.run_id": record["run_id"], "transferlab.folder": os.path.abspath(run.dir),
                "mlflow.source.name": str(environment.get("command", "")),
                "mlflow.source.git.commit": str(environment.get("git_commit", ""))}
        if os.environ.get(PARENT_ENV):
            tags["mlflow.parentRunId"] = os.environ[PARENT_ENV]
        results_dir = os.path.dirname(os.path.dirname(run.dir))
        made = self.client.create_run(experiment_id(self.client, record["experiment"], tracking_uri, results_dir),
                                      run_name=record["run_id"], tags=tags)
        self.run_id = made.info.run_id
        params = [Param(name, param_value(value)) for name, value in record["config"].items()]
        for start in range(0, len(params), 100):  # MLflow takes 100 params a call
            self.client.log_batch(self.run_id, params=params[start:start + 100])
        record["tracking"] = {"mlflow": {"run_id": self.run_id, "experiment_id": made.info.experiment_id,
                                         "tracking_uri": tracking_uri}}
        run.save()

    def phase(self, run, name):
        """Phase `name`'s per-epoch metrics (its history), and its summary's numbers at its last epoch."""
        from mlflow.entities import Metric

        from transferlab import records

        history = records.read_history(run.file(f"history_{name}.csv"))
        now = int(time.time() * 1000)
        metrics = [Metric(metric_name(f"{name}/{key}"), float(value), now, int(epoch))
                   for key, values in history.items() if key != "epoch"
                   for epoch, value in zip(history.get("epoch", range(len(values))), values, strict=False)]
        summary = run.record["phases"].get(name, {})
        last = max(history.get("epoch", [0]) or [0])
        metrics += [Metric(metric_name(f"{name}/{key}"), float(value), now, int(last))
                    for key, value in summary.items() if key.endswith(("accuracy", "loss", "seconds"))
                    and isinstance(value, (int, float)) and key not in history]
        self.log_metrics(metrics)
        self.logged.add(name)

    def log_metrics(self, metrics):
        for start in range(0, len(metrics), 1000):  # MLflow takes 1,000 metrics a call
            self.client.log_batch(self.run_id, metrics=metrics[start:start + 1000])

    def finish(self, run):
        """The phases not logged yet (restored or reused), the final per-class numbers, the artifacts, the end."""
        from mlflow.entities import Metric

        for name in run.record["phases"]:
            if name not in self.logged:
                self.phase(run, name)
        final, now = run.record.get("final"), int(time.time() * 1000)
        if final:
            metrics = [Metric("final/accuracy", float(final["accuracy"]), now, 0)]
            metrics += [Metric(metric_name(f"final/{label}/{key}"), float(value), now, 0)
                        for label, scores in final["per_class"].items() for key, value in scores.items()
                        if key in ("precision", "recall", "f1")]
            self.log_metrics(metrics)
        for name in sorted(os.listdir(run.dir)):
            if name in ARTIFACTS or name.endswith(".png"):
                self.client.log_artifact(self.run_id, run.file(name))
        status = {"complete": "FINISHED", "interrupted": "KILLED"}.get(run.record["status"], "FAILED")
        self.client.set_terminated(self.run_id, status)


class Guarded(Tracker):
    """A tracker whose failures cost a warning (once) and stop its tracking, never the run."""

    def __init__(self, make, what):
        self.inner, self.what = Tracker(), what
        self._call(lambda: setattr(self, "inner", make()))

    @property
    def run_id(self):
        return self.inner.run_id

    def _call(self, action):
        try:
            action()
        except Exception as error:  # a server gone, a store locked: the run goes on untracked
            reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
            print(f"warning: {self.what}: {reason}; the run goes on without it")
            self.inner = Tracker()

    def phase(self, run, name):
        self._call(lambda: self.inner.phase(run, name))

    def finish(self, run):
        self._call(lambda: self.inner.finish(run))


def start(setting, run):
    """The run's MLflow tracker (Tracker when not asked for or not reachable, with a warning for the latter)."""
    if not wanted(setting):
        return Tracker()
    results_dir = os.path.dirname(os.path.dirname(run.dir))
    tracking_uri = uri(results_dir)
    mlflow_client, why_not = client(tracking_uri)
    if mlflow_client is None:
        print(f"warning: MLflow tracking: {why_not}; the run goes on without it")
        return Tracker()
    tracker = Guarded(lambda: MLflowRun(mlflow_client, tracking_uri, run), f"MLflow tracking at {tracking_uri}")
    if tracker.run_id:
        print(f"tracked in MLflow: run {tracker.run_id} at {tracking_uri}")
    return tracker


class Sweep:
    """A sweep's parent MLflow run, under which its runs nest (they find it in PARENT_ENV): made once per sweep
    folder, found again when the same sweep runs again. `env` is what the runs' processes need."""

    def __init__(self, setting, folder, experiment, params):
        self.client, self.run_id, self.env = None, None, {}
        if not wanted(setting):
            return
        tracking_uri = uri(folder)  # the runs' RESULTS_DIR is the sweep's folder
        self.client, why_not = client(tracking_uri)
        if self.client is None:
            print(f"warning: MLflow tracking: {why_not}; the sweep goes on without it")
            return
        try:
            from mlflow.entities import Param

            name = os.path.basename(folder)
            found = experiment_id(self.client, experiment, tracking_uri, folder)
            earlier = self.client.search_runs([found], f"tags.`transferlab.sweep` = '{name}'", max_results=1)
            if earlier:
                self.run_id = earlier[0].info.run_id
                self.client.update_run(self.run_id, status="RUNNING")
            else:
                self.run_id = self.client.create_run(found, run_name=f"sweep {name}",
                                                     tags={"transferlab.sweep": name}).info.run_id
                self.client.log_batch(self.run_id, params=[Param(k, param_value(v)) for k, v in params.items()])
        except Exception as error:
            print(f"warning: MLflow tracking at {tracking_uri}: {str(error).strip()[:200]}; "
                  "the sweep goes on without it")
            self.client = None
            return
        self.env = {"MLFLOW_TRACKING_URI": tracking_uri, PARENT_ENV: self.run_id}
        print(f"tracked in MLflow: sweep run {self.run_id} at {tracking_uri}")

    def finish(self, failed, artifacts=()):
        if self.client is None:
            return
        try:
            for path in artifacts:
                if os.path.exists(path):
                    self.client.log_artifact(self.run_id, path)
            self.client.set_terminated(self.run_id, "FAILED" if failed else "FINISHED")
        except Exception as error:
            print(f"warning: MLflow tracking: {str(error).strip()[:200]}")


def hparams_value(value):
    """HParams take numbers, booleans and text."""
    return value if isinstance(value, (bool, int, float, str)) else json.dumps(value)


def write_hparams(run):
    """The run's constants and final numbers as a TensorBoard HParams session in its tensorboard/ folder."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    record = run.record
    writer = tf.summary.create_file_writer(run.file("tensorboard"))
    with writer.as_default():
        hp.hparams({name: hparams_value(value) for name, value in record["config"].items()},
                   trial_id=record["run_id"])
        for name, phase in record["phases"].items():
            for key in ("val_accuracy", "test_accuracy", "val_loss", "test_loss"):
                if isinstance(phase.get(key), (int, float)):
                    tf.summary.scalar(f"{name}/{key}", phase[key], step=0)
        if record.get("final"):
            tf.summary.scalar("final/accuracy", record["final"]["accuracy"], step=0)
    writer.close()
