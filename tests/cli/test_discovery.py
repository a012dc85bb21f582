"""Where plugins come from, in process: specs, plugins() / PLUGINS / defined
classes, DEFAULT_TARGET, later specs replacing earlier ones."""

from __future__ import annotations

import sys

import click
import pytest

from straxio.cli import BadInput, load_plugins, make_context, parse_assignments, parse_value

PLUGIN_FILE = '''
import straxio
from straxio.testing import Peaks, PeakBasics  # imported, so not "defined here"

DEFAULT_TARGET = "doubled_basics"


class DoubledBasics(PeakBasics):
    __version__ = "0.2.0"
    provides = "doubled_basics"


class _Helper(PeakBasics):
    provides = "helper"
'''

FACTORY_FILE = '''
from straxio.testing import toy_plugins


def plugins(parallel=False, only=None):
    found = toy_plugins(parallel=parallel)
    return [p for p in found if only is None or p.__name__ in only]
'''


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """Plugin files go on sys.path and into sys.modules: undone after the test."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield tmp_path
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(str(tmp_path)):
            del sys.modules[name]


def test_values_parse_as_json_else_as_text():
    assert [parse_value(v) for v in ("3", "2.5", "true", "null", "[1, 2]", '"x"', "abc", "")] \
        == [3, 2.5, True, None, [1, 2], "x", "abc", ""]
    assert parse_assignments(["a=1", " b =x=y", "c="], "--config") == \
        {"a": 1, "b": "x=y", "c": ""}
    with pytest.raises(click.BadParameter, match="'nope' is not KEY=VALUE"):
        parse_assignments(["nope"], "--config")
    with pytest.raises(click.BadParameter):
        parse_assignments(["=1"], "--config")


def test_a_file_gives_the_classes_it_defines_and_its_default_target(isolated):
    (isolated / "mine.py").write_text(PLUGIN_FILE)
    found = load_plugins(str(isolated / "mine.py"))
    assert [p.__name__ for p in found.plugins] == ["DoubledBasics"]
    assert found.default_targets == ("doubled_basics",)
    assert str(isolated) in sys.path  # its neighbours import, and so do workers


def test_plugins_function_takes_the_arguments_of_the_spec(isolated):
    (isolated / "factory.py").write_text(FACTORY_FILE)
    spec = f'{isolated / "factory.py"}:only=["PeakBasics"],parallel=true'
    found = load_plugins(spec)
    assert [p.__name__ for p in found.plugins] == ["PeakBasics"]
    assert found.default_targets == ()
    with pytest.raises(BadInput, match=r"plugins\(colour='red'\) failed: TypeError"):
        load_plugins(f"{isolated / 'factory.py'}:colour=red")


def test_what_is_not_plugins_is_bad_input(isolated):
    (isolated / "empty.py").write_text("X = 1\n")
    (isolated / "wrong.py").write_text("PLUGINS = [int]\n")
    with pytest.raises(BadInput, match=r"defines no straxio\.Plugin subclasses"):
        load_plugins(str(isolated / "empty.py"))
    with pytest.raises(BadInput, match=r"gave <class 'int'>, which is not a straxio\.Plugin"):
        load_plugins(str(isolated / "wrong.py"))
    with pytest.raises(BadInput, match=r"has no plugins\(\) function to take a=1"):
        load_plugins(f"{isolated / 'empty.py'}:a=1")
    with pytest.raises(BadInput, match="cannot import plugins from 'no_such_module_here'"):
        load_plugins("no_such_module_here")


def test_later_specs_replace_the_types_of_earlier_ones(isolated):
    (isolated / "factory.py").write_text(FACTORY_FILE)
    (isolated / "mine.py").write_text(PLUGIN_FILE.replace('"doubled_basics"', '"peak_basics"'))
    ctx, defaults = make_context([str(isolated / "factory.py"), str(isolated / "mine.py")],
                                 {"toy_fail_at": ""}, storage=None)
    assert [p.__name__ for p in ctx.providers()["peak_basics"]] == ["DoubledBasics"]
    assert defaults == ("peak_basics",)


def test_spec_arguments_take_json_lists_and_dicts_as_config_values_do(isolated):
    """Commas and colons inside a JSON value do not split the arguments."""
    (isolated / "factory.py").write_text(FACTORY_FILE)
    found = load_plugins(f'{isolated / "factory.py"}:only=["Peaks","PeakBasics"],parallel=true')
    assert [p.__name__ for p in found.plugins] == ["Peaks", "PeakBasics"]
    found = load_plugins(f'{isolated / "factory.py"}:only={{"Peaks": 1, "Events": 2}}')
    assert [p.__name__ for p in found.plugins] == ["Peaks", "Events"]
