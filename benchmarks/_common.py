"""Shared helpers of the straxio-vs-strax benchmarks (no strax import here).

Every measurement runs in a fresh worker process (``python bench_x.py
--worker ...``) that prints one JSON line prefixed with :data:`MARK`; the
parent alternates frameworks A B A B, collects, and prints medians. Workers
of straxio run under ``sys.executable``, workers of strax under the Python
given by ``--strax-python``, by default that of ``benchmarks/.venv-strax``:
a virtual environment with strax (:data:`STRAX_VERSION`) and this checkout
of straxio, which :func:`strax_python` creates when it is missing.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import resource
import statistics
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
MARK = "@@BENCH@@ "
#: The strax that straxio is compared with.
STRAX_VERSION = "2.2.3"
#: Where the comparison environment lives (ignored by git).
STRAX_VENV = HERE / ".venv-strax"
#: raw-record MB per second of run time in straxio.tpc's simulation (0.28 MB / 20 ms)
MB_PER_S_OF_RUN = 14.0


# --------------------------------------------------------------------------- in the worker

def _status(field: str) -> float:
    """A field of /proc/self/status in MB (VmRSS, VmHWM)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(field)


def rss_mb() -> float:
    return _status("VmRSS")


def peak_rss_mb() -> float:
    return _status("VmHWM")


def cpu_seconds() -> float:
    """User + system CPU of this process and its waited-for children."""
    s = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


class Clock:
    """Wall and process CPU time of a block."""

    def __enter__(self):
        self.cpu0, self.t0 = cpu_seconds(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.t0
        self.cpu = cpu_seconds() - self.cpu0


def emit(result: dict) -> None:
    """Hand one measurement back to the parent."""
    print(MARK + json.dumps(result), flush=True)


def dir_bytes(path) -> int:
    return sum(p.stat().st_size for p in pathlib.Path(path).rglob("*") if p.is_file())


# --------------------------------------------------------------------------- in the parent

def _shown(path: str | os.PathLike) -> str:
    """A path as printed: relative to the repository when inside it."""
    p = pathlib.Path(path).absolute()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)


def venv_python(venv: pathlib.Path) -> pathlib.Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


_PROBE = ("import os, strax, straxio.tpc; "
          "print(strax.__version__, os.path.dirname(os.path.dirname(straxio.__file__)))")


def _probe(python: str) -> tuple[str | None, str]:
    """(strax version, folder straxio is imported from), or (None, why not)."""
    p = subprocess.run([python, "-c", _PROBE], capture_output=True, text=True)
    if p.returncode:
        return None, (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1]
    version, src = p.stdout.split(maxsplit=1)
    return version, src.strip()


def make_strax_env(venv: pathlib.Path = STRAX_VENV, log=print) -> pathlib.Path:
    """Create (or repair) ``venv`` with strax :data:`STRAX_VERSION` and this
    checkout of straxio (editable), so strax workers import the same
    ``straxio.tpc`` kernels; returns its Python. Needs the package index."""
    python = venv_python(venv)
    if python.exists():
        version, src = _probe(str(python))
        if version == STRAX_VERSION and pathlib.Path(src).resolve() == (ROOT / "src").resolve():
            return python
    t0 = time.perf_counter()
    log(f"  setting up {_shown(venv)}: strax {STRAX_VERSION} and this straxio "
        "(once; a few minutes)")
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", f"strax=={STRAX_VERSION}",
                    "-e", str(ROOT)], check=True)
    version, src = _probe(str(python))
    if version != STRAX_VERSION:
        raise RuntimeError(f"{_shown(venv)} was set up but cannot import strax "
                           f"{STRAX_VERSION} and straxio.tpc: {src}")
    log(f"  {_shown(venv)} ready in {time.perf_counter() - t0:.0f} s")
    return python


def strax_python(requested: str | None, log=print) -> tuple[str | None, str]:
    """The Python to run strax workers with, or None and why not.

    ``requested`` (``--strax-python``) is used as it is; without it, the
    Python of ``benchmarks/.venv-strax``, created first if it is missing.
    """
    if requested is None:
        try:
            candidate = str(make_strax_env(log=log))
        except (OSError, subprocess.CalledProcessError, RuntimeError) as e:
            return None, (f"could not set up {_shown(STRAX_VENV)} ({e}): strax rows skipped; "
                          "give --strax-python, or --no-strax")
    else:
        candidate = requested
        if not os.path.exists(candidate):
            return None, f"{candidate} not found: strax rows skipped"
    version, src = _probe(candidate)
    if version is None:
        return None, (f"{_shown(candidate)} cannot import strax and straxio.tpc ({src}): "
                      f"strax rows skipped; `{candidate} -m pip install -e .` may help")
    return candidate, f"strax {version} ({_shown(candidate)})"


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pairs", type=int, default=5,
                        help="A B rounds per configuration (medians over them)")
    parser.add_argument("--quick", action="store_true", help="small sizes, 2 pairs")
    parser.add_argument("--strax-python", default=None,
                        help="Python with strax and straxio installed (default: that of "
                             f"benchmarks/.venv-strax, created with strax {STRAX_VERSION} "
                             "when missing)")
    parser.add_argument("--no-strax", action="store_true", help="run straxio alone")
    parser.add_argument("--out", default=None, help="JSON file (default results/<bench>.json)")
    # Set by the parent when it starts this script as a measuring worker.
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--framework", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)


