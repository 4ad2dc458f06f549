"""A sweep's runs as Ray tasks: `python -m transferlab.sweep ... --engine=ray [--address=ADDRESS]`.

Each run of the grid is one Ray task asking for `--cpus_per_run` CPUs (and `--gpus_per_run` GPUs); Ray places it
on a node with them free, and the task runs the script there as the local engine would, in a process of its
own. Without an address Ray starts inside the sweep on this machine (every core its); with one (`ray start
--head` on a cluster, "auto" for the cluster this machine joined) the sweep joins that cluster.

What every node must share: the results folder and the feature cache (TRANSFERLAB_CACHE_DIR) on storage every
node sees at the same path, and the project at the same path (the script is run by path, with the node's
`python`). The sweep sends its TRANSFER*, TRANSFERLAB_* and MLFLOW_* environment variables with each task; the
rest of a node's environment is its own.

A node lost, or a worker killed, mid-run: Ray runs the task again (RETRIES times at most), and the task finds
the run the lost attempt left unfinished in the results folder (its record "running", its process gone, the
same constants) and resumes it from its last finished epoch: the lost node costs that run's unfinished epochs.
The script's process dies with the task's worker (PR_SET_PDEATHSIG on Linux), so no orphan goes on beside it.
"""

import os
import signal
import subprocess
import sys
import time

RETRIES = 3  # attempts after a lost worker or node, each resuming what the last one left
SENT_ENV = ("TRANSFER", "MLFLOW_")  # prefixes of the environment variables a task takes from the sweep


def _die_with_parent():
    """In the script's process: be killed when the worker that started it dies (Linux), not left running."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def unfinished(folder, overrides, wait=30.0):
    """The run id of a run of `overrides` in `folder` that a lost attempt left unfinished, or None. A run
    whose process is still dying (a worker just killed) is waited for, `wait` seconds at most."""
    from transferlab import compare, records, sweep

    deadline = time.monotonic() + wait
    while True:
        found, _ = compare.find_records([folder]) if os.path.isdir(folder) else ([], [])
        left = [r for r in found if r["status"] != "complete" and sweep.matches(r, overrides)]
        alive = [r for r in left if records.process_alive(r)]
        if not alive or time.monotonic() > deadline:
            dead = [r for r in left if r not in alive]
            return max(dead, key=lambda r: r["run_id"])["run_id"] if dead else None
        time.sleep(0.5)


def run_task(script, arguments, folder, overrides, env, cwd):
    """The body of a run's task, on its node: (exit code, stderr, the run id it resumed or None)."""
    resumed = unfinished(folder, overrides)
    command = [sys.executable, script, *arguments] + ([f"--resume={resumed}"] if resumed else [])
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=cwd,
                               env={**os.environ, **env}, preexec_fn=_die_with_parent)
    _, err = process.communicate()
    return process.returncode, err, resumed


def start(address):
    """Ray, joined at `address` or started here (None)."""
    try:
        import ray
    except ImportError:
        from transferlab.errors import UserError

        raise UserError("--engine=ray needs Ray: pip install -r requirements-ray.txt") from None
    ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False,
             logging_level="ERROR")
    return ray


def run_all(jobs, script, folder, address=None, cpus=1, gpus=0, extra_env=None):
    """Run `jobs` ([(label, overrides, arguments)]) as Ray tasks; yields (label, exit code, stderr, resumed run id)
    as each ends. Ctrl-C cancels them all (their runs stay resumable: the sweep run again goes on)."""
    ray = start(address)
    env = {k: v for k, v in os.environ.items() if k.startswith(SENT_ENV)} | (extra_env or {})
    task = ray.remote(run_task).options(num_cpus=cpus, num_gpus=gpus, max_retries=RETRIES, retry_exceptions=False)
    cluster = ray.cluster_resources()
    print(f"Ray: {len(ray.nodes())} node(s), {cluster.get('CPU', 0):g} CPUs; {cpus} CPU(s) a run")
    pending = {task.remote(os.path.abspath(script), arguments, folder, overrides, env, os.getcwd()): label
               for label, overrides, arguments in jobs}
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            label = pending.pop(done[0])
            try:
                code, err, resumed = ray.get(done[0])
            except ray.exceptions.RayError as error:  # every retry lost too
                code, err, resumed = 1, f"error: Ray lost the run: {str(error).strip().splitlines()[0]}", None
            yield label, code, err, resumed
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    finally:
        ray.shutdown()
