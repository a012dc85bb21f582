"""The notes that name plugin, run and chunk on an exception.

A user's exception reaches the caller as itself; the engine adds one note
(``add_note``) at the first boundary that knows where it happened, and
never a second: :func:`note_once`.
"""

from __future__ import annotations

from ..batch import Batch
from ..exceptions import NOTE
from ..plugin import Plugin

__all__ = ["computing", "note_once"]


def note_once(exc: BaseException, text: str) -> None:
    """Add ``straxio: <text>`` to ``exc`` unless straxio noted it already."""
    notes = getattr(exc, "__notes__", ())
    if not any(n.startswith(NOTE) for n in notes):
        exc.add_note(NOTE + text)


def computing(plugin: Plugin, batch: Batch) -> str:
    """``plugin X computing <types> for run R, chunk i [start, end)``."""
    return (f"plugin {type(plugin).__name__} computing "
            f"{', '.join(plugin.provides_tuple())} for run {batch.run_id!r}, "
            f"chunk {batch.chunk_i} [{batch.start}, {batch.end})")
