"""Benchmarks, measured side by side on this machine, written as a Markdown page and a JSON of the figures.

    python -m bench                                   # the full benchmarks, into results/bench/ (about 35 minutes)
    python -m bench --data_dir=/data/datasets --weights=/data/weights/mobilenet_v2_1.0_224_no_top.weights.h5
    python -m bench --quick                           # tiny generated data: checks that every figure is produced
    python -m bench --out=docs/benchmarks-run.md      # a full run that replaces the committed page

Only a full run given `--out=` explicitly writes outside `results/`; a quick run never writes into docs/ (its
numbers time nothing). docs/benchmarks.md explains the figures.

Every comparison is a ratio of two numbers measured in the same `python -m bench` run, one after the other
on the same data (these machines are noisy: absolute seconds across runs mean little). Per-epoch figures
are medians over the epochs after the first (which includes graph tracing).

1. Frozen phase, ours vs the published method (MNIST task B, same epochs, seed and base network): the
   published way fits the whole model with frozen layers; ours runs the frozen layers once, then the head.
   Median of alternating rounds of runs that reuse the base network of figure 2's run.
2. Transfer vs base in one full MNIST run (the default constants): transfer seconds / base seconds.
3. Harness overhead: a steady epoch through `phases.fit` vs a bare `model.fit` on the same arrays, model,
   batch and seed; median of alternating rounds' ratios.
4. Backbone feature extraction: images per second through our path (check the folder's files, decode and
   resize them in the tf.data pipeline with the backbone's preprocessing, the backbone in the runtime `auto`
   picks: LiteRT on a CPU) vs a bare Keras `model.predict` on the same images already decoded and
   preprocessed in memory; median of alternating rounds.
5. Time to accuracy, cold start to record: cats vs dogs, frozen phase only, with an empty feature cache.
6. Scaling: the frozen phase's seconds and peak memory at 1k, 4k, 16k and all (54k) training images
   (MobileNetV2 on MNIST at 32x32, through the disk feature cache).
7. Predict end to end: `python -m transferlab.predict`'s path vs bare `model.predict` on decoded images.
8. Memory over an image folder: the default folder command at 224 px over the 60,000-image CIFAR-10 tree and
   shares of it: peak memory (under 4 GB, where the decoded folder would be 9 GB) and linear time.
9. How close to the cores: MobileNetV2's GFLOP/s in our runtime against numpy's float32 matrix multiply.
10. Fine-tuning's frozen bottom: Keras vs our runtime over the layers below the unfrozen ones.
"""

import argparse
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from transferlab.runtime import environment, seed_everything  # first: a quiet TensorFlow start

import keras
import numpy as np

