"""Run records: one folder per run under results/<experiment>/<run_id>/ with record.json written atomically."""

import csv
import datetime
import json
import os
import platform
import secrets
import shlex
import shutil
import sys

from transferlab import files, process
from transferlab.errors import UserError


def now():
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


def new_run_dir(results_dir, experiment):
    """Create and return (run_id, folder) for a new run.

    The id sorts by start time (UTC, microseconds) and ends in random hex; the folder is created with an
    exclusive mkdir, so two runs started at the same moment can never share one.
    """
    parent = os.path.join(results_dir, experiment)
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create results folder {parent!r}: {error.strerror} (--results_dir=)") from None
    check_writable(parent)
    while True:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S-%f")
        run_id = f"{stamp}-{secrets.token_hex(2)}"
        folder = os.path.join(parent, run_id)
        try:
            os.mkdir(folder)
            return run_id, folder
        except FileExistsError:
            continue
        except OSError as error:  # e.g. a read-only mount, where os.access can still say yes
            raise UserError(f"cannot write to results folder {parent!r}: {error.strerror} (--results_dir=)") from None


def check_writable(folder):
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"results folder {folder!r} is not writable (choose another with --results_dir=)")


def save_weights(model, path):
    """`model.save_weights(path)`, atomically (see `replacing`)."""
    with files.replacing(path) as tmp:
        model.save_weights(tmp)


def read_history(path):
    """A history CSV (Keras's CSVLogger) as {metric: [float per epoch]}, with "epoch" as ints.

    CSVLogger adds val_ columns filled with "NA" when a phase had no validation; those are left out.
    """
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    keys = [key for key in (rows[0] if rows else []) if any(row[key] != "NA" for row in rows)]
    return {key: [int(row[key]) if key == "epoch" else float(row[key]) for row in rows] for key in keys}


def truncate_history(path, epochs):
    """Keep only the rows of epochs before `epochs` in a history CSV (atomically): a resumed phase drops
    what an interrupted one logged after its last checkpoint, and CSVLogger appends from there."""
    if not os.path.exists(path):
        return
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    with files.replacing(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows[:1] + [row for row in rows[1:] if int(row[0]) < epochs])


