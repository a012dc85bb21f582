"""Every example in the docs and the README runs, and prints what the page shows.

How a page states its examples (README.md, "Documentation", points here):

Python
    The ```python blocks of a page run in order in one namespace (a later
    block uses what an earlier one defined), in a fresh working directory
    of the page's own. Top-level ``await`` / ``async with`` run on an event
    loop. A block whose first line is ``# strax`` shows strax's own code and
    is not run. A ```text block right after a python block (nothing but
    blank lines between them) is what that block prints on stdout, compared
    as below; a block that prints must be followed by one (else what it
    prints is checked by nobody).

Files
    ``<!-- file: NAME -->`` (or ``<!-- plugin file: NAME -->``) on the line
    before a fenced block: the block is a file the page's shell sessions
    use. It is written to NAME in the page's shell folder, shown to the
    reader in full, and not run as page code.

Shell
    In ```console blocks, a line starting with ``$ `` is a command (a line
    ending in ``\\`` continues it) and the lines up to the next command are
    what it prints, stdout and stderr together in the order written; a
    command shown without output must print nothing. Commands run through
    ``/bin/sh`` in order, in a fresh temporary folder per page (a later
    command sees what earlier ones stored), with ``straxio`` and ``python``
    on PATH meaning the Python running these tests (``straxio`` is
    ``python -m straxio``), ``STRAXIO_STORAGE`` unset, stdout a pipe (so no
    progress bars). ``<!-- not run: REASON -->`` on the line before a
    console block shows it without running it (e.g. it needs Ctrl-C in a
    terminal): say why.

Matching shown against printed output, like doctest's NORMALIZE_WHITESPACE
and ELLIPSIS:
    - runs of spaces match runs of spaces of any length (tables realign as
      their numbers change); indentation, trailing spaces, and blank lines
      before and after the output do not count;
    - timings, rates and sizes vary between runs and machines, so a number
      with a decimal point (``0.30``) matches any such number, and a size
      (``245 B``, ``1.3 MB``) any size; integers (rows, chunks, counts)
      must match;
    - ``...`` matches any text within a line, and a line holding only
      ``...`` any number of lines (also none): use it for lineage hashes,
      pids, absolute paths and anything else that varies.

Examples run as a reader sees them: hidden set-up code (an HTML comment
starting with ``<!-- setup``) is refused. Show the set-up instead: the
imports, a context, the toy plugins of ``straxio.testing`` or a small
plugin defined on the page.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import dataclasses
import functools
import inspect
import io
import os
import pathlib
import re
import signal
import stat
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).parents[1]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])

#: Per-command time limit of the shell sessions.
COMMAND_TIMEOUT = 120

# --------------------------------------------------------------------------- reading a page

_ITEM = re.compile(
    # a fenced block, maybe indented (in a list item)
    r"^(?P<indent>[ \t]*)```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$"
    r"|<!-- setup\n(?P<setup>.*?)-->"                          # hidden set-up: refused
    r"|<!-- (?:plugin )?file: (?P<file>\S+) -->"               # the next block is a file
    r"|<!-- not run: (?P<skip>.*?)-->",                        # the next block is not run
    re.S | re.M)


@dataclasses.dataclass
class Block:
    """One fenced block (or hidden set-up) of a page."""

    lang: str           # "python", "console", "text", "setup" (refused), ...
    line: int           # line of its first body line, 1-based
    body: str
    file: str | None = None      # written out as this file, not run
    skip: str | None = None      # not run, for this reason
    output: Block | None = None  # a python block's printed output (a text block)


@functools.cache
def blocks(path: pathlib.Path) -> list[Block]:
    text = path.read_text()
    out: list[Block] = []
    file = skip = None
    last_end = 0
    for m in _ITEM.finditer(text):
        between = text[last_end:m.start()]
        last_end = m.end()
        if m.group("file") is not None:
            file = m.group("file")
            continue
        if m.group("skip") is not None:
            skip = m.group("skip").strip()
            continue
        line = text.count("\n", 0, m.start()) + 2
        if m.group("setup") is not None:
            out.append(Block("setup", line, m.group("setup")))
            file = skip = None
            continue
        indent = m.group("indent")
        body = "".join(x.removeprefix(indent) for x in m.group("body").splitlines(True))
        block = Block(m.group("lang"), line, body, file, skip)
        file = skip = None
        if (block.lang == "text" and not between.strip() and out
                and out[-1].lang == "python" and out[-1].file is None and out[-1].output is None):
            out[-1].output = block      # right after a python block: its output
            continue
        out.append(block)
    return out


def python_blocks(path: pathlib.Path) -> list[Block]:
    return [b for b in blocks(path)
            if b.lang == "python" and b.file is None and not b.body.startswith("# strax")]


def console_blocks(path: pathlib.Path) -> list[Block]:
    return [b for b in blocks(path) if b.lang == "console"]


def file_blocks(path: pathlib.Path) -> list[Block]:
    return [b for b in blocks(path) if b.file is not None]


@dataclasses.dataclass
class Command:
    line: int
    command: str
    expected: list[str]


def commands(block: Block) -> list[Command]:
    """The ``$ `` commands of a console block, each with its shown output."""
    out: list[Command] = []
    lines = block.body.splitlines()
    i = 0
    while i < len(lines):
        text = lines[i]
        if not text.startswith("$ "):
            if out:
                out[-1].expected.append(text)
            elif text.strip():
                raise AssertionError(f"line {block.line + i}: output before any `$ ` command")
            i += 1
            continue
        start = i
        command = text[2:]
        while command.endswith("\\") and i + 1 < len(lines):
            i += 1
            command = command[:-1] + " " + lines[i].strip()
        out.append(Command(block.line + start, command, []))
        i += 1
    return out


# --------------------------------------------------------------------------- matching

_SIZE = re.compile(r"(?<![\w.])\d+(?:\.\d+)? (?:B|kB|MB|GB|TB)(?!\w)")
_DECIMAL = re.compile(r"(?<![\w.])-?\d+\.\d+(?![\w.])")
_ELLIPSIS = "..."


def _normalised(line: str) -> str:
    line = " ".join(line.split())
    return _DECIMAL.sub("\0decimal", _SIZE.sub("\0size", line))


def _line_pattern(line: str) -> re.Pattern[str]:
    pieces = " ".join(line.split()).split(_ELLIPSIS)
    return re.compile(".*".join(re.escape(_normalised(p)) for p in pieces))


def _trimmed(lines: list[str]) -> list[str]:
    while lines and not lines[0].strip():
        lines = lines[1:]
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    return lines


def matches(expected: list[str], got: list[str]) -> bool:
    """Whether printed lines ``got`` match the shown lines ``expected`` (the
    rules of the module docstring)."""
    want = _trimmed(expected)
    have = [_normalised(g) for g in _trimmed(got)]
    patterns = [None if w.strip() == _ELLIPSIS else _line_pattern(w) for w in want]

    @functools.cache
    def match(i: int, j: int) -> bool:
        if i == len(patterns):
            return j == len(have)
        p = patterns[i]
        if p is None:  # any number of lines
            return any(match(i + 1, k) for k in range(j, len(have) + 1))
        return j < len(have) and p.fullmatch(have[j]) is not None and match(i + 1, j + 1)

    return match(0, 0)


def mismatch(where: str, what: str, expected: list[str], got: str) -> str:
    shown = "\n".join(f"    {x}" for x in _trimmed(expected)) or "    (nothing)"
    printed = "\n".join(f"    {x}" for x in _trimmed(got.splitlines())) or "    (nothing)"
    return f"{where}: {what}\n  the page shows:\n{shown}\n  it printed:\n{printed}"


def test_matching_rules():
    """The rules the docs rely on, and that a difference is still found."""
    table = ["  target  rows  size", "  pulses  19,997  499.9 kB  computed, saved"]
    assert matches(table, ["  target          rows      size",
                           "  pulses  19,997  1.2 MB  computed, saved", ""])
    assert not matches(table, ["  target rows size", "  pulses 19,998 1.2 MB computed, saved"])
    assert not matches(table, ["  target rows size", "  pulses 19,997 1.2 MB computed"])
    assert matches(["run 0.30 s wall, 1.3 MB/s"], ["run 12.07 s wall, 999 B/s"])
    assert not matches(["version 0.1.0"], ["version 0.2.0"])
    assert matches(["lineage ..."], ["lineage adqwa4ealy"])
    assert matches(["a", "...", "z"], ["a", "z"]) and matches(["a", "...", "z"], ["a", "b", "z"])
    assert not matches(["a", "...", "z"], ["a", "b"])
    assert not matches([], ["something"])


# --------------------------------------------------------------------------- python blocks


@pytest.mark.parametrize("path", [d for d in DOCS if python_blocks(d)], ids=lambda p: p.name)
def test_python_examples(path, tmp_path, monkeypatch):
    """The page's python blocks run in order and print what the page shows."""
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": f"doc_{path.stem}"}
    failures = []
    for block in python_blocks(path):
        where = f"{path.name}:{block.line}"
        # Padded so that tracebacks give the page's own line numbers.
        code = compile("\n" * (block.line - 1) + block.body, path.name, "exec",
                       flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            result = eval(code, namespace)
            if inspect.iscoroutine(result):
                asyncio.run(result)
        if block.output is not None:
            expected = block.output.body.splitlines()
            if not matches(expected, printed.getvalue().splitlines()):
                failures.append(mismatch(where, "printed output", expected,
                                         printed.getvalue()))
        elif printed.getvalue():
            failures.append(mismatch(
                where, "prints, but no ```text block right after it shows what: add one",
                [], printed.getvalue()))
    assert not failures, "\n\n".join(failures)


def test_no_hidden_setup():
    """No page runs code its reader cannot see."""
    hidden = [f"{path.name}:{b.line}" for path in DOCS for b in blocks(path) if b.lang == "setup"]
    assert not hidden, (
        f"hidden set-up (`<!-- setup`) at {', '.join(hidden)}: examples must run as a reader "
        "sees them; show the set-up in a ```python block (imports, a context, the toy "
        "plugins of straxio.testing or a small plugin defined on the page)")


# --------------------------------------------------------------------------- shell blocks


def _bin_dir(where: pathlib.Path) -> pathlib.Path:
    """``python`` and ``straxio`` for the shell: the Python running the tests."""
    where.mkdir()
    for name, args in (("python", ""), ("straxio", " -m straxio")):
        script = where / name
        script.write_text(f'#!/bin/sh\nexec "{sys.executable}"{args} "$@"\n')
        script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return where


def shell_env(bin_dir: pathlib.Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "STRAXIO_STORAGE"}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", PYTHONUNBUFFERED="1",
               PYTHONIOENCODING="utf-8", COLUMNS="100")
    return env