from transferlab import (
    backbones,
    callbacks,
    feature_cache,
    files,
    folders,
    images,
    litert,
    models,
    phases,
    pipelines,
    predict,
    sources,
    tasks,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


DEFAULT_OUT = os.path.join(ROOT, "results", "bench", "BENCHMARKS.md")
QUICK_OUT = os.path.join(ROOT, "results", "bench", "BENCHMARKS-quick.md")


def run_script(script, args, env=None):
    """Run a top-level script; (record, wall seconds, peak memory in MB of its process). A failed run stops
    the benchmark with its output."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:
        process = subprocess.Popen([sys.executable, os.path.join(ROOT, script), *args], cwd=ROOT, stdout=out,
                                   stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})})
        peak_kib = 0
        while process.poll() is None:  # its peak, read while it runs: VmHWM only grows
            peak_kib = max(peak_kib, peak_resident_kib(process.pid))
            time.sleep(0.1)
        seconds = time.perf_counter() - start
        if process.returncode != 0:
            out.seek(0)
            raise SystemExit(f"{script} {' '.join(args)} failed:\n{out.read()[-3000:]}")
    results_dir = next(a.split("=", 1)[1] for a in args if a.startswith("--results_dir="))
    newest = max(glob.glob(os.path.join(results_dir, "*", "*", files.RECORD)), key=os.path.getmtime)
    with open(newest) as f:
        return json.load(f), seconds, peak_kib / 1024


def peak_resident_kib(pid):
    """The peak resident memory of process `pid` since it started its program (Linux's VmHWM), in KiB; 0 when
    unknown. Not the child's ru_maxrss from wait4: on Linux that starts from the parent's size at the fork,
    so after the bench itself had grown to 4.3 GB every child "peaked" at 4,371 MB."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:  # not Linux, or the process is gone
        pass
    return 0


def frozen_phase_and_full_run(mnist_dir, work, epochs, rounds):
    """Figures 1 and 2. One full run of mnist_transfer.py (ours, no scratch phase) gives figure 2 and the base
    network; then `rounds` pairs of runs that take that base network (--reuse_base=True, same seed) and train
    only the transfer phase, the published way and ours, the order swapped each round so that slow spells of
    the machine fall on both sides. Figure 1 is the median over the rounds: the same epochs, seed, base
    network and process conditions (a fresh process that loads the base) on both sides."""
    common = [f"--data_dir={mnist_dir}", f"--epochs={epochs}", "--run_scratch=False", "--seed=42",
              f"--results_dir={work}/mnist"]
    full, wall, _ = run_script("mnist_transfer.py", common)
    sides = {"published": (["--feature_cache=False"], []), "ours": ([], [])}
    for round_ in range(rounds):
        for side in ("published", "ours") if round_ % 2 == 0 else ("ours", "published"):
            args, found = sides[side]
            record, _, _ = run_script("mnist_transfer.py", [*common, "--reuse_base=True", *args])
            if record["phases"]["base"].get("reused_from") != full["run_id"]:  # else the sides had different bases
                raise SystemExit(f"figure 1: run {record['run_id']} trained its own base network instead of "
                                 f"reusing run {full['run_id']}'s")
            found.append(record["phases"]["transfer"])
            print(f"   round {round_ + 1} {side}: {found[-1]['train_seconds']:.1f} s, "
                  f"test {found[-1]['test_accuracy']:.2%}", flush=True)
    published, ours = sides["published"][1], sides["ours"][1]

    def median(phases, key):
        return statistics.median(phase[key] for phase in phases)

    p_seconds, o_seconds = median(published, "train_seconds"), median(ours, "train_seconds")
    p_acc, o_acc = median(published, "test_accuracy"), median(ours, "test_accuracy")
    frozen = {
        "figure": "1. Frozen phase: ours vs the published method (MNIST task B)",
        "rounds": rounds, "base network": f"trained once, in run {full['run_id']}, reused by every round",
        "published seconds per round": ", ".join(f"{phase['train_seconds']:.1f}" for phase in published),
        "ours seconds per round": ", ".join(f"{phase['train_seconds']:.1f}" for phase in ours),
        "published seconds": p_seconds, "ours seconds": o_seconds,
        "published steady epoch s": median(published, "steady_epoch_seconds"),
        "ours steady epoch s": median(ours, "steady_epoch_seconds"),
        "ours feature extraction s": median(ours, "feature_extraction_seconds"),
        "published test acc": p_acc, "ours test acc": o_acc,
        "speed-up (published / ours)": p_seconds / o_seconds,
        "accuracy difference (points)": 100 * (o_acc - p_acc),
        "target": ">= 10x faster, test accuracy not more than 0.1 point below the published method's",
    }
    frozen["met"] = frozen["speed-up (published / ours)"] >= 10 and frozen["accuracy difference (points)"] >= -0.1
    base, transfer = full["phases"]["base"], full["phases"]["transfer"]
    full_run = {
        "figure": "2. Transfer vs base in one full MNIST run",
        "base seconds": base["train_seconds"], "transfer seconds": transfer["train_seconds"],
        "transfer / base": transfer["train_seconds"] / base["train_seconds"],
        "task B test acc": transfer["test_accuracy"],
        "wall seconds (cold start to record, no scratch)": wall,
        # The same transfer phase in the fresh processes of figure 1, against the same base phase: how much of
        # the full run's transfer time is that run's alone.
        "figure 1's ours seconds / this base seconds": o_seconds / base["train_seconds"],
        "target": "transfer / base <= 0.03 at task B accuracy >= 99.5% (the full run's)",
    }
    full_run["met"] = full_run["transfer / base"] <= 0.03 and transfer["test_accuracy"] >= 0.995
    return frozen, full_run


def harness_overhead(x, y, work, epochs, batch_size, rounds):
    """Figure 3: the same CNN, data, batch and seed through phases.fit and through a bare model.fit."""
    def cnn():
        keras.utils.set_random_seed(0)
        return models.stack(x.shape[1:], [keras.layers.Conv2D(32, 3, activation="relu"), keras.layers.MaxPooling2D(),
                                          keras.layers.Conv2D(64, 3, activation="relu"), keras.layers.Flatten(),
                                          keras.layers.Dense(int(y.max()) + 1, activation="softmax")], name="cnn")

    # Alternating rounds, so that the machine's slow spells fall on both sides; the first epoch of every
    # fit (graph tracing) is left out. The figure is the median of the rounds' ratios.
    ours_seconds, bare_seconds = [], []
    for round_ in range(rounds):
        # TensorBoard on, as the scripts run by default: its cost is part of the harness
        run = phases.StandInRun(os.path.join(work, f"harness{round_}"), seed=0, tensorboard=True)
        ours = phases.fit(run, "base", cnn(), (x, y), phases.FitOptions(epochs, batch_size, learning_rate=1e-3))
        bare_model, bare_timer = models.compile_classifier(cnn(), 1e-3), callbacks.PhaseHistory()
        bare_model.fit(x, y, epochs=epochs, batch_size=batch_size, callbacks=[bare_timer], verbose=0)
        ours_seconds.append(statistics.median(ours.epoch_seconds[1:]))
        bare_seconds.append(statistics.median(bare_timer.epoch_seconds[1:]))
    ratios = [b / o for b, o in zip(bare_seconds, ours_seconds, strict=True)]
    result = {
        "figure": "3. Harness overhead (steady epoch, phases.fit vs bare model.fit)",
        "samples": len(x), "epochs": epochs, "rounds": rounds,
        "bare steady epoch s": statistics.median(bare_seconds), "ours steady epoch s": statistics.median(ours_seconds),
        "bare / ours per round": ", ".join(f"{r:.3f}" for r in ratios),
        "bare / ours": statistics.median(ratios), "target": ">= 0.97",
    }
    result["met"] = result["bare / ours"] >= 0.97
    return result


def backbone_extraction(folder, weights, image_size, batch_size, rounds):
    """Figures 4 and 9: images per second, our whole path vs bare Keras predict on images decoded and
    preprocessed; then how close our runtime comes to the cores.

    Alternating rounds, the order swapped each round, so that slow spells of the machine fall on both
    sides; the figure is the median of the rounds' ratios. Ours checks every file first (folders.read_folder), then
    decodes in the pipeline while the backbone runs, in the runtime `auto` picks (LiteRT on this CPU; its
    conversion, cached on disk, is made in the warm-up round and reported apart). Figure 9: the GFLOP/s of
    our runtime on the decoded images against numpy's float32 matrix multiply on the same cores."""
    backbone, _ = backbones.load("MobileNetV2", image_size, weights)
    frozen = backbones.feature_extractor(backbone, keras.layers.GlobalAveragePooling2D())
    preprocess = backbones.preprocess_function("MobileNetV2")
    frozen.predict(np.zeros((batch_size, image_size, image_size, 3), np.float32), verbose=0)  # trace once, for both
    runtime_name, conversion_seconds = litert.Inference.choose("auto").chosen, 0.0
    if runtime_name == "litert":  # converted once (a run caches the file on disk)
        start = time.perf_counter()
        run_batch = litert.Runner(content=litert.convert(frozen))
        conversion_seconds = time.perf_counter() - start
    else:
        run_batch = litert.KERAS.batch_function(frozen)[0]

    def ours():
        start = time.perf_counter()
        (x, y), (xv, yv), _, info = folders.read_folder(folder, image_size, 0.2)
        x, y = images.Files(np.concatenate([x.paths, xv.paths]), x.size), np.concatenate([y, yv])
        batches = pipelines.pipeline(x, y, preprocess=preprocess, batch_size=batch_size, seed=0)
        with tempfile.TemporaryDirectory() as tmp:
            feature_cache.extract(frozen, batches, len(x), os.path.join(tmp, "entry"), run_batch)
        return time.perf_counter() - start, info["scan_seconds"], x

    def bare():
        start = time.perf_counter()
        frozen.predict(ready, batch_size=batch_size, verbose=0)
        return time.perf_counter() - start

    ours_seconds, check_seconds, bare_seconds = [], [], []
    _, _, x = ours()  # warm-up round (file system cache, tf.data), not counted
    ready = preprocess(np.asarray(x).astype(np.float32))  # bare predict's input: decoded and preprocessed
    for round_ in range(rounds):
        if round_ % 2:
            bare_seconds.append(bare())
        seconds, checking, x = ours()
        ours_seconds.append(seconds)
        check_seconds.append(checking)
        if not round_ % 2:
            bare_seconds.append(bare())
    ratios = [b / o for b, o in zip(bare_seconds, ours_seconds, strict=True)]
    result = {
        "figure": f"4. Backbone feature extraction (MobileNetV2, {image_size} px, {len(x)} images)",
        "rounds": rounds,
        "runtime (ours)": runtime_name,
        "conversion seconds (once, cached on disk by a run; not included)": conversion_seconds,
        "bare Keras images/s (decoded, preprocessed, in memory)": len(x) / statistics.median(bare_seconds),
        "ours images/s (check, then decode in the pipeline, backbone)": len(x) / statistics.median(ours_seconds),
        "ours seconds checking the files (included)": statistics.median(check_seconds),
        "ours / bare per round": ", ".join(f"{r:.3f}" for r in ratios),
        "ours / bare": statistics.median(ratios), "target": ">= 2.5",
    }
    result["met"] = result["ours / bare"] >= 2.5
    return result, cores(frozen, run_batch, ready, batch_size, runtime_name), bottom_pass(backbone, ready, batch_size)


def bottom_pass(backbone, ready, batch_size, fine_tune_at=100, rounds=3):
    """Figure 10: fine-tuning's frozen-bottom pass (MobileNetV2 unfrozen from layer `fine_tune_at`, the layers
    below it run once over the images): Keras predict vs the runtime `auto` picks, on the same images in
    memory, alternating rounds."""
    backbones.unfreeze(backbone, fine_tune_at)
    bottom, _ = backbones.frozen_bottom(backbone)
    runtime_name = litert.Inference.choose("auto").chosen
    start = time.perf_counter()
    run_batch = (litert.Runner(content=litert.convert(bottom)) if runtime_name == "litert"
                 else litert.KERAS.batch_function(bottom)[0])
    conversion = time.perf_counter() - start
    bottom.predict(ready[:batch_size], verbose=0)  # traced once
    keras_seconds, ours_seconds = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        bottom.predict(ready, batch_size=batch_size, verbose=0)
        keras_seconds.append(time.perf_counter() - start)
        start = time.perf_counter()
        for i in range(0, len(ready), batch_size):
            run_batch(ready[i:i + batch_size])
        ours_seconds.append(time.perf_counter() - start)
    ratios = [k / o for k, o in zip(keras_seconds, ours_seconds, strict=True)]
    result = {
        "figure": f"10. Fine-tuning's frozen bottom (MobileNetV2 up to {bottom.layers[-1].name}, {len(ready)} images "
                  f"in memory)",
        "runtime (ours)": runtime_name, "conversion seconds (once, cached on disk by a run)": conversion,
        "Keras images/s": len(ready) / statistics.median(keras_seconds),
        "ours images/s": len(ready) / statistics.median(ours_seconds),
        "ours / Keras per round": ", ".join(f"{r:.3f}" for r in ratios),
        "ours / Keras": statistics.median(ratios), "target": ">= 2",
    }
    result["met"] = result["ours / Keras"] >= 2
    return result


def flops_per_image(model):
    """Floating-point operations (2 per multiply-add) of a model's convolutions and dense layers per image."""
    total = 0
    for layer in models.all_layers(model):
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)):
            out = int(np.prod(layer.output.shape[1:]))
            if isinstance(layer, keras.layers.DepthwiseConv2D):
                total += 2 * out * int(np.prod(layer.kernel_size))
            elif isinstance(layer, keras.layers.Conv2D):
                total += 2 * out * int(np.prod(layer.kernel_size)) * layer.input.shape[-1] // layer.groups
            else:
                total += 2 * out * layer.input.shape[-1]
    return total


