"""Export the model a run left, and check the export against it before calling it done.

    python -m transferlab.export RUN --format=saved_model|tflite|onnx [--quantize=none|float16|dynamic|int8]

RUN is a run folder, a run id or `latest` (as for transferlab.predict). The export goes into RUN/export/:
`saved_model/` (Keras's export archive: `serve` takes uint8 images at the model's size, `classify_images` encoded
image files of any size, decoded and resized inside by the pixel contract), `model.tflite` or
`model-<quantize>.tflite` (TensorFlow's LiteRT converter; int8 calibrated on a few hundred training images)
with `labels.txt` beside it, or `model.onnx` (Keras's ONNX export; its packages are in requirements-onnx.txt).

The check: the run's validation images (or --images=FOLDER of <class>/ folders) go through the exported file
with that format's own runtime (tf.saved_model.load, the LiteRT interpreter with XNNPACK, onnxruntime) and
through the Keras model. export/export.json records, per file: format, quantization, size, sha256, top-1
agreement, the largest probability difference, each one's accuracy, and per-image latency at batch 1 and 32.
A float export must agree on top-1 for >= 99.9% of the images with probabilities within 1e-4 (a SavedModel's
`classify_images` too, on the files' bytes); a quantized
one must not lose more than --allow_accuracy_drop points (default 2). One that fails is kept under a name
that says so, and the command exits 1. Bad input: one line, exit 2.
"""

import argparse
import contextlib
import io
import json
import os
import shutil
import statistics
import time

from transferlab.runtime import quiet_stderr  # first: TensorFlow starts without its start-up noise

import keras
import numpy as np
import tensorflow as tf

from transferlab import files, folders, images, litert, model_card, pipelines, predict, process, tflite_metadata
from transferlab.errors import UserError, check

FORMATS = ("saved_model", "tflite", "onnx")
QUANTIZATIONS = ("none", "float16", "dynamic", "int8")
CHECK_IMAGES = 1000  # at most this many images in the check (cats vs dogs' validation set whole)
CALIBRATION_IMAGES = 300  # training images the int8 converter calibrates on
FLOAT_AGREEMENT, FLOAT_TOLERANCE = 0.999, 1e-4


def run_images(folder, record, override=None, split="validation"):
    """(paths, labels) of the images to check or calibrate on: the files of `override` (<class>/ folders named
    as the model's labels, or any images, then without labels), else the run's own `split` of the image folder
    it read."""
    if override is not None:
        found = folders.layout(override) if not os.path.isfile(override) else None
        if found is not None and found.kind == "class folders":
            with open(os.path.join(folder, files.LABELS), encoding="utf-8") as f:
                names = f.read().splitlines()
            strangers = [name for name in found.classes if name not in names]
            check(not strangers, f"--images={override}: its folders {', '.join(strangers)} are not labels of the "
                                 f"model ({files.LABELS}: {', '.join(names)})")
            paths, labels = [], []
            for name in found.classes:
                inside, _ = images.files_under(os.path.join(override, name))
                paths += inside
                labels += [names.index(name)] * len(inside)
            return paths, labels
        return predict.image_paths([override])[0], None
    data = record.get("data", {})
    check("layout" in data, f"{folder}: this run did not read an image folder; give the images to check on with "
                            f"--images=FOLDER (one <class>/ folder per label)")
    splits, _ = folders.listing(folders.layout(data["source"]), record["config"].get("VALIDATION_SPLIT") or 0.2)
    paths, labels = splits[split if split in splits else "validation"]
    return paths, labels


def sample(paths, labels, count, seed=0):
    if len(paths) <= count:
        return paths, labels
    keep = np.sort(np.random.default_rng(seed).choice(len(paths), count, replace=False))
    return [paths[i] for i in keep], None if labels is None else [labels[i] for i in keep]


