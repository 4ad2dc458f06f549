import os
import shutil

import numpy as np
import pytest
from PIL import Image

from transferlab import sources, tasks
from transferlab.errors import UserError

CLASSES = ["cat", "dog", "frog"]


def make_tree(root, per_class=3, size=(32, 32), classes=CLASSES):
    for split in ("train", "test"):
        for label, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = np.full((*size, 3), 40 * label + i, dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:04d}.png")
    return root


def test_tree_decodes_to_keras_arrays_and_caches(tmp_path, capsys):
    root = make_tree(tmp_path / "pets")
    # A grayscale and an RGBA image are converted to RGB, not rejected.
    Image.fromarray(np.full((32, 32), 200, np.uint8), mode="L").save(root / "train" / "dog" / "gray.png")
    Image.fromarray(np.full((32, 32, 4), 90, np.uint8), mode="RGBA").save(root / "train" / "frog" / "alpha.png")
    (root / "train" / "cat" / "notes.txt").write_text("not an image: ignored")

    (x, y), (xt, yt), source = sources.load_image_tree(str(root), CLASSES, (32, 32, 3))
    assert x.shape == (11, 32, 32, 3) and x.dtype == np.uint8
    assert y.tolist() == [0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
    assert xt.shape == (9, 32, 32, 3) and yt.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert x[0, 0, 0].tolist() == [0, 0, 0] and x[4, 0, 0].tolist() == [41, 41, 41]
    assert x[6].min() == x[6].max() == 200  # dog/gray.png sorts after 0000-0002.png
    assert source["cache"] == "miss" and source["source"] == str(root) and source["decode_seconds"] > 0
    assert source["converted_images"] == {"L": 1, "RGBA": 1}
    assert f"warning: converted 2 images in {root} to RGB: 1 L, 1 RGBA" in capsys.readouterr().out

    again = sources.load_image_tree(str(root), CLASSES, (32, 32, 3))
    assert again[2]["cache"] == "hit" and again[2]["sha256"] == source["sha256"]
    assert again[2]["converted_images"] == {"L": 1, "RGBA": 1}  # kept with the cache
    np.testing.assert_array_equal(again[0][0], x)

    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "test" / "cat" / "new.png")
    changed = sources.load_image_tree(str(root), CLASSES, (32, 32, 3))
    assert changed[2]["cache"] == "miss" and changed[2]["sha256"] != source["sha256"]
    assert len(changed[1][0]) == 10


def test_damaged_cache_is_rebuilt(tmp_path, capsys):
    root = make_tree(tmp_path / "pets")
    first = sources.load_image_tree(str(root), CLASSES, (32, 32, 3))[2]
    with open(first["cache_file"], "r+b") as f:
        f.truncate(100)
    second = sources.load_image_tree(str(root), CLASSES, (32, 32, 3))
    assert second[2]["cache"] == "miss" and "ignoring a damaged cache file" in capsys.readouterr().out
    assert sources.load_image_tree(str(root), CLASSES, (32, 32, 3))[2]["cache"] == "hit"


def test_a_wrong_size_image_is_resized_and_a_corrupt_one_skipped_and_reported(tmp_path, capsys):
    # One decoder for every loader, one rule: what cannot be decoded is skipped and said, never fatal.
    root = make_tree(tmp_path / "pets")
    Image.fromarray(np.full((40, 30, 3), 200, np.uint8)).save(root / "train" / "dog" / "big.png")
    (root / "test" / "frog" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    (x_train, y_train), (x_test, _), source = sources.load_image_tree(str(root), CLASSES, (32, 32, 3))
    assert source["skipped_files"] == [os.path.join("test", "frog", "broken.jpg")]
    assert "warning: skipped 1 files that cannot be decoded: test/frog/broken.jpg" in capsys.readouterr().out
    big = x_train[y_train == CLASSES.index("dog")]
    assert x_train.shape[1:] == (32, 32, 3) and np.any(np.all(big == 200, axis=(1, 2, 3)))


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda root: shutil.rmtree(root / "test"), "has no test/ folder"),
        (lambda root: shutil.rmtree(root / "train" / "frog"), "has no train/frog/ folder"),
        (lambda root: (root / "train" / "horse").mkdir(), "folders ['horse'] are not classes of this dataset"),
    ],
)
def test_tree_layout_problems_are_one_line_errors(tmp_path, damage, message):
    root = make_tree(tmp_path / "pets")
    damage(root)
    with pytest.raises(UserError, match=None) as caught:
        sources.load_image_tree(str(root), CLASSES, (32, 32, 3))
    assert message in str(caught.value)


def test_grayscale_tree_for_mnist_layout(tmp_path):
    root = tmp_path / "data" / "mnist"
    for split in ("train", "test"):
        for digit in range(10):
            (root / split / str(digit)).mkdir(parents=True)
            Image.fromarray(np.full((28, 28, 3), digit, np.uint8)).save(root / split / str(digit) / "a.png")
    (x, y), _, source = sources.load_keras_dataset("mnist", str(tmp_path / "data"), (28, 28), 10, download=None,
                                                class_names=[str(d) for d in range(10)])
    assert x.shape == (10, 28, 28) and y.tolist() == list(range(10)) and x[3].max() == 3
    assert source["source"] == str(root)


def test_train_validation_split_is_a_seeded_shuffle():
    x = np.arange(100)
    y = np.repeat([0, 1], 50)  # sorted by class, as an image tree lists it
    (xt, yt), (xv, yv) = tasks.train_validation_split(x, y, 0.2, seed=1)
    assert len(xt) == 80 and len(xv) == 20
    assert sorted(np.concatenate([xt, xv]).tolist()) == list(range(100))
    assert 0 < yv.sum() < 20  # both classes validate, unlike a plain slice of the last 20
    (xt2, _), (xv2, _) = tasks.train_validation_split(x, y, 0.2, seed=1)
    assert xv2.tolist() == xv.tolist()
    assert tasks.train_validation_split(x, y, 0.2, seed=2)[1][0].tolist() != xv.tolist()


def test_the_decoder_quiets_only_its_own_fetching_not_what_the_caller_writes(tmp_path, capfd):
    from transferlab import pipelines

    paths = []
    for i in range(3):
        Image.fromarray(np.full((10, 10, 3), 40 * i, np.uint8)).save(tmp_path / f"{i}.png")
        paths.append(str(tmp_path / f"{i}.png"))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    for _ in pipelines.stream([*paths, str(tmp_path / "broken.png")], (8, 8), batch=1):
        os.write(2, b"between batches\n")  # e.g. the caller's own warnings while it classifies a batch
    assert capfd.readouterr().err.count("between batches") == 3
