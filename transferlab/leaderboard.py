"""Which backbone for these photos and this latency budget? Each one measured on a folder, side by side.

    python -m transferlab.leaderboard DATA_DIR --backbones=MobileNetV2=WEIGHTS_FILE,EfficientNetLite0,EfficientNetLite2

Each backbone (`NAME` or `NAME=WEIGHTS`, weights "imagenet" by default) at its native size: its frozen features of
the folder's training and validation photos (once: the feature cache), a linear probe trained on them until a
held-out tenth of the training photos stops improving, its validation accuracy with a 95% interval (Wilson's:
a few hundred photos cannot tell 99.2% from 99.4%), the images a second its frozen pass runs in LiteRT, and the
whole classifier as a float and an int8 TFLite file: size and ms an image at batch 1 (every file timed in
turn, ROUNDS rounds, once all exist: a noisy minute falls on all alike). It ends with a table, a
plot of accuracy against ms an image with the Pareto front, and the one it recommends: the fastest of those
whose accuracy the best one's interval cannot tell apart. Everything goes into results/leaderboard/<run_id>/
(record.json, which `python -m transferlab.compare` reads, leaderboard.md, leaderboard.png).
"""

import argparse
import math
import os
import statistics
import tempfile
import time

from transferlab.runtime import environment, seed_everything  # first: TensorFlow starts without its noise

import keras
import numpy as np

from transferlab import backbones, export, feature_cache, files, folders, litert, models, process, records
from transferlab.classifier import Classifier
from transferlab.errors import check

PROBE_EPOCHS, PATIENCE = 300, 15  # the probe's epochs at most, and how many without improvement end it
CALIBRATION = 100  # training photos that calibrate the int8 file
LATENCY_IMAGES = 32
ROUNDS = 7  # batch-1 timings: every file once a round, in turn, the median of its rounds (this machine is noisy)


def parse_backbones(text):
    """"A=W,B" -> [("A", "W"), ("B", "imagenet")], each name checked (backbones.family), "None" as no weights."""
    found = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        name, _, weights = part.partition("=")
        backbones.family(name)
        found.append((name, None if weights == "None" else weights or "imagenet"))
    check(found, "--backbones= names none: give NAME or NAME=WEIGHTS, separated by commas")
    return found


def wilson(accuracy, count, z=1.96):
    """The 95% Wilson interval (low, high) of an accuracy measured on `count` images."""
    centre = (accuracy + z * z / (2 * count)) / (1 + z * z / count)
    half = z * math.sqrt(accuracy * (1 - accuracy) / count + z * z / (4 * count * count)) / (1 + z * z / count)
    return centre - half, centre + half