def cores(frozen, run_batch, ready, batch_size, runtime_name, size=2048):
    """Figure 9: GFLOP/s of the frozen pass on decoded, preprocessed images in memory (`run_batch`, batches of
    `batch_size`) against numpy's float32 matrix multiply of two size x size matrices on the same cores."""
    flops = flops_per_image(frozen)
    a, b = (np.random.default_rng(seed).standard_normal((size, size), dtype=np.float32) for seed in (0, 1))
    a @ b  # warm-up: threads started, pages touched
    matmul, inference = [], []
    for _ in range(3):  # alternating, so that a slow spell falls on both
        start = time.perf_counter()
        a @ b
        matmul.append(2 * size**3 / (time.perf_counter() - start) / 1e9)
        start = time.perf_counter()
        for i in range(0, len(ready), batch_size):
            run_batch(ready[i:i + batch_size])
        inference.append(len(ready) * flops / (time.perf_counter() - start) / 1e9)
    result = {
        "figure": f"9. How close to the cores: MobileNetV2 at {ready.shape[1]} px in {runtime_name} vs numpy matmul",
        "GFLOP per image (convolutions and dense layers)": flops / 1e9,
        f"{runtime_name} GFLOP/s (median of 3, images in memory)": statistics.median(inference),
        f"numpy float32 matmul GFLOP/s ({size}x{size}, median of 3)": statistics.median(matmul),
        "cores used": os.cpu_count(),
        "ours / matmul": statistics.median(inference) / statistics.median(matmul), "target": ">= 0.5",
    }
    result["met"] = result["ours / matmul"] >= 0.5
    return result


