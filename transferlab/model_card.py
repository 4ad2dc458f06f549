"""The model card of an export: RUN/export/README.md, in the Hugging Face model-card convention (YAML front
matter, then prose), rewritten by every `python -m transferlab.export` from the run's record, its labels and
export/export.json. It says what the model tells apart and how well, what it was trained on, the pixels it
expects (images.CONTRACT) and how to produce them, each exported file with its check, how to load each with
its runtime, and what the model is not for.
"""

import json
import os

from transferlab import files, images
from transferlab.report import percent

CARD = "README.md"

# A client of any kind, in the card as code: the pixels the model expects, from PIL and numpy alone.
# bench/clients.py runs this block as written, against predict.
PIXELS = '''import numpy as np
from PIL import Image


def pixels(path, size=({height}, {width})):
    """The pixel contract: the file decoded by Pillow (libjpeg's accurate integer IDCT for JPEGs), {mode},
    the whole image stretched to `size` with bilinear sampling on pixel centres (output pixel i reads input
    coordinate (i + 0.5) * in / out - 0.5, edges repeated, no antialiasing), rounded to uint8."""
    image = np.asarray(Image.open(path).convert("{mode}"), np.float32)
    image = image.reshape(*image.shape[:2], -1)  # (h, w, channels)
    (h, w), (height, width) = image.shape[:2], size
    # float32 arithmetic, as TensorFlow's: the same pixels to the last level
    y = (np.arange(height, dtype=np.float32) + np.float32(0.5)) * (np.float32(h) / np.float32(height)) - np.float32(0.5)
    x = (np.arange(width, dtype=np.float32) + np.float32(0.5)) * (np.float32(w) / np.float32(width)) - np.float32(0.5)
    dy, dx = (y - np.floor(y))[:, None, None], (x - np.floor(x))[None, :, None]
    y0, x0 = np.clip(np.floor(y), 0, h - 1).astype(int), np.clip(np.floor(x), 0, w - 1).astype(int)
    y1, x1 = np.clip(np.floor(y) + 1, 0, h - 1).astype(int), np.clip(np.floor(x) + 1, 0, w - 1).astype(int)
    top = image[y0][:, x0] + (image[y0][:, x1] - image[y0][:, x0]) * dx
    bottom = image[y1][:, x0] + (image[y1][:, x1] - image[y1][:, x0]) * dx
    # C order: MediaPipe's mp.Image reads the array's memory as rows of pixels, whatever its strides say
    return np.ascontiguousarray(np.round(top + (bottom - top) * dy).clip(0, 255).astype(np.uint8))
'''

USAGE = {
    "keras": '''import keras

model = keras.saving.load_model("../model.keras", safe_mode=True)
probabilities = model.predict(pixels("photo.jpg")[None])[0]''',
    "saved_model": '''import tensorflow as tf

model = tf.saved_model.load("saved_model")
probabilities = model.serve(tf.constant(pixels("photo.jpg")[None])).numpy()[0]
# Or the file's own bytes, any size: decoded and resized inside, by the contract (TensorFlow Serving's way).
with open("photo.jpg", "rb") as f:
    probabilities = model.classify_images(tf.constant([f.read()])).numpy()[0]''',
    "tflite": '''from ai_edge_litert.interpreter import Interpreter  # pip install ai-edge-litert

interpreter = Interpreter(model_path="{file}")
interpreter.allocate_tensors()
image, output = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
interpreter.set_tensor(image["index"], pixels("photo.jpg")[None])
interpreter.invoke()
probabilities = interpreter.get_tensor(output["index"])[0]''',
    "mediapipe": '''import mediapipe as mp  # pip install mediapipe; it reads the class names from the file
from mediapipe.tasks.python import BaseOptions, vision

options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path="{file}"), max_results=3)
classifier = vision.ImageClassifier.create_from_options(options)
# The contract's pixels, at the model's size: MediaPipe's own resize (at other sampling points) then does nothing.
image = mp.Image(image_format=mp.ImageFormat.SRGB, data=pixels("photo.jpg"))
result = classifier.classify(image)
print([(c.category_name, round(c.score, 4)) for c in result.classifications[0].categories])''',
    "onnx": '''import onnxruntime  # pip install onnxruntime

session = onnxruntime.InferenceSession("{file}", providers=["CPUExecutionProvider"])
probabilities = session.run(None, {{session.get_inputs()[0].name: pixels("photo.jpg")[None]}})[0][0]''',
}


