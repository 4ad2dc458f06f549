"""Image folders: files checked once, decoded at the input size in the pipelines, bad files skipped and reported,
clear errors for bad layouts."""

import json
import os
import shutil
import subprocess
import sys

import transferlab.runtime  # noqa: F401 (quiet TensorFlow start)

import numpy as np
import pytest
from conftest import ROOT, make_image_folder

from transferlab import folders, images
from transferlab.errors import UserError


def test_load_decodes_every_readable_image_and_reports_the_rest(image_folder):
    (files, y_train), (x_val, y_val), _, info = folders.read_folder(str(image_folder), 16, 0.2)
    assert isinstance(files, images.Files) and "corrupt.jpg" not in " ".join(files.paths)  # not decoded yet
    x_train = np.asarray(files)
    assert x_train.shape == (16, 16, 16, 3) and x_train.dtype == np.uint8  # grey, RGBA, palette became RGB
    assert x_val.shape == (8, 16, 16, 3)
    assert np.bincount(y_train).tolist() == [8, 8] and np.bincount(y_val).tolist() == [4, 4]
    assert info["class_names"] == ["class_a", "class_b"]
    assert info["validation"] == "validation/ folder"
    assert info["skipped_count"] == 4
    assert info["converted_images"] == {"L": 6, "P": 4, "RGBA": 6}  # counted, then converted to RGB
    skipped = {entry["path"]: entry["reason"] for entry in info["skipped_files"]}
    assert skipped == {
        os.path.join("train", "class_a", "corrupt.jpg"): "cannot be decoded",
        os.path.join("train", "class_a", "truncated.png"): "cannot be decoded",
        os.path.join("train", "class_b", "empty.jpg"): "cannot be decoded",
        os.path.join("train", "class_b", "notes.txt"): "not an image file",
    }
    # The class colour survives decoding and resizing: red class_a, green class_b (grey ones are grey).
    red, green, _ = x_train[:, 6:10, 6:10].mean(axis=(1, 2)).T
    assert np.all(red[y_train == 0] >= green[y_train == 0]) and np.all(green[y_train == 1] >= red[y_train == 1])
    assert np.sum(red[y_train == 0] > green[y_train == 0] + 100) == 6  # all but the 2 grey ones


def test_cmyk_and_other_modes_are_converted_to_rgb_and_counted(tmp_path, capsys):
    from PIL import Image

    colour = Image.new("RGB", (20, 20), (200, 30, 30))
    for name, image in (("a/cmyk.jpg", colour.convert("CMYK")), ("a/bw.png", colour.convert("1")),
                        ("b/la.png", colour.convert("LA")), ("b/rgb.png", colour)):
        (tmp_path / "train" / name).parent.mkdir(parents=True, exist_ok=True)
        image.save(tmp_path / "train" / name)
    train, validation, _, info = folders.read_folder(str(tmp_path), 8, 0.5)
    pixels = np.concatenate([np.asarray(train[0]), np.asarray(validation[0])])
    assert len(pixels) == 4 and info["skipped_count"] == 0
    assert info["converted_images"] == {"1": 1, "CMYK": 1, "LA": 1}
    assert f"warning: converted 3 images in {tmp_path} to RGB: 1 1, 1 CMYK, 1 LA" in capsys.readouterr().out
    redness = pixels[..., 0].mean(axis=(1, 2)) - pixels[..., 1].mean(axis=(1, 2))
    assert np.sum(redness > 100) == 2  # the RGB one and the CMYK one, still red; the grey ones are grey


def test_without_a_validation_folder_a_share_of_each_class_validates_the_same_every_time(image_folder_3):
    train, validation, test, info = folders.read_folder(str(image_folder_3), 16, 0.2)
    assert len(train[0]) + len(validation[0]) == 30 and test is None
    assert info["samples"] == {"train": len(train[0]), "validation": len(validation[0])}
    assert set(validation[1].tolist()) == {0, 1, 2} and set(train[1].tolist()) == {0, 1, 2}
    assert info["validation"] == "0.2 of train/, by file hash" and info["layout"] == "split folders"
    other = folders.read_folder(str(image_folder_3), 16, 0.2)  # the split is a function of the file names
    assert np.array_equal(other[1][0].paths, validation[0].paths) and info["sha256"] == other[3]["sha256"]


def flat_folder(root, per_class, start=0, classes=("cat", "dog")):
    from PIL import Image

    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(start, start + per_class):
            Image.new("RGB", (12, 10), (200 * (c == 0), 200 * (c == 1), i % 256)).save(root / name / f"{i}.png")


