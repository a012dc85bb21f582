from __future__ import annotations

import pytest

from .helpers import SLOW_PLUGINS, TOY_PLUGINS


@pytest.fixture
def work(tmp_path):
    (tmp_path / "slow_plugins.py").write_text(SLOW_PLUGINS)
    (tmp_path / "toy_file.py").write_text(TOY_PLUGINS)
    return tmp_path
