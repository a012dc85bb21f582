"""``straxio ls``, ``straxio gc`` and ``straxio rm``: what a store holds, and
removing leftovers and data (the listing itself is
:func:`straxio.storage.list_store`; this module formats it)."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable

import click

from ..exceptions import StraxioError
from ..storage import DataKey, DirectoryStore, StoredEntry, list_store
from ..storage.listing import folder_size
from .errors import EXIT_FAILED, EXIT_OK, BadInput
from .options import storage_option, verbose_option, yes_option
from .reports import human_bytes, table

__all__ = ["gc_command", "ls_command", "rm_command"]


def _existing_store(storage: str) -> DirectoryStore:
    if not os.path.isdir(storage):
        raise BadInput(f"no store at {storage} (give --storage, or run `straxio demo` first)")
    return DirectoryStore(storage)


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def _removal_table(rows: Iterable[tuple[StoredEntry | DataKey, int, str]]) -> str:
    out = []
    for what, size, status in rows:
        k = what.key if isinstance(what, StoredEntry) else what
        out.append([k.run_id, k.data_type, k.lineage_hash, human_bytes(size), status])
    return table(["run", "type", "lineage", "size", "status"], out, right=(3,))


@click.command("ls")
@click.argument("run_ids", metavar="[RUN_ID]...", nargs=-1)
@storage_option
@click.option("-l", "--long", "long_", is_flag=True, help="Also the folder and the details.")
@click.option("--verify", is_flag=True,
              help="Also read every chunk file and check its size and checksum.")
@verbose_option
def ls_command(run_ids: tuple[str, ...], storage: str, long_: bool, verify: bool,
               verbose: int) -> int:
    """List what the store holds (of RUN_IDs, or everything).

    Status: complete; writing (a writer holds the key's lock now); failed (the
    writer recorded its error: a failed or interrupted run); stale (the writer
    is gone, e.g. killed); corrupted (metadata, or with --verify a chunk file,
    does not check out); foreign (not straxio's, e.g. strax's data: never
    read, changed or removed). Only complete data is loaded; the next run of
    the same key removes its leftovers, and so does `straxio gc`.
    """
    store = _existing_store(storage)
    entries = [x for x in list_store(store, verify=verify)
               if not run_ids or x.entry.key.run_id in run_ids]
    if not entries:
        click.echo(f"nothing stored in {storage}" + (f" for {', '.join(run_ids)}"
                                                      if run_ids else ""))
        return EXIT_OK
    headers = ["run", "type", "lineage", "chunks", "size", "status"]
    rows: list[list[str]] = []
    for x in entries:
        k = x.entry.key
        chunks = "-" if x.entry.status == "foreign" else "?" if x.chunks is None else str(x.chunks)
        row = [k.run_id, k.data_type, k.lineage_hash, chunks, human_bytes(x.size),
               x.entry.status]
        if long_:
            row += [x.entry.location, x.entry.detail]
        rows.append(row)
    if long_:
        headers += ["location", "detail"]
    click.echo(table(headers, rows, right=(3, 4)))
    foreign = sum(1 for x in entries if x.entry.status == "foreign")
    leftovers = sum(1 for x in entries if x.entry.status not in ("complete", "foreign"))
    total = sum(x.size for x in entries)
    click.echo(f"{len(entries)} entries, {human_bytes(total)}"
               + (f"; {leftovers} not complete (never loaded; -l for details)"
                  if leftovers else "")
               + (f"; {foreign} foreign (not straxio's: never read, changed or removed)"
                  if foreign else ""))
    click.echo("checked: metadata, and every chunk file's size and checksum" if verify else
               "checked: metadata only (--verify also checks every chunk file's size and "
               "checksum)")
    return EXIT_OK


@click.command("gc")
@storage_option
@yes_option
@verbose_option
def gc_command(storage: str, yes: bool, verbose: int) -> int:
    """Remove straxio's failed and stale leftovers and unused lock files.

    Without --yes, only shows what it would remove. Never touches complete or
    corrupted data (`straxio rm` removes those by name), a key being written,
    or anything that is not straxio's (e.g. strax's data).
    """
    store = _existing_store(storage)
    planned = store.collect_garbage(dry_run=True)
    sizes = {e.location: folder_size(e.location) for e in planned if e.status != "lock"}
    done = store.collect_garbage() if yes else planned
    leftovers = [e for e in done if e.status != "lock"]
    locks = sum(1 for e in done if e.status == "lock")
    if not done:
        click.echo(f"nothing to remove in {storage}")
        return EXIT_OK
    if leftovers:
        click.echo(_removal_table((e, sizes.get(e.location, 0), e.status) for e in leftovers))
    size = human_bytes(sum(sizes.get(e.location, 0) for e in leftovers))
    what = (f"{_count(len(leftovers), 'leftover')} ({size}) and "
            f"{_count(locks, 'unused lock file')}")
    click.echo(f"removed {what}" if yes else
               f"would remove {what}; nothing removed: run again with --yes to remove them")
    return EXIT_OK


@click.command("rm")
@click.argument("names", metavar="NAME...", nargs=-1, required=True)
@storage_option
@yes_option
@verbose_option
def rm_command(names: tuple[str, ...], storage: str, yes: bool, verbose: int) -> int:
    """Remove stored data by name, with its leftovers.

    NAME is a key, <run_id>-<type>-<lineage> (the folder name that
    `straxio ls -l` shows), or a pattern ('run_001-*': quote it). Complete
    and corrupted data and failed or stale leftovers of the key go. Without
    --yes, only shows what it would remove. Never a key being written, never
    anything that is not straxio's (e.g. strax's data).
    """
    store = _existing_store(storage)
    entries = store.list_stored()
    chosen: dict[DataKey, list[StoredEntry]] = {}
    for name in names:
        hits = [e for e in entries if fnmatch.fnmatchcase(e.key.name, name)]
        ours = [e for e in hits if e.status != "foreign"]
        if not ours:
            if hits:
                raise BadInput(f"{hits[0].location} is not straxio's data ({hits[0].detail}): "
                               "straxio never removes it")
            raise BadInput(f"no straxio data in {storage} is named {name!r} (`straxio ls -l` "
                           "shows the folders; give <run_id>-<type>-<lineage> or a pattern)")
        for e in ours:
            chosen.setdefault(e.key, []).append(e)
        for e in hits:
            if e.status == "foreign":
                click.echo(f"not removed: {e.location} (not straxio's: {e.detail})")
    code = EXIT_OK
    for key, found in list(chosen.items()):
        writing = [e for e in found if e.status == "writing"]
        if writing:
            click.echo(f"straxio: {key.name} is being written now ({writing[0].detail}): not "
                       "removed; wait until that run ends", err=True)
            del chosen[key]
            code = EXIT_FAILED
    rows = [(key, sum(folder_size(e.location) for e in found),
             ", ".join(sorted({e.status for e in found}))) for key, found in chosen.items()]
    if not rows:
        return code
    click.echo(_removal_table(rows))
    size = human_bytes(sum(r[1] for r in rows))
    if not yes:
        click.echo(f"would remove {_count(len(rows), 'key')} ({size}); nothing removed: run "
                   "again with --yes to remove them")
        return code
    removed = 0
    for key in chosen:
        try:
            store.remove(key)
            removed += 1
        except StraxioError as e:  # KeyLocked (a writer started meanwhile), foreign
            click.echo(f"straxio: {key.name}: {e}", err=True)
            code = EXIT_FAILED
    click.echo(f"removed {_count(removed, 'key')} ({size})" if removed == len(rows) else
               f"removed {removed} of {_count(len(rows), 'key')}")
    return code
