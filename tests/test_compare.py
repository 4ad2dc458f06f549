import csv
import io
import json
import os

import pytest

from transferlab import compare


def write_record(folder, run_id, seed=1, status="complete", epochs=10, transfer_acc=0.99, scratch_acc=0.98,
                 transfer_s=10.0, scratch_s=100.0, experiment="mnist"):
    record = {
        "experiment": experiment, "run_id": run_id, "status": status,
        "config": {"EPOCHS": epochs, "SEED": seed, "LEARNING_RATE": 0.001, "RESULTS_DIR": str(folder)},
        "phases": {
            "base": {"train_seconds": 300.0, "steady_epoch_seconds": 30.0, "test_accuracy": 0.995},
            "transfer": {"train_seconds": transfer_s, "steady_epoch_seconds": 0.5, "test_accuracy": transfer_acc},
            "scratch": {"train_seconds": scratch_s, "steady_epoch_seconds": 9.0, "test_accuracy": scratch_acc},
        },
    }
    path = folder / experiment / run_id / "record.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(record))
    return path


@pytest.fixture
def results(tmp_path):
    write_record(tmp_path, "r1", seed=1, transfer_acc=0.990, scratch_acc=0.980)
    write_record(tmp_path, "r2", seed=2, transfer_acc=0.994, scratch_acc=0.982)
    write_record(tmp_path, "r3", seed=3, transfer_acc=0.992, scratch_acc=0.978)
    write_record(tmp_path, "r4", seed=1, epochs=2, transfer_acc=0.95, scratch_acc=0.90)
    write_record(tmp_path, "r5", seed=1, epochs=2, status="failed")
    bad = tmp_path / "mnist" / "corrupt" / "record.json"
    bad.parent.mkdir()
    bad.write_text('{"experiment": "mnist", "run_')
    other = tmp_path / "mnist" / "notarecord" / "record.json"
    other.parent.mkdir()
    other.write_text('{"hello": 1}')
    return tmp_path


def test_groups_runs_that_differ_only_in_seed(results):
    records, skipped = compare.find_records([str(results)])
    assert len(records) == 5
    assert sorted(os.path.basename(os.path.dirname(p)) for p, _ in skipped) == ["corrupt", "notarecord"]
    assert any("not valid JSON" in reason for _, reason in skipped)
    assert any("missing experiment, run_id" in reason for _, reason in skipped)

    columns, rows = compare.build_table(records)
    assert columns[:6] == ["experiment", "run_id", "status", "n", "seeds", "epochs"]  # EPOCHS differs; SEED grouped
    assert "results_dir" not in columns and "learning_rate" not in columns
    by_id = {row["run_id"]: row for row in rows}
    assert set(by_id) == {"r1 +2", "r4", "r5"}
    group = by_id["r1 +2"]
    assert group["n"] == 3 and group["seeds"] == "1,2,3" and group["epochs"] == "10"
    mean, std, n = group["transfer.accuracy"]
    assert n == 3 and mean == pytest.approx(0.992) and std == pytest.approx(0.002)
    mean, std, n = group["transfer_minus_scratch_points"]
    assert mean == pytest.approx(1.2) and std == pytest.approx(0.2)  # (1.0, 1.2, 1.4) points
    assert group["scratch_over_transfer_seconds"] == (10.0, 0.0, 3)
    assert group["transfer_over_base_seconds"] == (pytest.approx(10 / 300), 0.0, 3)
    assert by_id["r5"]["status"] == "failed" and by_id["r4"]["n"] == 1