def export_saved_model(model, path):
    """`model` as a SavedModel with two endpoints: `serve`, the model on uint8 pixels at its input size (as
    Keras's model.export makes it), and `classify_images`, on encoded image files of any size (JPEG, PNG, GIF,
    BMP, WebP), decoded and resized inside by the pixel contract: the client sends the file's bytes and needs no
    resizing code of its own. (the `serve` function, the `classify_images` function) on numpy batches."""
    height, width, channels = model.input_shape[1:]
    # Named as model.export names them ("image", the model's input), so a client of the old export still fits;
    # "_bytes": TensorFlow Serving's REST API then takes base64 ({"b64": ...}) for it.
    pixels = tf.TensorSpec((None, height, width, channels), model.inputs[0].dtype, name=model.inputs[0].name)

    def classify_images(image_bytes):
        decoded = tf.map_fn(lambda raw: images.resize(images.decode(raw, channels), (height, width)), image_bytes,
                            fn_output_signature=tf.TensorSpec((height, width, channels), tf.uint8))
        return model(tf.cast(decoded, pixels.dtype), training=False)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", lambda x: model(x, training=False), input_signature=[pixels])
    archive.add_endpoint("classify_images", classify_images,
                         input_signature=[tf.TensorSpec((None,), tf.string, name="image_bytes")])
    with contextlib.redirect_stdout(io.StringIO()):
        archive.write_out(path, verbose=False)
    loaded = tf.saved_model.load(path)  # kept by the closures: its variables die with it
    return (lambda x: np.asarray(loaded.serve(tf.constant(x)), dtype=np.float32),
            lambda encoded: np.asarray(loaded.classify_images(tf.constant(encoded)), dtype=np.float32))


def describe(record, labels, model):
    """The tflite_metadata.Description of a run's model: its classes, what it takes, where it comes from."""
    data, final = record.get("data", {}), record.get("final", {})
    source = os.path.basename(os.path.normpath(data.get("source") or record["experiment"]))
    backbone = record.get("backbone", {}).get("backbone") or record["experiment"]
    score = (f"; {final['accuracy']:.2%} on {final['images']} {final['split']} images" if "accuracy" in final else "")
    height, width, channels = model.input_shape[1:]
    colour = "RGB" if channels == 3 else "grayscale"
    return tflite_metadata.Description(
        name=f"{source} classifier ({backbone})",
        description=f"{backbone} transferred to {len(labels)} classes of {source}{score}. Made by transferlab, "
                    f"{record['experiment']} run {record['run_id']}, commit {record['environment'].get('git_commit')}.",
        version=record["run_id"], author="transferlab", license=None, labels=labels, size=(height, width),
        channels=channels,
        input_description=f"{colour} image, {height}x{width}, uint8 0-255: the whole photo stretched to that size "
                          f"(never cropped), bilinear on pixel centres, no antialiasing; JPEGs decoded with the "
                          f"accurate integer IDCT (pixel contract {images.CONTRACT!r}; see the model card)",
        output_description=f"one probability per class, in the order of {tflite_metadata.LABELS}")


def export_tflite(model, path, calibration, quantize, info=None):
    with litert.converter(model) as converter:
        if quantize != "none":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "float16":
            converter.target_spec.supported_types = [tf.float16]
        elif quantize == "int8":
            def representative():
                for _, batch in pipelines.stream(calibration, model.input_shape[1:3], model.input_shape[3], batch=1):
                    yield [batch.astype(np.uint8)]
            converter.representative_dataset = representative
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.uint8
        with quiet_stderr(), contextlib.redirect_stdout(io.StringIO()):  # the converter's trace listing
            flatbuffer = converter.convert()
    with files.replacing(path) as tmp, open(tmp, "wb") as f:
        # The class names inside, where MediaPipe reads them (`info` None: a file only timed, no metadata).
        f.write(flatbuffer if info is None else tflite_metadata.attach(flatbuffer, info))
    return litert.Runner(path)


def check_metadata(path, info):
    """What the written .tflite says of itself, read back: (summary for export.json, problems)."""
    with open(path, "rb") as f:
        found = tflite_metadata.read(f.read())
    if found is None:
        return {"present": False}, ["no metadata in the file"]
    labels = found["files"].get(tflite_metadata.LABELS, b"").decode("utf-8").splitlines()
    image = found["input"][0] if found["input"] else {}
    problems = [f"{what} reads back as {got!r}, not {wanted!r}" for what, got, wanted in (
        ("labels", labels, list(info.labels)), ("input size", image.get("default_size"), list(info.size)),
        ("name", found["name"], info.name), ("version", found["version"], info.version))
        if got != wanted]
    attached = [f["name"] for t in found["output"] for f in t["associated_files"]]
    if tflite_metadata.LABELS not in attached:
        problems.append(f"the output names no {tflite_metadata.LABELS}")
    return {"present": True, "name": found["name"], "version": found["version"], "labels": len(labels),
            "input": image.get("color_space"), "input_size": image.get("default_size")}, problems


def export_onnx(model, path):
    try:
        import onnxruntime
        import tf2onnx  # noqa: F401 (Keras's ONNX export needs it)
    except ImportError as error:
        raise UserError(f"--format=onnx needs {error.name}: pip install -r requirements-onnx.txt") from None
    model(np.zeros((1, *model.input_shape[1:]), np.uint8))  # Keras 3.15 exports to ONNX only a model called once
    with contextlib.redirect_stdout(io.StringIO()):
        model.export(path, format="onnx", verbose=False)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: np.asarray(session.run(None, {name: x})[0], dtype=np.float32)