def time_to_accuracy(data_dir, weights, work, extra):
    """Figure 5: the default cats-vs-dogs command (the folder recipe: 224 px, frozen, linear head) from a cold
    start (empty cache: no features, no converted backbone; a new process) to its record; then again with
    only the converted backbone left in the cache."""
    cache = os.path.join(work, "empty_cache")
    args = [f"--data_dir={data_dir}", f"--weights={weights}", f"--results_dir={work}/tta", *extra]
    record, wall, _ = run_script("mobilenet_transfer.py", args, env={files.CACHE_DIR_ENV: cache})
    shutil.rmtree(os.path.join(cache, "features"), ignore_errors=True)
    again, wall_converted, _ = run_script("mobilenet_transfer.py", args, env={files.CACHE_DIR_ENV: cache})
    transfer = record["phases"]["transfer"]
    result = {
        "figure": "5. Time to accuracy: the default cats-vs-dogs command, cold start to record",
        "wall seconds": wall, "val acc": transfer["val_accuracy"], "feature cache": transfer["feature_cache"],
        "runtime": transfer.get("inference_runtime", "keras"),
        "wall seconds, the conversion cached (features not)": wall_converted,
        "val acc, the conversion cached": again["phases"]["transfer"]["val_accuracy"],
        "target": ">= 99.0% validation accuracy in <= 40 s cold, <= 30 s with the conversion cached",
    }
    result["met"] = transfer["val_accuracy"] >= 0.99 and wall <= 40 and wall_converted <= 30
    return result