def test_text_and_markdown_show_mean_and_std(results):
    columns, rows = compare.build_table(compare.find_records([str(results)])[0])
    text = compare.format_text(columns, rows)
    lines = text.splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("experiment  run_id") and "transfer acc" in lines[0]
    group_line = next(line for line in lines if line.startswith("mnist       r1 +2"))
    assert "99.20% ± 0.20" in group_line and "+1.20 ± 0.20" in group_line and "10.0x ± 0.0" in group_line
    column = lines[0].index("transfer acc")
    assert group_line[column:].startswith("99.20% ± 0.20")  # aligned under its header
    markdown = compare.format_markdown(columns, rows).splitlines()
    assert markdown[1].count("---") == len(columns)
    assert markdown[2].startswith("| mnist | r1 +2 | complete | 3 | 1,2,3 | 10 |")


def test_csv_round_trips_through_the_csv_module(results):
    columns, rows = compare.build_table(compare.find_records([str(results)])[0])
    parsed = list(csv.DictReader(io.StringIO(compare.format_csv(columns, rows))))
    assert len(parsed) == 3
    group = next(row for row in parsed if row["run_id"] == "r1 +2")
    assert float(group["transfer.accuracy_mean"]) == pytest.approx(0.992)
    assert float(group["transfer.accuracy_std"]) == pytest.approx(0.002)
    assert float(group["scratch.train_seconds_mean"]) == 100.0 and group["n"] == "3"


def test_main_filters_plots_and_reports_skips(results, capsys, tmp_path):
    write_record(results, "c1", experiment="cifar10")
    plot = tmp_path / "chart.png"
    assert compare.main([str(results), "--experiment=cifar10", f"--plot={plot}"]) == 0
    out, err = capsys.readouterr()
    assert "cifar10" in out and "mnist" not in out.replace("mnist/", "")
    assert "skipped" in err and "corrupt" in err
    assert plot.stat().st_size > 5_000
    assert compare.main([str(tmp_path / "nothing")]) == 1
    assert "no such file or folder" in capsys.readouterr().err


def test_with_fine_tuning_transfer_means_the_final_model_and_both_phases_time(tmp_path):
    path = write_record(tmp_path, "b1", experiment="mobilenet", transfer_acc=0.70, scratch_acc=0.98,
                        transfer_s=100.0, scratch_s=900.0)
    record = json.loads(path.read_text())
    record["phases"]["fine_tune"] = {"train_seconds": 200.0, "test_accuracy": 0.985}
    metrics = compare.run_metrics(record)
    assert metrics["transfer_minus_scratch_points"] == pytest.approx(0.5)
    assert metrics["scratch_over_transfer_seconds"] == pytest.approx(3.0)


def test_constants_the_folder_recipe_measured_show_as_the_choice_took_them(tmp_path):
    for run_id, size, head in (("a", 160, [256]), ("b", 224, [])):
        path = write_record(tmp_path, run_id, experiment="mobilenet")
        record = json.loads(path.read_text())
        record["config"].update(IMAGE_SIZE=None, HEAD=None, HEAD_DROPOUT=0.0)
        record["choice"] = {"image_size": size, "head": head}
        path.write_text(json.dumps(record))
    records = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("mobilenet/*/record.json"))]
    assert [compare.settings(r)["IMAGE_SIZE"] for r in records] == [160, 224]
    assert compare.differing_constants(records) == ["IMAGE_SIZE", "HEAD"]


def test_the_html_page_links_each_single_run_to_its_report(results, tmp_path, capsys):
    (results / "mnist" / "r4" / "report.html").write_text("<html></html>")
    page = tmp_path / "pages" / "runs.html"
    page.parent.mkdir()
    assert compare.main([str(results), f"--html={page}"]) == 0
    assert capsys.readouterr().err.splitlines()[-1] == f"page: {page}"
    text = page.read_text()
    assert "<a href='../mnist/r4/report.html'>r4</a>" in text  # relative to the page: the folder moves whole
    assert "<td>r5</td>" in text and "<td>r1 +2</td>" in text  # no report, and a group of three: no link
    assert "<th>transfer acc</th>" in text and "<td>95.00%</td>" in text and "<td>99.20% ± 0.20</td>" in text
    assert "http" not in text
