"""What to compute: a :class:`Plan` of plugins for some targets, and a
:class:`RunPlan`: what one run loads, computes and saves.

Both are plain data, as dask's graphs are: :func:`make_plan` builds a plan
from registered plugin classes and the config, :func:`plan_run` decides for
one run from the plan and the stores, and the runtime executes a RunPlan
without calling back into whatever made it. Everything a run could refuse
(an unknown target, a cycle, bad config, a run id that cannot name files,
``save=`` of a type that is never saved) is refused here, before anything
runs.

How a plugin runs is decided here too (:class:`NodeMode`), and which
plugins run fused into one task (:class:`Stage`): so the one place that
reads a plugin's ``iter``, ``parallel`` and ``pool`` to choose its path is
:func:`node_mode`.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import inspect
import typing as ty
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from ._util import as_names
from .exceptions import ConfigError, DataCorrupted, InvalidRunId, PlanError, PluginError
from .lineage import DataKey, canonical_json, deterministic_hash
from .options import Option, SaveWhen
from .plugin import Plugin
from .storage.base import Store, StoredData
from .storage.chain import StoreChain

__all__ = ["NAME_MAX", "NodeMode", "Plan", "PlanNode", "Planner", "RunPlan", "Stage",
           "check_run_id", "make_plan", "node_mode", "plan_run"]

#: Bytes a file name may have (NAME_MAX on Linux and macOS file systems).
NAME_MAX = 255
#: What a DirectoryStore adds to a key's name for its temporary folder
#: (".tmp-<pid>-<8 hex digits>", pids up to 7 digits).
_TEMP_SUFFIX_MAX = len(".tmp-") + 7 + 1 + 8


class NodeMode(enum.Enum):
    """How the engine runs a plugin."""

    #: an async generator (``Plugin.source``)
    SOURCE = "source"
    #: batch by batch by the engine (``compute`` per synchronized batch), with
    #: several batches in flight if ``parallel``, maybe fused with neighbours
    STAGE = "stage"
    #: the plugin's own ``iter`` (it keeps state between chunks or chooses its
    #: own output chunking) or ``compute_batch``, one batch at a time
    ITER = "iter"


def node_mode(cls: type[Plugin]) -> NodeMode:
    """How the engine runs plugin class ``cls``."""
    if cls.is_source():
        return NodeMode.SOURCE
    if cls.iter is not Plugin.iter or cls.compute_batch is not Plugin.compute_batch:
        return NodeMode.ITER
    return NodeMode.STAGE


@dataclasses.dataclass(frozen=True)
class PlanNode:
    """One plugin in a plan, with everything needed to instantiate it."""

    name: str
    plugin_class: type[Plugin]
    provides: tuple[str, ...]
    depends_on: tuple[str, ...]
    config: dict[str, ty.Any]
    input_dtypes: dict[str, np.dtype[ty.Any]]
    input_kinds: dict[str, str]
    output_dtypes: dict[str, np.dtype[ty.Any]]
    output_kinds: dict[str, str]
    mode: NodeMode = NodeMode.STAGE

    @property
    def is_source(self) -> bool:
        return self.mode is NodeMode.SOURCE

    @property
    def fusable(self) -> bool:
        """Stateless per batch on the thread pool: may run fused with its
        neighbours, one executor call per batch for all of them."""
        cls = self.plugin_class
        return self.mode is NodeMode.STAGE and bool(cls.parallel) and cls.pool == "thread"

    def bind(self, run_id: str) -> dict[str, ty.Any]:
        """The arguments that configure an instance for ``run_id``
        (:meth:`Plugin.configure`)."""
        return dict(run_id=run_id, config=self.config, input_dtypes=self.input_dtypes,
                    input_kinds=self.input_kinds)


@dataclasses.dataclass(frozen=True)
class Plan:
    """What to compute for some targets: plugins in dependency order."""

    targets: tuple[str, ...]
    nodes: dict[str, PlanNode]
    producer: dict[str, str]  # data type -> node name
    lineages: dict[str, dict[str, ty.Any]]

    @property
    def data_types(self) -> list[str]:
        return [d for n in self.nodes.values() for d in n.provides]

    def lineage_hash(self, data_type: str) -> str:
        return deterministic_hash(self.lineages[data_type])

    def key(self, run_id: str, data_type: str) -> DataKey:
        """The key of ``data_type`` for ``run_id`` (with its lineage)."""
        return DataKey(run_id, data_type, self.lineage_hash(data_type),
                       lineage=self.lineages[data_type])

    def node_of(self, data_type: str) -> PlanNode:
        """The node that provides ``data_type``."""
        return self.nodes[self.producer[data_type]]


class Planner(ty.Protocol):
    """Anything that plans targets (a :class:`~straxio.Context` does)."""

    def plan(self, targets: str | Iterable[str]) -> Plan: ...


# --------------------------------------------------------------------------- planning


def all_options(providers: Mapping[str, Sequence[type[Plugin]]]
                ) -> dict[str, list[tuple[type[Plugin], Option]]]:
    """Every option of every registered class, by option name."""
    out: dict[str, list[tuple[type[Plugin], Option]]] = {}
    for classes in providers.values():
        for p in classes:
            for name, opt in p.options().items():
                if all(q is not p for q, _ in out.get(name, [])):
                    out.setdefault(name, []).append((p, opt))
    return out


def _provider(providers: Mapping[str, Sequence[type[Plugin]]], data_type: str,
              needed_by: str | None) -> type[Plugin]:
    classes = providers.get(data_type)
    if not classes:
        close = difflib.get_close_matches(data_type, list(providers), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        by = f" (needed by {needed_by})" if needed_by else ""
        raise PlanError(f"no registered plugin provides {data_type!r}{by}{hint}; "
                        f"registered types: {sorted(providers)}")
    if len(classes) > 1:
        names = ", ".join(p.__name__ for p in classes)
        raise PlanError(f"data type {data_type!r} is provided by several plugins ({names}); "
                        "register only one, or use register(..., replace=True)")
    return classes[0]


def make_plan(providers: Mapping[str, Sequence[type[Plugin]]], config: Mapping[str, ty.Any],
              targets: str | Iterable[str]) -> Plan:
    """Plan the computation of ``targets`` with the registered plugin classes
    (``providers``: data type -> classes) and option values ``config``.

    Raises
    ------
    PlanError
        For unknown targets, missing dependencies, cycles and data types
        provided by several classes.
    ConfigError
        For config keys no plugin takes and values that do not fit.
    PluginError
        For a plugin whose inputs do not fit its compute.
    """
    wanted = as_names(targets)
    if not wanted:
        raise PlanError("no targets given")
    options = all_options(providers)
    for key in config:
        if key not in options:
            close = difflib.get_close_matches(key, list(options), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"config key {key!r} is taken by no registered plugin{hint}")

    order: list[type[Plugin]] = []
    state: dict[type[Plugin], str] = {}

    def visit(cls: type[Plugin], path: list[str]) -> None:
        if state.get(cls) == "done":
            return
        if state.get(cls) == "active":
            cycle = [*path[path.index(cls.__name__):], cls.__name__]
            raise PlanError(f"dependency cycle: {' -> '.join(cycle)}")
        state[cls] = "active"
        for d in cls.depends_on_tuple():
            visit(_provider(providers, d, cls.__name__), [*path, cls.__name__])
        state[cls] = "done"
        order.append(cls)

    for t in wanted:
        visit(_provider(providers, t, None), [])

    nodes: dict[str, PlanNode] = {}
    producer: dict[str, str] = {}
    dtypes: dict[str, np.dtype[ty.Any]] = {}
    kinds: dict[str, str] = {}
    lineages: dict[str, dict[str, ty.Any]] = {}
    for cls in order:
        name = cls.__name__
        if name in nodes:
            raise PlanError(f"two plugin classes named {name} in one plan; rename one")
        values = _resolve_config(cls, config)
        input_dtypes = {d: dtypes[d] for d in cls.depends_on_tuple()}
        input_kinds = {d: kinds[d] for d in cls.depends_on_tuple()}
        proto = cls()
        proto.configure(run_id="", config=values, input_dtypes=input_dtypes,
                        input_kinds=input_kinds)
        _check_inputs(cls, proto, input_kinds)
        node = PlanNode(name=name, plugin_class=cls, provides=cls.provides_tuple(),
                        depends_on=cls.depends_on_tuple(), config=values,
                        input_dtypes=input_dtypes, input_kinds=input_kinds,
                        output_dtypes=dict(proto.output_dtypes),
                        output_kinds=dict(proto.output_kinds), mode=node_mode(cls))
        nodes[name] = node
        tracked = {k: values[k] for k, o in cls.options().items() if o.track}
        try:
            canonical_json(tracked)
        except TypeError as e:
            raise ConfigError(
                f"plugin {name}: tracked option value {e}; use JSON-able values "
                "(numbers, strings, lists, dicts) or track=False") from None
        upstream: dict[str, ty.Any] = {}
        for d in cls.depends_on_tuple():
            upstream.update(lineages[d])
        for d in node.provides:
            producer[d] = name
            dtypes[d] = node.output_dtypes[d]
            kinds[d] = node.output_kinds[d]
            lineages[d] = {**upstream, d: [name, cls.version(), tracked]}
    return Plan(targets=wanted, nodes=nodes, producer=producer, lineages=lineages)


def _check_inputs(cls: type[Plugin], proto: Plugin, input_kinds: dict[str, str]) -> None:
    name = cls.__name__
    kinds = set(input_kinds.values())
    params = cls.compute_parameters()
    if cls.compute is not Plugin.compute and not any(
            p.kind == p.VAR_KEYWORD
            for p in inspect.signature(cls.compute).parameters.values()):
        missing = kinds - params
        if missing:
            raise PluginError(
                f"plugin {name}: compute() must take one argument per input kind "
                f"{sorted(kinds)}; missing {sorted(missing)}")
    if cls.containment or cls.base_kind is not None:
        base = proto.base_kind_name()
        if base not in kinds:
            raise PluginError(f"plugin {name}: base_kind {base!r} is not one of its input "
                              f"kinds {sorted(kinds)}")


def _resolve_config(cls: type[Plugin], config: Mapping[str, ty.Any]) -> dict[str, ty.Any]:
    out = {}
    for name, opt in cls.options().items():
        if name in config:
            value = config[name]
        elif opt.required:
            raise ConfigError(f"plugin {cls.__name__} needs option {name!r} "
                              f"({opt.help or 'no help given'}); set it with "
                              f"ctx.set_config({{{name!r}: ...}})")
        else:
            value = opt.default
        opt.validate(value, plugin_name=cls.__name__)
        out[name] = opt.normalize(value)
    return out


def check_run_id(run_id: object, plan: Plan | None = None) -> None:
    """Raise :class:`~straxio.exceptions.InvalidRunId` unless ``run_id`` can
    name stored data.

    A run id is a non-empty str without ``-`` (it separates run id, data
    type and lineage hash in a key, and strax refuses it too), ``/``,
    backslash or NUL, not starting with ``.``; with ``plan``, the folder
    names of every type of the plan must fit in a file name
    (:data:`NAME_MAX` bytes, temporary folders included).
    """
    if not isinstance(run_id, str) or not run_id:
        raise InvalidRunId(f"run id {run_id!r}: give a non-empty str")
    bad = [c for c in ("-", "/", "\\", "\0") if c in run_id]
    if bad:
        hint = " (replace '-' with '_', as strax asks)" if "-" in bad else ""
        raise InvalidRunId(f"run id {run_id!r} contains {bad}: a run id names files and "
                           f"'-' separates the parts of a data key{hint}")
    if run_id.startswith("."):
        raise InvalidRunId(f"run id {run_id!r} starts with '.': that would be a hidden "
                           "file; choose a run id that starts with a letter or digit")
    if plan is None:
        return
    size = len(run_id.encode("utf-8"))
    for d in plan.data_types:
        rest = len(f"-{d}-{plan.lineage_hash(d)}".encode()) + _TEMP_SUFFIX_MAX
        if size + rest > NAME_MAX:
            raise InvalidRunId(
                f"run id {run_id[:40]!r}... is {size} bytes long: the folders holding "
                f"its {d!r} data would have names longer than the {NAME_MAX} bytes a "
                f"file name may have; use a run id of at most {NAME_MAX - rest} bytes "
                "(UTF-8)")


# --------------------------------------------------------------------------- one run


@dataclasses.dataclass(frozen=True)
class Stage:
    """Plugins run by one task, one batch at a time through all of them.

    ``members`` (node names) are in dependency order; every input of a
    member is either provided by an earlier member or is one of the stage's
    ``inputs``, which one synchronizer cuts into batches. A member's outputs
    cover its batch exactly, so the next member needs no synchronizer of its
    own, and a batch crosses into the executor once for the whole stage.
    A plugin that cannot be fused is a stage of one.
    """

    name: str
    members: tuple[str, ...]
    inputs: tuple[str, ...]
    provides: frozenset[str]


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """What one run does: which plugins run, which types are loaded and which
    saved (and where). Made by :func:`plan_run`."""

    run_id: str
    plan: Plan
    #: the types the caller reads (the plan's targets, or those of ``iter``)
    outputs: tuple[str, ...]
    #: the plugins that run, in dependency order
    compute: tuple[PlanNode, ...]
    #: types read from a store instead (nothing upstream of them runs)
    load: Mapping[str, StoredData]
    #: types written to ``store`` as they are computed
    save: tuple[str, ...]
    #: where ``save`` goes (None: nothing is saved)
    store: Store | None
    #: the STAGE plugins, fused where they can be (ITER and SOURCE plugins
    #: are in no stage)
    stages: tuple[Stage, ...]

    @property
    def nodes(self) -> dict[str, PlanNode]:
        return {n.name: n for n in self.compute}


def plan_run(plan: Plan, run_id: str, *, stores: StoreChain,
             outputs: tuple[str, ...] | None = None, save: tuple[str, ...] = (),
             publish: bool = True, fuse: bool = True) -> RunPlan:
    """Decide what run ``run_id`` of ``plan`` loads, computes and saves.

    Walking from the outputs, a type found complete in ``stores`` is loaded
    and nothing upstream of it runs. A plugin that runs provides all its
    types, so none of them is loaded; those already stored (a multi-output
    plugin re-run for a missing sibling) are not written again, as in strax.
    Every computed type is saved to the first writable store as its plugin's
    ``save_when`` says (``save`` names EXPLICIT ones), unless ``publish`` is
    false (a time-range request publishes nothing, as in strax).

    Raises
    ------
    InvalidRunId
        For a run id that cannot name stored data.
    ConfigError
        For ``save`` naming a type whose plugin forbids saving it (as strax).
    PluginError
        For data stored under the current lineage with another dtype.
    DataCorrupted
        For stored data whose metadata is broken.
    """
    check_run_id(run_id, plan)
    outputs = plan.targets if outputs is None else outputs
    for d in save:
        if d in plan.producer and plan.node_of(d).plugin_class.save_when_for(d) \
                is SaveWhen.NEVER:
            raise ConfigError(
                f"save={list(save)} for run {run_id!r}: plugin {plan.producer[d]} forbids "
                f"saving {d!r} (save_when SaveWhen.NEVER); take it out of save=")
    compute: set[str] = set()
    load: dict[str, StoredData] = {}
    seen: set[str] = set()
    todo = list(outputs)
    while todo:
        d = todo.pop()
        if d in seen:
            continue
        seen.add(d)
        node = plan.node_of(d)
        if node.name in compute:
            continue
        stored = stores.find(plan.key(run_id, d))
        if stored is not None:
            if stored.dtype != node.output_dtypes[d]:
                raise PluginError(
                    f"{d!r} of run {run_id!r} is stored at {stored.location} with "
                    f"dtype {stored.dtype}, but plugin {node.name} now declares "
                    f"{node.output_dtypes[d]} under the same lineage; bump "
                    f"{node.name}.__version__ when its output changes")
            load[d] = stored
            continue
        compute.add(node.name)
        todo.extend(node.depends_on)
    already_stored: set[str] = set()
    for d in list(load):
        if plan.producer[d] in compute:
            del load[d]
            already_stored.add(d)
    for name in compute:
        for d in plan.nodes[name].provides:
            if d in seen:
                continue
            try:
                found = stores.find(plan.key(run_id, d))
            except DataCorrupted:
                found = None  # not needed here; the writer deals with it
            if found is not None:
                already_stored.add(d)
    nodes = tuple(n for n in plan.nodes.values() if n.name in compute)
    store = stores.writable if publish else None
    saved: list[str] = []
    if store is not None:
        for node in nodes:
            for d in node.provides:
                if d not in already_stored and _wants_saving(node, d, outputs, save):
                    saved.append(d)
    return RunPlan(run_id=run_id, plan=plan, outputs=outputs, compute=nodes, load=load,
                   save=tuple(saved), store=store, stages=form_stages(nodes, fuse=fuse))


def _wants_saving(node: PlanNode, data_type: str, outputs: tuple[str, ...],
                  save: tuple[str, ...]) -> bool:
    policy = node.plugin_class.save_when_for(data_type)
    if policy is SaveWhen.NEVER:
        return False
    if policy is SaveWhen.EXPLICIT:
        return data_type in save
    if policy is SaveWhen.TARGET:
        return data_type in save or data_type in outputs
    return True


def form_stages(nodes: Sequence[PlanNode], *, fuse: bool = True) -> tuple[Stage, ...]:
    """Which STAGE plugins run fused, one task and one executor call per batch.

    In dependency order, a fusable plugin joins the stage of the plugins it
    reads from when everything it reads is provided inside that stage or is
    one of the stage's inputs already (so no new input changes the stage's
    cuts); one that reads only types from outside joins a stage reading
    exactly the same types (siblings of a fan-out); otherwise it starts a
    stage of its own. Plugins that cannot be fused, and all of them with
    ``fuse`` false, are stages of one.
    """
    stages: dict[str, tuple[list[str], list[str], set[str]]] = {}
    fused: set[str] = set()  # the stages fusable plugins may join
    stage_of: dict[str, str] = {}  # data type -> the fusable stage providing it
    for node in nodes:
        if node.mode is not NodeMode.STAGE:
            continue
        if not node.fusable:
            stages[node.name] = ([node.name], list(node.depends_on), set(node.provides))
            continue
        owners = {stage_of[d] for d in node.depends_on if d in stage_of}
        joined: str | None = None
        if fuse and len(owners) == 1:
            (owner,) = owners
            _, inputs, provides = stages[owner]
            if all(d in provides or d in inputs for d in node.depends_on):
                joined = owner
        elif fuse and not owners:
            # A sibling: reads exactly what a stage reads (fan-out).
            joined = next((name for name, (_, inputs, _) in stages.items()
                           if name in fused and set(inputs) == set(node.depends_on)), None)
        if joined is None:
            joined = node.name
            stages[joined] = ([], list(node.depends_on), set())
            fused.add(joined)
        members, _, provides = stages[joined]
        members.append(node.name)
        provides.update(node.provides)
        for d in node.provides:
            stage_of[d] = joined
    return tuple(Stage(name, tuple(members), tuple(inputs), frozenset(provides))
                 for name, (members, inputs, provides) in stages.items())
