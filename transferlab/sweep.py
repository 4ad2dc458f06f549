"""Run one experiment script over a grid of constants and seeds, then compare exactly those runs.

    python -m transferlab.sweep SCRIPT.py [--vary=NAME=V1,V2,...] [--vary=...] [--seeds=3] [--name=value ...]
        [--engine=ray [--address=HOST:PORT] [--cpus_per_run=1] [--gpus_per_run=0]]

Every combination of the varied constants runs once per seed (SEED = 0, 1, ...), one after another (or, with
--engine=ray, as Ray tasks side by side on this machine or a cluster: ray_engine.py), each
as its own run of the script with its own record, in `RESULTS_DIR/sweeps/<sweep id>/` (the id is a hash of
the script and the arguments, so the same command finds the same folder). A run that fails is recorded by
the script and reported here, and the sweep goes on. Running the same command again skips the runs already
complete: an interrupted sweep finishes where it stopped (Ctrl-C or SIGTERM to the sweep reaches the running
run once, which records itself interrupted before the sweep stops). At the end: the compare table of the sweep's runs
(grouped over seeds: mean ± std), and `sweep.png`, accuracy per phase against the first varied constant.
"""

import argparse
import ast
import hashlib
import itertools
import json
import math
import os
import signal
import subprocess
import sys

from transferlab import compare, config, tracking

# The constants that cut the training set per class: a sweep over one of them is a data-efficiency study.
PER_CLASS = ("task_b_samples_per_class", "samples_per_class")


def parse_vary(text):
    """"NAME=V1,V2" -> ("NAME", ["V1", "V2"]): values stay text, the script parses them as overrides."""
    name, _, values = text.partition("=")
    if not name or not values:
        raise SystemExit(f"error: --vary={text}: expected NAME=V1,V2,...")
    return name.upper(), [v for v in values.split(",") if v]


def sweep_folder(results_dir, script, argv):
    digest = hashlib.sha256(json.dumps([os.path.basename(script), sorted(argv)]).encode()).hexdigest()[:12]
    return os.path.join(results_dir, "sweeps", f"{os.path.splitext(os.path.basename(script))[0]}-{digest}")


def complete_runs(folder):
    """The records of the complete runs already in `folder`."""
    records, _ = compare.find_records([folder]) if os.path.isdir(folder) else ([], [])
    return [r for r in records if r["status"] == "complete"]


def matches(record, overrides):
    """Did this record run with these overrides? Compared as the script parsed them (its config)."""
    constants = {k.upper(): v for k, v in record["config"].items()}
    return all(_same(constants.get(name, constants.get(config.RENAMED.get(name))), text) for name, text in overrides)


def _same(value, text):
    try:
        parsed = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        parsed = text
    if isinstance(value, list) and not isinstance(parsed, list):
        parsed = [parsed] if not isinstance(parsed, tuple) else list(parsed)
    return value == parsed or str(value) == text


def all_samples_per_class(records, column):
    """Where "None" (all samples) of a PER_CLASS constant sits on the x axis: the mean number of (task B's)
    training images per class in those runs; None for any other constant or when no run used all."""
    if column not in PER_CLASS:
        return None
    counts = [phase["train_samples"] / len(phase["classes"]) for r in records
              if {k.lower(): v for k, v in r["config"].items()}.get(column, 0) is None
              for phase in r["phases"].values() if phase.get("classes") and "train_samples" in phase]
    return sum(counts) / len(counts) if counts else None


def curve(rows, column, key, none_at=None):
    """[(x, mean, std)] of metric `key` over the rows, sorted by the varied constant's value; None sits at
    `none_at` when given, other non-numeric values are left out."""
    points = []
    for row in rows:
        if column not in row or key not in row or not row[key][2]:
            continue
        x = json.loads(row[column])
        x = none_at if x is None else x
        if isinstance(x, (int, float)) and not isinstance(x, bool):
            points.append((x, row[key][0], row[key][1]))
    return sorted(points)


def plot(records, varied, path):
    """Two panels against the first varied constant, one line per phase, mean over seeds with a band of
    ± std: accuracy (test, else validation) above, seconds per steady epoch below; a log x axis when the
    values are numbers spanning more than a factor of 20. Returns {phase: number of accuracy points
    plotted}; non-numeric values are left out, except None of a PER_CLASS constant (all samples), which
    is drawn at the runs' own number of images per class."""
    from transferlab import plots

    columns, rows = compare.build_table(records)
    column = varied[0].lower()  # the compare table keeps a constant's value as JSON text
    none_at = all_samples_per_class(records, column)
    fig, axes = plots.plt.subplots(2, 1, figsize=(7, 7), sharex=True)
    plotted = {}
    for ax, metric, label, scale in ((axes[0], "accuracy", "accuracy (%)", 100),
                                     (axes[1], "steady_epoch_seconds", "seconds per epoch (steady)", 1)):
        for phase in [c.split(".")[0] for c in columns if c.endswith(".accuracy")]:
            points = curve(rows, column, f"{phase}.{metric}", none_at)
            if metric == "accuracy":
                plotted[phase] = len(points)
            if not points:
                continue
            xs = [x for x, _, _ in points]
            means = [scale * m for _, m, _ in points]
            stds = [scale * s for _, _, s in points]
            ax.plot(xs, means, marker="o", label=phase)
            ax.fill_between(xs, [m - s for m, s in zip(means, stds, strict=True)],
                            [m + s for m, s in zip(means, stds, strict=True)], alpha=0.2)
            if min(xs) > 0 and max(xs) / min(xs) > 20:
                ax.set_xscale("log")
        if metric != "accuracy" and ax.get_lines():
            ax.set_yscale("log")  # a base phase's minute and a cached head's tenth of a second, both readable
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
        if ax.get_lines():
            ax.legend()
    axes[1].set_xlabel(column + (f" (None: all, drawn at {none_at:,.0f})" if none_at else ""))
    fig.tight_layout()
    plots.save(fig, path)
    return plotted


