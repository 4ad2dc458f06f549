"""Compare run records: one row per run, or per group of runs that differ only in their seed.

    python -m transferlab.compare [results/ ...] [--experiment=NAME] [--format=text|markdown|csv] [--plot=FILE.png]

Reads every record.json under the given folders (default: results/), skips and names any file that is not
a valid record, and prints experiment, run id, status, the constants that differ between the runs shown,
and per phase the training seconds, the steady epoch seconds and the test accuracy (validation accuracy
where a phase has no test; validation accuracy too where recorded), plus what transfer bought against
scratch (the accuracy difference in points, how many times faster it trained) and the transfer phase's
time as a share of the base phase's. Runs with identical constants except SEED are grouped and shown as
mean ± standard deviation with their count n.
"""

import argparse
import csv
import html
import io
import json
import os
import statistics
import sys

from transferlab import files
from transferlab.files import RECORD

REQUIRED = ("experiment", "run_id", "status", "config", "phases")
GROUPED_OUT = ("SEED",)  # runs that differ only in these constants form one group
NOT_SETTINGS = ("RESULTS_DIR",)  # where a run was written says nothing about the experiment
PHASE_METRICS = (("train_seconds", "s"), ("steady_epoch_seconds", "epoch s"), ("accuracy", "acc"),
                 ("val_accuracy", "val acc"))


def find_records(paths):
    """(records, skipped): every valid record.json under `paths`, and [(path, reason)] for the others."""
    found, skipped = [], []
    for top in paths:
        if os.path.isfile(top):
            candidates = [top]
        elif os.path.isdir(top):
            candidates = sorted(
                os.path.join(folder, RECORD) for folder, _, names in os.walk(top) if RECORD in names
            )
        else:
            skipped.append((top, "no such file or folder"))
            continue
        for path in candidates:
            try:
                found.append(load_record(path))
            except (OSError, ValueError) as error:
                skipped.append((path, str(error)))
    return found, skipped


def load_record(path):
    with open(path, encoding="utf-8") as f:
        try:
            record = json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(f"not valid JSON ({error.msg} at line {error.lineno})") from None
    if not isinstance(record, dict):
        raise ValueError("not a run record (not a JSON object)")
    missing = [key for key in REQUIRED if key not in record]
    if missing:
        raise ValueError(f"not a run record (missing {', '.join(missing)})")
    if not isinstance(record["config"], dict) or not isinstance(record["phases"], dict):
        raise ValueError("not a run record (config and phases must be objects)")
    record["_folder"] = os.path.dirname(os.path.abspath(path))  # where its report.html is, for --html
    return record


def settings(record):
    """The run's constants; those the folder recipe measured (None in the config) as the run's choice took them."""
    found = {k: v for k, v in record["config"].items() if k not in NOT_SETTINGS}
    chosen = record.get("choice") or {}
    for name, key in (("IMAGE_SIZE", "image_size"), ("HEAD", "head")):
        if found.get(name) is None and key in chosen:
            found[name] = chosen[key]
    return found


def group_key(record):
    rest = {k: v for k, v in settings(record).items() if k not in GROUPED_OUT}
    return record["experiment"], record["status"], json.dumps(rest, sort_keys=True)


def differing_constants(records):
    """Names of the constants (other than SEED) whose values are not the same in every record."""
    names = []
    for record in records:
        names += [k for k in settings(record) if k not in names and k not in GROUPED_OUT]
    return [n for n in names if len({json.dumps(settings(r).get(n)) for r in records}) > 1]


def phase_names(records):
    names = []
    for record in records:
        names += [p for p in record["phases"] if p not in names]
    return names


