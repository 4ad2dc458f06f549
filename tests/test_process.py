"""How a script's process ends (transferlab/process.py): exit codes, last lines, cleanups."""

import subprocess
import sys
import textwrap

import pytest
from conftest import ROOT

SCRIPT = """
import sys
from transferlab import config, process

process.install()
process.on_exit(print, "cleaned up")
kind = sys.argv[1]
if kind == "bad input":
    raise config.UserError("--epochs must be > 0, got 0")
if kind == "interrupted":
    raise KeyboardInterrupt
if kind == "diverged":
    raise FloatingPointError("phase base: the loss became NaN or infinite in epoch 2; try a lower learning rate")
if kind == "bug":
    raise ValueError("a bug")
"""


@pytest.mark.parametrize("kind, code, last_line", [
    ("bad input", 2, "error: --epochs must be > 0, got 0"),
    ("interrupted", 130, "cleaned up"),
    ("diverged", 1, "error: phase base: the loss became NaN or infinite in epoch 2; try a lower learning rate"),
    ("bug", 1, "ValueError: a bug"),
])
def test_how_an_uncaught_exception_ends_the_process(tmp_path, kind, code, last_line):
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(SCRIPT))
    result = subprocess.run([sys.executable, str(script), kind], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == code
    output = (result.stdout + result.stderr).strip().splitlines()
    assert output[-1] == last_line
    assert "cleaned up" in result.stdout  # the cleanups run however the process ends
    assert ("Traceback" in result.stderr) == (kind == "bug")  # one line for everything the user can act on
