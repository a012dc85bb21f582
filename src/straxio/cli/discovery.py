"""Where plugins come from: ``--plugins`` specs, their modules or files, and
the context and plan made of them (the rules are in :mod:`straxio.cli`)."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import os
import re
import sys
import types
import typing as ty
from collections.abc import Iterable, Sequence

import click

from .._util import as_names
from ..context import Context
from ..exceptions import PluginError
from ..plan import Plan
from ..plugin import Plugin
from .errors import PLANNING_ERRORS, BadInput, first_line

__all__ = [
    "DEFAULT_PLUGINS",
    "PluginModule",
    "load_plugins",
    "make_context",
    "parse_assignments",
    "parse_value",
    "plan_or_bad_input",
]

#: The plugins used when no --plugins is given.
DEFAULT_PLUGINS = "straxio.tpc"


@dataclasses.dataclass(frozen=True)
class PluginModule:
    """Plugins found through one ``--plugins`` spec."""

    spec: str
    module: types.ModuleType
    plugins: tuple[type[Plugin], ...]
    default_targets: tuple[str, ...]


def parse_value(text: str) -> ty.Any:
    """A command-line value: JSON if it parses (numbers, true/false, null,
    lists, dicts, quoted strings), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_assignments(items: Iterable[str], what: str) -> dict[str, ty.Any]:
    """``KEY=VALUE`` strings to a dict (values through :func:`parse_value`).

    Parameters
    ----------
    items : iterable of str
    what : str
        The option they came from, named in the error.

    Raises
    ------
    click.BadParameter
        For an item without ``=`` or without a key.
    """
    out: dict[str, ty.Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint=what)
        out[key.strip()] = parse_value(value)
    return out


#: A spec with arguments: the arguments start at the first colon followed by
#: ``KEY=`` (a colon inside a JSON value, ``only={"a": 1}``, is not one).
_SPEC_WITH_ARGUMENTS = re.compile(r"(?P<where>.+?):(?P<args>[^:/\\]*=.*)", re.S)
#: A comma that starts the next ``KEY=`` (keys are Python names); one inside a
#: JSON value (``only=["a","b"]``) does not.
_NEXT_ARGUMENT = re.compile(r",(?=\s*[A-Za-z_]\w*\s*=)")


def _split_spec(spec: str) -> tuple[str, dict[str, ty.Any]]:
    m = _SPEC_WITH_ARGUMENTS.fullmatch(spec)
    if m is None:
        return spec, {}
    return m["where"], parse_assignments(_NEXT_ARGUMENT.split(m["args"]), "--plugins")


def _import_file(path: str) -> types.ModuleType:
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise BadInput(f"plugin file {path} does not exist")
    folder = os.path.dirname(path)
    name = os.path.splitext(os.path.basename(path))[0]
    existing = sys.modules.get(name)
    if existing is not None:
        existing_file = getattr(existing, "__file__", None)
        if existing_file and os.path.abspath(existing_file) == path:
            return existing
        # Another module has the name: load under a private one (such plugins
        # cannot be sent to process-pool workers by name).
        name = f"_straxio_plugins_{abs(hash(path)):x}"
    if not name.isidentifier():
        name = "_straxio_plugins_" + "".join(c if c.isalnum() else "_" for c in name)
    if folder not in sys.path:
        # Its neighbours become importable, and spawned workers (which get
        # this sys.path) can import the file by its name.
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise BadInput(f"cannot import plugins from {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _is_plugin_class(x: ty.Any) -> bool:
    return isinstance(x, type) and issubclass(x, Plugin) and x is not Plugin


def load_plugins(spec: str) -> PluginModule:
    """Import a module or file and find its plugins (see :mod:`straxio.cli`).

    Parameters
    ----------
    spec : str
        A module path or a ``.py`` file, optionally followed by
        ``:KEY=VALUE,...`` for its ``plugins()`` function.

    Returns
    -------
    PluginModule

    Raises
    ------
    BadInput
        When it does not import, or provides no plugin classes.
    """
    where, kwargs = _split_spec(spec)
    is_file = where.endswith(".py") or os.sep in where or os.path.isfile(where)
    try:
        module = _import_file(where) if is_file else importlib.import_module(where)
    except BadInput:
        raise
    except Exception as e:
        raise BadInput(f"cannot import plugins from {where!r}: {type(e).__name__}: "
                       f"{first_line(e)}", e) from e
    factory = getattr(module, "plugins", None)
    if callable(factory):
        try:
            found = list(factory(**kwargs))
        except Exception as e:
            raise BadInput(f"{where}.plugins({_kwargs_text(kwargs)}) failed: "
                           f"{type(e).__name__}: {first_line(e)}", e) from e
    elif kwargs:
        raise BadInput(f"{where} has no plugins() function to take {_kwargs_text(kwargs)}")
    elif hasattr(module, "PLUGINS"):
        found = list(module.PLUGINS)
    else:
        found = [x for name, x in vars(module).items()
                 if _is_plugin_class(x) and x.__module__ == module.__name__
                 and not name.startswith("_")]
    bad = [x for x in found if not _is_plugin_class(x)]
    if bad:
        raise BadInput(f"{where} gave {bad[0]!r}, which is not a straxio.Plugin subclass")
    if not found:
        raise BadInput(f"{where} defines no straxio.Plugin subclasses (and no plugins() "
                       "function or PLUGINS list)")
    try:
        default_targets = as_names(getattr(module, "DEFAULT_TARGET", ()), "DEFAULT_TARGET")
    except TypeError as e:
        raise BadInput(f"{where}: {e}") from None
    return PluginModule(spec, module, tuple(found), default_targets)


def _kwargs_text(kwargs: dict[str, ty.Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


def make_context(plugin_specs: Sequence[str], config: dict[str, ty.Any], *,
                 storage: str | None) -> tuple[Context, tuple[str, ...]]:
    """A context with the plugins of ``plugin_specs`` registered and
    ``config`` set.

    Parameters
    ----------
    plugin_specs : sequence of str
        ``--plugins`` specs, in order (a later one replaces the data types
        of an earlier one); empty means the bundled pipeline.
    config : dict
    storage : str or None
        The store's folder, or None for a context that stores nothing.

    Returns
    -------
    tuple of (Context, tuple of str)
        The context and the default targets of the first module that has some.

    Raises
    ------
    BadInput
        When plugins do not load or do not register.
    """
    specs = list(plugin_specs) or [DEFAULT_PLUGINS]
    ctx = Context(storage=storage)
    defaults: tuple[str, ...] = ()
    for i, spec in enumerate(specs):
        if not plugin_specs and spec == DEFAULT_PLUGINS and \
                importlib.util.find_spec(DEFAULT_PLUGINS) is None:
            raise BadInput(f"no --plugins given and the bundled pipeline {DEFAULT_PLUGINS} "
                           "is not installed; give --plugins MODULE_OR_FILE")
        found = load_plugins(spec)
        try:
            ctx.register(*found.plugins, replace=i > 0)
        except PluginError as e:
            raise BadInput(f"plugins from {spec}: {e}", e) from e
        defaults = defaults or found.default_targets
    ctx.set_config(config)
    return ctx, defaults


def plan_or_bad_input(ctx: Context, targets: Sequence[str]) -> Plan:
    """The plan of ``targets``; a target or plugin that cannot be planned is
    the user's input being wrong (:class:`BadInput`), said before anything runs."""
    try:
        return ctx.plan(list(targets))
    except PLANNING_ERRORS as e:
        raise BadInput(str(e), e) from e
