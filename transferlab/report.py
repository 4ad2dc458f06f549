"""report.html: a run on one page, its mistakes first, readable offline and when mailed.

    python -m transferlab.report RUN [RUN ...]

RUN is a run folder, a run id or `latest` (as for transferlab.predict). A run writes its report when it ends
(and again when it is resumed); this command (re)writes it for any run, old records included. The page is one
self-contained file, images inline, nothing fetched from the network: what the run was (the command and the
constants it set, data, backbone, runtime), the images it got wrong on its final split, most confident first,
grouped by the pair of classes confused, each phase's seconds and accuracies with the learning curves, the
confusion matrix and per-class precision/recall/F1, the files skipped, the exports with their checks, and the
command that reproduces it.

The mistakes come from the run's predictions.csv (written by the final evaluation: each image of the final
split with its class, the predicted one and their probabilities), the thumbnails from the image files, or for
images that were arrays (MNIST, CIFAR-10) from mistakes.npz beside it.
"""

import argparse
import base64
import csv
import html
import io
import json
import os
import shlex

import numpy as np

from transferlab import files, process
from transferlab.errors import UserError

REPORT = "report.html"
PREDICTIONS = "predictions.csv"
MISTAKE_PIXELS = "mistakes.npz"  # the mistaken images' pixels, for runs whose images are arrays
MISTAKES_SHOWN = 200  # thumbnails on the page at most (the count says how many there were)
THUMBNAIL = 112  # pixels, the longer side
STYLE = """body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{margin-top:1.8em;border-bottom:1px solid #ddd}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}th{background:#f4f4f4}
code,pre{background:#f6f6f6;padding:1px 4px;border-radius:3px}pre{padding:8px;overflow-x:auto;white-space:pre-wrap}
.grid{display:flex;flex-wrap:wrap;gap:10px}.card{width:130px;font-size:12px;word-break:break-all}
.card img{width:%dpx;height:%dpx;object-fit:contain;background:#eee;display:block}
.bad{color:#b00}.ok{color:#070}.muted{color:#777}img.plot{max-width:100%}""".replace("%d", str(THUMBNAIL))


def write_predictions(folder, probabilities, labels, class_names, paths=None):
    """RUN/predictions.csv (atomically): per image of the final split its index, file path (or empty for an
    array), true and predicted class, and the probability of each."""
    predicted = probabilities.argmax(1)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["index", "path", "label", "predicted", "probability", "label_probability"])
    for i, (truth, guess) in enumerate(zip(labels, predicted, strict=True)):
        writer.writerow([i, "" if paths is None else paths[i], class_names[truth], class_names[guess],
                         f"{probabilities[i, guess]:.6f}", f"{probabilities[i, truth]:.6f}"])
    files.write_text(os.path.join(folder, PREDICTIONS), out.getvalue())


def write_mistake_pixels(folder, images, probabilities, labels):
    """RUN/mistakes.npz: the pixels of the MISTAKES_SHOWN most confident mistakes, for images that are arrays."""
    predicted = probabilities.argmax(1)
    wrong = np.flatnonzero(predicted != np.asarray(labels))
    wrong = wrong[np.argsort(-probabilities[wrong, predicted[wrong]], kind="stable")][:MISTAKES_SHOWN]
    with files.replacing(os.path.join(folder, MISTAKE_PIXELS)) as tmp, open(tmp, "wb") as f:
        np.savez(f, index=wrong, images=np.asarray(images)[wrong])


def read_predictions(folder):
    path = os.path.join(folder, PREDICTIONS)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _png(path):
    with open(path, "rb") as f:
        return "data:image/png;base64," + base64.b64encode(f.read()).decode()


def _thumbnail(pixels=None, path=None):
    """A data: URI of a small JPEG of the image, or None when the file cannot be read any more."""
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(path) if path is not None else Image.fromarray(np.squeeze(pixels))
        image = image.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError, TypeError):
        return None
    if max(image.size) > THUMBNAIL:
        image.thumbnail((THUMBNAIL, THUMBNAIL))
    else:  # tiny images (MNIST's 28 px): enlarged, with sharp pixels
        scale = THUMBNAIL // max(image.size)
        image = image.resize((image.size[0] * scale, image.size[1] * scale), Image.Resampling.NEAREST)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode()


def _table(header, rows):
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _e(value):
    return html.escape("" if value is None else str(value))


def percent(value):
    return "" if value is None else f"{100 * value:.2f}%"


def command_settings(command):
    """[(NAME, value)] of the --name=value arguments of the recorded command: the constants the run set."""
    try:
        words = shlex.split(command or "")
    except ValueError:
        words = (command or "").split()
    found = []
    for word in words:
        if word.startswith("--") and "=" in word:
            name, value = word[2:].split("=", 1)
            found.append((name.upper(), value))
    return found