def latency(function, x, batch):
    """Median seconds per image over a few calls of `function` on batches of `batch` images."""
    x = x[:batch] if len(x) >= batch else np.concatenate([x] * (-(-batch // len(x))))[:batch]
    function(x)  # the first call builds and traces
    seconds = []
    for _ in range(5 if batch > 1 else 20):
        start = time.perf_counter()
        function(x)
        seconds.append((time.perf_counter() - start) / batch)
    return statistics.median(seconds)


def compare(keras_model, exported, paths, labels):
    """The check's numbers: agreement, largest difference, accuracy of each, latencies."""
    ours, theirs, kept = [], [], []
    size = keras_model.input_shape[1:3]
    for indices, x in pipelines.stream(paths, size, keras_model.input_shape[3], batch=32):
        ours.append(np.asarray(keras_model.predict_on_batch(x), dtype=np.float32))
        theirs.append(exported(x))
        kept.append(indices)
    check(kept, "none of the check images could be decoded")
    ours, theirs, kept = np.concatenate(ours), np.concatenate(theirs), np.concatenate(kept)
    agree = float(np.mean(ours.argmax(1) == theirs.argmax(1)))
    result = {"images": len(kept), "top1_agreement": round(agree, 6),
              "max_probability_difference": float(np.abs(ours - theirs).max())}
    if labels is not None:
        truth = np.array(labels)[kept]
        result["accuracy_keras"] = round(float(np.mean(ours.argmax(1) == truth)), 6)
        result["accuracy_export"] = round(float(np.mean(theirs.argmax(1) == truth)), 6)
    x = next(pipelines.stream(paths[:32], size, keras_model.input_shape[3], batch=32))[1]
    for batch in (1, 32):
        result[f"ms_per_image_keras_batch{batch}"] = round(1000 * latency(keras_model.predict_on_batch, x, batch), 3)
        result[f"ms_per_image_export_batch{batch}"] = round(1000 * latency(exported, x, batch), 3)
    return result


def compare_files(keras_model, classify, paths):
    """A SavedModel's `classify_images` on the files' own bytes against the Keras model on the contract's pixels:
    the images both decode, top-1 agreement, largest probability difference."""
    found = {"images": 0, "top1_agreement": 0.0, "max_probability_difference": 0.0}
    agreeing = 0
    for indices, x in pipelines.stream(paths, keras_model.input_shape[1:3], keras_model.input_shape[3], batch=32):
        ours = np.asarray(keras_model.predict_on_batch(x), dtype=np.float32)
        encoded = []
        for i in indices:
            with open(paths[i], "rb") as f:
                encoded.append(f.read())
        theirs = classify(encoded)
        agreeing += int(np.sum(ours.argmax(1) == theirs.argmax(1)))
        found["images"] += len(indices)
        found["max_probability_difference"] = max(found["max_probability_difference"],
                                                  float(np.abs(ours - theirs).max()))
    found["top1_agreement"] = round(agreeing / max(found["images"], 1), 6)
    return found


def passed(entry, allow_drop):
    """(passed, why not)."""
    by_files = entry.get("classify_images")
    if by_files is not None and not (by_files["top1_agreement"] >= FLOAT_AGREEMENT
                                     and by_files["max_probability_difference"] <= FLOAT_TOLERANCE):
        return False, (f"classify_images on the files: top-1 agreement {by_files['top1_agreement']:.2%} (needs >= "
                       f"99.9%), largest probability difference {by_files['max_probability_difference']:.1e} "
                       f"(needs <= 1e-4)")
    if entry["quantization"] == "none":
        ok = entry["top1_agreement"] >= FLOAT_AGREEMENT and entry["max_probability_difference"] <= FLOAT_TOLERANCE
        return ok, (f"top-1 agreement {entry['top1_agreement']:.2%} (needs >= 99.9%), largest probability "
                    f"difference {entry['max_probability_difference']:.1e} (needs <= 1e-4)")
    if "accuracy_keras" not in entry:
        return True, ""
    drop = 100 * (entry["accuracy_keras"] - entry["accuracy_export"])
    return drop <= allow_drop, f"accuracy fell {drop:.2f} points (allowed: {allow_drop})"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m transferlab.export", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a run folder, a run id, or latest")
    parser.add_argument("--format", required=True, choices=FORMATS, help="saved_model, tflite or onnx")
    parser.add_argument("--quantize", default="none", choices=QUANTIZATIONS,
                        help="tflite only: none, float16, dynamic (int8 weights) or int8 (weights and activations)")
    parser.add_argument("--images", help="a folder of <class>/ folders to check on (default: the run's validation "
                                         "images, for a run that read an image folder)")
    parser.add_argument("--allow_accuracy_drop", type=float, default=2.0,
                        help="points of accuracy a quantized export may lose (default 2)")
    parser.add_argument("--results_dir", default="results", help="where run ids and latest are looked up")
    parser.add_argument("--experiment", help="with latest: the experiment")
    args = parser.parse_args(argv)
    process.install()
    check(args.format == "tflite" or args.quantize == "none", f"--quantize={args.quantize} is for --format=tflite")
    folder = predict.find_run(args.run, args.results_dir, args.experiment)
    with open(os.path.join(folder, files.RECORD), encoding="utf-8") as f:
        record = json.load(f)
    paths, labels = sample(*run_images(folder, record, args.images), CHECK_IMAGES)
    check(paths, f"no images to check the export on in {args.images or record['data'].get('source')}")
    calibration = []
    if args.quantize == "int8":
        calibration = sample(*run_images(folder, record, args.images, split="train"), CALIBRATION_IMAGES)[0]
    model = keras.saving.load_model(os.path.join(folder, files.MODEL), compile=False, safe_mode=True)
    pixels = record.get("model", {}).get("input", {}).get("pixels")
    if pixels != images.CONTRACT:
        print(f"warning: this run decoded its images before the pixel contract {images.CONTRACT!r} (its record: "
              f"{pixels!r}); clients that follow the contract may lose accuracy: train it again to fix that")
    out = os.path.join(folder, "export")
    os.makedirs(out, exist_ok=True)
    name = {"saved_model": "saved_model", "onnx": "model.onnx",
            "tflite": "model.tflite" if args.quantize == "none" else f"model-{args.quantize}.tflite"}[args.format]
    path = os.path.join(out, name)
    print(f"exporting {folder} as {args.format}" + (f" ({args.quantize})" if args.quantize != "none" else "")
          + f", then checking it on {len(paths)} images ...", flush=True)
    if args.format == "tflite":
        with open(os.path.join(folder, files.LABELS), encoding="utf-8") as f:
            info = describe(record, f.read().splitlines(), model)
        exported = export_tflite(model, path, calibration, args.quantize, info)
        shutil.copyfile(os.path.join(folder, files.LABELS), os.path.join(out, files.LABELS))
    elif args.format == "saved_model":
        shutil.rmtree(path, ignore_errors=True)
        exported, classify = export_saved_model(model, path)
    else:
        exported = export_onnx(model, path)
    size = (sum(os.path.getsize(os.path.join(r, n)) for r, _, names in os.walk(path) for n in names)
            if os.path.isdir(path) else os.path.getsize(path))
    entry = {"file": name, "format": args.format, "quantization": args.quantize, "bytes": size,
             "sha256": None if os.path.isdir(path) else files.sha256(path), **compare(model, exported, paths, labels)}
    if args.format == "saved_model":
        entry["classify_images"] = compare_files(model, classify, paths)
    ok, why = passed(entry, args.allow_accuracy_drop)
    if args.format == "tflite":
        entry["metadata"], problems = check_metadata(path, info)
        if problems:
            ok, why = False, "its metadata: " + "; ".join(problems)
    entry["passed"] = ok
    if not ok:
        stem, ext = os.path.splitext(name)
        failed = f"{stem}.failed-check{ext}"
        shutil.rmtree(os.path.join(out, failed), ignore_errors=True)
        os.replace(path, os.path.join(out, failed))
        entry["file"] = failed
    index = os.path.join(out, "export.json")
    entries = {}
    if os.path.exists(index):
        with open(index, encoding="utf-8") as f:
            entries = json.load(f)
    entries[name] = entry
    files.write_json(index, entries)
    with open(os.path.join(folder, files.LABELS), encoding="utf-8") as f:
        card = model_card.write(folder, record, f.read().splitlines(), entries)
    shown = {k: v for k, v in entry.items() if k not in ("sha256",)}
    print("\n".join(f"   {k}: {v}" for k, v in shown.items()))
    if not ok:
        print(f"error: the export failed its check ({why}); kept as {os.path.join(out, entry['file'])}")
        process.exit_now(1)
    print(f"export: {path} (checked; export.json and the model card {os.path.basename(card)} beside it)")


if __name__ == "__main__":
    process.command(main)
