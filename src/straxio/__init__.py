"""straxio: streaming processing of chunked, time-ordered detector data on
one asyncio event loop.

The public API is what this module lists in ``__all__``.
"""

from .chunk import (
    Chunk,
    check_continuity,
    endtime,
    fully_contained_in,
    sort_by_time,
    split_by_containment,
    touching_windows,
)
from .context import Context, DataKey, Plan, PlanNode, Selection, deterministic_hash
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
    InvalidRunId,
    KeyLocked,
    PipelineStalled,
    PlanError,
    PluginError,
    RemoteError,
    StraxioError,
    WorkerDied,
)
from .mailbox import Cursor, Mailbox, MailboxStatistics
from .plugin import (
    Batch,
    Contained,
    CutPlugin,
    LoopPlugin,
    MergeOnlyPlugin,
    Option,
    OverlapWindowPlugin,
    Plugin,
    SaveWhen,
)
from .processor import ComponentStatistics, Processor, ProcessorStatistics, RunStatistics

__version__ = "0.1.0"

__all__ = [
    "Batch",
    "CannotSplit",
    "Chunk",
    "ChunkError",
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
