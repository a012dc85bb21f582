"""Every straxio code example in the docs and the README runs.

Per document, the ```python blocks run in order in one namespace (a later
block may use what an earlier one defined), in a fresh working directory.
Top-level ``await`` / ``async with`` run on an event loop. Hidden set-up
that a reader does not need to see goes in an HTML comment starting with
``<!-- setup``; a block whose first line is ``# strax`` shows strax's own
code (for comparison) and is not run.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).parents[1]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
PART = re.compile(r"```python\n(?P<code>.*?)```|<!-- setup\n(?P<setup>.*?)-->", re.S)


def parts(path: pathlib.Path) -> list[tuple[int, str]]:
    text = path.read_text()
    out = []
    for m in PART.finditer(text):
        code = m.group("code") if m.group("code") is not None else m.group("setup")
        if code.lstrip().startswith("# strax"):
            continue
        out.append((text.count("\n", 0, m.start()) + 1, code))
    return out


@pytest.mark.parametrize("path", [d for d in DOCS if parts(d)], ids=lambda p: p.name)
def test_doc_examples_run(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": f"doc_{path.stem}"}
    for line, code in parts(path):
        compiled = compile(code, f"{path.name}:{line}", "exec",
                           flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        result = eval(compiled, namespace)
        if inspect.iscoroutine(result):
            asyncio.run(result)
