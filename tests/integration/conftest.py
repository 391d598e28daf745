"""Integration fixtures: one real Prefect server for the session, tiny recipes, the CLI.

Each ``minart`` command runs in its own process, as an artist would run it, against a Prefect
server started once for the session (an ephemeral server per process would cost 7-20 s each).
``PREFECT_HOME``, ``PREFECT_RESULTS_LOCAL_STORAGE_PATH`` and ``MINART_CACHE`` point at temporary
folders, so nothing touches the user's Prefect or cache.
"""

from __future__ import annotations

import os

import pytest
from flow_helpers import TINY

__all__ = ["TINY"]


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """A real ``prefect server start`` on a free localhost port, shared by the session."""
    from minart.flows.server import start_server

    home = tmp_path_factory.mktemp("prefect-server")
    handle = start_server(home=home, timeout=120, die_with_parent=True)  # none outlives pytest
    yield handle
    handle.stop()


@pytest.fixture
def env(prefect_server, tmp_path):
    """Environment of a ``minart`` process: the shared server, private cache and Prefect home."""
    values = dict(os.environ)
    values.update({
        "PREFECT_API_URL": prefect_server.url,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(tmp_path / "prefect-results"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_CLI_PROMPT": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "MINART_CACHE": str(tmp_path / "cache"),
    })
    return values


@pytest.fixture
def tiny(tmp_path):
    """The tiny recipe file (32x32, four steps and one PNG output)."""
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


