"""The one atomic-write helper and the one hashing helper."""

import hashlib
import os

import pytest

from transferlab import files, plots


def test_replacing_renames_over_the_file_on_success_and_leaves_it_whole_on_failure(tmp_path):
    path = tmp_path / "page.md"
    files.write_text(path, "old")
    with pytest.raises(RuntimeError), files.replacing(path) as tmp:
        with open(tmp, "w") as f:
            f.write("half of the new")
        raise RuntimeError("killed while writing")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["page.md"]  # no temporary file left behind
    files.write_text(path, "new")
    assert path.read_text() == "new" and os.listdir(tmp_path) == ["page.md"]


def test_the_temporary_name_is_hidden_and_keeps_the_suffix(tmp_path):
    with files.replacing(tmp_path / "head.weights.h5") as tmp:
        name = os.path.basename(tmp)
        open(tmp, "w").close()
    assert name.startswith(".") and name.endswith(".tmp.head.weights.h5")


def test_sha256_of_a_file_is_the_hash_of_its_bytes(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(b"x" * (files.CHUNK + 5))  # more than one read
    assert files.sha256(path) == hashlib.sha256(b"x" * (files.CHUNK + 5)).hexdigest()


def test_a_plot_is_saved_atomically_as_png(tmp_path):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    plots.save(fig, tmp_path / "curve.png")
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and os.listdir(tmp_path) == ["curve.png"]
