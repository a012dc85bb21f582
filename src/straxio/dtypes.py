"""Helpers for the structured dtypes that straxio data are stored in.

Every row of straxio data is a time interval. A dtype expresses the interval in
one of two forms:

* ``time`` and ``endtime`` (both int64 ns), or
* ``time`` (int64 ns), ``length`` (number of samples) and ``dt`` (ns per sample),
  with ``endtime = time + length * dt``.

Field descriptions live in the dtype itself, as numpy field *titles*::

    np.dtype([(("Start time since unix epoch [ns]", "time"), np.int64), ...])

Because numpy registers a title as a second key of ``dtype.fields``, code here
always iterates over ``dtype.names`` (the real field names), never over
``dtype.fields``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from straxio.exceptions import ChunkError

__all__ = [
    "TIME_FIELD_NAMES",
    "check_time_dtype",
    "endtime",
    "field_descriptions",
    "field_names",
    "fields",
    "has_endtime",
    "has_length_dt",
    "interval_dtype",
    "merged_dtype",
    "select_fields",
    "time_dt_fields",
    "time_fields",
    "with_descriptions",
]

#: Names of the fields that describe a row's time interval, in either form.
TIME_FIELD_NAMES: tuple[str, ...] = ("time", "endtime", "length", "dt")

_TIME_DESCRIPTION = "Start time since unix epoch [ns]"
_ENDTIME_DESCRIPTION = "Exclusive end time since unix epoch [ns]"
_LENGTH_DESCRIPTION = "Length of the interval in samples"
_DT_DESCRIPTION = "Width of one sample [ns]"


def time_fields(description: bool = True) -> list[tuple[Any, Any]]:
    """Dtype entries for an interval given by ``time`` and ``endtime``.

    Parameters
    ----------
    description : bool, optional
        If true (default), the entries carry their descriptions as titles.

    Returns
    -------
    list of tuple
        Two entries, usable in a ``np.dtype([...])`` list: ``time`` then
        ``endtime``, both int64.
    """
    if description:
        return [
            ((_TIME_DESCRIPTION, "time"), np.int64),
            ((_ENDTIME_DESCRIPTION, "endtime"), np.int64),
        ]
    return [("time", np.int64), ("endtime", np.int64)]


def time_dt_fields() -> list[tuple[Any, Any]]:
    """Dtype entries for an interval given by ``time``, ``length`` and ``dt``.

    Returns
    -------
    list of tuple
        Three titled entries: ``time`` (int64), ``length`` (int32) and
        ``dt`` (int16).
    """
    return [
        ((_TIME_DESCRIPTION, "time"), np.int64),
        ((_LENGTH_DESCRIPTION, "length"), np.int32),
        ((_DT_DESCRIPTION, "dt"), np.int16),
    ]


#: The smallest interval dtype: titled ``time`` and ``endtime``.
interval_dtype: np.dtype = np.dtype(time_fields())


def _names(dtype: Any) -> tuple[str, ...]:
    names = np.dtype(dtype).names
    return names if names is not None else ()


def field_names(dtype: Any) -> tuple[str, ...]:
    """Field names of a structured dtype (empty for a plain one)."""
    return _names(dtype)


def fields(dtype: Any) -> Mapping[str, tuple[Any, ...]]:
    """``dtype.fields`` of a structured dtype (empty for a plain one):
    name -> (dtype, offset[, title])."""
    f = np.dtype(dtype).fields
    return f if f is not None else {}


def has_endtime(dtype: Any) -> bool:
    """Whether ``dtype`` gives intervals as ``time`` and ``endtime``.

    Parameters
    ----------
    dtype : dtype-like

    Returns
    -------
    bool
        True if both a ``time`` and an ``endtime`` field exist.
    """
    names = _names(dtype)
    return "time" in names and "endtime" in names


def has_length_dt(dtype: Any) -> bool:
    """Whether ``dtype`` gives intervals as ``time``, ``length`` and ``dt``.

    Parameters
    ----------
    dtype : dtype-like

    Returns
    -------
    bool
        True if ``time``, ``length`` and ``dt`` fields all exist.
    """
    names = _names(dtype)
    return "time" in names and "length" in names and "dt" in names


def check_time_dtype(dtype: Any, what: str) -> None:
    """Raise unless ``dtype`` describes time intervals in one of the two forms.

    Parameters
    ----------
    dtype : dtype-like
        The dtype to check.
    what : str
        Name of the data type, used in the message.

    Raises
    ------
    ChunkError
        If the dtype is not structured, lacks the fields of both forms, or a
        time field is not of an integer type.
    """
    dtype = np.dtype(dtype)
    if not (has_endtime(dtype) or has_length_dt(dtype)):
        raise ChunkError(
            f"dtype of {what!r} has fields {list(_names(dtype))}; it needs a 'time' field "
            "and either an 'endtime' field or both 'length' and 'dt' fields"
        )
    for name in TIME_FIELD_NAMES:
        if name in dtype.names:
            field_dtype = dtype.fields[name][0]
            # Times are compared and added as integers everywhere; a float time
            # would silently lose nanosecond precision.
            if field_dtype.kind not in "iu" or field_dtype.shape != ():
                raise ChunkError(
                    f"dtype of {what!r}: field {name!r} must be a scalar integer, got {field_dtype}"
                )


def field_descriptions(dtype: Any) -> dict[str, str]:
    """Descriptions (titles) of the fields of a structured dtype.

    Parameters
    ----------
    dtype : dtype-like

    Returns
    -------
    dict
        Field name -> description, in field order; ``""`` for a field
        without a title.
    """
    dtype = np.dtype(dtype)
    result = {}
    for name in _names(dtype):
        entry = fields(dtype)[name]
        title = entry[2] if len(entry) > 2 else None
        result[name] = "" if title is None else str(title)
    return result


def with_descriptions(dtype: Any, descriptions: Mapping[str, str]) -> np.dtype:
    """A copy of ``dtype`` with the given field descriptions set as titles.

    The memory layout (offsets, itemsize) is kept. Fields not named in
    ``descriptions`` keep their current title, if any. An empty description
    removes the title. A description equal to the field's own name is not set
    as a title, since numpy forbids a title that duplicates a name.

    Parameters
    ----------
    dtype : dtype-like
        A structured dtype.
    descriptions : mapping
        Field name -> description.

    Returns
    -------
    numpy.dtype

    Raises
    ------
    ValueError
        If ``descriptions`` names a field that ``dtype`` does not have.
    """
    dtype = np.dtype(dtype)
    names = _names(dtype)
    unknown = sorted(set(descriptions) - set(names))
    if unknown:
        raise ValueError(f"no field(s) {unknown} in dtype with fields {list(names)}")
    current = field_descriptions(dtype)
    titles = []
    for name in names:
        title = descriptions.get(name, current[name])
        titles.append(title if title and title != name else None)
    return np.dtype(
        {
            "names": list(names),
            "formats": [dtype.fields[n][0] for n in names],
            "offsets": [dtype.fields[n][1] for n in names],
            "titles": titles,
            "itemsize": dtype.itemsize,
        }
    )


def _entry(dtype: np.dtype, name: str) -> tuple[Any, np.dtype]:
    """A ``np.dtype([...])`` list entry for one field, keeping its title."""
    entry = fields(dtype)[name]
    key = (entry[2], name) if len(entry) > 2 and entry[2] is not None else name
    return key, entry[0]


def select_fields(dtype: Any, names: Iterable[str]) -> np.dtype:
    """The fields ``names`` of a structured dtype, in the dtype's order,
    with their titles (descriptions), packed.

    Parameters
    ----------
    dtype : dtype-like
    names : iterable of str
        Field names; every one must be a field of ``dtype``.

    Returns
    -------
    numpy.dtype

    Raises
    ------
    ChunkError
        If a name is not a field of ``dtype``.
    """
    dtype = np.dtype(dtype)
    wanted = set(names)
    unknown = sorted(wanted - set(_names(dtype)))
    if unknown:
        raise ChunkError(f"{unknown} are not fields of {dtype}")
    return np.dtype([_entry(dtype, n) for n in _names(dtype) if n in wanted])


def merged_dtype(dtypes: Iterable[Any]) -> np.dtype:
    """The union of the fields of several structured dtypes.

    Fields keep their order of first appearance. The time fields (``time``,
    ``endtime``, ``length``, ``dt``) are taken from the first dtype only; the
    other dtypes' time fields are ignored. A non-time field present in several
    dtypes is taken once, from its first appearance (with that title). The
    result is packed (no padding).

    Parameters
    ----------
    dtypes : iterable of dtype-like

    Returns
    -------
    numpy.dtype

    Raises
    ------
    ChunkError
        If ``dtypes`` is empty, or a non-time field appears with two different
        dtypes.
    """
    dtypes = [np.dtype(d) for d in dtypes]
    if not dtypes:
        raise ChunkError("merged_dtype needs at least one dtype")
    entries: dict[str, tuple[Any, np.dtype]] = {}
    for i, dtype in enumerate(dtypes):
        for name in _names(dtype):
            if name in TIME_FIELD_NAMES and i > 0:
                continue
            key, field_dtype = _entry(dtype, name)
            if name in entries:
                if entries[name][1] != field_dtype:
                    raise ChunkError(
                        f"field {name!r} has dtype {entries[name][1]} in one input and "
                        f"{field_dtype} in another; merged fields must agree"
                    )
                continue
            entries[name] = (key, field_dtype)
    return np.dtype(list(entries.values()))


def endtime(x: np.ndarray) -> npt.NDArray[np.int64]:
    """Exclusive end times of the rows of ``x``, as int64.

    Parameters
    ----------
    x : numpy.ndarray
        Structured array with ``endtime``, or with ``length`` and ``dt``.

    Returns
    -------
    numpy.ndarray
        int64 array of ``len(x)``: ``x["endtime"]`` (a view when it already is
        int64) or ``x["time"] + x["length"] * x["dt"]`` (a new array).
    """
    names = x.dtype.names or ()
    out: npt.NDArray[np.int64]  # (numpy types a field of a structured array as Any)
    if "endtime" in names:
        out = x["endtime"].astype(np.int64, copy=False)
        return out
    if "length" in names and "dt" in names:
        out = x["time"].astype(np.int64) + x["length"].astype(np.int64) * x["dt"]
        return out
    raise ChunkError(
        f"cannot compute end times of an array with fields {list(names)}: it needs an "
        "'endtime' field or 'length' and 'dt' fields"
    )
