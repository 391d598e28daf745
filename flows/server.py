"""Start a local Prefect server in the background (``minart server``) and wait until it answers.

Without ``PREFECT_API_URL`` every ``minart run`` starts Prefect's temporary (ephemeral) server,
which costs 7-20 s per process on a small machine. Starting one server and exporting its URL
makes every later run start in about a second, and gives the Prefect UI.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

__all__ = ["QUIET_ENV", "ServerHandle", "free_port", "start_server", "wait_healthy"]

QUIET_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_CLI_PROMPT": "false",
}
"""Environment that keeps Prefect off the network (no telemetry) and non-interactive."""


@dataclass(frozen=True)
class ServerHandle:
    """A started server: its API URL, process id and log file."""

    url: str
    pid: int
    log: Path
    process: subprocess.Popen | None = None
    detached: bool = True

    def stop(self, timeout: float = 15.0) -> None:
        """Terminate the server and its children (SIGTERM, then SIGKILL after ``timeout`` s)."""
        if self.process is None or self.process.poll() is not None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                if self.detached:  # started in its own session: stop its whole group
                    os.killpg(self.process.pid, sig)
                else:
                    self.process.send_signal(sig)
            except (ProcessLookupError, PermissionError):
                return
            try:
                self.process.wait(timeout)
                return
            except subprocess.TimeoutExpired:
                continue


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, *, timeout: float = 90.0, process: subprocess.Popen | None = None,
                 log: Path | None = None) -> None:
    """Poll ``<url>/health`` until it answers 200.

    Raises:
        RuntimeError: the server exited or did not answer within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            tail = log.read_text()[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"prefect server exited with code {process.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    raise RuntimeError(f"prefect server at {url} did not answer within {timeout:.0f} s")


def start_server(*, host: str = "127.0.0.1", port: int | None = None,
                 home: str | os.PathLike | None = None, log: str | os.PathLike | None = None,
                 timeout: float = 90.0, detach: bool = True,
                 env: dict[str, str] | None = None) -> ServerHandle:
    """Start ``prefect server start`` in the background and wait until it is healthy.

    Args:
        host: interface to listen on.
        port: TCP port (default: a free one).
        home: ``PREFECT_HOME`` of the server (its database lives there).
        log: file for the server's output (default ``<PREFECT_HOME>/minart-server.log``).
        timeout: seconds to wait for ``/api/health``.
        detach: start it in its own session, so it outlives this process.
        env: extra environment variables.

    Returns:
        A :class:`ServerHandle` whose ``url`` is the value for ``PREFECT_API_URL``.

    Raises:
        RuntimeError: the port is taken, or the server did not start.
    """
    if port:
        with socket.socket() as sock:  # else /health would be answered by whoever holds it
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will
            try:
                sock.bind((host, port))
            except OSError as exc:
                raise RuntimeError(f"port {port} on {host} is not free ({exc.strerror or exc}): "
                                   "is a server already running there? Use it with "
                                   f"PREFECT_API_URL=http://{host}:{port}/api, or pick another "
                                   "--port") from None
    port = port or free_port(host)
    full_env = {**os.environ, **QUIET_ENV, "PREFECT_SERVER_UI_ENABLED": "false",
                **(env or {})}
    full_env.pop("PREFECT_API_URL", None)
    if home is not None:
        full_env["PREFECT_HOME"] = os.fspath(home)
    home_dir = Path(full_env.get("PREFECT_HOME", Path.home() / ".prefect"))
    home_dir.mkdir(parents=True, exist_ok=True)
    log_path = Path(log) if log else home_dir / "minart-server.log"
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port",
               str(port), "--no-ui", "--analytics-off"]
    with open(log_path, "ab") as out:
        process = subprocess.Popen(command, env=full_env, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=detach)
    url = f"http://{host}:{port}/api"
    try:
        wait_healthy(url, timeout=timeout, process=process, log=log_path)
    except RuntimeError:
        if process.poll() is None:
            process.kill()
        raise
    return ServerHandle(url=url, pid=process.pid, log=log_path, process=process,
                        detached=detach)
