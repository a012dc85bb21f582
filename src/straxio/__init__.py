"""straxio: streaming processing of chunked, time-ordered detector data on
one asyncio event loop.

The public API is what this module lists in ``__all__``.
"""

from ._version import __version__
from .batch import Batch, Contained
from .chunk import (
    Chunk,
    check_continuity,
    endtime,
)
from .context import Context
from .dtypes import (
    field_descriptions,
    interval_dtype,
    merged_dtype,
    time_dt_fields,
    time_fields,
    with_descriptions,
)
from .exceptions import (
    CannotSplit,
    ChunkError,
    ComputeTimeout,
    ConfigError,
    DataCorrupted,
    DataNotAvailable,
    EndOfStream,
    InvalidRunId,
    KeyLocked,
    PipelineStalled,
    PlanError,
    PluginError,
    RemoteError,
    StraxioError,
    WorkerDied,
)
from .intervals import fully_contained_in, sort_by_time, split_by_containment, touching_windows
from .lineage import DataKey, deterministic_hash
from .mailbox import Cursor, Mailbox, MailboxStatistics
from .options import Option, SaveWhen
from .plan import Plan, PlanNode
from .plugin import Plugin
from .processor import ChunkStream, Processor
from .selection import Selection
from .special import CutPlugin, LoopPlugin, MergeOnlyPlugin, OverlapWindowPlugin
from .statistics import ComponentKind, ComponentStatistics, ProcessorStatistics, RunStatistics

__all__ = [
    "Batch",
    "CannotSplit",
    "Chunk",
    "ChunkError",
    "ChunkStream",
    "ComponentKind",
    "ComponentStatistics",
    "ComputeTimeout",
    "ConfigError",
    "Contained",
    "Context",
    "Cursor",
    "CutPlugin",
    "DataCorrupted",
    "DataKey",
    "DataNotAvailable",
    "EndOfStream",
    "InvalidRunId",
    "KeyLocked",
    "LoopPlugin",
    "Mailbox",
    "MailboxStatistics",
    "MergeOnlyPlugin",
    "Option",
    "OverlapWindowPlugin",
    "PipelineStalled",
    "Plan",
    "PlanError",
    "PlanNode",
    "Plugin",
    "PluginError",
    "Processor",
    "ProcessorStatistics",
    "RemoteError",
    "RunStatistics",
    "SaveWhen",
    "Selection",
    "StraxioError",
    "WorkerDied",
    "__version__",
    "check_continuity",
    "deterministic_hash",
    "endtime",
    "field_descriptions",
    "fully_contained_in",
    "interval_dtype",
    "merged_dtype",
    "sort_by_time",
    "split_by_containment",
    "time_dt_fields",
    "time_fields",
    "touching_windows",
    "with_descriptions",
]
