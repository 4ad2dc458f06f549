"""Run records: one folder per run under results/<experiment>/<run_id>/ with record.json written atomically."""

import datetime
import json
import os
import secrets
import signal
import sys

from transferlab.config import UserError

RECORD = "record.json"


def write_json(path, obj):
    """Write JSON to a temporary file in the same folder, then rename it over `path`.

    A crash at any moment leaves either the old file or the new one, never half of one.
    """
    path = os.fspath(path)
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)),
                       f".{os.path.basename(path)}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        # O_EXCL: never write into someone else's file; mode 0o666 less the umask, like any new file.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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


class Run:
    """The record of one run, kept on disk as it grows.

    Use as a context manager around the training: on leaving it the record gets its final status,
    "complete", "interrupted" (Ctrl-C or SIGTERM) or "failed" (with the error), and is written again.
    """

    def __init__(self, results_dir, experiment, config, environment, data, **sections):
        self.run_id, self.dir = new_run_dir(results_dir, experiment)
        self.path = os.path.join(self.dir, RECORD)
        self.record = {
            "experiment": experiment,
            "run_id": self.run_id,
            "started_at": now(),
            "finished_at": None,
            "status": "running",
            "config": config,
            "environment": environment,
            "data": data,
            **sections,  # e.g. the pretrained backbone and its weights
            "phases": {},
        }
        self.save()

    def file(self, name):
        """A path inside the run folder."""
        return os.path.join(self.dir, name)

    def save(self):
        write_json(self.path, self.record)

    def add_phase(self, name, phase):
        self.record["phases"][name] = phase
        self.save()

    def __enter__(self):
        self._previous_sigterm = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        return self

    def __exit__(self, kind, error, traceback):
        signal.signal(signal.SIGTERM, self._previous_sigterm)
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
            print(f"\ninterrupted; record saved as {self.path}", file=sys.stderr)
            raise SystemExit(130) from None
        if kind is not None and issubclass(kind, FloatingPointError):  # a diverged run: no traceback needed
            print(f"error: {error}; record saved as {self.path}", file=sys.stderr)
            raise SystemExit(1) from None
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


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")
