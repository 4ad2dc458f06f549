"""python -m transferlab.export: an export that fails its check is kept under another name and the command
says why; bad input is one line. Each format's round trip and check: tests/test_deploy.py (its exported run)."""

import os
import subprocess
import sys

import pytest

from transferlab import export as exporting


def export(*args):
    return subprocess.run([sys.executable, "-m", "transferlab.export", *map(str, args)], capture_output=True,
                          text=True, timeout=600)


def test_a_saved_model_whose_file_endpoint_answers_otherwise_fails_its_check():
    entry = {"quantization": "none", "top1_agreement": 1.0, "max_probability_difference": 0.0,
             "classify_images": {"images": 10, "top1_agreement": 0.9, "max_probability_difference": 0.3}}
    ok, why = exporting.passed(entry, 2.0)
    assert not ok and why == ("classify_images on the files: top-1 agreement 90.00% (needs >= 99.9%), largest "
                              "probability difference 3.0e-01 (needs <= 1e-4)")
    entry["classify_images"].update(top1_agreement=1.0, max_probability_difference=0.0)
    assert exporting.passed(entry, 2.0) == (True, "top-1 agreement 100.00% (needs >= 99.9%), largest probability "
                                                  "difference 0.0e+00 (needs <= 1e-4)")


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