def mistakes(folder, rows, cap=MISTAKES_SHOWN):
    """(section HTML, number of mistakes): the wrong ones, grouped by (true, predicted) pair, the most frequent
    pair first, each group most confident first; thumbnails for the first `cap` of them in that order."""
    wrong = [row for row in rows if row["label"] != row["predicted"]]
    if not wrong:
        return f"<p class=ok>No mistakes: all {len(rows)} images right.</p>", 0
    pixels = {}
    if os.path.isfile(os.path.join(folder, MISTAKE_PIXELS)):
        with np.load(os.path.join(folder, MISTAKE_PIXELS), allow_pickle=False) as f:
            pixels = dict(zip(f["index"].tolist(), f["images"], strict=True))
    groups = {}
    for row in wrong:
        groups.setdefault((row["label"], row["predicted"]), []).append(row)
    ordered = sorted(groups.items(), key=lambda item: (-len(item[1]), item[0]))
    capped = f" (the first {cap} shown)" if len(wrong) > cap else ""
    parts, shown = [f"<p>{len(wrong)} of {len(rows)} images wrong; by the pair of classes confused, the most "
                    f"confident mistakes first{capped}:</p>"], 0
    for (truth, guess), members in ordered:
        members.sort(key=lambda row: -float(row["probability"]))
        parts.append(f"<h3>{_e(truth)} taken for {_e(guess)}: {len(members)}</h3><div class=grid>")
        for row in members:
            if shown >= cap:
                break
            shown += 1
            uri = (_thumbnail(path=row["path"]) if row["path"] else
                   _thumbnail(pixels=pixels[int(row["index"])]) if int(row["index"]) in pixels else None)
            picture = f"<img alt='{_e(row['path'] or row['index'])}' src='{uri}'>" if uri else \
                "<div class=muted>(image not available)</div>"
            where = _e(row["path"]) if row["path"] else f"image {_e(row['index'])}"
            parts.append(f"<div class=card>{picture}<b>{_e(guess)}</b> {float(row['probability']):.1%}<br>"
                         f"true: {_e(truth)} ({float(row['label_probability']):.1%})<br>"
                         f"<span class=muted>{where}</span></div>")
        parts.append("</div>")
    return "\n".join(parts), len(wrong)


def duplicates_section(found, source, shown=20):
    """The record's duplicates (duplicates.find, paths relative to `source`): counts, then the first pairs with
    both pictures."""
    if not found["exact"] and not found["near"]:
        return (f"<p class=ok>None: no photo is in two splits (same bytes, or pHash within {found['near_bits']} "
                f"bits).</p>")
    parts = [f"<p class=bad>{found['exact']} exact and {found['near']} near duplicates across splits: they inflate "
             f"validation and test scores" + (f"; the run dropped {found['dropped']} later copies" if found.get(
                 "dropped") else "; <code>--drop_duplicates=True</code> drops the later copies") + ".</p>"]
    rows = []
    for pair in found["pairs"][:shown]:
        pictures = []
        for side in ("a", "b"):
            uri = _thumbnail(path=os.path.join(source, pair[side]))
            pictures.append(f"<img alt='{_e(pair[side])}' src='{uri}'>" if uri else "(not available)")
        rows.append([f"<div class=card>{pictures[0]}</div>", f"<div class=card>{pictures[1]}</div>",
                     f"{_e(pair['kind'])} ({pair['bits']} bits)<br>{_e(pair['splits'][0])}: {_e(pair['a'])}<br>"
                     f"{_e(pair['splits'][1])}: {_e(pair['b'])}"])
    parts.append(_table(["", "", "pair"], rows))
    return "\n".join(parts)