FEATURES_MB_PER_1K, IMAGES_MB_PER_1K = 1000 * 1280 * 4 / 1e6, 1000 * 32 * 32 * 3 / 1e6


def last_step_over_range(rows):
    """Seconds per added item over the last step against over the whole range, from (items, seconds, ...) rows.

    Linear (or better) means items added at the largest size cost no more each than across the whole range;
    superlinear growth would make the last step dearer. Both are differences over thousands of items: the
    first step alone (a few seconds over a fixed cost of several) is too small to measure. With two rows it is
    1 by construction."""
    (n0, t0, *_), (n_before, t_before, *_), (n_last, t_last, *_) = rows[0], rows[-2], rows[-1]
    return ((t_last - t_before) / (n_last - n_before)) / ((t_last - t0) / (n_last - n0))


def size_rows(rows, unit):
    """A figure's line per size, from (items, seconds, peak MB) rows."""
    return {f"{n} {unit}": f"{t:.1f} s, {1000 * t / n:.2f} s per 1k, peak {m:.0f} MB" for n, t, m in rows}


def scaling(mnist_dir, weights, work, sizes):
    """Figure 6: the frozen phase's seconds and the process's peak memory against the training-set size, with
    mobilenet_transfer.py --dataset=mnist (MobileNetV2 at 32x32, 1280 features per image through the disk
    cache, an empty cache each time), frozen phase only, the training set cut to `sizes` images per class."""
    rows = []
    for per_class in sizes:
        record, _, peak = run_script("mobilenet_transfer.py", [
            "--dataset=mnist", f"--data_dir={mnist_dir}", f"--weights={weights}", "--epochs=2", "--fine_tune_epochs=0",
            "--run_scratch=False", "--tensorboard=False", f"--samples_per_class={per_class}",
            f"--results_dir={work}/scaling"], env={files.CACHE_DIR_ENV: os.path.join(work, f"cache_{per_class}")})
        transfer = record["phases"]["transfer"]
        rows.append((transfer["train_samples"], transfer["train_seconds"], peak))
        print(f"   {rows[-1][0]} samples: {rows[-1][1]:.1f} s, peak {peak:.0f} MB", flush=True)
    (n0, _, m0), (n_last, _, m_last) = rows[0], rows[-1]
    time_ratio = last_step_over_range(rows)
    memory_per_1k = 1000 * (m_last - m0) / (n_last - n0)
    result = {"figure": "6. Scaling: frozen phase (MobileNetV2 on MNIST at 32x32) against training samples",
              **size_rows(rows, "samples")}
    result.update({
        "seconds per added sample, last step / whole range": time_ratio,
        "peak MB per 1k added samples": memory_per_1k,
        "features MB per 1k samples (1280 float32)": FEATURES_MB_PER_1K,
        "images MB per 1k samples (32x32x3 uint8)": IMAGES_MB_PER_1K,
        "target": "time linear in samples or better (last step / whole range <= 1.25); memory growth per "
                  "sample below twice the features (they are never "
                  "held twice) plus the images, which the script and its tf.data pipeline each hold once",
        "met": time_ratio <= 1.25 and memory_per_1k < 2 * FEATURES_MB_PER_1K + 2 * IMAGES_MB_PER_1K,
    })
    return result


