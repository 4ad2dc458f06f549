"""`python -m bench --quick`: every figure is produced and well-formed (no timing assertions)."""

import json
import os
import pathlib
import subprocess
import sys

from conftest import ROOT

FIGURES = {
    "1. Frozen phase": {"rounds", "published seconds per round", "ours seconds per round", "published seconds",
                        "ours seconds", "speed-up (published / ours)", "accuracy difference (points)", "met"},
    "2. Transfer vs base": {"base seconds", "transfer seconds", "transfer / base", "task B test acc", "met"},
    "3. Harness overhead": {"bare steady epoch s", "ours steady epoch s", "bare / ours per round", "bare / ours",
                            "met"},
    "4. Backbone feature extraction": {"ours / bare", "ours / bare per round", "runtime (ours)",
                                       "ours seconds checking the files (included)", "met"},
    "5. Time to accuracy": {"wall seconds", "val acc", "feature cache", "met"},
    "6. Scaling": {"40 samples", "270 samples", "peak MB per 1k added samples",
                   "seconds per added sample, last step / whole range", "met"},
    "7. Predict end to end": {"ours images/s (files to probabilities)", "bare images/s (decoded in memory)",
                              "ours / bare", "met"},
    "8. Memory over an image folder": {"peak MB, whole folder", "the folder decoded in memory would be, MB",
                                       "seconds per added image, last step / whole range", "met"},
    "9. How close to the cores": {"GFLOP per image (convolutions and dense layers)", "ours / matmul", "met"},
    "10. Fine-tuning's frozen bottom": {"Keras images/s", "ours images/s", "ours / Keras", "met"},
}


def test_quick_benchmark_writes_every_figure(tmp_path):
    out = tmp_path / "BENCHMARKS.md"
    result = subprocess.run([sys.executable, "-m", "bench", "--quick", f"--out={out}"], cwd=ROOT,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads((tmp_path / "BENCHMARKS.md.json").read_text())
    assert len(figures) == len(FIGURES)
    for figure, (title, expected) in zip(figures, FIGURES.items(), strict=True):
        assert figure["figure"].startswith(title) and expected <= set(figure), figure
        assert isinstance(figure["met"], bool) and isinstance(figure["target"], str)
        for name, value in figure.items():
            if isinstance(value, float):
                # tiny runs make noisy differences: accuracy, time growth and peak-memory growth may be negative
                signed = ("accuracy difference (points)", "seconds per added sample, last step / whole range",
                          "peak MB per 1k added samples", "seconds per added image, last step / whole range")
                assert value == value and (value >= 0 or name in signed), (name, value)
    # Figure 1's one quick round: one run each way after the full run, whose base they reused.
    assert figures[0]["rounds"] == 1 and len(figures[0]["ours seconds per round"].split(", ")) == 1
    assert abs(figures[0]["published seconds"] - float(figures[0]["published seconds per round"])) < 0.05
    assert figures[0]["base network"].startswith("trained once, in run ")
    assert figures[4]["feature cache"] == "miss"  # a cold start: the cache was empty
    assert len([name for name in figures[5] if name.split()[0].isdigit()]) == 2  # 4 per class, and all
    assert [name for name in figures[7] if name.split()[0].isdigit()] == ["16 images", "32 images"]
    text = out.read_text()
    assert text.startswith("# Benchmarks") and text.count("\n## ") == 10 and "Measured with `python -m bench" in text


def test_a_quick_benchmark_refuses_to_write_into_docs_and_touches_nothing(tmp_path):
    page = pathlib.Path(ROOT, "docs", "benchmarks-run.md")
    before = page.read_bytes()
    result = subprocess.run([sys.executable, "-m", "bench", "--quick", "--out=docs/benchmarks-run.md"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: --quick --out=docs/benchmarks-run.md: a quick "
                                                             "run times nothing and never replaces a committed page")
    assert page.read_bytes() == before and not page.with_name("benchmarks-run.md.json").exists()


def test_the_flop_count_of_mobilenet_v2_is_the_published_300_million_multiply_adds():
    # Figure 9 divides by it: MobileNetV2 1.0 at 224 px is 300M multiply-adds (Sandler et al. 2018, table 3),
    # of which the classifier we leave out is 1.3M.
    from bench.run import flops_per_image
    from transferlab import backbones

    backbone, _ = backbones.load("MobileNetV2", 224, None)
    assert 2 * 295e6 <= flops_per_image(backbone) <= 2 * 302e6


def test_the_low_resolution_folders_are_made_from_the_datasets_folder(mnist_dir, tmp_path):
    from PIL import Image

    from bench import folders

    for name in ("airplane", "automobile", "bird", "deer", "horse"):
        (mnist_dir / "cifar10" / "train" / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (32, 32), (i, 0, 0)).save(mnist_dir / "cifar10" / "train" / name / f"{i:04d}.jpg")
    out = tmp_path / "out"
    folders.cifar4(str(mnist_dir), str(out / "cifar4"), per_class=2)
    folders.digits(str(mnist_dir), str(out / "digits"), per_class=5)
    assert sorted(os.listdir(out / "cifar4")) == ["airplane", "automobile", "deer", "horse"]
    assert sorted(os.listdir(out / "cifar4" / "deer")) == ["0000.jpg", "0001.jpg"]
    assert (out / "cifar4" / "deer" / "0001.jpg").read_bytes() == (
        mnist_dir / "cifar10" / "train" / "deer" / "0001.jpg").read_bytes()
    assert sorted(os.listdir(out / "digits")) == [str(d) for d in range(10)]
    with Image.open(out / "digits" / "7" / "0004.png") as image:
        assert image.mode == "L" and image.size == (28, 28)
    assert folders.main([str(out), f"--data_dir={tmp_path / 'nowhere'}"]) == 2
