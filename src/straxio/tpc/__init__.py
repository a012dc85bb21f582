"""A TPC-like example pipeline, bundled: simulated detector data and the
chain that processes it, as a physicist who used strax would expect.

::

    import straxio, straxio.tpc

    ctx = straxio.Context(register=straxio.tpc.plugins(), config={"run_size_mb": 5})
    info = ctx.get_array("run_001", straxio.tpc.DEFAULT_TARGET)
    truth = straxio.tpc.truth("run_001", size_mb=5)

Data types: raw_records (source) -> records -> hits -> peaks -> peak_basics
-> events -> event_info. See ``docs/tpc.md``.
"""

from __future__ import annotations

from straxio import Plugin

from .files import RawRecordsReader, read_index, write_run
from .plugins import (
    EVENT_DTYPE,
    EVENT_INFO_DTYPE,
    HIT_DTYPE,
    PEAK_BASICS_DTYPE,
    PEAK_DTYPE,
    RECORD_DTYPE,
    EventInfo,
    Events,
    Hits,
    PeakBasics,
    Peaks,
    Records,
    SyntheticRawRecords,
)
from .synthetic import (
    N_CHANNELS,
    RAW_RECORD_DTYPE,
    TO_PE,
    TRUTH_DTYPE,
    RunSimulator,
    run_seed,
    simulate,
    truth,
)

__all__ = [
    "DEFAULT_TARGET",
    "EVENT_DTYPE",
    "EVENT_INFO_DTYPE",
    "HIT_DTYPE",
    "N_CHANNELS",
    "PEAK_BASICS_DTYPE",
    "PEAK_DTYPE",
    "PROCESSING",
    "RAW_RECORD_DTYPE",
    "RECORD_DTYPE",
    "SOURCES",
    "TO_PE",
    "TRUTH_DTYPE",
    "EventInfo",
    "Events",
    "Hits",
    "PeakBasics",
    "Peaks",
    "RawRecordsReader",
    "Records",
    "RunSimulator",
    "SyntheticRawRecords",
    "plugins",
    "read_index",
    "run_seed",
    "simulate",
    "truth",
    "write_run",
]

#: What ``straxio demo`` and the benchmarks process to.
DEFAULT_TARGET = "event_info"

#: The raw-records sources, by the name :func:`plugins` takes.
SOURCES: dict[str, type[Plugin]] = {
    "synthetic": SyntheticRawRecords,
    "files": RawRecordsReader,
}

#: The processing plugins, in dependency order.
PROCESSING: tuple[type[Plugin], ...] = (Records, Hits, Peaks, PeakBasics, Events, EventInfo)


def plugins(source: str = "synthetic") -> list[type[Plugin]]:
    """The whole chain, with the raw-records source chosen.

    Parameters
    ----------
    source : {"synthetic", "files"}
        "synthetic" generates each run from its run_id and the options
        ``run_size_mb``, ``tpc_seed``, ``chunk_duration_s``; "files" reads
        runs written by :func:`write_run` from the option ``raw_records_dir``.

    Returns
    -------
    list of Plugin subclasses
        The source first, then :data:`PROCESSING`; pass it to
        ``straxio.Context(register=...)``.
    """
    try:
        src = SOURCES[source]
    except KeyError:
        raise ValueError(f"unknown source {source!r}; choose one of {sorted(SOURCES)}") from None
    return [src, *PROCESSING]