def folder_subset(root, fraction, out):
    """A folder like `root` (split folders) of symlinks to the first `fraction` of each class's files."""
    for split in layout_folders(root):
        for name in folders.subfolders(os.path.join(root, split)):
            paths = images.files_under(os.path.join(root, split, name))[0]
            os.makedirs(os.path.join(out, split, name), exist_ok=True)
            for path in paths[:max(2, round(len(paths) * fraction))]:
                os.symlink(os.path.abspath(path), os.path.join(out, split, name, os.path.basename(path)))
    return out


def layout_folders(root):
    found = folders.layout(root)
    return [os.path.relpath(f, root) for f in (found.train, found.validation, found.test) if f]


def folder_memory(tree, weights, work, image_size, fractions, extra=()):
    """Figure 8: the default folder command (mobilenet_transfer.py, frozen phase, linear head) over an image
    folder and shares of it (symlinked subsets of each class, an empty feature cache each time): the process's
    peak memory, which must not grow with the folder, and its wall time, which must grow linearly."""
    rows = []
    for fraction in fractions:
        folder = tree if fraction == 1 else folder_subset(tree, fraction, os.path.join(work, f"subset_{fraction}"))
        args = [f"--data_dir={folder}", f"--weights={weights}", f"--image_size={image_size}", "--tensorboard=False",
                f"--results_dir={work}/memory", *extra]
        record, wall, peak = run_script("mobilenet_transfer.py", args,
                                        env={files.CACHE_DIR_ENV: os.path.join(work, f"memory_cache_{fraction}")})
        rows.append((sum(record["data"]["samples"].values()), wall, peak))
        print(f"   {rows[-1][0]} images: {wall:.1f} s, peak {peak:.0f} MB", flush=True)
    n_last, m_last, time_ratio = rows[-1][0], rows[-1][2], last_step_over_range(rows)
    decoded_mb = n_last * image_size * image_size * 3 / 1e6
    result = {"figure": f"8. Memory over an image folder: MobileNetV2 at {image_size} px, the default folder command "
                        f"over {n_last} images ({os.path.basename(os.path.normpath(tree))})",
              **size_rows(rows, "images")}
    result.update({
        "peak MB, whole folder": m_last,
        "the folder decoded in memory would be, MB": decoded_mb,
        "seconds per added image, last step / whole range": time_ratio,
        "target": "peak < 4,000 MB over the whole folder; time linear (last step / whole range <= 1.25)",
        "met": m_last < 4000 and time_ratio <= 1.25,
    })
    return result


