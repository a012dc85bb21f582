"""The layers of the package hold: every module imports only from the layers
below its own (the import-linter contracts in pyproject.toml), and a
deliberate upward import anywhere in a module (at its top, inside a
function, under TYPE_CHECKING) breaks them."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).parents[1]
PACKAGE = ROOT / "src" / "straxio"


def lint_imports(config: pathlib.Path, *, path: pathlib.Path | None = None,
                 cwd: pathlib.Path) -> subprocess.CompletedProcess[str]:
    """Run import-linter's command on ``config`` in a new process (with
    ``path`` first on sys.path: where it finds the package to check)."""
    env = dict(os.environ)
    if path is not None:
        env["PYTHONPATH"] = str(path)
    code = ("import sys; from importlinter.cli import lint_imports; "
            f"sys.exit(lint_imports(config_filename={str(config)!r}, no_cache=True, "
            "no_logo=True))")
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=120)


def test_the_package_keeps_its_layers(tmp_path):
    done = lint_imports(ROOT / "pyproject.toml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


UPWARD = {
    "at the top": "from straxio import processor\n",
    "inside a function": "def _later():\n    from straxio.processor import Processor\n",
    "under TYPE_CHECKING": "import typing\nif typing.TYPE_CHECKING:\n"
                           "    from straxio.processor import Processor\n",
}


@pytest.mark.parametrize("where", list(UPWARD))
def test_an_upward_import_breaks_the_layers(tmp_path, where):
    # A copy of the package in which chunk.py (low) imports the processor
    # (high): the check must name that import.
    copy = tmp_path / "src"
    shutil.copytree(PACKAGE, copy / "straxio",
                    ignore=shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc"))
    chunk = copy / "straxio" / "chunk.py"
    chunk.write_text(chunk.read_text() + "\n\n" + UPWARD[where])
    done = lint_imports(ROOT / "pyproject.toml", path=copy, cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "straxio's modules import only from the layers below them BROKEN" in done.stdout
    assert "straxio.chunk -> straxio.processor" in done.stdout, done.stdout
