"""Classify images with the model a run left (model.keras + labels.txt in its run folder).

    python -m transferlab.predict RUN PATH... [--top_k=3] [--format=table|csv|json] [--batch_size=64] [--out=FILE]

RUN is a run folder, a run id, or `latest` (the newest run with a model under --results_dir=, of
--experiment= when several experiments are there). PATH: image files and folders (walked recursively).
Each image is decoded, converted to the model's colour mode and resized exactly as the run's own images were
(transferlab.images), in batches that stream: a folder of any size never sits in memory. One row per image:
its path and the top-k labels with their probabilities. Files that cannot be decoded are listed at the end.
Exit code 0 when any image was classified; 2, with one line, when none was, or RUN is not a run with a model.
"""

import argparse
import csv
import io
import json
import os
import sys

import transferlab.runtime  # noqa: F401 (first: TensorFlow starts without its start-up noise)

import keras
import numpy as np

from transferlab import files, images, litert, pipelines, process, progress, records
from transferlab.errors import UserError, check


def find_run(run, results_dir="results", experiment=None):
    """The folder of RUN: a run folder, a run id under `results_dir`/<experiment>/, or "latest"."""
    if os.path.isdir(run):
        check(os.path.isfile(os.path.join(run, files.MODEL)),
              f"{run} has no {files.MODEL} (a run writes it when its transfer phases end; runs before it could do that "
              f"have none)")
        return run
    with_models = [folder for folder in records.run_folders(results_dir, experiment)
                   if os.path.isfile(os.path.join(folder, files.MODEL))]
    if run == "latest":
        check(with_models, f"no run with a {files.MODEL} under {os.path.join(results_dir, experiment or '')!r}")
        experiments = sorted({os.path.basename(os.path.dirname(folder)) for folder in with_models})
        check(len(experiments) == 1, f"runs of several experiments under {results_dir!r} ({', '.join(experiments)}): "
                                     f"say which with --experiment=")
        return with_models[0]  # the newest
    found = [folder for folder in with_models if os.path.basename(folder) == run]
    check(found, f"no run {run!r} with a {files.MODEL}: give a run folder, a run id under {results_dir!r}, or latest")
    return found[0]


def image_paths(paths):
    """(images, not images): the files named, and every image file under the folders named, in order."""
    found, others = [], []
    for path in paths:
        if os.path.isdir(path):
            inside, rest = images.files_under(path)
            found += inside
            others += rest
        elif os.path.isfile(path):
            (found if images.is_image(path) else others).append(path)
        else:
            raise UserError(f"{path}: no such file or folder")
    return found, others


def classify(model, paths, batch_size=64, bar=False, run_batch=None):
    """(probabilities of each decoded image, their indices into `paths`, the indices that failed to decode).
    `run_batch` (litert.Inference.batch_function) classifies a batch; None: Keras. A progress bar with `bar`
    (when stdout is a terminal), else one line on stderr at the end."""
    height, width, channels = model.input_shape[1:]
    run_batch = run_batch or litert.KERAS.batch_function(model)[0]
    kept, results = [], []
    with progress.Progress("classified", len(paths), bar=bar) as shown:
        for indices, batch in pipelines.stream(paths, (height, width), channels, batch=batch_size):
            results.append(run_batch(batch))
            kept.append(indices)
            shown.add(len(indices))
    kept = np.concatenate(kept) if kept else np.zeros(0, np.int64)
    probabilities = np.concatenate(results) if results else np.zeros((0, model.output_shape[-1]), np.float32)
    failed = sorted(set(range(len(paths))) - set(kept.tolist()))
    return probabilities, kept, failed


def rows(paths, probabilities, kept, labels, top_k):
    """[(path, [(label, probability), ...] best first)] for the classified images."""
    top = np.argsort(-probabilities, axis=1, kind="stable")[:, :top_k]
    return [(paths[i], [(labels[j], float(p[j])) for j in best]) for i, p, best in zip(kept, probabilities, top,
                                                                                         strict=True)]


def render(found, kind):
    if kind == "json":
        return json.dumps([{"path": path, "top": [{"label": label, "probability": round(p, 6)} for label, p in top]}
                           for path, top in found], indent=1) + "\n"
    if kind == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        k = max((len(top) for _, top in found), default=0)
        writer.writerow(["path", *[f"{what}_{i + 1}" for i in range(k) for what in ("label", "probability")]])
        for path, top in found:
            writer.writerow([path, *[value for label, p in top for value in (label, f"{p:.6f}")]])
        return out.getvalue()
    width = max((len(path) for path, _ in found), default=0)
    return "".join(f"{path:<{width}}  " + "  ".join(f"{label} {p:.4f}" for label, p in top) + "\n"
                   for path, top in found)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m transferlab.predict", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a run folder, a run id, or latest")
    parser.add_argument("paths", nargs="+", help="image files and folders (walked recursively)")
    parser.add_argument("--top_k", type=int, default=3, help="labels shown per image, best first (default 3)")
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table", help="output format")
    parser.add_argument("--batch_size", type=int, default=64, help="images decoded and classified at once")
    parser.add_argument("--out", help="write the rows to this file (atomically) instead of stdout")
    parser.add_argument("--inference_runtime", choices=litert.SETTINGS, default="auto",
                        help="litert (XNNPACK, converted once and cached) or keras; auto: litert on a CPU")
    parser.add_argument("--results_dir", default="results", help="where run ids and latest are looked up")
    parser.add_argument("--experiment", help="with latest: the experiment (mnist, cifar10, mobilenet, inception)")
    args = parser.parse_args(argv)
    process.install()
    check(args.top_k >= 1 and args.batch_size >= 1, "--top_k and --batch_size must be >= 1")
    folder = find_run(args.run, args.results_dir, args.experiment)
    with open(os.path.join(folder, files.LABELS), encoding="utf-8") as f:
        labels = f.read().splitlines()
    paths, not_images = image_paths(args.paths)
    model = keras.saving.load_model(os.path.join(folder, files.MODEL), compile=False, safe_mode=True)
    check(len(labels) == model.output_shape[-1], f"{files.LABELS} has {len(labels)} labels, the model "
                                                 f"{model.output_shape[-1]} outputs")
    run_batch, _ = litert.Inference.choose(args.inference_runtime).batch_function(model)
    probabilities, kept, failed = classify(model, paths, args.batch_size, bar=bool(args.out), run_batch=run_batch)
    text = render(rows(paths, probabilities, kept, labels, min(args.top_k, len(labels))), args.format)
    if args.out:
        files.write_text(args.out, text)
    else:
        sys.stdout.write(text)
    skipped = [(paths[i], "cannot be decoded") for i in failed] + [(p, "not an image file") for p in not_images]
    if skipped:
        print(f"skipped {len(skipped)} files: " + ", ".join(f"{p} ({why})" for p, why in skipped), file=sys.stderr)
    check(len(kept) > 0, f"no image classified: {len(paths)} image files found in {', '.join(args.paths)}")
    if args.out:
        print(f"{len(kept)} images classified with {folder}: {args.out}", file=sys.stderr)


if __name__ == "__main__":
    process.command(main)