def run_command(command: str, cwd: pathlib.Path, env: dict[str, str]) -> tuple[int | None, str]:
    """Exit code (None: timed out, then killed with everything it started)
    and what it printed, stdout and stderr in the order written."""
    p = subprocess.Popen(command, shell=True, cwd=cwd, env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        out, _ = p.communicate(timeout=COMMAND_TIMEOUT)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)  # its own session: the shell and its children
        out, _ = p.communicate()
        return None, out
    return p.returncode, out


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("path", [d for d in DOCS if console_blocks(d)], ids=lambda p: p.name)
def test_shell_examples(path, tmp_path):
    """The page's ``$`` commands run in order in one folder and print what
    the page shows."""
    work = tmp_path / "page"
    work.mkdir()
    env = shell_env(_bin_dir(tmp_path / "bin"))
    for block in file_blocks(path):
        (work / block.file).write_text(block.body)
    failures = []
    ran = 0
    for block in console_blocks(path):
        if block.skip is not None:
            continue
        for cmd in commands(block):
            where = f"{path.name}:{cmd.line}"
            t0 = time.perf_counter()
            returncode, printed = run_command(cmd.command, work, env)
            ran += 1
            if returncode is None:
                failures.append(f"{where}: `{cmd.command}` took more than {COMMAND_TIMEOUT} s; "
                                f"it printed:\n{printed}")
            elif not matches(cmd.expected, printed.splitlines()):
                failures.append(mismatch(
                    where, f"`$ {cmd.command}` (exit {returncode}, "
                    f"{time.perf_counter() - t0:.1f} s)", cmd.expected, printed))
    assert ran, f"{path.name}: every console block is marked not run"
    assert not failures, "\n\n".join(failures)
