import os
import subprocess
import sys

import pytest
from conftest import run_script

from transferlab import config
from transferlab.errors import UserError

SOURCE = '''"""A test script."""
EPOCHS = 10  # epochs per phase
LEARNING_RATE = 0.001  # Adam's step size
TASK_B_CLASSES = [7, 8, 9]  # held-out digits
NAMES = ["base", "transfer"]  # phases
RUN_SCRATCH = True  # baseline on or off
RESULTS_DIR = "results"  # where runs go
DATA_DIR: str | None = None  # folder with mnist.npz
'''


def namespace(tmp_path):
    path = tmp_path / "script.py"
    path.write_text(SOURCE)
    ns = {"__file__": str(path)}
    exec(compile(SOURCE, str(path), "exec"), ns)
    return ns


@pytest.mark.parametrize(
    "name, raw, expected",
    [
        ("EPOCHS", "2", 2),
        ("LEARNING_RATE", "1e-4", 1e-4),
        ("LEARNING_RATE", "1", 1.0),
        ("TASK_B_CLASSES", "5,6,7,8,9", [5, 6, 7, 8, 9]),
        ("TASK_B_CLASSES", "[1, 2]", [1, 2]),
        ("TASK_B_CLASSES", "7", [7]),
        ("NAMES", "base,scratch", ["base", "scratch"]),
        ("RUN_SCRATCH", "False", False),
        ("RESULTS_DIR", "/tmp/out", "/tmp/out"),
        ("RESULTS_DIR", "123", "123"),
        ("DATA_DIR", "../shared/datasets", "../shared/datasets"),
        ("DATA_DIR", "None", None),
    ],
)
def test_good_overrides_are_parsed_to_the_constants_type(tmp_path, name, raw, expected):
    ns = namespace(tmp_path)
    values = config.apply_overrides(ns, [f"--{name.lower()}={raw}"])
    assert values[name] == expected
    assert type(values[name]) is type(expected)


@pytest.mark.parametrize(
    "arg, message",
    [
        ("--epochs=abc", "--epochs=abc: expected int, got str 'abc'"),
        ("--epochs=2.5", "--epochs=2.5: expected int, got float 2.5"),
        ("--epochs=True", "--epochs=True: expected int, got a bool"),
        ("--epochs=None", "--epochs=None: EPOCHS may not be None (expected int)"),
        ("--run_scratch=1", "--run_scratch=1: expected bool, got int 1"),
        ("--task_b_classes=a,b", "--task_b_classes=a,b: expected int, got str 'a'"),
        ("--learning_rate=fast", "--learning_rate=fast: expected float, got str 'fast'"),
        ("--epoch=2", "unknown constant --epoch (did you mean --epochs?); valid names: --epochs, --learning_rate, "
                      "--task_b_classes"),
        ("--EPOCHS=2", "unknown constant --EPOCHS (did you mean --epochs?)"),
        ("epochs=2", "expected --name=value, got 'epochs=2'"),
        ("--epochs", "expected --name=value, got '--epochs'"),
    ],
)
def test_bad_overrides_raise_one_line_errors(tmp_path, arg, message):
    ns = namespace(tmp_path)
    with pytest.raises(UserError) as caught:
        config.apply_overrides(ns, [arg])
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)
    assert ns["EPOCHS"] == 10  # nothing half-applied


def test_unknown_name_lists_every_valid_name(tmp_path):
    with pytest.raises(UserError) as caught:
        config.apply_overrides(namespace(tmp_path), ["--bogus=1"])
    for flag in ("--epochs", "--learning_rate", "--task_b_classes", "--names", "--run_scratch",
                 "--results_dir", "--data_dir"):
        assert flag in str(caught.value)


def test_literal_eval_never_runs_code(tmp_path):
    ns = namespace(tmp_path)
    values = config.apply_overrides(ns, ["--results_dir=__import__('os').system('echo hacked')"])
    assert values["RESULTS_DIR"] == "__import__('os').system('echo hacked')"  # kept as text, not run


def test_comments_and_help_text(tmp_path):
    ns = namespace(tmp_path)
    assert config.comments(SOURCE)["LEARNING_RATE"] == "Adam's step size"
    text = config.help_text(ns, ns["__file__"])
    assert "A test script." in text
    assert "--epochs=10" in text and "epochs per phase" in text
    assert "--data_dir=None" in text and "folder with mnist.npz" in text
    assert "--task_b_classes=[7, 8, 9]" in text


def test_help_shows_what_a_recipe_gives_each_none_constant(tmp_path):
    ns = namespace(tmp_path)
    ns["RECIPES"] = {"folder": {"DATA_DIR": "photos"}, "mnist": {"DATA_DIR": "digits", "EPOCHS": 3}}
    lines = config.help_text(ns, ns["__file__"]).splitlines()
    (data_dir,) = [line for line in lines if line.strip().startswith("--data_dir=")]
    assert data_dir.endswith("folder with mnist.npz [None: 'photos' for folder, 'digits' for mnist]")
    (epochs,) = [line for line in lines if line.strip().startswith("--epochs=")]
    assert epochs.endswith("epochs per phase")  # not None: the value shown is the one that runs