def quick_data(work):
    """Tiny generated data for --quick: an mnist.npz and a two-class image folder."""
    from PIL import Image

    rng = np.random.default_rng(0)
    os.makedirs(work, exist_ok=True)
    y = np.repeat(np.arange(10), 30).astype(np.uint8)
    x = rng.integers(0, 50, size=(len(y), 28, 28), dtype=np.uint8)
    for i, label in enumerate(y):
        x[i, 2 + 2 * label:5 + 2 * label, 4:24] = 255  # a bar whose height says the class
    np.savez(os.path.join(work, "mnist.npz"), x_train=x, y_train=y, x_test=x[::3], y_test=y[::3])
    for split, count in (("train", 12), ("validation", 4)):
        for c, colour in enumerate(((220, 40, 40), (40, 200, 60))):
            os.makedirs(os.path.join(work, "folder", split, f"class_{c}"), exist_ok=True)
            for i in range(count):
                pixels = rng.integers(0, 80, size=(40, 40, 3), dtype=np.uint8)
                pixels[8:30, 8:30] = colour
                Image.fromarray(pixels).save(os.path.join(work, "folder", split, f"class_{c}", f"{i}.png"))
    return work, os.path.join(work, "folder")


def predict_throughput(folder, weights, image_size, batch_size):
    """Figure 7: `python -m transferlab.predict`'s path (files decoded in a prefetching stream, classified batch
    by batch) against bare `model.predict` on the same images already decoded in memory, in images a second:
    a MobileNetV2 classifier as a run saves it (uint8 in, preprocessing inside)."""
    backbone, _ = backbones.load("MobileNetV2", image_size, weights)
    features = backbones.feature_extractor(backbone, keras.layers.GlobalAveragePooling2D())
    inputs = keras.Input((image_size, image_size, 3), dtype="uint8")
    x = backbones.preprocessing_layers("MobileNetV2")[0](inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(features(x)))
    paths = []
    for split in ("train", "validation"):
        found = folders.layout(folder)
        paths += [p for name in found.classes
                  for p in images.files_under(os.path.join(folder, split, name))[0]]
    model.predict_on_batch(np.zeros((batch_size, image_size, image_size, 3), np.uint8))  # trace once, for both
    inference = litert.Inference.choose("auto")
    start = time.perf_counter()
    run_batch = (litert.Runner(content=litert.convert(model)) if inference.chosen == "litert"
                 else litert.KERAS.batch_function(model)[0])  # converted once; predict caches the file
    conversion = time.perf_counter() - start
    start = time.perf_counter()
    _, kept, _ = predict.classify(model, paths, batch_size, run_batch=run_batch)
    ours = time.perf_counter() - start
    decoded, _, _ = pipelines.decode(paths, (image_size, image_size))
    start = time.perf_counter()
    model.predict(decoded, batch_size=batch_size, verbose=0)
    bare = time.perf_counter() - start
    result = {
        "figure": f"7. Predict end to end (MobileNetV2, {image_size} px, {len(paths)} image files)",
        "runtime (ours)": inference.chosen, "conversion seconds (once, cached on disk; not included)": conversion,
        "ours images/s (files to probabilities)": len(kept) / ours,
        "bare images/s (decoded in memory)": len(decoded) / bare,
        "ours / bare": bare / ours * len(kept) / len(decoded),
        "target": ">= 0.8",
    }
    result["met"] = result["ours / bare"] >= 0.8
    return result


