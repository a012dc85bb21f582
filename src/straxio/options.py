"""Options and save policies: how a plugin is configured and when its output
is kept (strax's ``strax.Option`` and ``SaveWhen``, with the same names and
meanings).
"""

from __future__ import annotations

import builtins
import enum
import typing as ty

from .exceptions import ConfigError, PluginError

__all__ = ["Option", "SaveWhen", "type_name"]

_MISSING = object()


class SaveWhen(enum.IntEnum):
    """When a plugin's output is saved (strax's names and meanings).

    NEVER: never. EXPLICIT: only when the caller names the type in ``save=``.
    TARGET: when it is a target of the call (or named in ``save=``).
    ALWAYS: whenever it is computed and a writable store is configured.
    """

    NEVER = 0
    EXPLICIT = 1
    TARGET = 2
    ALWAYS = 3


class Option:
    """A typed, documented configuration option of a plugin.

    Declared at class level and read as ``self.<name>`` inside the plugin.
    Config is one flat namespace per context (as in strax): every plugin that
    declares an option of the same name sees the same value.

    Parameters
    ----------
    default
        Value when the context's config does not set it. Omit to make the
        option required.
    type
        A type or tuple of types the value must be an instance of. Inferred
        from ``default`` when omitted (``float`` options also accept ints,
        taken as floats: ``4`` and ``4.0`` configure, and name, the same data).
    help
        One line saying what the option does; shown by ``show_config``.
    track
        Whether the value is part of the lineage (changes the data's key).

    Example
    -------
    >>> class Records(Plugin):
    ...     baseline_samples = Option(default=40, type=int, help="samples for the baseline")
    """

    def __init__(self, default: ty.Any = _MISSING, *, type: ty.Any = None, help: str = "",
                 track: bool = True):
        if type is None and default is not _MISSING and default is not None:
            type = builtins.type(default)
        self.default = default
        self.type = type
        self.help = help
        self.track = track
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, instance: ty.Any, owner: type | None = None) -> ty.Any:
        if instance is None:
            return self
        try:
            return instance.config[self.name]
        except (AttributeError, KeyError):
            raise PluginError(
                f"option {self.name!r} of {getattr(owner, '__name__', owner)} was read before "
                "the plugin was configured; read options in setup() or compute(), not in __init__"
            ) from None

    @property
    def required(self) -> bool:
        return self.default is _MISSING

    def validate(self, value: object, *, plugin_name: str) -> None:
        """Raise ConfigError if ``value`` does not fit this option's type."""
        t = self.type
        if t is None or (value is None and self.default is None):
            return
        types = t if isinstance(t, tuple) else (t,)
        if float in types and isinstance(value, int) and not isinstance(value, bool):
            return
        ok = isinstance(value, types)
        if ok and isinstance(value, bool) and bool not in types and int in types:
            ok = False  # True is an int to Python, never to a physicist's "n_samples"
        if not ok:
            names = " or ".join(getattr(x, "__name__", str(x)) for x in types)
            raise ConfigError(
                f"option {self.name!r} of plugin {plugin_name} takes {names}, "
                f"got {value!r} ({type_name(value)}); "
                f"help: {self.help or 'no help given'}"
            )

    def normalize(self, value: object) -> object:
        """``value`` as the plugin sees it and its lineage records it: an int
        given to a ``float`` option becomes a float, so that ``-c x=4`` and a
        stored ``x=4.0`` are one lineage, not two."""
        t = self.type
        types = t if isinstance(t, tuple) else (t,)
        if (float in types and int not in types and isinstance(value, int)
                and not isinstance(value, bool)):
            return float(value)
        return value

    def __repr__(self) -> str:
        return f"Option({self.name!r}, default={self.default!r}, type={self.type!r})"


def type_name(value: object) -> str:
    return type(value).__name__
