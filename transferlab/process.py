"""How a script's process ends: its exit code, its last lines, and what Ctrl-C and SIGTERM do. The one
module that exits the process; everything else raises.

| exit code | when |
| --- | --- |
| 0 | the run finished |
| 1 | a phase failed (its loss became NaN or infinite: one line), or an unexpected error (its traceback) |
| 2 | bad input (a constant, a path, the data): one line, `error: ...`; `--debug` adds the traceback |
| 130 | interrupted by Ctrl-C or SIGTERM; the run's record says so and how to resume |
"""

import atexit
import contextlib
import os
import signal
import sys
import traceback

from transferlab.errors import UserError

DEBUG = False  # set by --debug: bad input then shows a traceback before its one line
_cleanups = []
_deferred = None  # inside `deferred_interrupts`: what a first signal does instead of raising


def install():
    """Make an uncaught exception end the process as the table above says (scripts call it through
    config.configure, before any work)."""
    if sys.excepthook is not _hook:
        _hook.previous = sys.excepthook
        sys.excepthook = _hook


def _hook(kind, error, tb):
    if issubclass(kind, UserError):
        fail(error)
    elif issubclass(kind, KeyboardInterrupt):
        exit_now(130)  # the record's owner (records.RunRecord) has said what was saved and how to resume
    elif issubclass(kind, FloatingPointError):  # a diverged phase: its line says which and what to try
        print(f"error: {error}", file=sys.stderr)
        exit_now(1)
    else:
        _hook.previous(kind, error, tb)


_hook.previous = sys.__excepthook__


def fail(error):
    """Bad input: `error: <message>` on stderr (its traceback first under --debug), exit code 2."""
    sys.stdout.flush()
    if DEBUG:
        traceback.print_exception(error)
    print(f"error: {error}", file=sys.stderr, flush=True)
    exit_now(2)


def command(main):
    """Run a command's `main()`: bad input (a UserError) ends it with one line and exit code 2 (`fail`)."""
    try:
        main()
    except UserError as error:
        fail(error)


def on_exit(function, *args, **kwargs):
    """Call `function` when the process ends, however it ends (atexit alone would miss `exit_now`)."""
    _cleanups.append((function, args, kwargs))
    atexit.register(function, *args, **kwargs)


def exit_now(code):
    """End the process with `code` now, after the `on_exit` cleanups. From inside sys.excepthook a
    SystemExit cannot change the exit code (an uncaught exception is always 1), hence os._exit."""
    sys.stdout.flush()
    sys.stderr.flush()
    while _cleanups:
        function, args, kwargs = _cleanups.pop()
        atexit.unregister(function)
        with contextlib.suppress(Exception):
            function(*args, **kwargs)
    os._exit(code)


@contextlib.contextmanager
def interrupted_by_signals():
    """Inside the block, SIGINT and SIGTERM raise KeyboardInterrupt, so a run records itself interrupted.
    SIGINT explicitly too: a process started in the background by a non-interactive shell inherits SIGINT
    ignored, and `kill -INT` must still work."""
    previous = {sig: signal.signal(sig, _raise_keyboard_interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def deferred_interrupts(stop):
    """Inside the block, a first SIGINT or SIGTERM calls `stop(signum)`, which asks a training loop to stop
    at its next safe point and raise KeyboardInterrupt there, instead of raising wherever Python happens to be:
    an exception let loose inside TensorFlow's own Python code (a tf.data iterator, a step being dispatched)
    can leave its native objects half made, and a CI run once aborted on a corrupted heap that way. A second
    signal raises at once. A signal the loop had no point left to raise at is raised as the block ends."""
    global _deferred
    received = []

    def first(signum):
        received.append(signum)
        stop(signum)

    _deferred = first
    try:
        yield
    finally:
        _deferred = None
    if received:
        raise KeyboardInterrupt(f"signal {received[0]}")


def _raise_keyboard_interrupt(signum, frame):
    global _deferred
    if _deferred is not None:
        deferred, _deferred = _deferred, None  # one deferral: a second Ctrl-C stops at once
        deferred(signum)
        return
    raise KeyboardInterrupt(f"signal {signum}")
