import hashlib

import numpy as np
import pytest

from transferlab import sources, tasks
from transferlab.errors import UserError


def test_a_task_keeps_only_its_classes_remapped_in_list_order():
    x = np.arange(20).reshape(20, 1)
    y = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9] * 2)
    xb, yb = tasks.of_classes(x, y, [7, 8, 9])
    assert xb[:, 0].tolist() == [7, 8, 9, 17, 18, 19]
    assert yb.tolist() == [0, 1, 2, 0, 1, 2]
    xr, yr = tasks.of_classes(x, y, [9, 7])  # the order of the list is the label order
    assert xr[:, 0].tolist() == [7, 9, 17, 19]
    assert yr.tolist() == [1, 0, 1, 0]


def test_a_task_of_absent_classes_is_empty():
    xb, yb = tasks.of_classes(np.zeros((3, 2)), np.array([0, 1, 2]), [7, 8])
    assert xb.shape == (0, 2) and yb.shape == (0,)


@pytest.mark.parametrize(
    "a, b, message",
    [
        ([0, 1, 2], [2, 3], "task A and task B share classes [2]"),
        ([0, 1], [9, 10], "--task_b_classes names classes [10] not in the data (0..9)"),
        ([0, -1], [8, 9], "--task_a_classes names classes [-1]"),
        ([0], [8, 9], "--task_a_classes needs at least 2 classes"),
        ([0, 0, 1], [8, 9], "--task_a_classes repeats a class"),
    ],
)
def test_check_tasks_rejects_bad_splits(a, b, message):
    with pytest.raises(UserError, match=None) as caught:
        tasks.check_tasks(a, b, num_classes=10)
    assert str(caught.value).startswith(message)


def test_check_tasks_accepts_the_published_split():
    tasks.check_tasks([0, 1, 2, 3, 4, 5, 6], [7, 8, 9], num_classes=10)


def test_two_tasks_split_scale_and_count_their_images(capsys):
    # 10 training images of each of 4 classes, 2 test images of each: task A is [0, 1], task B [3, 2].
    train = (np.full((40, 2, 2), 255, np.uint8), np.repeat(np.arange(4), 10))
    test = (np.zeros((8, 2, 2), np.uint8), np.repeat(np.arange(4), 2))
    source = {"source": "here.npz"}
    task_a, task_b = tasks.transfer_tasks(train, test, source, [0, 1], [3, 2], seed=0, validation_fraction=0.2,
                                task_b_samples_per_class=3)
    assert source["samples"] == {"task_a_train": 16, "task_a_validation": 4, "task_a_test": 4,
                                 "task_b_train": 6, "task_b_validation": 4, "task_b_test": 4}
    assert "data from here.npz: task A [0, 1], task B [3, 2]: 16 task_a_train, 4 task_a_validation" in \
        capsys.readouterr().out
    assert task_b.classes == [3, 2] and np.bincount(task_b.train[1]).tolist() == [3, 3]
    assert task_a.train[0].shape == (16, 2, 2, 1) and task_a.train[0].max() == 1.0  # scaled, a channel axis


def write_npz(path, **overrides):
    arrays = {
        "x_train": np.zeros((6, 28, 28), np.uint8), "y_train": np.array([0, 1, 2, 7, 8, 9], np.uint8),
        "x_test": np.zeros((2, 28, 28), np.uint8), "y_test": np.array([[3], [9]], np.uint8),
    }
    arrays.update(overrides)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def test_load_npz_returns_keras_layout_with_flat_int_labels(tmp_path):
    (x, y), (xt, yt) = sources.load_npz(write_npz(tmp_path / "m.npz"), (28, 28), 10)
    assert x.shape == (6, 28, 28) and y.tolist() == [0, 1, 2, 7, 8, 9]
    assert yt.tolist() == [3, 9] and yt.dtype == np.int64


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"y_test": None}, "missing arrays ['y_test']"),
        ({"x_train": np.zeros((6, 28, 28), np.float32)}, "x_train is float32 (6, 28, 28), expected uint8 (n, 28, 28)"),
        ({"x_test": np.zeros((2, 32, 32), np.uint8)}, "x_test is uint8 (2, 32, 32), expected uint8"),
        ({"y_train": np.array([0, 1, 2], np.uint8)}, "y_train has shape (3,), expected (6,)"),
        ({"y_train": np.array([0, 1, 2, 7, 8, 10], np.uint8)}, "y_train has labels outside 0..9"),
        ({"y_train": np.zeros(6, np.float32)}, "y_train is float32, expected integer labels"),
    ],
)
def test_load_npz_rejects_bad_files_with_one_line(tmp_path, overrides, message):
    path = write_npz(tmp_path / "m.npz", **overrides)
    with pytest.raises(UserError) as caught:
        sources.load_npz(path, (28, 28), 10)
    assert message in str(caught.value)


