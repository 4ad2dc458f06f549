"""report.html: every run leaves one, its mistakes first; one self-contained file a browser renders offline;
`python -m transferlab.report RUN` writes it again for any run."""

import csv
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from transferlab import report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def rows_of(folder):
    with open(os.path.join(folder, "predictions.csv"), newline="") as f:
        return list(csv.DictReader(f))


def test_a_run_leaves_its_predictions_and_a_self_contained_report(trained_run):
    folder, record, photos, _ = trained_run
    rows = rows_of(folder)
    assert len(rows) == record["final"]["images"] == 10
    assert all(os.path.isfile(row["path"]) and row["path"].startswith(str(photos / "validation")) for row in rows)
    right = sum(row["label"] == row["predicted"] for row in rows)
    assert right / len(rows) == pytest.approx(record["final"]["accuracy"])
    for row in rows:  # the probability of the predicted class is the largest one
        assert float(row["probability"]) >= float(row["label_probability"])
    page = open(os.path.join(folder, "report.html"), encoding="utf-8").read()
    assert not re.search(r"""(src|href)=['"]?(https?:)?//""", page)  # nothing from the network
    assert re.findall(r"src='([^']*)'", page) and all(src.startswith("data:image/") for src in
                                                      re.findall(r"src='([^']*)'", page))
    assert f"<b>{record['final']['accuracy']:.2%}</b> on 10 validation images" in page
    assert record["environment"]["command"] in page and "<code>IMAGE_SIZE=32</code>" in page
    assert "<h2>Duplicates across splits</h2>\n<p class=ok>None: no photo is in two splits" in page


def fake_mistakes(folder):
    """A copy of a run's predictions with three known mistakes: two dogs taken for cats, one cat for a dog."""
    rows = rows_of(folder)
    for row in rows:  # the rest right
        row.update(predicted=row["label"], probability=0.99, label_probability=0.99)
    for row, (label, predicted, p) in zip(rows, [("class_b", "class_a", 0.91), ("class_b", "class_a", 0.97),
                                                  ("class_a", "class_b", 0.6)], strict=False):
        row.update(label=label, predicted=predicted, probability=p, label_probability=round(1 - p, 6))
    with open(os.path.join(folder, "predictions.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows


def test_mistakes_are_grouped_by_pair_most_frequent_first_each_most_confident_first(trained_run, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(trained_run[0], folder)
    rows = fake_mistakes(folder)
    section, wrong = report.mistakes(str(folder), rows_of(folder))
    assert wrong == 3 and section.startswith("<p>3 of 10 images wrong")
    assert section.index("class_b taken for class_a: 2") < section.index("class_a taken for class_b: 1")
    first, second = section.index(rows[1]["path"]), section.index(rows[0]["path"])  # 0.97 before 0.91
    assert first < second and "<b>class_a</b> 97.0%<br>true: class_b (3.0%)" in section
    capped, _ = report.mistakes(str(folder), rows_of(folder), cap=1)
    assert "(the first 1 shown)" in capped and capped.count("<img") == 1


def test_images_that_were_arrays_come_from_the_runs_mistake_pixels(tmp_path):
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4]], np.float32)
    labels = np.array([0, 0, 1, 1])  # images 1 and 3 wrong, 1 the more confident
    pixels = np.arange(4 * 8 * 8, dtype=np.uint8).reshape(4, 8, 8)
    report.write_predictions(str(tmp_path), probabilities, labels, ["zero", "one"])
    report.write_mistake_pixels(str(tmp_path), pixels, probabilities, labels)
    with np.load(tmp_path / "mistakes.npz", allow_pickle=False) as f:
        assert f["index"].tolist() == [1, 3] and np.array_equal(f["images"], pixels[[1, 3]])
    section, wrong = report.mistakes(str(tmp_path), rows_of(tmp_path))
    assert wrong == 2 and section.count("<img") == 2 and "image 1</span>" in section


def test_the_report_command_rewrites_any_runs_page_and_refuses_a_folder_without_a_record(trained_run, tmp_path):
    folder = tmp_path / "old"
    shutil.copytree(trained_run[0], folder)
    os.remove(folder / "predictions.csv")
    os.remove(folder / "report.html")
    result = subprocess.run([sys.executable, "-m", "transferlab.report", str(folder)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == f"report: {folder / 'report.html'}", result.stderr
    assert "This run recorded no per-image predictions" in (folder / "report.html").read_text()
    result = subprocess.run([sys.executable, "-m", "transferlab.report", str(tmp_path)], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1] == \
        f"error: {tmp_path} has no record.json: not a run folder"


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (Debian's chromium package; .ci/run installs it)")
def test_chromium_renders_the_page_with_its_mistakes_and_no_console_error(trained_run, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(trained_run[0], folder)
    fake_mistakes(folder)
    report.write(str(folder))
    page = (folder / "report.html").read_text()
    # A copy that reports, once loaded, what the browser made of the page: the images it decoded, the mistakes.
    probe = page.replace("</body>", """<script>
addEventListener("load", () => {
  const images = [...document.images];
  const section = document.getElementById("mistakes");
  document.title = JSON.stringify({images: images.length,
    decoded: images.filter(i => i.complete && i.naturalWidth > 0).length,
    mistakes: document.querySelectorAll(".card img").length, heading: section ? section.textContent : null});
});
</script></body>""")
    (folder / "probe.html").write_text(probe)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0"]
    result = subprocess.run([CHROMIUM, *flags, "--dump-dom", f"file://{folder / 'probe.html'}"], capture_output=True,
                            text=True, timeout=120)
    found = json.loads(re.search(r"<title>(.*?)</title>", result.stdout).group(1).replace("&quot;", '"'))
    assert found["heading"] == "Mistakes" and found["mistakes"] == 3
    assert found["images"] == found["decoded"] == 5  # 3 thumbnails, the learning curves, the confusion matrix
    result = subprocess.run([CHROMIUM, *flags, "--dump-dom", f"file://{folder / 'report.html'}"], capture_output=True,
                            text=True, timeout=120)
    assert "taken for" in result.stdout and "CONSOLE" not in result.stderr, result.stderr[-2000:]
