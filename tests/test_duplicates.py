"""Duplicates across splits: the same bytes, or the same picture re-encoded or resized, in training and
validation or test; found while the folder is read, cached, recorded, and dropped on request."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from transferlab import duplicates, folders, report


def photo(path, seed, size=(96, 128)):
    """A picture with structure at every scale (pHash looks at its low frequencies)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize(size[::-1], Image.Resampling.BICUBIC)
    noise = rng.integers(-12, 13, (*size, 3))
    Image.fromarray((np.asarray(image, int) + noise).clip(0, 255).astype(np.uint8)).save(path, quality=90)
    return path


@pytest.fixture
def leaky_folder(tmp_path, monkeypatch):
    """train/ and validation/ of two classes; validation holds an exact copy of one training photo and the same
    picture as another, resized and re-encoded."""
    monkeypatch.setenv("TRANSFERLAB_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "photos"
    for split in ("train", "validation"):
        for name in ("ants", "bees"):
            (root / split / name).mkdir(parents=True)
    for i in range(4):
        photo(root / "train" / "ants" / f"a{i}.jpg", i)
        photo(root / "train" / "bees" / f"b{i}.jpg", 10 + i)
        photo(root / "validation" / "ants" / f"va{i}.jpg", 20 + i)
        photo(root / "validation" / "bees" / f"vb{i}.jpg", 30 + i)
    (root / "validation" / "ants" / "copy.jpg").write_bytes((root / "train" / "ants" / "a1.jpg").read_bytes())
    with Image.open(root / "train" / "bees" / "b2.jpg") as image:
        image.resize((80, 60)).save(root / "validation" / "bees" / "smaller.jpg", quality=60)
    return root


def test_exact_and_near_copies_across_splits_are_found_and_nothing_else(leaky_folder):
    splits, _ = folders.listing(folders.layout(str(leaky_folder)), 0.2)
    found = duplicates.find({split: paths for split, (paths, _) in splits.items()})
    assert (found["exact"], found["near"]) == (1, 1)
    exact, near = found["pairs"]
    assert (exact["kind"], exact["bits"], exact["splits"]) == ("exact", 0, ["train", "validation"])
    assert exact["a"].endswith("train/ants/a1.jpg") and exact["b"].endswith("validation/ants/copy.jpg")
    assert near["kind"] == "near" and 0 <= near["bits"] <= duplicates.NEAR
    assert near["a"].endswith("train/bees/b2.jpg") and near["b"].endswith("validation/bees/smaller.jpg")
    assert sorted(os.path.basename(p) for p in found["later_copies"]) == ["copy.jpg", "smaller.jpg"]


def test_hashes_are_cached_by_path_size_and_mtime(leaky_folder, monkeypatch):
    paths = sorted(str(p) for p in leaky_folder.rglob("*.jpg"))
    first = duplicates.hash_files(paths)
    calls = []
    monkeypatch.setattr(duplicates, "hashes_of", lambda path: calls.append(path) or ("x", "00" * 8))
    assert duplicates.hash_files(paths) == first and calls == []  # all from the cache
    changed = paths[0]
    photo(changed, 99)
    os.utime(changed, ns=(1, 1))
    assert duplicates.hash_files(paths)[changed] == ("x", "00" * 8) and calls == [changed]


def test_a_run_records_warns_and_on_request_drops_the_later_copies(leaky_folder, capsys):
    _, (x_val, _), _, info = folders.read_folder(str(leaky_folder), 16, 0.2)
    out = capsys.readouterr().out
    assert "warning: 1 exact and 1 near duplicates across splits (e.g. train/ants/a1.jpg = " in out
    assert info["duplicates"]["exact"] == 1 and info["duplicates"]["near"] == 1 and info["duplicates"]["dropped"] == 0
    assert info["duplicates"]["pairs"][0]["a"] == os.path.join("train", "ants", "a1.jpg") and len(x_val) == 10
    _, (x_val, y_val), _, dropped = folders.read_folder(str(leaky_folder), 16, 0.2, drop_duplicates=True)
    assert "; dropped 2 from validation and test" in capsys.readouterr().out
    assert len(x_val) == len(y_val) == 8 and dropped["samples"]["validation"] == 8
    assert not any(os.path.basename(p) in ("copy.jpg", "smaller.jpg") for p in x_val.paths)
    assert dropped["duplicates"]["dropped"] == 2 and dropped["sha256"] != info["sha256"]


def test_looked_for_in_the_background_they_are_what_a_direct_search_finds_said_when_settled(leaky_folder, capsys):
    *_, direct = folders.read_folder(str(leaky_folder), 16, 0.2)
    capsys.readouterr()
    *_, info = folders.read_folder(str(leaky_folder), 16, 0.2, later=True)
    assert isinstance(info["duplicates"], duplicates.Pending) and capsys.readouterr().out.count("duplicates") == 0
    settled = folders.settled(info)
    assert "warning: 1 exact and 1 near duplicates across splits" in capsys.readouterr().out
    strip = lambda section: {k: v for k, v in section.items() if k != "seconds"}  # noqa: E731
    assert strip(settled["duplicates"]) == strip(direct["duplicates"])
    assert folders.settled(settled) is settled  # nothing pending: as it was
    # Dropping them needs them before the splits are cut: never in the background.
    *_, dropped = folders.read_folder(str(leaky_folder), 16, 0.2, drop_duplicates=True, later=True)
    assert dropped["duplicates"]["dropped"] == 2

def test_the_duplicates_command_lists_the_pairs(leaky_folder):
    result = subprocess.run([sys.executable, "-m", "transferlab.duplicates", str(leaky_folder)], capture_output=True,
                            text=True, timeout=300, env={**os.environ})
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert lines[-3].startswith("1 exact and 1 near duplicates across splits (")
    assert lines[-2].split() == ["exact", "0", "bits", "train", "train/ants/a1.jpg", "=", "validation",
                                 "validation/ants/copy.jpg"]
    missing = leaky_folder / "nothing"
    result = subprocess.run([sys.executable, "-m", "transferlab.duplicates", str(missing)], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1] == \
        f"error: image folder {str(missing)!r} does not exist"


def test_the_report_shows_each_pair_with_both_pictures(leaky_folder):
    _, _, _, info = folders.read_folder(str(leaky_folder), 16, 0.2)
    section = report.duplicates_section(info["duplicates"], info["source"])
    assert section.startswith("<p class=bad>1 exact and 1 near duplicates across splits")
    assert section.count("src='data:image/jpeg;base64,") == 4 and "validation: validation/bees/smaller.jpg" in section
