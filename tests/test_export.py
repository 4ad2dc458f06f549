"""python -m transferlab.export: each format round-trips, is checked against the Keras model, and says so in
export.json; bad input is one line."""

import json
import os
import subprocess
import sys

import pytest
from conftest import check_export_entry


def export(*args):
    return subprocess.run([sys.executable, "-m", "transferlab.export", *map(str, args)], capture_output=True,
                          text=True, timeout=600)


def test_a_saved_model_export_round_trips_and_is_checked_against_the_keras_model(trained_run):
    # The .tflite (float, int8) and ONNX exports: tests/test_deploy.py, whose exported run checks them the same way.
    folder, record, _, _ = trained_run
    result = export(folder, "--format=saved_model")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    out = os.path.join(folder, "export")
    with open(os.path.join(out, "export.json")) as f:
        check_export_entry(json.load(f)["saved_model"], record, out, "saved_model", "none", "saved_model")


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