def markdown(figures, environment, command):
    lines = ["# Benchmarks", "", f"Measured with `{command}` on {environment['cpu_model']} "
             f"({environment['cpu_count']} cores, {environment['gpus']} GPUs), TensorFlow {environment['tensorflow']}, "
             f"Keras {environment['keras']}, git {environment['git_commit']}.", ""]
    for figure in figures:
        lines += [f"## {figure['figure']}", "", "| measure | value |", "| --- | --- |"]
        for name, value in figure.items():
            if name != "figure":
                shown = f"{value:.4g}" if isinstance(value, float) else ("yes" if value is True else
                                                                           "no" if value is False else str(value))
                lines.append(f"| {name} | {shown} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny generated data: checks that every figure is produced; its numbers time nothing")
    parser.add_argument("--data_dir", default=os.environ.get(sources.DATA_DIR_ENV, os.path.join(ROOT, "..", "shared",
                                                                                            "datasets")),
                        help="folder with mnist.npz and cats_and_dogs_filtered/ (default: $TRANSFER_DATA_DIR, "
                             "else shared/datasets/ beside the checkout)")
    parser.add_argument("--weights", default=os.path.join(ROOT, "..", "shared", "weights",
                                                          "mobilenet_v2_1.0_224_no_top.weights.h5"),
                        help="MobileNetV2 no-top weights file, or imagenet: Keras's download (default: "
                             "shared/weights/mobilenet_v2_1.0_224_no_top.weights.h5 beside the checkout)")
    parser.add_argument("--out", help=f"the Markdown page to write, with a .json of the figures beside it (default: "
                                      f"{os.path.relpath(DEFAULT_OUT, ROOT)}, or {os.path.relpath(QUICK_OUT, ROOT)} "
                                      f"with --quick)")
    parser.add_argument("--figures", default="1,2,3,4,5,6,7,8,9,10",
                        help="which figures to measure, e.g. --figures=5,6")
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = QUICK_OUT if args.quick else DEFAULT_OUT
    elif args.quick and os.path.abspath(args.out).startswith(os.path.join(ROOT, "docs") + os.sep):
        parser.exit(2, f"error: --quick --out={args.out}: a quick run times nothing and never replaces a committed "
                       f"page; leave --out= out (it writes {os.path.relpath(QUICK_OUT, ROOT)})\n")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    wanted = {int(n) for n in args.figures.split(",")}
    work = tempfile.mkdtemp(prefix="transferlab-bench-")
    seed_everything(0)
    if args.quick:
        mnist_dir, folder = quick_data(os.path.join(work, "data"))
        weights, image_size, epochs, extra = "None", 32, 2, ["--image_size=32", "--epochs=2", "--head=8"]
        (x, y), _ = sources.load_npz(os.path.join(mnist_dir, "mnist.npz"), (28, 28), 10)
        x, y = tasks.scale_images(x), y
    else:
        mnist_dir, folder = args.data_dir, folders.find(args.data_dir)
        weights, image_size, epochs, extra = args.weights, 160, 10, []
        (x, y), _ = sources.load_npz(os.path.join(mnist_dir, "mnist.npz"), (28, 28), 10)
        x, y = tasks.scale_images(x[:12000]), y[:12000]
    figures = []
    if wanted & {1, 2}:
        print("figures 1-2: a full MNIST run, then rounds of its transfer phase both ways ...", flush=True)
        figures += [f for n, f in zip((1, 2), frozen_phase_and_full_run(mnist_dir, work, epochs, rounds=1 if
                                                                          args.quick else 3), strict=True)
                    if n in wanted]
    if 3 in wanted:
        print("figure 3: harness overhead ...", flush=True)
        figures.append(harness_overhead(x, y, work, epochs=4 if not args.quick else 3, batch_size=32,
                                        rounds=5 if not args.quick else 1))
    if wanted & {4, 9, 10}:
        print("figures 4, 9 and 10: backbone feature extraction, how close to the cores, the frozen bottom ...",
              flush=True)
        found = backbone_extraction(folder, None if weights == "None" else weights, image_size if args.quick else 224,
                                    batch_size=32, rounds=1 if args.quick else 5)
        figures += [f for n, f in zip((4, 9, 10), found, strict=True) if n in wanted]
    if 5 in wanted:
        print("figure 5: time to accuracy ...", flush=True)
        figures.append(time_to_accuracy(folder if args.quick else args.data_dir, weights, work, extra))
    if 6 in wanted:
        print("figure 6: scaling ...", flush=True)
        figures.append(scaling(mnist_dir, weights, work, [4, None] if args.quick else [100, 400, 1600, None]))
    if 7 in wanted:
        print("figure 7: predict end to end ...", flush=True)
        figures.append(predict_throughput(folder, None if weights == "None" else weights,
                                          image_size if args.quick else 224, batch_size=64))
    if 8 in wanted:
        print("figure 8: memory over an image folder ...", flush=True)
        figures.append(folder_memory(folder if args.quick else os.path.join(args.data_dir, "cifar10"), weights, work,
                                     32 if args.quick else 224, [0.5, 1] if args.quick else [0.125, 0.25, 1],
                                     ["--epochs=1"] if args.quick else []))
    figures.sort(key=lambda figure: int(figure["figure"].split(".")[0]))
    text = markdown(figures, environment(), " ".join(["python -m bench", *(argv or sys.argv[1:])]))
    files.write_json(args.out + ".json", figures)
    files.write_text(args.out, text)
    print(text)
    return figures


if __name__ == "__main__":
    main()
