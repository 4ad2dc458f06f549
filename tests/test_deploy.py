"""Deploying a model: one pixel contract for the pipelines and every client, the class names inside each .tflite,
the model card beside the exports, and the clients themselves (MediaPipe's ImageClassifier, a Pillow client)."""

import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile

import transferlab.runtime  # noqa: F401 (quiet TensorFlow start)

import numpy as np
import pytest
import tensorflow as tf
from conftest import check_export_entry
from PIL import Image

from transferlab import images, model_card, tflite_metadata

HAVE_MEDIAPIPE = importlib.util.find_spec("mediapipe") is not None
HAVE_ONNX = all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "tf2onnx"))


def jpeg(path, size=(37, 53), seed=0):
    """A JPEG of smooth colour and noise, as a camera's: its IDCT rounding shows."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size[0], 0:size[1]]
    pixels = np.stack([x * 4, y * 6, (x + y) * 3], -1) % 256 + rng.integers(0, 40, (*size, 3))
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path, quality=75)
    return path


def test_jpegs_decode_to_pillows_pixels_not_tensorflows_fast_idct(tmp_path):
    path = str(jpeg(tmp_path / "photo.jpg"))
    ours = images.decode(tf.io.read_file(path), 3).numpy()
    pillow = np.asarray(Image.open(path).convert("RGB"))
    assert ours.shape == (37, 53, 3) and np.array_equal(ours, pillow)
    fast = tf.io.decode_jpeg(tf.io.read_file(path), channels=3).numpy()  # TensorFlow's default: what we left
    assert np.abs(fast.astype(int) - pillow).max() >= 1


def test_the_resize_samples_on_pixel_centres_with_edges_repeated_and_no_antialiasing():
    x = tf.constant(np.arange(16, dtype=np.uint8).reshape(4, 4, 1) * 10)
    # Output pixel i reads (i + 0.5) * 2 - 0.5 = 0.5, 2.5: halfway between two rows and two columns.
    assert images.resize(x, (2, 2)).numpy()[..., 0].tolist() == [[25, 45], [105, 125]]
    row = tf.constant(np.array([[[0], [90]]], np.uint8))  # one row, two pixels, stretched to three
    # Columns read -1/6 (the edge repeated), 1/2 and 7/6 (the edge repeated).
    assert images.resize(row, (1, 3)).numpy()[0, :, 0].tolist() == [0, 45, 90]
    batch = images.resize(tf.stack([x, x]), (2, 2))
    assert batch.shape == (2, 2, 2, 1) and batch.dtype == tf.uint8


def test_the_pixel_contract_is_in_the_cache_keys_of_decoded_images(tmp_path, monkeypatch):
    files = images.Files([jpeg(tmp_path / "a.jpg")], (8, 8))
    before = files.digest()
    monkeypatch.setattr(images, "CONTRACT", "pixels-other")
    assert files.digest() != before


@pytest.mark.parametrize("size", [(17, 17), (32, 32), (224, 160)])
def test_the_model_cards_pillow_client_makes_the_pipelines_pixels(tmp_path, size):
    # What the card tells a client to run gives the pixels the model was trained on, exactly: shrinking,
    # stretching, JPEG and PNG, grey and palette files.
    paths = [jpeg(tmp_path / "a.jpg", (300, 410)), jpeg(tmp_path / "b.jpg", (12, 9), seed=1)]
    Image.open(paths[0]).convert("L").save(tmp_path / "c.png")
    Image.open(paths[1]).convert("P").save(tmp_path / "d.png")
    paths += [tmp_path / "c.png", tmp_path / "d.png"]
    scope = {}
    exec(model_card.PIXELS.format(height=size[0], width=size[1], mode="RGB", channels=3), scope)
    for path in paths:
        theirs = scope["pixels"](str(path), size)
        assert theirs.flags["C_CONTIGUOUS"] and theirs.shape == (*size, 3)  # as MediaPipe's mp.Image reads memory
        assert np.array_equal(theirs, images.decode_file(str(path), size, 3).numpy()), path


def tiny_tflite():
    import keras

    inputs = keras.Input((8, 8, 3), dtype="uint8", batch_size=1)
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(x))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def description(**changes):
    info = dict(name="tiny classifier", description="for a test", version="run-1", author="transferlab",
                license=None, labels=["ant", "bee", "cat"], size=(8, 8), channels=3,
                input_description="an RGB image", output_description="probabilities")
    return tflite_metadata.Description(**{**info, **changes})


def test_metadata_goes_into_a_tflite_and_reads_back_without_changing_what_it_computes():
    from ai_edge_litert.interpreter import Interpreter

    plain = tiny_tflite()
    assert tflite_metadata.read(plain) is None
    with_metadata = tflite_metadata.attach(plain, description())
    found = tflite_metadata.read(with_metadata)
    assert found["files"] == {"labels.txt": b"ant\nbee\ncat\n"}
    assert {k: found[k] for k in ("name", "version", "author", "license", "min_parser_version")} == {
        "name": "tiny classifier", "version": "run-1", "author": "transferlab", "license": None,
        "min_parser_version": "1.0.0"}
    assert found["input"] == [{"name": "image", "description": "an RGB image", "color_space": "RGB",
                               "default_size": [8, 8], "range": [[0.0], [255.0]], "associated_files": []}]
    assert found["output"][0]["associated_files"] == [{"name": "labels.txt", "type": 2}]  # TENSOR_AXIS_LABELS

    x = np.random.default_rng(0).integers(0, 256, (1, 8, 8, 3), dtype=np.uint8)

    def run(model):
        interpreter = Interpreter(model_content=model)
        interpreter.allocate_tensors()
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
        interpreter.invoke()
        return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    assert np.array_equal(run(plain), run(with_metadata))

    again = tflite_metadata.attach(with_metadata[:len(with_metadata)], description(labels=["a", "b", "c"]))
    with zipfile.ZipFile(io.BytesIO(again)) as archive:  # replaced, not added: one metadata, one labels file
        assert archive.namelist() == ["labels.txt"] and archive.read("labels.txt") == b"a\nb\nc\n"
    from ai_edge_litert import schema_py_generated as schema
    root = schema.Model.GetRootAs(again, 0)
    assert [root.Metadata(i).Name() for i in range(root.MetadataLength())].count(b"TFLITE_METADATA") == 1


@pytest.mark.skipif(not HAVE_MEDIAPIPE, reason="mediapipe (requirements-clients.txt) is not installed")
def test_mediapipes_own_schema_reads_our_metadata():
    # An independent reader: the metadata schema's generated code that ships inside mediapipe's wheel.
    from mediapipe.tasks.metadata import metadata_schema_py_generated as ours_checked

    found = tflite_metadata.attach(tiny_tflite(), description())
    from ai_edge_litert import schema_py_generated as schema
    root = schema.Model.GetRootAs(found, 0)
    (index,) = [root.Metadata(i).Buffer() for i in range(root.MetadataLength())
                if root.Metadata(i).Name() == b"TFLITE_METADATA"]
    meta = ours_checked.ModelMetadataT.InitFromPackedBuf(root.Buffers(index).DataAsNumpy().tobytes(), 0)
    subgraph = meta.subgraphMetadata[0]
    image = subgraph.inputTensorMetadata[0].content
    assert meta.name == b"tiny classifier" and meta.minParserVersion == b"1.0.0"
    assert image.contentPropertiesType == ours_checked.ContentProperties.ImageProperties
    assert image.contentProperties.colorSpace == ours_checked.ColorSpaceType.RGB
    assert (image.contentProperties.defaultSize.width, image.contentProperties.defaultSize.height) == (8, 8)
    (labels,) = subgraph.outputTensorMetadata[0].associatedFiles
    assert labels.name == b"labels.txt" and labels.type == ours_checked.AssociatedFileType.TENSOR_AXIS_LABELS


def export(*args):
    return subprocess.run([sys.executable, "-m", "transferlab.export", *map(str, args)], capture_output=True,
                          text=True, timeout=600)


# The tests of the exported run share one worker, so the exports (about a minute) are made once.
ONE_EXPORT = pytest.mark.xdist_group("exported_run")


@pytest.fixture(scope="module")
def exported_run(trained_run, tmp_path_factory):
    """A copy of the tiny run, exported as a SavedModel, float and int8 .tflite files (and ONNX, when its packages
    are here)."""
    folder = tmp_path_factory.mktemp("deploy") / "run"
    shutil.copytree(trained_run[0], folder, ignore=shutil.ignore_patterns("export"))
    onnx = [["--format=onnx"]] if HAVE_ONNX else []
    for args in (["--format=saved_model"], ["--format=tflite"], ["--format=tflite", "--quantize=int8"], *onnx):
        result = export(folder, *args)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return str(folder), trained_run[1], trained_run[2]


@ONE_EXPORT
def test_each_export_round_trips_and_is_checked_against_the_keras_model(exported_run):
    folder, record, _ = exported_run
    with open(os.path.join(folder, "export", "export.json")) as f:
        entries = json.load(f)
    cases = [("saved_model", "none", "saved_model"), ("tflite", "none", "model.tflite"),
             ("tflite", "int8", "model-int8.tflite")]
    for fmt, quantize, name in cases + ([("onnx", "none", "model.onnx")] if HAVE_ONNX else []):
        check_export_entry(entries[name], record, os.path.join(folder, "export"), fmt, quantize, name)
    assert sorted(entries) == sorted([name for _, _, name in cases] + (["model.onnx"] if HAVE_ONNX else []))
    # The SavedModel's second endpoint on the files' own bytes (PNG and JPEG, of other sizes than the model's
    # 32 px), decoded and resized inside as the run's pipeline did: the same answers.
    by_files = entries["saved_model"]["classify_images"]
    assert by_files["images"] == 10 and by_files["top1_agreement"] == 1.0
    assert by_files["max_probability_difference"] < 1e-6
    # Its signatures' inputs as TensorFlow Serving sees them: the default one named as Keras's model.export names
    # it (a client of the old export still fits); the bytes with "_bytes", which Serving's REST API takes as base64.
    import tensorflow as tf

    signatures = tf.saved_model.load(os.path.join(folder, "export", "saved_model")).signatures
    assert {name: list(f.structured_input_signature[1]) for name, f in signatures.items()} == {
        "serving_default": ["image"], "serve": ["image"], "classify_images": ["image_bytes"]}


@ONE_EXPORT
def test_every_tflite_export_names_its_classes_and_the_check_read_them_back(exported_run):
    folder, record, _ = exported_run
    with open(os.path.join(folder, "export", "export.json")) as f:
        entries = json.load(f)
    for name in ("model.tflite", "model-int8.tflite"):
        with open(os.path.join(folder, "export", name), "rb") as f:
            found = tflite_metadata.read(f.read())
        assert found["files"]["labels.txt"] == b"class_a\nclass_b\n"
        assert found["version"] == record["run_id"] and found["input"][0]["default_size"] == [32, 32]
        assert images.CONTRACT in found["input"][0]["description"]
        assert entries[name]["metadata"] == {"present": True, "name": found["name"], "version": record["run_id"],
                                             "labels": 2, "input": "RGB", "input_size": [32, 32]}


@ONE_EXPORT
def test_the_model_card_says_what_the_model_is_how_well_it_does_and_how_to_run_each_file(exported_run):
    folder, record, _ = exported_run
    card = open(os.path.join(folder, "export", "README.md")).read()
    front = card.split("---\n")[1]
    assert "pipeline_tag: image-classification" in front and "library_name: keras" in front
    assert f"      value: {round(record['final']['accuracy'], 6)}\n" in front
    for label, scores in record["final"]["per_class"].items():
        assert re.search(rf"\| \d \| {label} \| \d+ \| {scores['precision']:.3f} \| {scores['recall']:.3f} \| "
                         rf"{scores['f1']:.3f} \| {scores['support']} \|", card), label
    assert "| `model.tflite` | tflite |" in card and "| `model-int8.tflite` | tflite, int8 |" in card
    assert "### LiteRT" in card and "### MediaPipe" in card and "### Keras" in card
    assert ("### ONNX Runtime" in card) == HAVE_ONNX == ("| `model.onnx` | onnx |" in card)
    assert "## What it is not for" in card and "**Warning**" not in card
    assert record["data"]["sha256"] in card and record["environment"]["command"] in card


@ONE_EXPORT
def test_exporting_a_run_from_before_the_contract_warns_and_says_so_in_the_card(exported_run, tmp_path):
    folder = tmp_path / "old"
    shutil.copytree(exported_run[0], folder, ignore=shutil.ignore_patterns("export"))
    record = json.loads((folder / "record.json").read_text())
    del record["model"]["input"]["pixels"]
    (folder / "record.json").write_text(json.dumps(record))
    result = export(folder, "--format=tflite")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "warning: this run decoded its images before the pixel contract" in result.stdout
    card = (folder / "export" / "README.md").read_text()
    assert "**Warning**: this run decoded its images before this contract" in card


@pytest.mark.skipif(not HAVE_MEDIAPIPE, reason="mediapipe (requirements-clients.txt) is not installed")
@ONE_EXPORT
def test_mediapipe_and_the_cards_pillow_client_give_predicts_answers_with_the_class_names(exported_run):
    folder, _, photos = exported_run
    result = subprocess.run([sys.executable, "-m", "bench.clients", folder, f"--out={folder}/clients.json"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    clients = json.load(open(f"{folder}/clients.json"))["clients"]
    assert clients["Pillow, the model card's pixels"]["agreement_with_predict"] == 1.0
    for name in ("model.tflite", "model-int8.tflite"):
        for how in ("its own decoding", "the card's pixels"):
            mediapipe = clients[f"MediaPipe, {how}, {name}"]
            assert mediapipe["names_classes"] is True and mediapipe["images"] == 10
    # Given the contract's pixels, MediaPipe's float file answers as predict does on every photo.
    exact = clients["MediaPipe, the card's pixels, model.tflite"]
    assert exact["agreement_with_predict"] == 1.0 and exact["max_probability_difference"] < 1e-5


@ONE_EXPORT
def test_every_usage_block_of_the_model_card_runs_as_written_and_answers_as_predict(exported_run):
    folder, _, photos = exported_run
    out = os.path.join(folder, "export")
    photo = sorted((photos / "validation" / "class_b").glob("*.jpg"))[0]
    shutil.copyfile(photo, os.path.join(out, "photo.jpg"))
    result = subprocess.run([sys.executable, "-m", "transferlab.predict", folder, str(photo), "--format=json"],
                            capture_output=True, text=True, timeout=300)
    expected = {t["label"]: t["probability"] for t in json.loads(result.stdout)[0]["top"]}
    card = open(os.path.join(out, "README.md")).read()
    pixels = next(code for code in re.findall(r"```python\n(.*?)```", card, re.S) if "def pixels(" in code)
    usages = dict(re.findall(r"### (.+?)\n\n```python\n(.*?)```", card, re.S))
    assert {"Keras", "TensorFlow SavedModel", "LiteRT", "MediaPipe"} <= set(usages)
    for title, code in usages.items():
        if title == "MediaPipe" and not HAVE_MEDIAPIPE:
            continue
        report = ("" if title == "MediaPipe" else
                  "\nimport json\nlabels = open('labels.txt').read().splitlines()\n"
                  "print(json.dumps(dict(zip(labels, map(float, probabilities)))))")
        result = subprocess.run([sys.executable, "-c", pixels + code + report], cwd=out, capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, (title, result.stderr[-2000:])
        last = result.stdout.strip().splitlines()[-1]
        if title == "MediaPipe":  # [(name, score), ...], best first, with the class names from the file
            assert last.startswith(f"[('{max(expected, key=expected.get)}', ") and "class_a" in last, last
        else:
            got = json.loads(last)
            assert max(abs(got[label] - expected[label]) for label in expected) < 1e-4, (title, got, expected)
