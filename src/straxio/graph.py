"""The plugin graph of a plan, drawn: a text tree, Graphviz DOT, Mermaid.

Pure functions of a :class:`~straxio.plan.Plan`; the CLI's ``straxio graph``
prints them, and a notebook can too. Every data type is labelled with the
plugin that provides it, its version and its data kind.
"""

from __future__ import annotations

from .plan import Plan, PlanNode

__all__ = ["dot", "leaf_types", "mermaid", "text_tree"]


def _label(plan: Plan, data_type: str, sep: str) -> str:
    node = plan.node_of(data_type)
    return sep.join([data_type, f"{node.name} {node.plugin_class.version()}",
                     f"kind {node.output_kinds[data_type]}"])


def text_tree(plan: Plan, target: str) -> str:
    """What ``target`` depends on, as an indented text tree (a type needed
    twice is drawn twice)."""
    lines: list[str] = []

    def draw(d: str, prefix: str, last: bool, top: bool) -> None:
        node = plan.node_of(d)
        label = (f"{d} ({node.name} {node.plugin_class.version()}, kind "
                 f"{node.output_kinds[d]!r})")
        lines.append(label if top else f"{prefix}{'└── ' if last else '├── '}{label}")
        child_prefix = "" if top else prefix + ("    " if last else "│   ")
        for i, dep in enumerate(node.depends_on):
            draw(dep, child_prefix, i == len(node.depends_on) - 1, False)

    draw(target, "", True, True)
    return "\n".join(lines)


def _edges(plan: Plan) -> list[tuple[PlanNode, str]]:
    return [(node, d) for node in plan.nodes.values() for d in node.provides]


def dot(plan: Plan) -> str:
    """The plan as a Graphviz digraph: one box per data type, edges from inputs."""
    lines = ["digraph straxio {", "  rankdir=LR;", '  node [shape=box, style=rounded];']
    for _, d in _edges(plan):
        lines.append(f'  "{d}" [label="{_label(plan, d, chr(92) + "n")}"];')
    for node, d in _edges(plan):
        lines.extend(f'  "{dep}" -> "{d}";' for dep in node.depends_on)
    lines.append("}")
    return "\n".join(lines)


def _node_id(data_type: str) -> str:
    safe = "".join(c if c.isalnum() or c == "_" else "_" for c in data_type)
    return safe if safe[:1].isalpha() else "t_" + safe


def mermaid(plan: Plan) -> str:
    """The plan as a Mermaid flowchart (renders on GitHub and in many docs)."""
    lines = ["flowchart LR"]
    for _, d in _edges(plan):
        lines.append(f'  {_node_id(d)}["{_label(plan, d, "<br/>")}"]')
    for node, d in _edges(plan):
        lines.extend(f"  {_node_id(dep)} --> {_node_id(d)}" for dep in node.depends_on)
    return "\n".join(lines)


def leaf_types(depends: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    """The types nothing else depends on, given each type's dependencies."""
    needed = {d for deps in depends.values() for d in deps}
    return tuple(t for t in depends if t not in needed)