def test_class_folders_without_a_train_level_are_a_layout_of_their_own(tmp_path, capsys):
    flat_folder(tmp_path / "photos", 40, classes=("cat", "dog", "fox"))
    assert folders.find(str(tmp_path / "photos")) == str(tmp_path / "photos")
    train, validation, test, info = folders.read_folder(str(tmp_path / "photos"), 8, 0.25)
    assert f"image folder {tmp_path / 'photos'}: class folders (3 classes), 0.25 of each validates by file hash" \
        in capsys.readouterr().out
    assert info["layout"] == "class folders" and info["class_names"] == ["cat", "dog", "fox"] and test is None
    assert info["validation"] == "0.25 of each class, by file hash"
    per_class = np.bincount(validation[1], minlength=3)
    assert per_class.sum() + len(train[1]) == 120 and np.all((per_class >= 4) & (per_class <= 18)), per_class


def test_adding_photos_never_moves_an_old_photo_between_training_and_validation(tmp_path):
    root = tmp_path / "photos"
    flat_folder(root, 30)

    def split_of_each_file():
        splits, _ = folders.listing(folders.layout(str(root)), 0.2)
        return {path: split for split, (paths, _) in splits.items() for path in paths}

    before = split_of_each_file()
    flat_folder(root, 50, start=30)  # 50 more photos in each class
    after = split_of_each_file()
    assert len(after) == 160 and {path: after[path] for path in before} == before
    assert 10 <= list(after.values()).count("validation") <= 60


def test_split_folders_take_val_as_validation_and_a_test_folder_as_test(tmp_path):
    root = tmp_path / "photos"
    for split, count in (("train", 6), ("val", 3), ("test", 4)):
        flat_folder(root / split, count)
    train, validation, test, info = folders.read_folder(str(root), 8, 0.2)
    assert [len(train[1]), len(validation[1]), len(test[1])] == [12, 6, 8]
    assert info["samples"] == {"train": 12, "validation": 6, "test": 8} and info["validation"] == "val/ folder"
    assert np.bincount(test[1]).tolist() == [4, 4]


@pytest.mark.parametrize("breakage, message", [
    (lambda root: (root / "validation").mkdir(), "has both validation/ and val/: keep one"),
    (lambda root: shutil.rmtree(root / "test" / "dog"), "test has classes ['cat'], train/ has ['cat', 'dog']"),
    (lambda root: [p.unlink() for p in (root / "test" / "dog").iterdir()], "test/dog holds no readable images"),
    (lambda root: [shutil.rmtree(root / "test" / c) for c in ("cat", "dog")], "test holds no class folders"),
])
def test_a_split_folder_that_does_not_match_train_is_a_one_line_error(tmp_path, breakage, message):
    root = tmp_path / "photos"
    for split, count in (("train", 6), ("val", 3), ("test", 4)):
        flat_folder(root / split, count)
    breakage(root)
    with pytest.raises(UserError) as error:
        folders.read_folder(str(root), 8, 0.2)
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("breakage, message", [
    (lambda root: shutil.rmtree(root / "train"), "has validation/ but no train/ folder"),
    (lambda root: shutil.rmtree(root / "train" / "class_b"), "has 1 class folder(s) ['class_a']; need at least 2"),
    (lambda root: shutil.rmtree(root / "validation" / "class_b"), "validation has classes ['class_a'], train/ has"),
    (lambda root: [p.unlink() for p in (root / "train" / "class_b").iterdir()], "class_b holds no readable images"),
    (lambda root: (root / "validation" / "class_c").mkdir(), "has classes ['class_a', 'class_b', 'class_c']"),
])
def test_bad_layouts_are_one_line_errors_naming_the_folder(image_folder, breakage, message):
    breakage(image_folder)
    with pytest.raises(UserError, match=None) as error:
        folders.read_folder(str(image_folder), 16, 0.2)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_find_prefers_the_given_folder_then_a_named_one_inside(tmp_path):
    make_image_folder(tmp_path / "datasets" / "cats_and_dogs_filtered", bad_files=False)
    assert folders.find(str(tmp_path / "datasets")) == str(tmp_path / "datasets" / "cats_and_dogs_filtered")
    assert folders.find(str(tmp_path / "datasets" / "cats_and_dogs_filtered")).endswith("cats_and_dogs_filtered")