def render(folder, record):
    """The page of the run in `folder` (its record given), as a string."""
    env, data, final = record.get("environment", {}), record.get("data", {}), record.get("final", {})
    title = f"{record.get('experiment')} run {record.get('run_id')}"
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{_e(title)}</title>"
             f"<style>{STYLE}</style></head><body>", f"<h1>{_e(title)}</h1>"]
    status = record.get("status")
    accuracy = (f"final: <b>{percent(final['accuracy'])}</b> on {final['images']} {_e(final['split'])} images "
                f"(phase {_e(final['phase'])})" if "accuracy" in final else "no final evaluation recorded")
    parts.append(f"<p>Status <b class={'ok' if status == 'complete' else 'bad'}>{_e(status)}</b>; {accuracy}. "
                 f"Started {_e(record.get('started_at'))}, finished {_e(record.get('finished_at'))}, on "
                 f"{_e(env.get('cpu_model'))} ({_e(env.get('cpu_count'))} cores, {_e(env.get('gpus'))} GPUs), "
                 f"commit <code>{_e(env.get('git_commit'))}</code>.</p>")
    parts.append(f"<pre>{_e(env.get('command'))}</pre>")

    rows = read_predictions(folder)
    parts.append("<h2 id=mistakes>Mistakes</h2>")
    if rows is None:
        parts.append("<p class=muted>This run recorded no per-image predictions (predictions.csv): it ran before "
                     "reports were written.</p>")
    else:
        parts.append(mistakes(folder, rows)[0])

    parts.append("<h2>What the run was</h2>")
    set_here = command_settings(env.get("command"))
    parts.append("<p>Set on the command line: " + (", ".join(f"<code>{_e(n)}={_e(v)}</code>" for n, v in set_here)
                                                     or "nothing (every constant at the script's default)") + ".</p>")
    described = [("data", data.get("source")), ("layout", data.get("layout")), ("sha256", data.get("sha256")),
                 ("images", ", ".join(f"{n} {k}" for k, n in data.get("samples", {}).items())),
                 ("classes", ", ".join(map(str, data.get("class_names", [])))),
                 ("backbone", record.get("backbone", {}).get("backbone")),
                 ("weights", record.get("backbone", {}).get("weights")),
                 ("inference runtime", record.get("inference_runtime", {}).get("chosen")),
                 ("strategy", record.get("distribute", {}).get("strategy"))]
    choice = record.get("choice")
    if choice:
        head = choice.get("head") or "linear"
        described.append(("chosen by measurement",
                          f"{choice.get('image_size')} px, head {head} ({choice.get('reason')})"))
    parts.append(_table(["", ""], [[_e(k), _e(v)] for k, v in described if v not in (None, "")]))
    config = record.get("config", {})
    parts.append("<details><summary>every constant</summary>" +
                 _table(["constant", "value"], [[_e(k), f"<code>{_e(json.dumps(v))}</code>"]
                                                for k, v in config.items()]) + "</details>")

    parts.append("<h2>Phases</h2>")
    phase_rows = []
    for name, phase in record.get("phases", {}).items():
        phase_rows.append([_e(name), _e(phase.get("train_samples")), _e(phase.get("epochs")),
                           _e(phase.get("train_seconds")), percent(phase.get("val_accuracy")),
                           percent(phase.get("test_accuracy")), _e(phase.get("feature_cache", ""))])
    parts.append(_table(["phase", "images", "epochs", "seconds", "validation accuracy", "test accuracy",
                         "feature cache"], phase_rows))
    if os.path.isfile(os.path.join(folder, "learning_curves.png")):
        curves = _png(os.path.join(folder, "learning_curves.png"))
        parts.append(f"<img class=plot alt='learning curves' src='{curves}'>")

    if "per_class" in final:
        parts.append(f"<h2>Per class, on the {_e(final['split'])} images</h2>")
        parts.append(_table(["class", "precision", "recall", "F1", "images"],
                            [[_e(name), f"{s['precision']:.3f}", f"{s['recall']:.3f}", f"{s['f1']:.3f}",
                              _e(s["support"])] for name, s in final["per_class"].items()]))
    if os.path.isfile(os.path.join(folder, "confusion_matrix.png")):
        parts.append(f"<img class=plot alt='confusion matrix' "
                     f"src='{_png(os.path.join(folder, 'confusion_matrix.png'))}'>")

    found = data.get("duplicates")
    if found is not None:
        parts.append("<h2>Duplicates across splits</h2>")
        parts.append(duplicates_section(found, data.get("source") or ""))

    skipped = data.get("skipped_files") or []
    parts.append("<h2>Files skipped</h2>")
    parts.append("<p>None.</p>" if not skipped else _table(["file", "why"], [
        [_e(s["path"]), _e(s["reason"])] if isinstance(s, dict) else [_e(s), ""] for s in skipped]))

    exported = os.path.join(folder, "export", "export.json")
    parts.append("<h2>Exports</h2>")
    if os.path.isfile(exported):
        with open(exported, encoding="utf-8") as f:
            entries = json.load(f)
        parts.append(_table(["file", "format", "bytes", "top-1 agreement", "accuracy (Keras / file)", "check"], [
            [_e(e["file"]), _e(e["format"] + ("" if e["quantization"] == "none" else f", {e['quantization']}")),
             _e(e["bytes"]), percent(e["top1_agreement"]),
             f"{percent(e.get('accuracy_keras'))} / {percent(e.get('accuracy_export'))}",
             "<span class=ok>passed</span>" if e["passed"] else "<span class=bad>FAILED</span>"]
            for e in entries.values()]))
    else:
        parts.append(f"<p class=muted>None yet: <code>python -m transferlab.export {_e(folder)} "
                     f"--format=tflite</code></p>")

    parts.append("<h2>Reproduce</h2>")
    parts.append(f"<pre>git checkout {_e(str(env.get('git_commit', '')).replace('+dirty', ''))}\n"
                 f"{_e(env.get('command'))}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write(folder):
    """Write RUN/report.html (atomically) from what the run folder holds; returns its path."""
    with open(os.path.join(folder, files.RECORD), encoding="utf-8") as f:
        record = json.load(f)
    path = os.path.join(folder, REPORT)
    files.write_text(path, render(folder, record))
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m transferlab.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run folders, run ids, or latest")
    parser.add_argument("--results_dir", default="results", help="where run ids and latest are looked up")
    parser.add_argument("--experiment", help="with latest: the experiment")
    args = parser.parse_args(argv)
    process.install()
    for run in args.runs:
        folder = run if os.path.isdir(run) else None
        if folder is None:
            from transferlab import predict

            folder = predict.find_run(run, args.results_dir, args.experiment)
        if not os.path.isfile(os.path.join(folder, files.RECORD)):
            raise UserError(f"{folder} has no {files.RECORD}: not a run folder")
        print(f"report: {write(folder)}")


if __name__ == "__main__":
    process.command(main)