def test_script_help_lists_constants_and_exits_0():
    result = run_script("mnist_transfer.py", "--help")
    assert result.returncode == 0
    for flag in ("--epochs=10", "--batch_size=32", "--learning_rate=0.001", "--seed=", "--task_a_classes=",
                 "--task_b_classes=[7, 8, 9]", "--data_dir=None", "--results_dir='results'"):
        assert flag in result.stdout
    assert "held-out digits" in result.stdout


def test_help_read_in_part_ends_quietly():
    # `--help | head -1`: the reader closes the pipe after one line, which must not end in a traceback.
    script = os.path.join(os.path.dirname(__file__), "..", "mnist_transfer.py")
    shell = subprocess.run(["bash", "-o", "pipefail", "-c", f"{sys.executable} {script} --help | head -1"],
                           capture_output=True, text=True, timeout=120)
    assert shell.stdout.startswith("usage: python mnist_transfer.py") and shell.stderr == ""
    assert shell.returncode == 0


@pytest.mark.parametrize(
    "arg, message",
    [
        ("--bogus=1", "error: unknown constant --bogus; valid names: --task_a_classes, --task_b_classes,"),
        ("--epochs=ten", "error: --epochs=ten: expected int, got str 'ten'"),
        ("--epochs=0", "error: --epochs must be > 0, got 0"),
        ("--learning_rate=-1", "error: --learning_rate must be > 0"),
        ("--task_b_classes=6,7", "error: task A and task B share classes [6]"),
        ("--task_b_classes=9,10", "error: --task_b_classes names classes [10] not in the data"),
        ("--data_dir=/nonexistent/place", "error: data directory '/nonexistent/place' does not exist"),
    ],
)
def test_script_bad_input_is_one_line_and_exit_2(tmp_path, arg, message):
    earlier = tmp_path / "mnist" / "20260101-000000-000000-abcd" / "record.json"  # an earlier run's record
    earlier.parent.mkdir(parents=True)
    earlier.write_text('{"status": "complete"}\n')
    result = run_script("mnist_transfer.py", arg, f"--results_dir={tmp_path}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    # Nothing was created and the earlier record is untouched.
    assert [p.relative_to(tmp_path) for p in sorted(tmp_path.rglob("*"))] == [
        earlier.parent.parent.relative_to(tmp_path), earlier.parent.relative_to(tmp_path),
        earlier.relative_to(tmp_path)]
    assert earlier.read_text() == '{"status": "complete"}\n'


def test_debug_flag_shows_the_traceback(tmp_path):
    result = run_script("mnist_transfer.py", "--epochs=0", "--debug", f"--results_dir={tmp_path}")
    assert result.returncode == 2
    assert "Traceback" in result.stderr and "error: --epochs must be > 0" in result.stderr


def test_check_positive_names_the_flag():
    config.check_positive(EPOCHS=1, LEARNING_RATE=0.1)
    with pytest.raises(UserError, match=r"^--batch_size must be > 0, got -3$"):
        config.check_positive(EPOCHS=1, BATCH_SIZE=-3)


def test_an_int_or_str_constant_keeps_numbers_as_numbers_and_names_as_text():
    annotation = int | str | None
    assert config.parse_value("FINE_TUNE_AT", "100", None, annotation) == 100
    assert config.parse_value("FINE_TUNE_AT", "block_13_expand", None, annotation) == "block_13_expand"
    assert config.parse_value("FINE_TUNE_AT", "None", None, annotation) is None
    assert config.parse_value("WEIGHTS", "42", "imagenet", str | None) == "42"  # str alone: the text as written


def test_fill_from_recipe_fills_only_what_was_left_at_none():
    values = {"IMAGE_SIZE": None, "EPOCHS": 3, "FINE_TUNE_AT": None}
    filled = config.fill_from_recipe(values, {"IMAGE_SIZE": 160, "EPOCHS": 10, "FINE_TUNE_AT": 0})
    assert filled == {"IMAGE_SIZE": 160, "EPOCHS": 3, "FINE_TUNE_AT": 0}
    assert values["IMAGE_SIZE"] is None  # a new dict: nothing is written back


def test_configure_sets_the_globals_once_and_returns_a_frozen_config(tmp_path):
    ns = namespace(tmp_path)
    ns["EPOCHS"], ns["RECIPES"] = None, {"quick": {"EPOCHS": 2, "LEARNING_RATE": 0.5}}
    seen = []

    def recipe(c):
        seen.append(("recipe", c.EPOCHS, ns["EPOCHS"]))  # the globals are not written before the end
        return ns["RECIPES"]["quick"]

    def derived(c):
        seen.append(("derive", c.EPOCHS))
        return {"RUN_SCRATCH": c.EPOCHS > 1}

    found = config.configure(ns, ["--learning_rate=0.1", "--run_scratch=False"], recipe=recipe, derive=derived)
    assert seen == [("recipe", None, None), ("derive", 2)]
    assert found.EPOCHS == ns["EPOCHS"] == 2 and found["LEARNING_RATE"] == ns["LEARNING_RATE"] == 0.1  # shell wins
    assert found.RUN_SCRATCH is ns["RUN_SCRATCH"] is True  # derived last
    assert dict(found) == config.constants(ns)
    with pytest.raises(AttributeError, match="a run's constants are frozen: set EPOCHS in the constants block or "
                                             "with --epochs="):
        found.EPOCHS = 3
    with pytest.raises(TypeError):
        found["EPOCHS"] = 3


def test_an_old_name_sets_the_new_constant_with_a_notice(tmp_path, capsys):
    ns = namespace(tmp_path)
    ns["VALIDATION_SPLIT"], ns["HEAD"] = 0.2, [8]
    values = config.apply_overrides(ns, ["--validation_fraction=0.3", "--head_width=16"])
    assert values["VALIDATION_SPLIT"] == 0.3 and values["HEAD"] == [16]
    assert "VALIDATION_FRACTION" not in values and "HEAD_WIDTH" not in values
    assert capsys.readouterr().err.splitlines() == [
        "notice: --validation_fraction is now --validation_split; the old name works until the next release",
        "notice: --head_width is now --head; the old name works until the next release"]
    ns["HEAD_WIDTH"] = 4  # a script that still has the old name: it is that script's constant
    assert config.apply_overrides(ns, ["--head_width=16"])["HEAD_WIDTH"] == 16


@pytest.mark.parametrize("name, good, bad, message", [
    ("EPOCHS", 1, 0, "--epochs must be > 0, got 0"),
    ("FINE_TUNE_EPOCHS", 0, -1, "--fine_tune_epochs must be >= 0, got -1"),  # 0 skips the phase
    ("HEAD_BATCH_SIZE", 1, 0, "--head_batch_size must be > 0, got 0"),
    ("FINE_TUNE_LEARNING_RATE", 1e-5, 0.0, "--fine_tune_learning_rate must be > 0, got 0.0"),
    ("IMAGE_SIZE", 32, -32, "--image_size must be > 0, got -32"),
    ("TASK_B_SAMPLES_PER_CLASS", 1, 0, "--task_b_samples_per_class must be > 0, got 0"),
    ("HEAD_WIDTH", 8, 0, "--head_width must be > 0, got 0"),
    ("VALIDATION_FRACTION", 0.2, 1.0, "--validation_fraction=1.0: must be in (0, 1)"),
    ("VALIDATION_SPLIT", 0.1, 0, "--validation_split=0: must be in (0, 1)"),
    ("BATCHNORM_MOMENTUM", 0.9, 1.5, "--batchnorm_momentum=1.5: must be in (0, 1)"),
    ("HEAD_DROPOUT", 0.0, 1.0, "--head_dropout=1.0: must be in [0, 1)"),
    ("DROPOUT", 0.2, -0.1, "--dropout=-0.1: must be in [0, 1)"),
    ("STOP_AT_VAL_ACCURACY", 1.0, 0.0, "--stop_at_val_accuracy=0.0: must be in (0, 1]"),
])
def test_a_constant_is_checked_by_the_range_its_name_gives(name, good, bad, message):
    config.check_ranges({name: good, "SEED": -1, "NOTHING_SAID": -5, "RUN_SCRATCH": False})  # no rule: unchecked
    config.check_ranges({name: None})  # unset, or a recipe's to fill
    with pytest.raises(UserError) as caught:
        config.check_ranges({"SEED": -1, name: bad})
    assert str(caught.value) == message


def test_configure_and_the_recipe_check_the_ranges(tmp_path):
    ns = namespace(tmp_path)
    config.check_ranges(config.apply_overrides(ns, ["--epochs=3"]))
    recipe_ns = {"IMAGE_SIZE": None, "VALIDATION_SPLIT": None}
    with pytest.raises(UserError, match=r"^--validation_split=1.2: must be in \(0, 1\)$"):
        config.fill_from_recipe(dict(recipe_ns), {"IMAGE_SIZE": 160, "VALIDATION_SPLIT": 1.2})


def test_later_constants_may_name_only_constants(tmp_path):
    ns = namespace(tmp_path)
    ns["LATER_CONSTANTS"] = {"base": ["EPOCHS", "LEARNING_RATE"]}
    config.check_later_constants(ns)  # both are constants: nothing to say
    ns["LATER_CONSTANTS"] = {"base": ["EPOCHS", "LEARNING_RAT"]}
    with pytest.raises(NameError, match=r"LATER_CONSTANTS\['base'\] names LEARNING_RAT: not constants of this script"):
        config.check_later_constants(ns)