def test_without_a_data_directory_a_failed_download_says_why(monkeypatch):
    def no_internet(*args, **kwargs):
        raise OSError("no route to host")

    monkeypatch.setattr(folders.keras.utils, "get_file", no_internet)
    with pytest.raises(UserError) as error:
        folders.find(None)
    assert str(error.value).startswith("no data directory given (--data_dir= or $TRANSFER_DATA_DIR) and the "
                                       f"download of cats_and_dogs_filtered from {folders.TUTORIAL_URL} failed "
                                       "(OSError: no route to host)")


def test_a_given_folder_without_images_is_an_error_and_nothing_is_downloaded(tmp_path, monkeypatch):
    def must_not_download(*args, **kwargs):
        raise AssertionError("downloaded although a data directory was given")

    monkeypatch.setattr(folders.keras.utils, "get_file", must_not_download)
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "notes.txt").write_text("x")
    (tmp_path / "photos" / "holiday").mkdir()
    (tmp_path / "photos" / ".DS_Store").write_text("x")
    with pytest.raises(UserError) as error:
        folders.find(str(tmp_path / "photos"))
    assert str(error.value) == (f"no image folder in {tmp_path / 'photos'}: found holiday/, notes.txt; expected "
                                "<class>/*.jpg, or train/<class>/*.jpg with optionally validation/<class>/ and "
                                "test/<class>/")


def test_what_a_zip_tool_or_an_operating_system_adds_is_neither_a_class_nor_a_skipped_file(tmp_path):
    make_image_folder(tmp_path / "photos", bad_files=False)
    train = tmp_path / "photos" / "train"
    (train / "__MACOSX").mkdir()
    (train / ".hidden_class").mkdir()
    (train / ".DS_Store").write_text("x")
    first = train / "class_a"
    (first / ".DS_Store").write_text("x")
    (first / "Thumbs.db").write_text("x")
    (first / ".thumbnails").mkdir()
    (first / ".thumbnails" / "notes.txt").write_text("x")
    assert folders.class_names(str(train)) == ["class_a", "class_b"]
    _, not_images = folders.listing(folders.layout(str(tmp_path / "photos")), 0.2)
    assert not_images == []


STREAMED_PHASE = '''
import json, sys
import transferlab.runtime  # noqa: F401
from transferlab import backbones, files, folders, models, phases, tasks
import keras

def peak_mb():  # the process's peak resident memory so far (Linux)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024

pooled = keras.Sequential([keras.Input((256, 256, 3)), keras.layers.AveragePooling2D(32), keras.layers.Flatten()])
head = models.stack(pooled.output_shape[1:], [models.output_layer(2)], name="head")
feed = backbones.feed("MobileNetV2", batch_size=32, seed=0)
before = peak_mb()
train, validation, _, _ = folders.read_folder(sys.argv[1], 256, 0.2)
task = tasks.Task([0, 1], train, validation)
options = phases.FitOptions(epochs=1, batch_size=32, learning_rate=1e-3, feed=feed)
run = phases.StandInRun(sys.argv[2])
info = phases.fit_head(run, "cached", pooled, head, task, options, phases.HeadOptions("disk", 32)).info  # features
phases.fit_head(run, "whole", pooled, head, task, options, phases.HeadOptions(None, 32))  # an epoch through it all
print(json.dumps({"growth_mb": peak_mb() - before, "cache": info["feature_cache"], "images": len(train[1])}))
'''


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads peak memory from Linux's /proc")
def test_a_folder_larger_than_the_memory_it_may_use_streams_through_both_kinds_of_training(tmp_path):
    # 6,000 small PNGs that decode at 256 px to 1,180 MB: the frozen phase (a feature pass, then the head) and
    # an epoch through the whole network must grow the process by well under that. Decoded into one array, as
    # before streaming, the same script grew by 2,880 MB over 4,000 of these images; streamed, by 290-550 MB.
    from PIL import Image

    for c, colour in enumerate(((200, 30, 30), (30, 200, 30))):
        (tmp_path / "photos" / f"class_{c}").mkdir(parents=True)
        for i in range(3000):
            Image.new("RGB", (8, 8), (*colour[:2], i % 256)).save(tmp_path / "photos" / f"class_{c}" / f"{i}.png")
    (tmp_path / "run").mkdir()
    script = tmp_path / "streamed_phase.py"
    script.write_text(STREAMED_PHASE)
    result = subprocess.run([sys.executable, str(script), str(tmp_path / "photos"), str(tmp_path / "run")],
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": ROOT})
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    decoded_mb = 6000 * 256 * 256 * 3 / 2**20
    assert found["cache"] == "miss" and 4600 <= found["images"] <= 5000  # the rest validates
    assert found["growth_mb"] < 0.75 * decoded_mb, found
