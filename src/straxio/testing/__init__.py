"""Helpers for testing straxio pipelines, ours and users'.

- :mod:`.toy`: a toy chain covering every plugin kind (sources chunked at
  random by a seed, so the data and the lineage stay the same under every
  chunking), and :func:`~.toy.reference`, its results computed with plain
  numpy without the engine;
- :mod:`.asserts`: :func:`assert_same_arrays`, which names the first
  differing row;
- :mod:`.chunks`: build chunks and interval rows in a line;
- :mod:`.leaks`: what a test started and left behind (threads, child
  processes, shared-memory segments, tasks, exceptions nobody retrieved),
  counting only what the test itself made, so checks hold on a machine
  where other straxio processes run;
- :mod:`.strategies`: hypothesis strategies for interval arrays and
  chunkings (import it only where hypothesis is installed).

To wait until a run has done what it can without its reader, instead of
sleeping, use :meth:`straxio.Processor.wait_quiet`.

Everything of :mod:`.toy`, :mod:`.asserts`, :mod:`.chunks` and :mod:`.leaks`
is also importable from ``straxio.testing`` itself.
"""

from .asserts import assert_same_arrays, assert_same_chunks
from .chunks import chunk_of, interval_rows
from .leaks import Snapshot, straxio_tasks, unretrieved_errors
from .toy import *  # noqa: F403  (the toy chain, listed in toy.__all__)
from .toy import __all__ as _toy_all

__all__ = ["Snapshot", "assert_same_arrays", "assert_same_chunks", "chunk_of",
           "interval_rows", "straxio_tasks", "unretrieved_errors", *_toy_all]
