"""``straxio graph`` and ``straxio info``: what the plugins make and need,
without running anything (the drawings are :mod:`straxio.graph`'s)."""

from __future__ import annotations

import json
import typing as ty

import click

from .. import graph
from ..context import Context
from .discovery import make_context, parse_assignments, plan_or_bad_input
from .errors import EXIT_OK
from .options import plugin_options, verbose_option
from .reports import indent, table

__all__ = ["graph_command", "info_command"]


def _graph_targets(ctx: Context, targets: tuple[str, ...],
                   defaults: tuple[str, ...]) -> tuple[str, ...]:
    """The given targets, else every type nothing else depends on."""
    if targets:
        return targets
    depends = {t: tuple(d for p in ps for d in p.depends_on_tuple())
               for t, ps in ctx.providers().items()}
    return graph.leaf_types(depends) or defaults


@click.command("graph")
@click.option("-t", "--target", "targets", multiple=True, metavar="TYPE",
              help="Draw what this type needs (repeatable; default: every type that nothing "
                   "depends on).")
@click.option("-f", "--format", "fmt", type=click.Choice(["text", "dot", "mermaid"]),
              default="text", show_default=True, help="Text tree, Graphviz DOT or Mermaid.")
@plugin_options
@verbose_option
def graph_command(targets: tuple[str, ...], fmt: str, plugin_specs: tuple[str, ...],
                  config: tuple[str, ...], verbose: int) -> int:
    """Print the plugin graph.

    \b
    Examples:
      straxio graph -t event_info
      straxio graph -f dot | dot -Tsvg > graph.svg
    """
    ctx, defaults = make_context(plugin_specs, parse_assignments(config, "--config"),
                                 storage=None)
    chosen = _graph_targets(ctx, tuple(dict.fromkeys(targets)), defaults)
    plan = plan_or_bad_input(ctx, chosen)
    if fmt == "text":
        click.echo("\n\n".join(graph.text_tree(plan, t) for t in chosen))
    else:
        click.echo(graph.dot(plan) if fmt == "dot" else graph.mermaid(plan))
    return EXIT_OK


@click.command("info")
@click.argument("data_type", metavar="TYPE")
@plugin_options
@verbose_option
def info_command(data_type: str, plugin_specs: tuple[str, ...], config: tuple[str, ...],
                 verbose: int) -> int:
    """Show the fields of TYPE and the options that affect it.

    The options are those of every plugin in its lineage (TYPE's plugin and
    everything upstream), with their current values (after --config). Tracked
    options are part of the lineage hash: changing one gives new data.
    """
    ctx, _ = make_context(plugin_specs, parse_assignments(config, "--config"), storage=None)
    plan = plan_or_bad_input(ctx, [data_type])
    node = plan.node_of(data_type)
    deps = ", ".join(node.depends_on) or "nothing (a source)"
    click.echo(f"{data_type}: plugin {node.name} {node.plugin_class.version()}, kind "
               f"{node.output_kinds[data_type]!r}, lineage {plan.lineage_hash(data_type)}")
    click.echo(f"depends on: {deps}")
    summary = (node.plugin_class.__doc__ or "").strip().split("\n\n")[0]
    if summary:
        click.echo(" ".join(summary.split()))  # its docstring's first paragraph
    click.echo("\nfields:")
    click.echo(indent(table(["name", "dtype", "description"],
                            [(r["field"], r["dtype"], r["description"])
                             for r in ctx.data_info(data_type)])))
    merged: dict[str, dict[str, ty.Any]] = {}
    for r in ctx.show_config(data_type):
        row = merged.setdefault(r["option"], dict(r, plugin=[]))
        row["plugin"].append(r["plugin"])
    click.echo("\noptions of its lineage:")
    if not merged:
        click.echo("  (none)")
        return EXIT_OK
    rows = [(name, _show(r["current"]), _show(r["default"]), "yes" if r["tracked"] else "no",
             ", ".join(r["plugin"]), r["help"]) for name, r in sorted(merged.items())]
    click.echo(indent(table(["option", "value", "default", "tracked", "plugin", "help"], rows)))
    return EXIT_OK


def _show(value: ty.Any) -> str:
    """An option's value as JSON (how --config takes it), else its repr."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
