"""python -m transferlab.leaderboard: backbones measured on one folder, side by side, and the one it recommends."""

import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, make_image_folder

from transferlab import leaderboard
from transferlab.errors import UserError


def test_the_interval_says_how_sure_an_accuracy_is():
    low, high = leaderboard.wilson(0.99, 1000)
    assert (round(low, 4), round(high, 4)) == (0.9817, 0.9946)  # 1,000 photos: 99.0% is 98.2-99.5%
    low, high = leaderboard.wilson(0.99, 100)
    assert (round(low, 4), round(high, 4)) == (0.9455, 0.9982)


def test_it_recommends_the_fastest_that_the_best_cannot_be_told_from():
    def row(name, accuracy, ms):
        return {"backbone": name, "val_accuracy": accuracy, "val_interval": list(leaderboard.wilson(accuracy, 1000)),
                "tflite_ms": ms}

    rows = [row("big", 0.996, 20.0), row("small", 0.992, 4.0), row("tiny", 0.95, 1.0), row("slow", 0.99, 30.0)]
    pick, best = leaderboard.recommend(rows)
    assert best["backbone"] == "big" and pick["backbone"] == "small"  # 99.2% lies in 99.6%'s interval
    assert leaderboard.pareto(rows) == ["big", "small", "tiny"]  # "slow" is beaten on both by "big"


def test_unknown_backbones_are_one_line():
    assert leaderboard.parse_backbones("MobileNetV2=w.h5, EfficientNetLite0,ResNet50=None") == [
        ("MobileNetV2", "w.h5"), ("EfficientNetLite0", "imagenet"), ("ResNet50", None)]
    with pytest.raises(UserError, match="^--backbone=EfficientNetLite9: no such backbone; nearest: EfficientNetLite"):
        leaderboard.parse_backbones("EfficientNetLite9")


def test_batch_one_timings_take_every_file_in_turn_each_round_and_keep_the_median():
    calls = []

    def runner(key):
        return lambda x: calls.append(key)

    one = np.zeros((1, 4, 4, 3), np.float32)
    ms = leaderboard.interleaved_ms({"a": (runner("a"), one), "b": (runner("b"), one)}, rounds=3)
    per_call = 21  # export.latency: one call to warm up, then the median of 20
    assert calls == (["a"] * per_call + ["b"] * per_call) * 3
    assert set(ms) == {"a", "b"} and all(value >= 0 for value in ms.values())


def test_a_leaderboard_of_two_backbones_on_a_folder(tmp_path):
    make_image_folder(tmp_path / "photos", per_class=10)
    results = tmp_path / "results"
    env = {**os.environ, "TRANSFERLAB_CACHE_DIR": str(tmp_path / "cache")}
    result = subprocess.run([sys.executable, "-m", "transferlab.leaderboard", str(tmp_path / "photos"),
                             "--backbones=MobileNetV3Small=None,MobileNet=None", "--image_size=32",
                             f"--results_dir={results}"],
                            capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    (path,) = glob.glob(str(results / "leaderboard" / "*" / "record.json"))
    record = json.load(open(path))
    folder = os.path.dirname(path)
    assert record["status"] == "complete" and list(record["phases"]) == ["MobileNetV3Small", "MobileNet"]
    for row in record["phases"].values():
        assert 0 <= row["val_interval"][0] <= row["val_accuracy"] <= row["val_interval"][1] <= 1
        assert row["features"] in (576, 1024) and row["weights"] == "random" and row["input_size"] == 32
        assert row["int8_bytes"] < row["tflite_bytes"] and row["tflite_ms"] > 0 and row["frozen_images_per_second"] > 0
        assert 1 <= row["probe_epochs"] <= leaderboard.PROBE_EPOCHS and row["latency_rounds"] == leaderboard.ROUNDS
    assert "== batch-1 timings: every TFLite file in turn" in result.stdout
    assert record["recommended"]["backbone"] in record["phases"]
    assert {"leaderboard.md", "leaderboard.png"} <= set(os.listdir(folder))
    assert f"recommended: {record['recommended']['backbone']}, the fastest" in result.stdout
    table = open(os.path.join(folder, "leaderboard.md")).read()
    assert "| MobileNetV3Small | 32 |" in table and "| MobileNet | 32 |" in table
    # compare reads it like any run
    shown = subprocess.run([sys.executable, "-m", "transferlab.compare", str(results / "leaderboard")],
                           capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert shown.returncode == 0 and "MobileNetV3Small" in shown.stdout, shown.stderr[-2000:]
