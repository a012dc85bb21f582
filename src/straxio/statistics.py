"""What a run and a processor did, as small frozen records.

:class:`RunStatistics` (per component and per mailbox) is what
``Processor.run`` returns and the CLI prints; :class:`ProcessorStatistics`
says what a processor holds now. :class:`Counters` is the mutable side the
engine writes while a run goes; :meth:`Counters.freeze` makes the record.
"""

from __future__ import annotations

import dataclasses
import enum

from .mailbox import MailboxStatistics
from .sync import Synchronizer

__all__ = ["AbandonedCompute", "ComponentKind", "ComponentStatistics", "Counters",
           "InFlightCompute", "ProcessorStatistics", "RunStatistics"]

class ComponentKind(enum.StrEnum):
    """What a component of a run is; its value is the name shown in tables
    (and compares equal to that string, as before this enum existed)."""

    SOURCE = "source"
    PLUGIN = "plugin"
    LOAD = "load"
    SAVE = "save"
    #: reads a target of :meth:`Processor.run` (nothing is kept)
    SINK = "sink"
    #: merges several same-kind targets of ``Processor.iter`` into one stream
    MERGE = "merge"

    def component(self, data_type: str) -> str:
        """The component's name for ``data_type`` (``"save:peaks"``); a plugin
        or a source is named by its class instead."""
        return f"{self.value}:{data_type}"


@dataclasses.dataclass(frozen=True)
class ComponentStatistics:
    """What one task of a run did."""

    name: str
    kind: ComponentKind
    provides: tuple[str, ...]
    chunks_in: int
    bytes_in: int
    chunks_out: int
    bytes_out: int
    #: rows published (plugins, sources, loaders) or received (sinks, savers)
    rows: int
    compute_calls: int
    inline_calls: int
    compute_seconds: float
    #: time spent waiting for input chunks (mailbox empty)
    wait_input_seconds: float
    #: time spent waiting for room to publish (slowest reader behind)
    wait_output_seconds: float
    #: largest number of bytes the input synchronizer held between rounds
    peak_held_bytes: int
    #: the plugins fused into one task with this one (in order), or () when it
    #: runs alone; a fused group's waits are counted on its first plugin
    fused_with: tuple[str, ...] = ()

    @property
    def mb_per_s(self) -> float:
        return self.bytes_in / 1e6 / self.compute_seconds if self.compute_seconds else 0.0


@dataclasses.dataclass(frozen=True)
class RunStatistics:
    """Per-plugin and per-mailbox statistics of one run."""

    run_id: str
    components: dict[str, ComponentStatistics]
    mailboxes: dict[str, MailboxStatistics]
    seconds: float
    finished: bool
    #: ``[start, end)`` the sources announced for the run (``Plugin.run_range``),
    #: or None when they do not know it beforehand
    time_range: tuple[int, int] | None = None

    def fraction_done(self, target: str) -> float | None:
        """How much of the run's time range ``target`` has covered (0 to 1),
        or None when the range is unknown."""
        m = self.mailboxes.get(target)
        if self.time_range is None or m is None:
            return None
        start, end = self.time_range
        if m.last_end is None:
            return 1.0 if m.closed else 0.0
        return 1.0 if end <= start else min(1.0, max(0.0, (m.last_end - start) / (end - start)))

    @property
    def memory_beyond_budgets(self) -> int:
        """Peak bytes held beyond mailbox budgets plus bytes held by synchronizers."""
        return (sum(m.peak_over_budget_bytes for m in self.mailboxes.values())
                + sum(c.peak_held_bytes for c in self.components.values()))

    def __str__(self) -> str:
        lines = [f"run {self.run_id!r}: {self.seconds:.3f} s"]
        for c in self.components.values():
            lines.append(
                f"  {c.name:<28} in {c.chunks_in:>5} chunks {c.bytes_in / 1e6:9.2f} MB  "
                f"out {c.chunks_out:>5} chunks {c.bytes_out / 1e6:9.2f} MB  "
                f"compute {c.compute_calls:>5} calls {c.compute_seconds:8.3f} s  "
                f"waiting in {c.wait_input_seconds:7.3f} s out {c.wait_output_seconds:7.3f} s")
        lines.extend(f"  mailbox {m}" for m in self.mailboxes.values())
        return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class AbandonedCompute:
    """A thread compute that ran past its ``compute_timeout`` and was left to
    run on (threads cannot be killed)."""

    #: plugin (or fused plugins), run and chunk
    where: str
    #: name of the thread running it
    thread: str
    #: the member of a fused group that was running, if known
    member: str | None
    timeout: float
    #: ``time.monotonic()`` when it started
    started: float


@dataclasses.dataclass(frozen=True)
class InFlightCompute:
    """A compute handed to a pool and not finished (:meth:`Processor.in_flight`)."""

    #: plugin, run and chunk (or the storage task)
    where: str
    #: "thread" or "process"
    pool: str
    #: started in a worker (else queued)
    running: bool
    #: a thread compute past its timeout, left to run on
    abandoned: bool


@dataclasses.dataclass(frozen=True)
class ProcessorStatistics:
    """What a processor holds: pools, work in flight, runs."""

    thread_workers: int
    process_workers: int
    thread_jobs_in_flight: int
    process_jobs_in_flight: int
    active_runs: tuple[str, ...]
    closed: bool
    #: thread computes abandoned past their timeout (they may still run)
    abandoned: tuple[AbandonedCompute, ...] = ()


class Counters:
    """What one component of a running run has done so far (mutable; the
    engine's tasks write it, :meth:`freeze` makes the record)."""

    def __init__(self, name: str, kind: ComponentKind, provides: tuple[str, ...] = ()):
        self.name = name
        self.kind = kind
        self.provides = tuple(provides)
        self.chunks_in = self.bytes_in = self.chunks_out = self.bytes_out = 0
        self.compute_calls = self.inline_calls = 0
        self.rows = 0
        self.compute_seconds = 0.0
        self.wait_input_seconds = 0.0
        self.wait_output_seconds = 0.0
        #: the component's input synchronizer, which counts what it reads
        self.sync: Synchronizer | None = None
        #: bytes held outside mailboxes by the task itself (its peak)
        self.peak_held_bytes = 0
        self.fused_with: tuple[str, ...] = ()

    def freeze(self) -> ComponentStatistics:
        if self.sync is not None:
            self.chunks_in, self.bytes_in = self.sync.chunks_in, self.sync.bytes_in
        return ComponentStatistics(
            name=self.name, kind=self.kind, provides=self.provides, chunks_in=self.chunks_in,
            bytes_in=self.bytes_in, chunks_out=self.chunks_out, bytes_out=self.bytes_out,
            rows=self.rows,
            compute_calls=self.compute_calls, inline_calls=self.inline_calls,
            compute_seconds=self.compute_seconds,
            wait_input_seconds=self.wait_input_seconds,
            wait_output_seconds=self.wait_output_seconds,
            peak_held_bytes=max(self.peak_held_bytes,
                                self.sync.peak_held_bytes if self.sync else 0),
            fused_with=self.fused_with)