def probe(train, validation, classes, seed):
    """A linear head trained on cached features until a held-out tenth of the training features stops improving
    (its best weights kept): (its validation accuracy, epochs it ran)."""
    seed_everything(seed)
    (x, y), (x_val, y_val) = train, validation
    order = np.random.default_rng(seed).permutation(len(y))
    held = order[:max(1, len(y) // 10)]
    kept = order[len(held):]
    # Many short steps: 32 a call into TensorFlow, as the frozen phase's head (the same computation, less overhead).
    head = models.compile_classifier(models.stack(x.shape[1:], [models.output_layer(classes)], name="probe"), 1e-3,
                                     steps_per_execution=32)
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=PATIENCE, restore_best_weights=True)
    fitted = head.fit(x[kept], y[kept], batch_size=64, epochs=PROBE_EPOCHS, validation_data=(x[held], y[held]),
                      callbacks=[stop], verbose=0)
    predicted = models.predict_classes(head, x_val, batch_size=1024)
    return float(np.mean(predicted == y_val)), len(fitted.history["loss"]), head


def measure(name, weights, root, args, inference, folder):
    """One backbone's row: the probe's accuracy and interval, the frozen pass's speed, the TFLite files' sizes;
    and {quantization: (runner, one image)} of its TFLite files (in `folder`), timed later beside the others'."""
    size = args.image_size or backbones.family(name).native
    print(f"\n== {name} at {size} px ({weights or 'random'} weights)", flush=True)
    start = time.perf_counter()
    backbone, info = backbones.load(name, size, weights)
    train, validation, _, data = folders.read_folder(root, size, args.validation_split)
    pooling = keras.layers.GlobalAveragePooling2D()
    features = backbones.feature_extractor(backbone, pooling)
    feed = backbones.feed(name, batch_size=32, seed=args.seed)
    cached = {}
    for split, (x, y) in (("train", train), ("validation", validation)):
        cached[split], status, _, _ = feature_cache.cached(features, x, feed(x, y), feed.preprocessing, inference)
    accuracy, epochs, head = probe((np.asarray(cached["train"]), train[1]),
                                   (np.asarray(cached["validation"]), validation[1]), len(data["class_names"]),
                                   args.seed)
    low, high = wilson(accuracy, len(validation[1]))
    print(f"   linear probe: {accuracy:.2%} validation (95%: {low:.2%}-{high:.2%}), {epochs} epochs")

    run_batch, _ = inference.batch_function(features)
    batch = next(iter(feed(validation[0][:LATENCY_IMAGES], validation[1][:LATENCY_IMAGES])))[0].numpy()
    images_per_second = 1 / export.latency(run_batch, batch, len(batch))  # latency: seconds an image

    classifier = Classifier(backbone.input_shape[1:], features, head, backbones.preprocessing_layers(name),
                            backbone=backbone, pooling=pooling)
    model = classifier.for_raw_images(f"{name.lower()}_probe")
    calibration = export.sample(list(train[0].paths), None, CALIBRATION, args.seed)[0]
    one = np.asarray(validation[0][:1])
    tflite, runners = {}, {}
    for quantize in ("none", "int8"):
        path = os.path.join(folder, f"{name}-{quantize}.tflite")
        runners[quantize] = export.export_tflite(model, path, calibration, quantize), one
        tflite[quantize] = (os.path.getsize(path), None)
    row = {"backbone": name, "weights": info["weights"], "weights_sha256": info["weights_sha256"], "input_size": size,
           "features": features.output_shape[-1], "val_accuracy": accuracy, "val_interval": [low, high],
           "val_images": len(validation[1]), "probe_epochs": epochs, "feature_cache": status,
           "frozen_images_per_second": round(images_per_second, 1),
           "tflite_bytes": tflite["none"][0], "int8_bytes": tflite["int8"][0],
           "train_seconds": round(time.perf_counter() - start, 3), "train_samples": len(train[1]),
           "classes": data["class_names"]}
    print(f"   frozen pass {images_per_second:.0f} images/s; TFLite float {tflite['none'][0] / 1e6:.1f} MB, "
          f"int8 {tflite['int8'][0] / 1e6:.1f} MB")
    return row, data, runners


def interleaved_ms(runners, rounds=ROUNDS):
    """{key: median ms an image at batch 1} of `runners` ({key: (runner, one image)}): each timed once a round
    (export.latency: the median of 20 calls), all in turn, so a slow minute of the machine falls on all of them
    alike, and the median of the rounds taken."""
    times = {key: [] for key in runners}
    for _ in range(rounds):
        for key, (runner, one) in runners.items():
            times[key].append(1000 * export.latency(runner, one, 1))
    return {key: statistics.median(found) for key, found in times.items()}


def pareto(rows):
    """The names of the rows no other beats on both accuracy (higher) and float ms an image (lower)."""
    return [r["backbone"] for r in rows if not any(
        o["val_accuracy"] >= r["val_accuracy"] and o["tflite_ms"] <= r["tflite_ms"]
        and (o["val_accuracy"], o["tflite_ms"]) != (r["val_accuracy"], r["tflite_ms"]) for o in rows)]


def recommend(rows):
    """The fastest (float ms an image) of the backbones whose accuracy lies within the best one's interval."""
    best = max(rows, key=lambda r: r["val_accuracy"])
    tied = [r for r in rows if r["val_accuracy"] >= best["val_interval"][0]]
    return min(tied, key=lambda r: r["tflite_ms"]), best


def table(rows, front):
    lines = ["| backbone | input | validation accuracy (95%) | probe epochs | frozen pass, images/s "
             "| TFLite float: MB, ms | int8: MB, ms | Pareto |", "| --- " * 8 + "|"]
    for r in rows:
        low, high = r["val_interval"]
        lines.append(f"| {r['backbone']} | {r['input_size']} | {r['val_accuracy']:.2%} ({low:.1%}-{high:.1%}) "
                     f"| {r['probe_epochs']} | {r['frozen_images_per_second']:.0f} "
                     f"| {r['tflite_bytes'] / 1e6:.1f}, {r['tflite_ms']:.1f} | {r['int8_bytes'] / 1e6:.1f}, "
                     f"{r['int8_ms']:.1f} | {'yes' if r['backbone'] in front else ''} |")
    return "\n".join(lines)


def plot(rows, front, path):
    from transferlab import plots

    fig, ax = plots.plt.subplots(figsize=(7, 4.5))
    for r in rows:
        low, high = r["val_interval"]
        ax.errorbar(r["tflite_ms"], 100 * r["val_accuracy"], yerr=[[100 * (r["val_accuracy"] - low)],
                                                                     [100 * (high - r["val_accuracy"])]],
                    fmt="o", capsize=3, color="tab:blue" if r["backbone"] in front else "tab:gray")
        ax.annotate(r["backbone"], (r["tflite_ms"], 100 * r["val_accuracy"]), textcoords="offset points",
                    xytext=(5, 5), fontsize="small")
    on_front = sorted((r for r in rows if r["backbone"] in front), key=lambda r: r["tflite_ms"])
    ax.plot([r["tflite_ms"] for r in on_front], [100 * r["val_accuracy"] for r in on_front], "--", color="tab:blue",
            label="Pareto front")
    ax.set_xlabel("ms an image (TFLite float, batch 1, this machine)")
    ax.set_ylabel("validation accuracy, % (95% interval)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    plots.save(fig, path)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m transferlab.leaderboard", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir", help="an image folder: <class>/ or train/<class>/ folders")
    parser.add_argument("--backbones", default="MobileNetV2,EfficientNetLite0,EfficientNetLite2",
                        help="NAME or NAME=WEIGHTS (imagenet, a file, None), separated by commas")
    parser.add_argument("--image_size", type=int, help="one input size for all (default: each one's native size)")
    parser.add_argument("--validation_split", type=float, default=0.2, help="without validation/: the share of "
                                                                            "each class that validates")
    parser.add_argument("--seed", type=int, default=42, help="the probe's and the split's seed")
    parser.add_argument("--results_dir", default="results", help="the leaderboard goes into RESULTS_DIR/leaderboard/")
    args = parser.parse_args(argv)
    process.install()
    check(args.image_size is None or args.image_size > 0, f"--image_size={args.image_size}: must be > 0")
    chosen = parse_backbones(args.backbones)
    root = folders.find(args.data_dir)
    inference = litert.Inference.choose("auto")
    config = {"DATA_DIR": args.data_dir, "BACKBONES": args.backbones, "IMAGE_SIZE": args.image_size,
              "VALIDATION_SPLIT": args.validation_split, "SEED": args.seed, "RESULTS_DIR": args.results_dir}
    rows, data, runners = [], None, {}
    with tempfile.TemporaryDirectory() as folder, records.RunRecord(
            args.results_dir, "leaderboard", config, environment(), {"source": os.path.abspath(root)},
            sections={"inference_runtime": inference.record()}) as run:
        print(f"leaderboard {run.run_id}: {run.dir}")
        for name, weights in chosen:
            row, data, made = measure(name, weights, root, args, inference, folder)
            rows.append(row)
            runners.update({(name, quantize): runner for quantize, runner in made.items()})
            run.record["phases"][name] = row
            run.record["data"] = {k: v for k, v in data.items() if k != "skipped_files"}
            run.save()
        print(f"\n== batch-1 timings: every TFLite file in turn, {ROUNDS} rounds", flush=True)
        ms = interleaved_ms(runners)
        for row in rows:
            row["tflite_ms"], row["int8_ms"] = (round(ms[row["backbone"], q], 3) for q in ("none", "int8"))
            row["latency_rounds"] = ROUNDS
        front = pareto(rows)
        pick, best = recommend(rows)
        text = table(rows, front)
        why = (f"recommended: {pick['backbone']}, the fastest whose accuracy is within the best one's 95% interval "
               f"({best['backbone']}: {best['val_interval'][0]:.2%}-{best['val_interval'][1]:.2%})")
        run.record["recommended"] = {"backbone": pick["backbone"], "why": why, "pareto": front}
        files.write_text(run.file("leaderboard.md"), f"{text}\n\n{why}\n")
        plot(rows, front, run.file("leaderboard.png"))
        run.save()
    print(f"\n{text}\n\n{why}\nleaderboard: {run.dir}")


if __name__ == "__main__":
    process.command(main)