def test_load_npz_refuses_pickled_objects(tmp_path):
    path = write_npz(tmp_path / "m.npz", y_train=np.array([0, 1, 2, 7, 8, {"evil": 1}], dtype=object))
    with pytest.raises(UserError, match="not a readable npz file"):
        sources.load_npz(path, (28, 28), 10)


def test_load_npz_rejects_a_file_that_is_not_npz(tmp_path):
    path = tmp_path / "mnist.npz"
    path.write_text("hello")
    with pytest.raises(UserError, match="not a readable npz file"):
        sources.load_npz(path, (28, 28), 10)


def test_data_directory_is_used_before_any_download(tmp_path):
    path = write_npz(tmp_path / "mnist.npz")

    def download():
        raise AssertionError("must not download when the file is there")

    train, test, source = sources.load_keras_dataset("mnist", str(tmp_path), (28, 28), 10, download)
    assert source == {"source": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    assert len(train[0]) == 6


def test_download_is_the_fallback(tmp_path):
    arrays = ((np.zeros((4, 28, 28), np.uint8), np.array([1, 2, 3, 4], np.uint8)),
              (np.zeros((1, 28, 28), np.uint8), np.array([5], np.uint8)))
    train, test, source = sources.load_keras_dataset("mnist", str(tmp_path), (28, 28), 10, lambda: arrays)
    assert source["source"] == "download"
    assert train[1].tolist() == [1, 2, 3, 4] and test[1].dtype == np.int64


def test_no_file_and_no_download_says_where_to_put_which_file(tmp_path):
    def download():
        raise Exception("URL fetch failure: Name or service not known")

    with pytest.raises(UserError) as caught:
        sources.load_keras_dataset("mnist", str(tmp_path), (28, 28), 10, download)
    message = str(caught.value)
    assert message.startswith(f"mnist.npz not found in {tmp_path} and the download failed")
    assert "put Keras's mnist.npz" in message and "\n" not in message


def test_data_dir_falls_back_to_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFER_DATA_DIR", str(tmp_path))
    assert sources.data_dir(None) == str(tmp_path)
    assert sources.data_dir(str(tmp_path / ".")) == str(tmp_path / ".")  # the constant wins
    monkeypatch.delenv("TRANSFER_DATA_DIR")
    assert sources.data_dir(None) is None
    with pytest.raises(UserError, match="does not exist"):
        sources.data_dir(str(tmp_path / "missing"))


def test_scale_images_gives_unit_range_and_a_channel_axis():
    x = np.array([[[0, 255], [51, 102]]], np.uint8)
    scaled = tasks.scale_images(x)
    assert scaled.shape == (1, 2, 2, 1) and scaled.dtype == np.float32
    np.testing.assert_allclose(scaled[0, :, :, 0], [[0.0, 1.0], [0.2, 0.4]], rtol=1e-6)


def test_balanced_class_weights_make_each_class_weigh_the_same(capsys):
    y = np.array([0] * 80 + [1] * 20)
    assert tasks.class_weights(y, ["cats", "dogs"], None) is None
    assert "warning: cats has 80 training images, dogs 20: more than 3 times as many; --class_weight=balanced" in \
        capsys.readouterr().out
    weights = tasks.class_weights(y, ["cats", "dogs"], "balanced")
    assert weights == {0: 100 / (2 * 80), 1: 100 / (2 * 20)}  # 0.625 and 2.5: both classes now sum to 50
    assert tasks.class_weights(np.array([0, 0, 0, 1, 1, 1]), ["a", "b"], "balanced") == {0: 1.0, 1: 1.0}
    assert capsys.readouterr().out.count("warning") == 1  # 4 to 1 warns; 1 to 1 does not
    with pytest.raises(UserError, match="--class_weight=equal: expected None or 'balanced'"):
        tasks.class_weights(y, ["cats", "dogs"], "equal")