def _log_interpolate(x0, y0, x1, y1, y):
    """The x between x0 and x1 (log scale) where the line from (x0, y0) to (x1, y1) reaches y."""
    return math.exp(math.log(x0) + (y - y0) / (y1 - y0) * (math.log(x1) - math.log(x0)))


def samples_for_same_accuracy(transfer, scratch):
    """For each point (n, accuracy) of the transfer curve, how many samples per class scratch needs to
    reach that accuracy, read off scratch's curve (interpolated in log samples at its first crossing):
    [(n, accuracy, samples, how)], how being "=", "<=" (scratch's first size already reaches it; samples
    is that size) or ">" (scratch never does within the sizes run; samples is its largest size). `scratch`
    must not be empty."""
    answers = []
    for n, accuracy in transfer:
        if scratch[0][1] >= accuracy:
            answers.append((n, accuracy, scratch[0][0], "<="))
            continue
        crossing = next(((a, b) for a, b in itertools.pairwise(scratch) if a[1] < accuracy <= b[1]), None)
        if crossing is None:
            answers.append((n, accuracy, scratch[-1][0], ">"))
        else:
            (x0, y0), (x1, y1) = crossing
            answers.append((n, accuracy, _log_interpolate(x0, y0, x1, y1, accuracy), "="))
    return answers


def crossings(transfer, scratch):
    """Samples per class where the transfer and scratch curves cross (interpolated in log samples), from
    their accuracy at the sizes both ran."""
    scratch = dict(scratch)
    gaps = [(n, accuracy - scratch[n]) for n, accuracy in transfer if n in scratch]
    return [_log_interpolate(x0, g0, x1, g1, 0.0) for (x0, g0), (x1, g1) in itertools.pairwise(gaps)
            if (g0 > 0) != (g1 > 0) and g0 != g1]


def data_efficiency(records, rows, column):
    """Lines saying where transfer and scratch cross and how much data transfer saves, for a sweep over
    PER_CLASS constant with both phases; [] otherwise."""
    if column not in PER_CLASS:
        return []
    none_at = all_samples_per_class(records, column)
    transfer, scratch = ([(x, m) for x, m, _ in curve(rows, column, f"{phase}.accuracy", none_at)]
                         for phase in ("transfer", "scratch"))
    if not transfer or not scratch:
        return []
    found = crossings(transfer, scratch)
    lines = [f"transfer and scratch cross near {', '.join(f'{x:,.0f}' for x in found)} samples per class" if found
             else f"the lines do not cross: {'transfer' if transfer[0][1] > scratch[0][1] else 'scratch'} is ahead "
                  "at every size run"]
    for n, accuracy, samples, how in samples_for_same_accuracy(transfer, scratch):
        said = {"=": f"about {samples:,.0f}", "<=": f"at most {samples:,.0f}", ">": f"more than {samples:,.0f}"}[how]
        lines.append(f"transfer with {n:,.0f} per class ({accuracy:.2%}): scratch needs {said} per class for that")
    return lines