def _yaml(value):
    return json.dumps(value)  # a JSON scalar or list is a YAML one


def _megabytes(count):
    return f"{count / 1e6:.1f} MB"


def write(folder, record, labels, entries):
    """Write RUN/export/README.md (atomically) for the run in `folder`; returns its path."""
    data, final, backbone = record.get("data", {}), record.get("final", {}), record.get("backbone", {})
    model_input = record.get("model", {}).get("input", {})
    height, width, channels = (model_input.get("shape") or [None, None, 3])[:3]
    mode = "RGB" if channels == 3 else "L"
    source = os.path.basename(os.path.normpath(data.get("source") or record["experiment"]))
    name = f"{source} classifier ({backbone.get('backbone') or record['experiment']})"
    command = record.get("environment", {}).get("command", "")
    commit = record.get("environment", {}).get("git_commit")
    split, accuracy = final.get("split", "validation"), final.get("accuracy")
    front = ["---", "library_name: keras", "pipeline_tag: image-classification",
             f"tags: {_yaml(['image-classification', 'transfer-learning', 'transferlab', 'tflite'])}"]
    if backbone.get("backbone"):
        front.append(f"base_model_architecture: {_yaml(backbone['backbone'])}")
    if accuracy is not None:
        front += ["model-index:", f"- name: {_yaml(name)}", "  results:", "  - task:",
                  "      type: image-classification", "    dataset:", f"      name: {_yaml(source)}",
                  "      type: imagefolder", f"      split: {_yaml(split)}", "    metrics:", "    - type: accuracy",
                  f"      value: {round(accuracy, 6)}", f"      name: {_yaml(f'{split} accuracy')}"]
    front.append("---")

    lines = front + ["", f"# {name}", "",
                     f"{backbone.get('backbone') or 'A network'} transferred to tell apart {len(labels)} classes of "
                     f"`{source}`" + (f": {percent(accuracy)} of {final['images']} {split} images right" if accuracy
                                       is not None else "") + ". "
                     f"Made by transferlab's `{record['experiment']}` experiment, run `{record['run_id']}` "
                     f"(commit `{commit}`), with:", "", f"    {command}", ""]

    lines += ["## Classes", "", "The output is one probability per class, in this order (`labels.txt`, also inside "
              "each `.tflite`). Precision, recall and F1 on the " + split + " images:", "",
              "| index | class | training images | precision | recall | F1 | " + split + " images |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    per_class, trained = final.get("per_class", {}), data.get("train_per_class") or [None] * len(labels)
    for index, label in enumerate(labels):
        scores = per_class.get(label, {})
        cells = [scores.get(key) for key in ("precision", "recall", "f1")]
        lines.append(f"| {index} | {label} | {trained[index] if index < len(trained) else ''} | "
                     + " | ".join("" if c is None else f"{c:.3f}" for c in cells) + f" | {scores.get('support', '')} |")

    samples = data.get("samples", {})
    lines += ["", "## Data", "",
              f"- Source: `{data.get('source', record['experiment'])}`" + (f", {data['layout']}" if "layout" in data
                                                                         else ""),
              f"- sha256 of its file list: `{data.get('sha256')}`",
              "- Images: " + ", ".join(f"{count} {split_name}" for split_name, count in samples.items())
              + (f"; {data['skipped_count']} files skipped (not decodable)" if data.get("skipped_count") else ""),
              f"- Validation: {data.get('validation', 'as the experiment defines it')}",
              f"- Backbone weights: `{os.path.basename(str(backbone.get('weights')))}` (sha256 "
              f"`{backbone.get('weights_sha256')}`)" if backbone else "- Backbone: the experiment's own network"]

    contract = model_input.get("pixels")
    lines += ["", "## The pixels it expects", "",
              f"A {height}x{width} {'RGB' if channels == 3 else 'grayscale'} image, uint8 0-255: every exported "
              "file takes these raw pixels and does its own scaling inside. The model was trained, validated and "
              "checked on pixels made this way, so a client that makes the same pixels gets the same answers:", "",
              "- JPEGs decoded with libjpeg's accurate integer IDCT: what Pillow, OpenCV, Android and iOS give "
              "(TensorFlow's `decode_jpeg` only with `dct_method=\"INTEGER_ACCURATE\"`; its default differs).",
              "- The whole image stretched to the model's size, never cropped, with bilinear sampling on pixel "
              "centres: output pixel i reads input coordinate (i + 0.5) x in / out - 0.5, edges repeated, no "
              "antialiasing. This is `tf.image.resize`'s default and OpenCV's `cv2.resize(..., INTER_LINEAR)`. "
              "Pillow's `resize(..., BILINEAR)` is not it (it antialiases when shrinking), nor MediaPipe's own "
              "resize (it samples at i x in / out, up to half an input pixel off): give those the pixels below.",
              "- Rounded to uint8.", ""]
    if channels == 1:
        lines += ["Grayscale: each decoder converts colour files its own way (libjpeg with ITU-R 601 weights, libpng "
                  "with Rec. 709 ones), so Pillow's `convert(\"L\")` below can differ from the training pixels by a "
                  "few levels on colour files; grayscale files decode the same.", ""]
    if contract != images.CONTRACT:
        lines += [f"**Warning**: this run decoded its images before this contract (its record says "
                  f"{contract!r}); clients that follow it may lose accuracy. Train it again to fix that.", ""]
    lines += ["In Python with Pillow and numpy (the block `bench/clients.py` runs against predict):", "", "```python",
              PIXELS.format(height=height, width=width, mode=mode, channels=channels).rstrip(), "```", ""]

    lines += ["## Files", "", "Each was checked against the Keras model on the run's " + split + " images before "
              "it was kept (`export.json`):", "",
              "| file | format | size | top-1 agreement with Keras | accuracy (Keras / file) | ms an image, batch 1 | "
              "check |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for entry in entries.values():
        kind = entry["format"] + ("" if entry["quantization"] == "none" else f", {entry['quantization']}")
        lines.append(f"| `{entry['file']}` | {kind} | {_megabytes(entry['bytes'])} | "
                     f"{percent(entry['top1_agreement'])} of {entry['images']} | "
                     f"{percent(entry.get('accuracy_keras'))} / {percent(entry.get('accuracy_export'))} | "
                     f"{entry['ms_per_image_export_batch1']} | {'passed' if entry['passed'] else 'FAILED'} |")
    lines += ["", "`model.keras` (one folder up) is the model these were made from.", ""]

    lines += ["## How to use it", "", "With `pixels` from above and the files in this folder:", ""]
    kinds = {entry["format"]: entry["file"] for entry in entries.values() if entry["passed"]}
    sections = [("Keras", "keras", "../model.keras")]
    if "saved_model" in kinds:
        sections.append(("TensorFlow SavedModel", "saved_model", kinds["saved_model"]))
    tflite = [entry["file"] for entry in entries.values() if entry["format"] == "tflite" and entry["passed"]]
    if tflite:
        sections += [("LiteRT", "tflite", tflite[0]), ("MediaPipe", "mediapipe", tflite[0])]
    if "onnx" in kinds:
        sections.append(("ONNX Runtime", "onnx", kinds["onnx"]))
    for title, key, file in sections:
        lines += [f"### {title}", "", "```python", USAGE[key].format(file=file), "```", ""]
    lines += ["The class of `probabilities` is `labels[probabilities.argmax()]`, with `labels = "
              "open(\"labels.txt\").read().splitlines()`.", ""]

    lines += ["## What it is not for", "",
              f"- Anything but these {len(labels)} classes: it gives every image one of them, with a probability "
              "that can be high for a photo of something it never saw. It has no \"none of these\".",
              f"- Images unlike its training ones ({source}): other cameras, lighting, framing or subjects can lower "
              "its accuracy without any sign in its output. Measure it on your own images first: "
              "`python -m transferlab.export RUN --format=tflite --images=FOLDER` checks a file on a folder of "
              "<class>/ folders.",
              f"- Decisions that matter about people: nothing here was measured for fairness or safety. The "
              f"{split} accuracy above is over {final.get('images', 'its')} images and has their noise.", ""]
    path = os.path.join(folder, "export", CARD)
    files.write_text(path, "\n".join(lines))
    return path
