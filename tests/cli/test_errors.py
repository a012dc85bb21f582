"""Bad input and usage errors: one line on stderr, no traceback, exit code 2."""

from __future__ import annotations

import re

import pytest

from .helpers import one_line, statuses, straxio_cli

# Every test runs the CLI in subprocesses: seconds each (not in the quick subset).
pytestmark = pytest.mark.slow


BAD_INPUT = {  # case: (run id, extra arguments, the message after "straxio: error: ")
    "unknown target": ("r1", ["-t", "dubled"],
                       r"no registered plugin provides 'dubled'.*did you mean 'doubled'\?.*"),
    "module that does not import": ("r1", ["-p", "no_such_pkg.plugins"],
                                    r"cannot import plugins from 'no_such_pkg.plugins': "
                                    r"ModuleNotFoundError: No module named 'no_such_pkg'"),
    "file that does not import": ("r1", ["-p", "broken.py"],
                                  r"cannot import plugins from '.*broken.py': "
                                  r"NameError: name 'undefined_name' is not defined"),
    "file that is not there": ("r1", ["-p", "nowhere.py"],
                               r"plugin file .*nowhere.py does not exist"),
    "bad config key": ("r1", ["-c", "pause=1"],
                       r"config key 'pause' is taken by no registered plugin; "
                       r"did you mean 'pause_s'\?"),
    "bad config value": ("r1", ["-c", "n_chunks=many"],
                         r"option 'n_chunks' of plugin Ticks takes int, got 'many' .*"),
    "unwritable storage": ("r1", ["-s", "a_file/store"],
                           r"storage dir a_file/store is not writable: Not a directory"),
    "run not found": ("missing_7", [], r"run 'missing_7' not found in the test source"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_one_line_and_exit_2(work, case):
    (work / "broken.py").write_text("import straxio\nundefined_name\n")
    (work / "a_file").write_text("")
    run_id, extra, message = BAD_INPUT[case]
    r = straxio_cli("run", run_id, "-p", "slow_plugins.py", "-s", "store", *extra, cwd=work)
    assert r.returncode == 2, (r.stdout, r.stderr)
    line = one_line(r.stderr)
    assert re.fullmatch(r"straxio: error: " + message, line), line
    assert r.stdout == ""
    assert all("complete" not in s for s in statuses(work / "store").values())


@pytest.mark.parametrize("args, message", [
    (["run", "r1", "-c", "no_equals_sign"], "Invalid value for --config: 'no_equals_sign' "
                                            "is not KEY=VALUE"),
    (["run", "r1", "--time-range", "5:1"], "Invalid value for '--time-range': '5:1'"),
    (["run"], "Missing argument 'RUN_ID...'"),
    (["graph", "--format", "png"], "Invalid value for '-f' / '--format'"),
])
def test_usage_errors_exit_2(work, args, message):
    r = straxio_cli(*args, "-p", "slow_plugins.py", cwd=work)
    assert r.returncode == 2
    assert message in r.stderr
    assert "Traceback" not in r.stderr