def run_one(command, env=None):
    """Run one run of the script: (exit code, stderr). The run has its own process group, so a terminal's
    Ctrl-C reaches it only through here, once: SIGINT or SIGTERM to the sweep is passed on, the run records
    itself interrupted and exits, and then KeyboardInterrupt stops the sweep (never a run left behind)."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               start_new_session=True, env={**os.environ, **(env or {})})
    received = []

    def pass_on(signum, frame):
        received.append(signum)
        process.send_signal(signum)

    previous = {sig: signal.signal(sig, pass_on) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        _, err = process.communicate()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        raise KeyboardInterrupt
    return process.returncode, err


def report_failure(label, code, err):
    """(label, the error's last line), said as it happens."""
    reason = (err.strip().splitlines() or ["no output"])[-1]
    print(f"{label}: FAILED (exit {code}): {reason}", flush=True)
    return label, reason


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m transferlab.sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("script", help="the experiment script to run, e.g. mnist_transfer.py")
    parser.add_argument("--vary", action="append", default=[],
                        help="NAME=V1,V2,...: a constant and its values (repeatable: every combination runs); "
                             "without it, the script's defaults run once per seed")
    parser.add_argument("--seeds", type=int, default=3, help="runs per combination, with SEED = 0, 1, ... (default 3)")
    parser.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="local: one run after another here (default); ray: each run a Ray task (ray_engine.py)")
    parser.add_argument("--address", default=None,
                        help="with --engine=ray: the Ray cluster to join (host:port, or auto); none: Ray starts here")
    parser.add_argument("--cpus_per_run", type=float, default=1, help="with --engine=ray: CPUs a run asks for")
    parser.add_argument("--gpus_per_run", type=float, default=0, help="with --engine=ray: GPUs a run asks for")
    parser.epilog = ("Any other --name=value goes to every run (--results_dir= decides where the sweep folder "
                     "goes). Run the same command again to finish an interrupted sweep.")
    args, passed = parser.parse_known_args(argv)
    if not os.path.isfile(args.script):
        raise SystemExit(f"error: no script {args.script!r}")
    if args.seeds < 1:
        raise SystemExit("error: --seeds must be >= 1")
    varied = dict(parse_vary(v) for v in args.vary)
    if args.address and args.engine != "ray":
        raise SystemExit("error: --address is for --engine=ray")
    setting = next((a.split("=", 1)[1] for a in passed if a.startswith("--tracking=")), "auto")
    if setting not in tracking.SETTINGS:
        raise SystemExit(f"error: --tracking={setting}: expected one of {', '.join(tracking.SETTINGS)}")
    results_dir = next((a.split("=", 1)[1] for a in passed if a.startswith("--results_dir=")), "results")
    if args.engine == "ray":  # every node finds the folder by the same absolute path
        results_dir = os.path.abspath(results_dir)
    passed = [a for a in passed if not a.startswith(("--results_dir=", "--seed="))]
    folder = sweep_folder(results_dir, args.script, [*args.vary, f"--seeds={args.seeds}", *passed])
    grid = [dict(zip(varied, values, strict=True)) for values in itertools.product(*varied.values())]
    runs = [(combination, seed) for combination in grid for seed in range(args.seeds)]
    print(f"sweep of {len(runs)} runs ({len(grid)} combinations x {args.seeds} seeds) in {folder}")
    stem = os.path.splitext(os.path.basename(args.script))[0]
    parent = tracking.Sweep(setting, folder, stem.removesuffix("_transfer"),  # the runs' experiment name
                            {"script": args.script, "seeds": args.seeds, **{f"vary {k}": v for k, v in varied.items()},
                             "arguments": passed})
    failed, jobs = [], []
    for i, (combination, seed) in enumerate(runs, 1):
        overrides = [*combination.items(), ("SEED", str(seed))]
        flags = [f"--{name.lower()}={value}" for name, value in overrides]
        label = f"[{i}/{len(runs)}] {' '.join(flags)}"
        if any(matches(r, overrides) for r in complete_runs(folder)):
            print(f"{label}: complete already, skipped")
            continue
        jobs.append((label, overrides, [*passed, *flags, f"--results_dir={folder}"]))
    if args.engine == "local":
        for label, _, arguments in jobs:
            print(f"{label} ...", flush=True)
            try:
                code, err = run_one([sys.executable, args.script, *arguments], parent.env)
            except KeyboardInterrupt:
                print(f"{label}: interrupted; run the same command again to finish the sweep", file=sys.stderr)
                parent.finish(failed=True)
                return 130
            if code != 0:
                failed.append(report_failure(label, code, err))
    elif jobs:
        from transferlab import ray_engine

        print(f"{len(jobs)} runs as Ray tasks", flush=True)
        try:
            for label, code, err, resumed in ray_engine.run_all(jobs, args.script, folder, args.address,
                                                                args.cpus_per_run, args.gpus_per_run, parent.env):
                again = f" (resumed run {resumed}, which a lost worker left unfinished)" if resumed else ""
                if code != 0:
                    failed.append(report_failure(label, code, err))
                else:
                    print(f"{label}: complete{again}", flush=True)
        except KeyboardInterrupt:
            print("interrupted: the runs were cancelled; run the same command again to finish the sweep",
                  file=sys.stderr)
            parent.finish(failed=True)
            return 130
    records = [r for r in complete_runs(folder) if any(matches(r, [*c.items(), ("SEED", str(s))]) for c, s in runs)]
    if records:
        columns, rows = compare.build_table(records)
        print(compare.format_text(columns, rows))
        if varied:  # the plot and the data-efficiency answer are against the first varied constant
            plotted = plot(records, list(varied), os.path.join(folder, "sweep.png"))
            print(f"plot: {os.path.join(folder, 'sweep.png')} (points: "
                  + ", ".join(f"{phase} {n}" for phase, n in plotted.items()) + ")")
            for line in data_efficiency(records, rows, list(varied)[0].lower()):
                print(line)
    for label, reason in failed:
        print(f"failed: {label.split('] ', 1)[1]}: {reason}")
    parent.finish(failed, [os.path.join(folder, "sweep.png")])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
