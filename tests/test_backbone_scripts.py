"""mobilenet_transfer.py and inception_transfer.py end to end on tiny generated image folders (random or
test-saved weights, 1 epoch, small inputs), and MobileNetV2 with the real weights on a small subset of
cats vs dogs when ../shared is beside the project."""

import csv
import glob
import json
import os
import re

import keras
import numpy as np
import pytest
from conftest import SHARED, check_the_model_in_use, run_script

from transferlab import choice, images

SHARED_WEIGHTS = os.path.join(SHARED, "weights", "mobilenet_v2_1.0_224_no_top.weights.h5")
SHARED_CATS_DOGS = os.path.join(SHARED, "datasets", "cats_and_dogs_filtered")
PLOTS = {"learning_curves.png", "confusion_matrix.png", "sample_predictions.png"}


def only_record(results, experiment):
    paths = glob.glob(os.path.join(results, experiment, "*", "record.json"))
    assert len(paths) == 1, paths
    with open(paths[0]) as f:
        return json.load(f), os.path.dirname(paths[0])


def test_mobilenet_on_a_three_class_folder_runs_every_phase(image_folder_3, tmp_path, cache_dir, private_litert):
    results = tmp_path / "results"
    for i in range(4):  # class_b smaller than the others, so that balanced class weights differ
        next((image_folder_3 / "train" / "class_b").glob(f"{i}.*")).unlink()
    result = run_script("mobilenet_transfer.py", f"--data_dir={image_folder_3}", "--weights=None", "--image_size=32",
                        "--epochs=1", "--fine_tune_epochs=1", "--scratch_epochs=1", "--head=16", "--batch_size=8",
                        "--class_weight=balanced", "--run_scratch=True", f"--results_dir={results}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "warning: skipped 4 files: " in result.stdout
    assert "train/class_a/corrupt.jpg (cannot be decoded)" in result.stdout
    record, folder = only_record(results, "mobilenet")
    assert record["status"] == "complete"
    assert record["data"]["skipped_count"] == 4 and len(record["data"]["skipped_files"]) == 4
    # The training images per class, after the split by file hash: each class then weighs as much as the others.
    counts = record["data"]["train_per_class"]
    assert record["data"]["samples"] == {"train": sum(counts), "validation": 26 - sum(counts)}
    assert record["data"]["class_names"] == ["class_a", "class_b", "class_c"] and counts[1] < counts[0]
    expected = {str(c): sum(counts) / (3 * n) for c, n in enumerate(counts)}
    assert record["data"]["class_weight"] == pytest.approx(expected)
    assert record["backbone"] == {"backbone": "MobileNetV2", "input_size": 32, "weights": "random",
                                  "weights_sha256": None, "layers": 154}
    # The folder recipe filled the constants left at None; the command line's --image_size won.
    config = record["config"]
    assert config["IMAGE_SIZE"] == 32 and config["FINE_TUNE_AT"] == 0.65 and config["FINE_TUNE_BATCHNORM"] is False
    assert config["SCRATCH_EPOCHS"] == 1 and config["VALIDATION_SPLIT"] == 0.2

    phases = record["phases"]
    assert list(phases) == ["transfer", "fine_tune", "scratch"]
    for name, phase in phases.items():
        assert 0 <= phase["val_accuracy"] <= 1 and "test_accuracy" not in phase, name
        assert phase["epochs"] == 1 and phase["train_samples"] == sum(counts)
    # Transfer trains the head only: 1280*16+16 + 16*3+3 (a softmax over 3 classes).
    assert phases["transfer"]["trainable_params"] == 20_547 and phases["transfer"]["feature_cache"] == "miss"
    # The backbone's features of the training and the validation images are now on disk for the next run.
    assert len(glob.glob(str(cache_dir / "features" / "*.npy"))) == 2
    # Fine-tuning from layer 100: the frozen layers below it ran once, the rest trained on their activations.
    assert phases["fine_tune"]["feature_cache"] == "memory"
    assert phases["fine_tune"]["cached_up_to"] == "block_10_project_BN"
    # Both frozen passes ran in LiteRT (auto, on this CPU), each converted once into the cache.
    assert record["inference_runtime"] == {"setting": "auto", "chosen": "litert", "reason": "CPU only, one replica"}
    for name in ("transfer", "fine_tune"):
        assert phases[name]["inference_runtime"] == "litert" and phases[name]["litert_conversion"] == "miss", name
    assert len(glob.glob(str(cache_dir / "litert" / "*.tflite"))) == 2
    assert phases["transfer"]["trainable_params"] < phases["fine_tune"]["trainable_params"]
    assert phases["fine_tune"]["trainable_params"] < phases["scratch"]["trainable_params"]
    assert PLOTS <= set(os.listdir(folder))
    with open(os.path.join(folder, "history_fine_tune.csv")) as f:
        assert [row["epoch"] for row in csv.DictReader(f)] == ["1"]  # numbering goes on after the frozen phase
    # Each phase's validation numbers are its last epoch's (fit validated the final weights already).
    for name, phase in phases.items():
        with open(os.path.join(folder, f"history_{name}.csv")) as f:
            last = list(csv.DictReader(f))[-1]
        assert phase["val_accuracy"] == pytest.approx(float(last["val_accuracy"]), abs=1e-6), name
        assert phase["val_loss"] == pytest.approx(float(last["val_loss"]), rel=1e-5), name


def test_the_folder_recipe_measures_size_and_head_on_the_photos_once_and_the_next_run_reuses_it(
        image_folder_3, tmp_path, cache_dir):
    results = tmp_path / "results"
    common = [f"--data_dir={image_folder_3}", "--weights=None", "--epochs=2", "--head_steps=40", "--batch_size=8",
              "--head_batch_size=4", "--tensorboard=False", f"--results_dir={results}"]
    first = run_script("mobilenet_transfer.py", *common, "--seed=1")
    assert first.returncode == 0, first.stderr[-3000:]
    assert re.search(r"== choice: photos of 2\d px, below MobileNetV2's native 224: sizes measured; "
                     r"sizes 224, 160, 96 with head linear, then head 256 at the best", first.stdout)
    record, folder = only_record(results, "mobilenet")
    chosen = record["choice"]
    sizes = [t for t in chosen["tried"] if not t["head"]]
    first_best = choice.best(sizes, chosen["sample"]["images"])["image_size"]
    assert [(t["image_size"], t["head"]) for t in chosen["tried"]] == [(224, []), (160, []), (96, []),
                                                                       (first_best, [256])]
    assert chosen["cached"] is False  # the sample: every training photo of so small a folder
    assert chosen["sample"] == {"images": record["data"]["samples"]["train"], "folds": 3}
    best = choice.best(chosen["tried"], chosen["sample"]["images"])
    assert (chosen["image_size"], chosen["head"]) == (best["image_size"], best["head"])
    # The constants stay as given (None: measured); the model is the chosen one.
    assert record["config"]["IMAGE_SIZE"] is None and record["config"]["HEAD"] is None
    assert record["backbone"]["input_size"] == chosen["image_size"]
    transfer = record["phases"]["transfer"]
    assert transfer["trainable_params"] == (1280 * 3 + 3 if not chosen["head"] else 1280 * 256 + 256 + 256 * 3 + 3)
    # 40 steps at least in 2 epochs over the training features, 4 a step: enough passes an epoch for 20 steps.
    steps_per_pass = -(-transfer["train_samples"] // 4)
    assert transfer["passes_per_epoch"] == -(-20 // steps_per_pass)
    assert f"{chosen['image_size']} px, head" in first.stdout and "<- chosen" in first.stdout
    # Every size went through one LiteRT conversion of the backbone built for any size; the run shared it.
    assert transfer["litert_conversion"] == "shared"
    # The sample (every training photo here) went through that program at the chosen size: the run took its rows.
    assert transfer["features_from_choice"] == chosen["sample"]["images"]
    model = keras.saving.load_model(os.path.join(folder, "model.keras"), safe_mode=True)
    assert model.input_shape[1:3] == (chosen["image_size"], chosen["image_size"])
    # Another seed on the same photos: the choice is the cache's, the same; the run trains at that size.
    second = run_script("mobilenet_transfer.py", *common, "--seed=2")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "(measured before on these photos: the cache)" in second.stdout
    records = [json.load(open(p)) for p in glob.glob(str(results / "mobilenet" / "*" / "record.json"))]
    again = next(r for r in records if r["config"]["SEED"] == 2)
    assert again["choice"] == {**chosen, "cached": True}
    assert "features_from_choice" not in again["phases"]["transfer"]  # a cached choice keeps no features


def test_mobilenet_reuses_the_frozen_phase_of_a_run_with_the_same_constants(image_folder, tmp_path, cache_dir):
    results = tmp_path / "results"
    common = [f"--data_dir={image_folder}", "--weights=None", "--image_size=32", "--epochs=1", "--head=8",
              "--fine_tune_epochs=1", "--run_scratch=False", "--tensorboard=False", f"--results_dir={results}"]
    runs = []
    for extra in (["--fine_tune_at=100"], ["--fine_tune_at=150", "--reuse_transfer=True"],
                  ["--fine_tune_at=150", "--reuse_transfer=True", "--learning_rate=0.01"]):
        result = run_script("mobilenet_transfer.py", *common, *extra)
        assert result.returncode == 0, result.stderr[-3000:]
        runs.append(result.stdout)
    records = sorted((json.load(open(p)) for p in glob.glob(str(results / "mobilenet" / "*" / "record.json"))),
                     key=lambda r: r["run_id"])
    first, second, third = records
    # Only fine-tuning differs: the frozen phase is the first run's (its record, marked), not trained again.
    assert "reused from run" in runs[1]
    assert second["phases"]["transfer"] == {**first["phases"]["transfer"], "reused_from": first["run_id"]}
    assert second["phases"]["fine_tune"]["cached_up_to"] != first["phases"]["fine_tune"]["cached_up_to"]
    # Another frozen-phase learning rate: trained.
    assert "reused from run" not in runs[2] and "reused_from" not in third["phases"]["transfer"]


def test_mobilenet_binary_with_augmentation_fits_the_frozen_stack(image_folder, tmp_path):
    results = tmp_path / "results"
    result = run_script("mobilenet_transfer.py", f"--data_dir={image_folder}", "--weights=None", "--image_size=32",
                        "--epochs=1", "--fine_tune_epochs=0", "--run_scratch=False", "--head=16", "--augment=True",
                        f"--results_dir={results}")
    assert result.returncode == 0, result.stderr[-3000:]
    record, folder = only_record(results, "mobilenet")
    assert list(record["phases"]) == ["transfer"]
    transfer = record["phases"]["transfer"]
    assert transfer["feature_cache"] == "off"  # augmented images differ every epoch: nothing to cache
    assert transfer["trainable_params"] == 1280 * 16 + 16 + 16 + 1  # one sigmoid unit for two classes
    assert record["data"]["validation"] == "validation/ folder" and record["data"]["samples"]["validation"] == 8
    assert PLOTS <= set(os.listdir(folder))


def test_mobilenet_mnist_mode_reports_test_accuracy(mnist_dir, tmp_path):
    results = tmp_path / "results"
    result = run_script("mobilenet_transfer.py", "--dataset=mnist", f"--data_dir={mnist_dir}", "--weights=None",
                        "--epochs=1", "--fine_tune_epochs=0", "--run_scratch=False", "--head=16",
                        "--samples_per_class=20",  # of the 360 training digits: validation, test stay whole
                        f"--results_dir={results}")  # fine-tuning is the three-class test's: it costs a minute
    assert result.returncode == 0, result.stderr[-3000:]
    record, folder = only_record(results, "mobilenet")
    assert list(record["phases"]) == ["transfer"]
    config = record["config"]
    assert config["IMAGE_SIZE"] == 32 and config["FINE_TUNE_AT"] == 0 and config["FINE_TUNE_BATCHNORM"] is True
    assert record["data"]["samples"] == {"train": 200, "validation": 40, "test": 100}
    assert record["phases"]["transfer"]["train_samples"] == 200
    for phase in record["phases"].values():
        assert 0 <= phase["test_accuracy"] <= 1 and 0 <= phase["val_accuracy"] <= 1
    assert PLOTS <= set(os.listdir(folder))


@pytest.mark.parametrize("args, message", [
    (["--dataset=cifar"], "--dataset=cifar: expected one of folder, mnist"),
    (["--weights=missing.h5"], "weights file 'missing.h5' not found"),
    (["--fine_tune_at=block_99"], "has no layer 'block_99'"),
    (["--head_steps=-5"], "--head_steps must be >= 0, got -5"),
])
def test_mobilenet_bad_input_is_one_line_and_records_nothing(image_folder, tmp_path, args, message):
    results = tmp_path / "results"
    result = run_script("mobilenet_transfer.py", f"--data_dir={image_folder}", "--weights=None", "--image_size=32",
                        f"--results_dir={results}", *args)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [f"error: {result.stderr.strip()[7:]}"]
    assert message in result.stderr
    assert not results.exists()


def test_mobilenet_without_an_image_folder_says_where_to_put_one_before_loading_weights(tmp_path):
    empty = tmp_path / "photos"
    empty.mkdir()
    result = run_script("mobilenet_transfer.py", f"--data_dir={empty}", "--weights=missing.h5",
                        f"--results_dir={tmp_path / 'results'}")
    assert result.returncode == 2
    # the folder is checked first: the weights file is missing too, but the mistyped folder is what is said
    assert f"error: no image folder in {empty}: found nothing;" in result.stderr and "Traceback" not in result.stderr


def test_inception_with_random_weights_says_so_and_runs_the_published_recipe(image_folder, tmp_path):
    results = tmp_path / "results"
    # Two classes with 8 validation images: even random features get some right, so 0.01 is reached.
    result = run_script("inception_transfer.py", f"--data_dir={image_folder}", "--weights=None", "--image_size=75",
                        "--epochs=3", "--fine_tune_epochs=2", "--stop_at_val_accuracy=0.01", "--head=8",
                        "--batch_size=8", f"--results_dir={results}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "warning: --weights=None: the backbone is random" in result.stdout
    assert ("== transfer: 16 images of [class_a, class_b], InceptionV3 to mixed7 (random) frozen, up to 3 epochs\n"
            in result.stdout)
    assert "val_accuracy 0." in result.stdout and "reached 0.01: stopping after epoch 1" in result.stdout
    record, folder = only_record(results, "inception")
    assert record["backbone"]["weights"] == "random" and record["backbone"]["weights_sha256"] is None
    assert record["backbone"]["cut_layer"] == "mixed7" and record["backbone"]["input_size"] == 75
    assert record["config"]["OPTIMIZER"] == "rmsprop" and record["config"]["AUGMENT"] is True
    assert record["data"]["skipped_count"] == 4
    phases = record["phases"]
    assert list(phases) == ["transfer", "fine_tune"]
    assert phases["transfer"]["feature_cache"] == "off"  # augmentation is on: the frozen stack runs every epoch
    # The stop callback read val_accuracy and stopped each phase after its first epoch.
    for phase in phases.values():
        assert phase["epochs"] == 1 and phase["stopped_early"] is True and 0 <= phase["val_accuracy"] <= 1
    # Only the head trains in transfer: Flatten(3x3x768) -> Dense(8) -> Dense(1, sigmoid).
    assert phases["transfer"]["trainable_params"] == 6912 * 8 + 8 + 8 + 1
    assert phases["fine_tune"]["trainable_params"] > phases["transfer"]["trainable_params"]
    with open(os.path.join(folder, "history_fine_tune.csv")) as f:
        assert [row["epoch"] for row in csv.DictReader(f)] == ["1"]
    assert PLOTS <= set(os.listdir(folder))


@pytest.mark.skipif(not (os.path.isfile(SHARED_WEIGHTS) and os.path.isdir(SHARED_CATS_DOGS)),
                    reason="needs ../shared (real MobileNetV2 weights and cats vs dogs)")
def test_mobilenet_real_weights_on_a_cats_and_dogs_subset_beat_90_percent(tmp_path):
    subset = tmp_path / "cats_dogs_subset"
    for split, count in (("train", 100), ("validation", 50)):
        for animal in ("cats", "dogs"):
            folder = subset / split / animal
            folder.mkdir(parents=True)
            source = os.path.join(SHARED_CATS_DOGS, split, animal)
            for name in sorted(os.listdir(source))[:count]:
                os.symlink(os.path.join(source, name), folder / name)
    results = tmp_path / "results"
    result = run_script("mobilenet_transfer.py", f"--data_dir={subset}", f"--weights={SHARED_WEIGHTS}",
                        "--image_size=160", "--epochs=10", "--fine_tune_epochs=0", "--run_scratch=False",
                        f"--results_dir={results}")
    assert result.returncode == 0, result.stderr[-3000:]
    record, _ = only_record(results, "mobilenet")
    assert record["backbone"]["weights_sha256"] == "6714965a05ee6d8568343664bb9cda7456c6eb1fa190a6f5eb39bf087068b100"
    assert record["phases"]["transfer"]["val_accuracy"] > 0.90  # 0.97 here; at 96 px and 5 epochs it was 0.89-0.9


def test_the_new_experiment_in_contributing_runs_as_written(image_folder, tmp_path, cache_dir):
    # CONTRIBUTING.md says a new experiment is one short file; its example must be one that works.
    with open(os.path.join(os.path.dirname(__file__), "..", "CONTRIBUTING.md"), encoding="utf-8") as f:
        text = f.read()
    source = text.split("```python\n", 1)[1].split("```", 1)[0]
    assert len(source.splitlines()) <= 40
    script = tmp_path / "probe.py"
    script.write_text(source)
    results = tmp_path / "results"
    result = run_script(str(script), f"--data_dir={image_folder}", "--weights=None", "--image_size=32",
                        "--epochs=1", f"--results_dir={results}")
    assert result.returncode == 0, result.stderr[-3000:]
    record, folder = only_record(results, "probe")
    assert record["status"] == "complete" and list(record["phases"]) == ["transfer"]
    assert record["phases"]["transfer"]["feature_cache"] == "miss" and "learning_curves.png" in os.listdir(folder)


def colour_folder(root, per_class, classes=("red", "green", "blue")):
    """root/<class>/*.png: squares of the class's colour over noise, one PNG each."""
    from PIL import Image

    rng = np.random.default_rng(len(str(root)))
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 60, size=(20, 20, 3), dtype=np.uint8)
            pixels[4:16, 4:16, c] = 220
            Image.fromarray(pixels).save(root / name / f"{name}_{i}.png")


def test_a_folder_with_a_test_split_reports_the_final_model_on_it_per_class(tmp_path, cache_dir):
    for split, count in (("train", 8), ("val", 3), ("test", 5)):
        colour_folder(tmp_path / "photos" / split, count)
    results = tmp_path / "results"
    result = run_script("mobilenet_transfer.py", f"--data_dir={tmp_path / 'photos'}", "--weights=None",
                        "--image_size=32", "--epochs=1", f"--results_dir={results}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "split folders train/ val/ test/ (3 classes)" in result.stdout
    record, folder = only_record(results, "mobilenet")
    assert record["data"]["samples"] == {"train": 24, "validation": 9, "test": 15}
    # The folder recipe: the frozen phase only, no scratch baseline unless asked.
    assert list(record["phases"]) == ["transfer"] and "test_accuracy" in record["phases"]["transfer"]
    final = record["final"]
    assert final["phase"] == "transfer" and final["split"] == "test" and final["images"] == 15
    assert final["accuracy"] == pytest.approx(record["phases"]["transfer"]["test_accuracy"], abs=1e-6)
    assert list(final["per_class"]) == ["blue", "green", "red"]  # sorted, as the labels are
    assert [scores["support"] for scores in final["per_class"].values()] == [5, 5, 5]
    assert PLOTS <= set(os.listdir(folder)) and "final model on 15 test images" in result.stdout


def test_class_folders_without_train_run_end_to_end_and_say_their_layout(tmp_path, cache_dir):
    colour_folder(tmp_path / "photos", 10, classes=("red", "green"))
    results = tmp_path / "results"
    result = run_script("inception_transfer.py", f"--data_dir={tmp_path / 'photos'}", "--weights=None",
                        "--image_size=75", "--epochs=1", "--augment=False", "--cut_layer=mixed0", "--fine_tune_at=0",
                        "--head=8", f"--results_dir={results}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "class folders (2 classes), 0.2 of each validates by file hash" in result.stdout
    record, folder = only_record(results, "inception")
    assert record["data"]["layout"] == "class folders" and sum(record["data"]["samples"].values()) == 20
    assert open(os.path.join(folder, "labels.txt")).read() == "green\nred\n"
    assert record["model"]["input"] == {"shape": [75, 75, 3], "dtype": "uint8", "pixels": images.CONTRACT}
    assert "model.keras" in os.listdir(folder)
    assert record["final"]["split"] == "validation" and record["final"]["images"] == record["data"]["samples"][
        "validation"]
    # In use: predict over the whole folder gives the model's probabilities; the export checks on validation.
    _, exports = check_the_model_in_use(folder, tmp_path / "photos", export_images=False)
    for entry in exports.values():
        assert entry["images"] == record["final"]["images"]
        assert entry["accuracy_keras"] == pytest.approx(record["final"]["accuracy"])


@pytest.mark.parametrize("args, message", [
    (["--recipe=tutorial", "--dataset=mnist"], "error: --recipe=tutorial is not a recipe for --dataset=mnist"),
    (["--recipe=fast"], "error: --recipe=fast: expected one of folder, tutorial, mnist"),
])
def test_a_recipe_that_does_not_fit_is_a_one_line_error(args, message):
    result = run_script("mobilenet_transfer.py", *args)
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1] == message
