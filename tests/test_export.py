"""python -m transferlab.export: each format round-trips, is checked against the Keras model, and says so in
export.json; bad input is one line."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest


def export(*args):
    return subprocess.run([sys.executable, "-m", "transferlab.export", *map(str, args)], capture_output=True,
                          text=True, timeout=600)


@pytest.mark.parametrize("fmt, quantize, name", [
    ("tflite", "none", "model.tflite"),
    ("tflite", "int8", "model-int8.tflite"),
    ("saved_model", "none", "saved_model"),
    pytest.param("onnx", "none", "model.onnx", marks=pytest.mark.skipif(
        importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("tf2onnx") is None,
        reason="the ONNX packages (requirements-onnx.txt) are not installed")),
])
def test_an_export_round_trips_and_is_checked_against_the_keras_model(trained_run, fmt, quantize, name):
    folder, record, _, _ = trained_run
    result = export(folder, f"--format={fmt}", f"--quantize={quantize}")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    out = os.path.join(folder, "export")
    with open(os.path.join(out, "export.json")) as f:
        entry = json.load(f)[name]
    assert entry["passed"] is True and entry["format"] == fmt and entry["quantization"] == quantize
    assert entry["images"] == record["final"]["images"] == 10  # the run's validation images
    assert entry["accuracy_keras"] == pytest.approx(record["final"]["accuracy"])
    for key in ("ms_per_image_keras_batch1", "ms_per_image_export_batch1", "ms_per_image_export_batch32"):
        assert entry[key] > 0
    if quantize == "none":  # a float export: the same answers
        assert entry["top1_agreement"] == 1.0 and entry["max_probability_difference"] < 1e-4
    if fmt == "tflite":
        assert open(os.path.join(out, "labels.txt")).read() == "class_a\nclass_b\n"
        assert entry["bytes"] == os.path.getsize(os.path.join(out, name))


def test_a_quantized_export_that_loses_too_much_fails_and_is_kept_under_another_name(trained_run):
    folder, _, _, _ = trained_run
    result = export(folder, "--format=tflite", "--quantize=dynamic", "--allow_accuracy_drop=-200")
    assert result.returncode == 1 and "error: the export failed its check (accuracy fell" in result.stdout
    assert os.path.exists(os.path.join(folder, "export", "model-dynamic.failed-check.tflite"))
    assert not os.path.exists(os.path.join(folder, "export", "model-dynamic.tflite"))


@pytest.mark.parametrize("args, message", [
    (["--format=saved_model", "--quantize=int8"], "error: --quantize=int8 is for --format=tflite"),
    (["--format=onnx"], "error: --format=onnx needs"),
])
def test_bad_export_requests_are_one_line_and_exit_code_2(trained_run, args, message):
    folder, _, _, _ = trained_run
    try:
        import onnxruntime  # noqa: F401
        if args == ["--format=onnx"]:
            pytest.skip("the ONNX packages are installed here")
    except ImportError:
        pass
    result = export(folder, *args)
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith(message), result.stderr
