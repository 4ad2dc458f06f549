"""What the clients an export goes to make of it, against transferlab.predict (docs/deploy.md):

    python -m bench.clients RUN [--images=FOLDER] [--out=FILE.json]

RUN is a run folder (as for predict) whose export/ holds model.tflite (and model-int8.tflite, when exported).
Over the run's validation images (or --images=FOLDER of <class>/ folders), each client classifies every image
its own way, and the table says how often its top-1 agrees with predict's and how many it gets right:
- MediaPipe's ImageClassifier on each .tflite (requirements-clients.txt), decoding and resizing the files itself,
  and given the model card's pixels (its resize then does nothing); and whether it names the classes (from the
  file's metadata);
- a Pillow client: the model card's own `pixels` block, run as written, into model.tflite with LiteRT;
- for comparison, a naive Pillow client: `Image.open(path).convert("RGB").resize(size, BILINEAR)`.
"""

import argparse
import json
import os
import re

from transferlab.runtime import quiet_stderr  # noqa: F401 (first: TensorFlow starts without its start-up noise)

import keras
import numpy as np
from PIL import Image

from transferlab import export, files, litert, model_card, predict, process
from transferlab.errors import check


def card_pixels(folder):
    """The `pixels` function of the run's model card (export/README.md), executed as written."""
    with open(os.path.join(folder, "export", model_card.CARD), encoding="utf-8") as f:
        card = f.read()
    block = next((code for code in re.findall(r"```python\n(.*?)```", card, re.S) if "def pixels(" in code), None)
    check(block is not None, f"{folder}/export/{model_card.CARD} has no pixels block")
    scope = {}
    exec(compile(block, "model card", "exec"), scope)  # noqa: S102 (our own card, written by model_card.py)
    return scope["pixels"]


def naive_pixels(path, size):
    return np.asarray(Image.open(path).convert("RGB").resize(size[::-1], Image.Resampling.BILINEAR))


def through(runner, pixels, paths, size):
    """Probabilities of `runner` (a litert.Runner) on each path's `pixels(path, size)`, a batch of 32 at a time."""
    out = []
    for start in range(0, len(paths), 32):
        out.append(runner(np.stack([pixels(path, size) for path in paths[start:start + 32]])))
    return np.concatenate(out)


def mediapipe_image(path):
    """The file as MediaPipe decodes it, in RGB (the model card's MediaPipe block: grey and RGBA files made RGB)."""
    import mediapipe as mp

    image = mp.Image.create_from_file(path)
    if image.image_format != mp.ImageFormat.SRGB:
        grey_or_rgba = image.numpy_view().reshape(image.height, image.width, -1)
        rgb = np.repeat(grey_or_rgba, 3, -1) if grey_or_rgba.shape[-1] == 1 else grey_or_rgba[..., :3]
        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))
    return image


def mediapipe_scores(model_path, paths, labels, image=mediapipe_image):
    """(probabilities, named): MediaPipe's scores for each of `paths` (made mp.Images by `image`), and whether
    every category came with a name."""
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=model_path), max_results=-1)
    scores, named = np.zeros((len(paths), len(labels)), np.float32), True
    with quiet_stderr(), vision.ImageClassifier.create_from_options(options) as classifier:
        for i, path in enumerate(paths):
            for category in classifier.classify(image(path)).classifications[0].categories:
                scores[i, category.index] = category.score
                named &= category.category_name == labels[category.index]
    return scores, named


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.clients", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a run folder with an export/ folder")
    parser.add_argument("--images", help="a folder of <class>/ folders (default: the run's validation images)")
    parser.add_argument("--out", help="also write the table as JSON here")
    args = parser.parse_args(argv)
    process.install()
    folder = predict.find_run(args.run)
    with open(os.path.join(folder, files.RECORD), encoding="utf-8") as f:
        record = json.load(f)
    with open(os.path.join(folder, files.LABELS), encoding="utf-8") as f:
        labels = f.read().splitlines()
    paths, truth = export.run_images(folder, record, args.images)
    model = keras.saving.load_model(os.path.join(folder, files.MODEL), compile=False, safe_mode=True)
    size = model.input_shape[1:3]
    run_batch, _ = litert.Inference.choose("auto").batch_function(model)
    probabilities, kept, failed = predict.classify(model, paths, run_batch=run_batch)
    check(not failed, f"{len(failed)} images do not decode")
    ours = probabilities.argmax(1)
    truth = None if truth is None else np.asarray(truth)

    rows = {}

    def row(name, theirs, **extra):
        top = theirs.argmax(1)
        rows[name] = {"images": len(paths), "agreement_with_predict": round(float(np.mean(top == ours)), 4),
                      "max_probability_difference": float(np.abs(theirs - probabilities).max()),
                      "accuracy": None if truth is None else round(float(np.mean(top == truth)), 4), **extra}
        print(f"{name:<34} agrees with predict on {rows[name]['agreement_with_predict']:.2%}"
              + ("" if truth is None else f", accuracy {rows[name]['accuracy']:.2%}")
              + "".join(f", {k} {v}" for k, v in extra.items()), flush=True)

    if truth is not None:
        print(f"predict (transferlab)              accuracy {np.mean(ours == truth):.2%} on {len(paths)} images")
    exported = os.path.join(folder, "export")
    float_file = os.path.join(exported, "model.tflite")
    check(os.path.isfile(float_file), f"{float_file} is missing: python -m transferlab.export {folder} --format=tflite")
    runner = litert.Runner(float_file)
    pixels = card_pixels(folder)
    row("Pillow, the model card's pixels", through(runner, pixels, paths, size))
    row("Pillow, resize(BILINEAR)", through(runner, lambda p, s: naive_pixels(p, s), paths, size))
    for name in ("model.tflite", "model-int8.tflite"):
        if os.path.isfile(os.path.join(exported, name)):
            import mediapipe as mp

            scores, named = mediapipe_scores(os.path.join(exported, name), paths, labels)
            row(f"MediaPipe, its own decoding, {name}", scores, names_classes=named)
            scores, named = mediapipe_scores(os.path.join(exported, name), paths, labels, lambda path: mp.Image(
                image_format=mp.ImageFormat.SRGB, data=pixels(path, size)))
            row(f"MediaPipe, the card's pixels, {name}", scores, names_classes=named)
    if args.out:
        files.write_json(args.out, {"run": folder, "clients": rows})


if __name__ == "__main__":
    main()
