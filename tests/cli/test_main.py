"""The ``straxio`` group itself: version and the list of commands."""

from __future__ import annotations

import re

import pytest

from .helpers import straxio_cli

# Every test runs the CLI in subprocesses: seconds each (not in the quick subset).
pytestmark = pytest.mark.slow


def test_version_and_help(work):
    r = straxio_cli("--version", cwd=work)
    assert r.returncode == 0 and re.fullmatch(r"straxio \d+\.\d+\.\d+\S*\n", r.stdout)
    h = straxio_cli("--help", cwd=work)
    assert h.returncode == 0
    assert [c for c in ("run", "demo", "graph", "ls", "info")
            if re.search(rf"^  {c} ", h.stdout, re.M)] == ["run", "demo", "graph", "ls", "info"]
