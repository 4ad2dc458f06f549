"""What a run leaves for use: model.keras and labels.txt, loadable without transferlab, and
`python -m transferlab.predict` reproducing the run's own numbers on its own images."""

import json
import os
import subprocess
import sys

import transferlab.runtime  # noqa: F401 (quiet TensorFlow start)

import keras
import numpy as np
import pytest

from transferlab import pipelines


def predict(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "transferlab.predict", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


def test_the_model_loads_in_a_process_that_cannot_import_transferlab(trained_run):
    folder, record, _, _ = trained_run
    code = ("import sys; sys.modules['transferlab'] = None\n"  # any import of transferlab now fails
            "import keras\n"
            f"model = keras.saving.load_model({os.path.join(folder, 'model.keras')!r})\n"
            "print(model.input_shape, model.input.dtype, model.output_shape)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "(None, 32, 32, 3) uint8 (None, 2)"
    assert open(os.path.join(folder, "labels.txt")).read() == "class_a\nclass_b\n"
    assert record["model"]["phase"] == "transfer" and record["model"]["input"] == {
        "shape": [32, 32, 3], "dtype": "uint8", "pixels": "pixels-2: jpeg islow, bilinear stretch on pixel centres"}


def test_predict_reproduces_the_runs_validation_accuracy_and_the_models_probabilities(trained_run):
    folder, record, photos, _ = trained_run
    result = predict(folder, photos / "validation", "--format=json", "--top_k=2")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(result.stdout)
    assert len(rows) == record["final"]["images"] == 10
    right = sum(row["top"][0]["label"] == os.path.basename(os.path.dirname(row["path"])) for row in rows)
    assert right / len(rows) == pytest.approx(record["final"]["accuracy"])  # to the last image
    # The same files, decoded as the run did, through the loaded model: the same probabilities.
    model = keras.saving.load_model(os.path.join(folder, "model.keras"))
    x, kept, failed = pipelines.decode([row["path"] for row in rows], (32, 32))
    assert failed == [] and len(kept) == 10
    expected = model.predict(x, verbose=0)
    labels = ["class_a", "class_b"]
    got = np.array([[next(t["probability"] for t in row["top"] if t["label"] == label) for label in labels]
                    for row in rows])
    assert np.abs(got - expected).max() < 1e-5


def test_an_undecodable_file_is_skipped_and_listed_and_the_rest_classified(trained_run):
    folder, _, photos, results = trained_run
    # train/ holds a corrupt JPEG, a truncated PNG, an empty file and a text file among 20 good images
    result = predict("latest", photos / "train", "--format=csv", f"--results_dir={results}")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "path,label_1,probability_1,label_2,probability_2" and len(lines) == 1 + 20
    assert "skipped 4 files: " in result.stderr and "corrupt.jpg (cannot be decoded)" in result.stderr
    assert "notes.txt (not an image file)" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["/nonexistent/run", "x.jpg"], "error: no run '/nonexistent/run' with a model.keras"),
    (["RUN", "/nonexistent.jpg"], "error: /nonexistent.jpg: no such file or folder"),
    (["RUN", "NOTES"], "error: no image classified: 0 image files found in"),
    (["RUN", "BROKEN"], "error: no image classified: 1 image files found in"),
])
def test_bad_input_is_one_line_and_exit_code_2(trained_run, tmp_path, args, message):
    folder, _, photos, _ = trained_run
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    swap = {"RUN": folder, "NOTES": notes, "BROKEN": photos / "train" / "class_a" / "corrupt.jpg"}
    result = predict(*[swap.get(a, a) for a in args])
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith(message), result.stderr