def run_metrics(record):
    """{metric: number} for one run; accuracy is the test accuracy, else the validation accuracy."""
    out = {}
    for name, phase in record["phases"].items():
        if not isinstance(phase, dict):
            continue
        accuracy = phase.get("test_accuracy", phase.get("val_accuracy"))
        for key, value in (("train_seconds", phase.get("train_seconds")),
                           ("steady_epoch_seconds", phase.get("steady_epoch_seconds")), ("accuracy", accuracy),
                           ("val_accuracy", phase.get("val_accuracy"))):
            if isinstance(value, (int, float)):
                out[f"{name}.{key}"] = float(value)
    # What transfer bought: its final model (after fine-tuning, when there was any) against scratch, and
    # everything it trained (frozen phase plus fine-tuning) against scratch's training time.
    final = "fine_tune" if "fine_tune.accuracy" in out else "transfer"
    if {f"{final}.accuracy", "scratch.accuracy"} <= set(out):
        out["transfer_minus_scratch_points"] = 100 * (out[f"{final}.accuracy"] - out["scratch.accuracy"])
    transfer_seconds = out.get("transfer.train_seconds", 0.0) + out.get("fine_tune.train_seconds", 0.0)
    if transfer_seconds and "scratch.train_seconds" in out:
        out["scratch_over_transfer_seconds"] = out["scratch.train_seconds"] / transfer_seconds
    if out.get("base.train_seconds") and "transfer.train_seconds" in out:
        out["transfer_over_base_seconds"] = out["transfer.train_seconds"] / out["base.train_seconds"]
    return out


def mean_std(values):
    """(mean, sample standard deviation, n); the deviation of a single value is 0."""
    if not values:
        return None, None, 0
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values)


def build_table(records):
    """(columns, rows). Each row is a dict: text fields and, per metric, a (mean, std, n) triple."""
    constants = differing_constants(records)
    metrics = [f"{phase}.{key}" for phase in phase_names(records) for key, _ in PHASE_METRICS]
    metrics += ["transfer_minus_scratch_points", "scratch_over_transfer_seconds", "transfer_over_base_seconds"]
    groups = {}
    for record in sorted(records, key=lambda r: (r["experiment"], str(r["run_id"]))):
        groups.setdefault(group_key(record), []).append(record)
    rows = []
    for members in groups.values():
        first = members[0]
        per_run = [run_metrics(r) for r in members]
        row = {
            "experiment": first["experiment"],
            "run_id": first["run_id"] if len(members) == 1 else f"{first['run_id']} +{len(members) - 1}",
            "status": first["status"],
            "n": len(members),
            "seeds": ",".join(str(r["config"].get("SEED")) for r in members),
            **{name.lower(): json.dumps(settings(first).get(name)) for name in constants},
        }
        for metric in metrics:
            row[metric] = mean_std([m[metric] for m in per_run if metric in m])
        rows.append(row)
    metrics = [m for m in metrics if any(row[m][2] for row in rows)]  # drop metrics no run has
    columns = ["experiment", "run_id", "status", "n", "seeds", *[c.lower() for c in constants], *metrics]
    return columns, rows


def header(column):
    if column == "transfer_minus_scratch_points":
        return "transfer-scratch acc (points)"
    if column == "scratch_over_transfer_seconds":
        return "scratch/transfer time"
    if column == "transfer_over_base_seconds":
        return "transfer/base time"
    if "." in column:
        phase, key = column.split(".", 1)
        return f"{phase} {dict(PHASE_METRICS)[key]}"
    return column


def cell(column, value):
    if not isinstance(value, tuple):
        return str(value)
    mean, std, n = value
    if n == 0:
        return "-"
    if column.endswith("accuracy"):
        text, spread = f"{100 * mean:.2f}%", f"{100 * std:.2f}"
    elif column == "scratch_over_transfer_seconds":
        text, spread = f"{mean:.1f}x", f"{std:.1f}"
    elif column == "transfer_over_base_seconds":
        text, spread = f"{mean:.3f}", f"{std:.3f}"
    elif column == "transfer_minus_scratch_points":
        text, spread = f"{mean:+.2f}", f"{std:.2f}"
    else:
        text, spread = f"{mean:.1f}", f"{std:.1f}"
    return f"{text} ± {spread}" if n > 1 else text


def format_text(columns, rows):
    table = [[header(c) for c in columns]] + [[cell(c, row[c]) for c in columns] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in table)