def report(name: str, out: dict, args: argparse.Namespace) -> None:
    """Print a benchmark's tables and write its JSON."""
    print(out["tables"])
    print(f"\nJSON: {write_json(name, out, args.out)}")


def worker(python: str, script: pathlib.Path, argv: list[str], timeout: float = 900) -> dict:
    """Run one worker and return its measurement (or {"error": ...})."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", TQDM_DISABLE="1")
    env.pop("PYTHONPATH", None)
    try:
        p = subprocess.run([python, str(script), "--worker", *argv], capture_output=True,
                           text=True, timeout=timeout, env=env, cwd=str(HERE))
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    for line in reversed(p.stdout.splitlines()):
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    tail = (p.stderr or p.stdout).strip().splitlines()[-15:]
    return {"error": f"exit {p.returncode}: " + "\n".join(tail)}


def alternate(configs: list[tuple[str, str, list[str]]], pairs: int, script: pathlib.Path,
              log=print) -> dict[str, list[dict]]:
    """Run each (label, python, argv) once per round, in order, for ``pairs``
    rounds: A B A B ... Returns label -> measurements (errors dropped, but
    logged)."""
    out: dict[str, list[dict]] = {label: [] for label, _, _ in configs}
    for i in range(pairs):
        for label, python, argv in configs:
            t0 = time.perf_counter()
            r = worker(python, script, argv)
            if "error" in r:
                log(f"  [{script.stem}] round {i + 1} {label}: FAILED {r['error']}")
                continue
            out[label].append(r)
            log(f"  [{script.stem}] round {i + 1}/{pairs} {label}: "
                f"{time.perf_counter() - t0:.1f} s")
    return out


def median(results: list[dict], key: str) -> float | None:
    vals = [r[key] for r in results if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def spread(results: list[dict], key: str) -> float | None:
    """(max - min) / median, a quick look at how noisy a number is."""
    vals = [r[key] for r in results if r.get(key) is not None]
    if len(vals) < 2:
        return None
    m = statistics.median(vals)
    return (max(vals) - min(vals)) / m if m else None


def fmt(x, digits: int = 1) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        if abs(x) >= 100:
            return f"{x:.0f}"
        if 0 < abs(x) < 1:
            return f"{x:.3g}"
        return f"{x:.{digits}f}"
    return str(x)


def markdown(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def ratio(a, b):
    return a / b if a is not None and b else None


def machine() -> dict:
    import numpy

    return {"python": sys.version.split()[0], "platform": platform.platform(),
            "cpus": os.cpu_count(), "numpy": numpy.__version__,
            "date": datetime.datetime.now().isoformat(timespec="seconds")}


def write_json(name: str, payload: dict, out: str | None = None) -> pathlib.Path:
    path = pathlib.Path(out) if out else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "machine": machine(), **payload}
    path.write_text(json.dumps(payload, indent=1, default=str))
    return path


def raw_run(size_mb: float, chunk_mb: float, data_dir: pathlib.Path | None = None,
            seed: int = 0) -> tuple[pathlib.Path, str]:
    """Raw-record files of a synthetic run of ``size_mb`` in chunks of about
    ``chunk_mb``, written once (cached under results/data) and reused."""
    from straxio import tpc

    data_dir = data_dir or RESULTS / "data"
    run_id = f"bench_{size_mb:g}mb_{chunk_mb:g}mbchunks_s{seed}"
    if not (data_dir / run_id / "index.json").exists():
        t0 = time.perf_counter()
        tpc.write_run(data_dir, run_id, size_mb=size_mb, seed=seed,
                      chunk_duration_s=chunk_mb / MB_PER_S_OF_RUN, overwrite=True)
        print(f"  wrote raw records of {run_id} in {time.perf_counter() - t0:.1f} s",
              file=sys.stderr)
    return data_dir, run_id