def process_alive(record):
    """Is the process that wrote this record still running (on this machine)?"""
    if record.get("host") != platform.node() or not record.get("pid"):
        return False
    try:
        os.kill(record["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process with that pid
        return True
    return True


def _read_record(folder):
    try:
        with open(os.path.join(folder, files.RECORD), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def run_folders(results_dir, experiment=None):
    """Every run folder under `results_dir`/<experiment>/ (under every experiment's folder when None), newest
    first: run ids sort by start time."""
    names = [experiment] if experiment else (os.listdir(results_dir) if os.path.isdir(results_dir) else [])
    parents = [os.path.join(results_dir, name) for name in names if os.path.isdir(os.path.join(results_dir, name))]
    found = [os.path.join(parent, run_id) for parent in parents for run_id in os.listdir(parent)]
    return sorted(found, key=os.path.basename, reverse=True)


def resume_command(run_id, argv=None):
    """The command that resumes `run_id`: this command's arguments with --resume=run_id in place of any other."""
    argv = sys.argv if argv is None else argv
    args = [a for a in argv[1:] if not a.startswith("--resume=")]
    return shlex.join(["python", argv[0], *args, f"--resume={run_id}"])


def find_resumable(results_dir, experiment, resume, config):
    """The record of the run that `--resume=` names (a run id, or "latest": the newest unfinished run of
    this experiment whose process is gone), checked to be resumable with these constants; None when
    `resume` is None. Any problem is a UserError naming it."""
    if resume is None:
        return None
    parent = os.path.join(results_dir, experiment)
    if resume == "latest":
        for folder in run_folders(results_dir, experiment):
            record = _read_record(folder)
            if record and record.get("status") != "complete" and not process_alive(record):
                break
        else:
            raise UserError(f"--resume=latest: no unfinished {experiment} run in {parent!r} to resume")
    else:
        record = _read_record(os.path.join(parent, resume))
        if record is None:
            raise UserError(f"--resume={resume}: no run record at {os.path.join(parent, resume, files.RECORD)!r} "
                            f"(run ids are the folder names in {parent!r}, or use --resume=latest)")
        if record.get("status") == "complete":
            raise UserError(f"--resume={resume}: that run is complete; there is nothing to resume")
        if process_alive(record):
            raise UserError(f"--resume={resume}: that run is still going (pid {record['pid']}); stop it first")
    ours = {k: v for k, v in config.items() if k != "RESUME"}
    theirs = {k: v for k, v in record["config"].items() if k != "RESUME"}
    changed = [f"--{name.lower()} was {_shown(theirs, name)} there and is {_shown(ours, name)} now"
               for name in sorted(set(ours) | set(theirs)) if ours.get(name, KeyError) != theirs.get(name, KeyError)]
    if changed:
        raise UserError(f"cannot resume {record['run_id']} with changed constants: {', '.join(changed)}; resume with "
                        f"the command that ran it plus --resume ({record['environment'].get('command')})")
    return record


def _same_inputs(ours, theirs, constants):
    """Do two records agree on `constants`, the data, the code, the library versions, the distribution and
    the pretrained backbone (its weights' sha256), if any?"""
    versions = ("git_commit", "tensorflow", "keras", "numpy")
    return (all(ours["config"].get(k, KeyError) == theirs.get("config", {}).get(k, KeyError) for k in constants)
            and ours["data"].get("sha256") is not None
            and ours["data"].get("sha256") == theirs.get("data", {}).get("sha256")
            and all(ours["environment"].get(k) == theirs.get("environment", {}).get(k) for k in versions)
            and ours.get("distribute") == theirs.get("distribute")
            and ours.get("backbone") == theirs.get("backbone"))


def _shown(constants, name):
    return repr(constants[name]) if name in constants else "not a constant"


class RunRecord:
    """The record of one run, kept on disk as it grows.

    Use as a context manager around the training: on leaving it the record gets its final status,
    "complete", "interrupted" (Ctrl-C or SIGTERM) or "failed" (with the error), and is written again.
    An interrupted run prints the command that resumes it.

    Resuming (`resumed=` the record from `find_resumable`) reuses the run's folder and record: phases it
    finished are restored from their weights (`restore`), and an unfinished one continues from its last
    finished epoch (see phases.fit).
    """

    def __init__(self, results_dir, experiment, config, environment, data, resumed=None, sections=None):
        self.seed = config.get("SEED", 0)
        self.tensorboard = config.get("TENSORBOARD", False)  # phases also write logs into tensorboard/<phase>/
        if resumed is not None:
            self.run_id, self.dir = resumed["run_id"], os.path.join(results_dir, experiment, resumed["run_id"])
            self.path = os.path.join(self.dir, files.RECORD)
            self.record = resumed
            self.record["resumed"] = [*resumed.get("resumed", []), {
                "at": now(), "status_before": resumed["status"], "progress": resumed.get("progress"),
                "command": environment.get("command"), "git_commit": environment.get("git_commit")}]
            self.record.update(status="running", finished_at=None, pid=os.getpid(), host=platform.node())
            self.record.pop("error", None)
            print(f"resuming run {self.run_id}: finished phases {list(self.record['phases']) or 'none'}, "
                  f"progress {self.record.get('progress')}")
            self.save()
            return
        self.run_id, self.dir = new_run_dir(results_dir, experiment)
        self.path = os.path.join(self.dir, files.RECORD)
        self.record = {
            "experiment": experiment,
            "run_id": self.run_id,
            "started_at": now(),
            "finished_at": None,
            "status": "running",
            "pid": os.getpid(),  # with host: is a "running" record's process alive, or was it killed?
            "host": platform.node(),
            "config": dict(config),
            "environment": environment,
            "data": data,
            **(sections or {}),  # e.g. the pretrained backbone and its weights
            "phases": {},
        }
        self.save()

    def file(self, name):
        """A path inside the run folder."""
        return os.path.join(self.dir, name)

    def save(self):
        files.write_json(self.path, self.record)

    def add_phase(self, name, phase, model=None):
        """Record a finished phase, after saving its model's weights (when given) for a resumed run."""
        if model is not None:
            save_weights(model, self.file(f"{name}.weights.h5"))
        self.record["phases"][name] = phase
        self.record.pop("progress", None)
        self.save()
        shutil.rmtree(self.file(os.path.join("checkpoints", name)), ignore_errors=True)
        if os.path.isdir(self.file("checkpoints")) and not os.listdir(self.file("checkpoints")):
            os.rmdir(self.file("checkpoints"))

    def restore(self, name, model):
        """True when a resumed run had finished phase `name`: its weights are loaded into `model` and the
        phase is not run again. False otherwise: run the phase."""
        if name not in self.record["phases"]:
            return False
        model.load_weights(self.file(f"{name}.weights.h5"))
        print("   finished before the interruption: weights restored, not trained again")
        return True

    def reuse(self, name, model, constants):
        """True when an earlier run in this results folder finished phase `name` from the same inputs: the
        same values of `constants` (the ones that decide that phase), the same data (sha256), code (git
        commit), library versions and distribution. The newest such run's weights are loaded into `model`
        and its phase record (marked "reused_from": its run id) and history are copied here, so a study that
        varies only what comes after the phase trains it once per seed. False otherwise: train the phase."""
        parent = os.path.dirname(self.dir)
        for folder in run_folders(os.path.dirname(parent), os.path.basename(parent)):
            run_id, record = os.path.basename(folder), _read_record(folder)
            weights = os.path.join(folder, f"{name}.weights.h5")
            if (run_id == self.run_id or record is None or name not in record.get("phases", {})
                    or not _same_inputs(self.record, record, constants) or not os.path.exists(weights)):
                continue
            model.load_weights(weights)
            history = os.path.join(parent, run_id, f"history_{name}.csv")
            if os.path.exists(history):
                with files.replacing(self.file(f"history_{name}.csv")) as tmp:
                    shutil.copyfile(history, tmp)
            phase = record["phases"][name]
            self.add_phase(name, {**phase, "reused_from": phase.get("reused_from", run_id)}, model=model)
            print(f"   reused from run {run_id} (same constants, data and code): not trained again")
            return True
        return False

    def progress(self, phase, epoch):
        """Note the last finished epoch of the running phase (the record an interruption leaves says it)."""
        self.record["progress"] = {"phase": phase, "epochs_finished": epoch}
        self.save()

    def histories(self):
        """{phase: history} of the finished phases, from their CSV histories: complete across resumes."""
        return {name: read_history(self.file(f"history_{name}.csv")) for name in self.record["phases"]
                if os.path.exists(self.file(f"history_{name}.csv"))}

    def __enter__(self):
        self._signals = process.interrupted_by_signals()  # both end the run as "interrupted"
        self._signals.__enter__()
        return self

    def __exit__(self, kind, error, traceback):
        """Record how the run ended and say so; the exception goes on (process.py turns it into the exit code:
        130 for an interruption, 1 for a diverged phase)."""
        self._signals.__exit__(None, None, None)
        self.record["finished_at"] = now()
        if kind is None:
            self.record["status"] = "complete"
        elif issubclass(kind, KeyboardInterrupt):
            self.record["status"] = "interrupted"
        else:
            self.record["status"] = "failed"
            self.record["error"] = f"{kind.__name__}: {error}"
        self.save()
        if kind is not None and issubclass(kind, KeyboardInterrupt):
            print(f"\ninterrupted; record saved as {self.path}\nresume with: {resume_command(self.run_id)}",
                  file=sys.stderr)
        elif kind is not None and issubclass(kind, FloatingPointError):  # a diverged run: no traceback needed
            print(f"record saved as {self.path}", file=sys.stderr)
        return False


def print_summary(record, path):
    """The table a run ends with: phase, samples, training seconds, test and validation accuracy (where measured)."""
    phases = record["phases"]
    has_val = any("val_accuracy" in p for p in phases.values())
    has_test = any("test_accuracy" in p for p in phases.values())
    print(f"\n{'phase':<10}{'samples':>9}{'seconds':>10}" + (f"{'test acc':>10}" if has_test else "")
          + (f"{'val acc':>10}" if has_val else ""))
    for name, phase in phases.items():
        test = f"{phase['test_accuracy']:>10.2%}" if "test_accuracy" in phase else ""
        val = f"{phase['val_accuracy']:>10.2%}" if "val_accuracy" in phase else ""
        print(f"{name:<10}{phase['train_samples']:>9}{phase['train_seconds']:>10.1f}{test}{val}")
    print(f"record: {path}")