def format_markdown(columns, rows):
    lines = ["| " + " | ".join(header(c) for c in columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(cell(c, row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def format_csv(columns, rows):
    """Plain numbers for pandas or a spreadsheet: each metric as <metric>_mean and <metric>_std."""
    out = io.StringIO()
    names = []
    for column in columns:
        names += [f"{column}_mean", f"{column}_std"] if isinstance(rows[0][column], tuple) else [column]
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(names)
    for row in rows:
        values = []
        for column in columns:
            value = row[column]
            if isinstance(value, tuple):
                values += ["" if value[2] == 0 else repr(value[0]), "" if value[2] == 0 else repr(value[1])]
            else:
                values.append(value)
        writer.writerow(values)
    return out.getvalue().rstrip("\n")


def format_html(columns, rows, folders, page):
    """The table as a self-contained page (transferlab.report's style); a single run's id links to its
    report.html when it has one (`folders`: {run_id: run folder}), relative to the page at `page`."""
    from transferlab import report

    def linked(row, column):
        text = html.escape(cell(column, row[column]))
        folder = folders.get(row["run_id"]) if column == "run_id" and row["n"] == 1 else None
        target = folder and os.path.join(folder, report.REPORT)
        if target and os.path.isfile(target):
            href = os.path.relpath(target, os.path.dirname(os.path.abspath(page)))
            return f"<a href='{html.escape(href)}'>{text}</a>"
        return text

    head = "".join(f"<th>{html.escape(header(c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{linked(row, c)}</td>" for c in columns) + "</tr>" for row in rows)
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>transferlab: {len(rows)} rows</title>"
            f"<style>{report.STYLE}</style></head><body><h1>Runs compared</h1>"
            f"<p>Accuracy: mean ± sample standard deviation over the runs of a row (test, else validation).</p>"
            f"<table><tr>{head}</tr>{body}</table></body></html>\n")


def plot(columns, rows, path):
    """Bar chart: accuracy and training seconds per phase for each row (run or group), error bars = std."""
    from transferlab import plots

    plt = plots.plt
    phases = [c.split(".")[0] for c in columns if c.endswith(".accuracy")]
    labels = [f"{row['experiment']} {row['run_id']}" if row["n"] == 1 else f"{row['experiment']} (n={row['n']})"
              for row in rows]
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 2.5 * len(rows) + 4), 4.5))
    width = 0.8 / max(len(phases), 1)
    for ax, key, title in ((axes[0], "accuracy", "accuracy (%)"), (axes[1], "train_seconds", "training seconds")):
        for i, phase in enumerate(phases):
            stats = [row.get(f"{phase}.{key}", (None, None, 0)) for row in rows]
            scale = 100 if key == "accuracy" else 1
            heights = [scale * s[0] if s[2] else 0 for s in stats]
            errors = [scale * s[1] if s[2] else 0 for s in stats]
            ax.bar([x + i * width for x in range(len(rows))], heights, width, yerr=errors, capsize=3, label=phase)
        ax.set_xticks([x + width * (len(phases) - 1) / 2 for x in range(len(rows))], labels, rotation=20,
                      ha="right", fontsize=8)
        ax.set_title(title)
        ax.legend()
    fig.tight_layout()
    plots.save(fig, path)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m transferlab.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", default=["results"], help="folders (or record.json files) to read")
    parser.add_argument("--experiment", help="only runs of this experiment (mnist, cifar10, ...)")
    parser.add_argument("--format", choices=("text", "markdown", "csv"), default="text",
                        help="text for a terminal (default), markdown to paste into docs, csv for pandas")
    parser.add_argument("--plot", metavar="FILE.png", help="also write a bar chart of accuracy and time")
    parser.add_argument("--html", metavar="FILE.html", help="also write the table as a page, each run linked to "
                                                            "its report.html")
    args = parser.parse_args(argv)

    records, skipped = find_records(args.paths)
    for path, reason in skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    if args.experiment:
        records = [r for r in records if r["experiment"] == args.experiment]
    if not records:
        print(f"no run records found under {', '.join(args.paths)}", file=sys.stderr)
        return 1
    columns, rows = build_table(records)
    print({"text": format_text, "markdown": format_markdown, "csv": format_csv}[args.format](columns, rows))
    if args.html:
        folders = {record["run_id"]: record["_folder"] for record in records}
        files.write_text(args.html, format_html(columns, rows, folders, args.html))
        print(f"page: {args.html}", file=sys.stderr)
    if args.plot:
        plot(columns, rows, args.plot)
        print(f"plot: {args.plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
