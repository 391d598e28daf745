"""Start a local Prefect server in the background (``minart server``) and wait until it answers.

Without ``PREFECT_API_URL`` every ``minart run`` starts Prefect's temporary (ephemeral) server,
which costs 7-20 s per process on a small machine. Starting one server and exporting its URL
makes every later run start in about a second, and gives the Prefect UI at ``http://HOST:PORT``.

The server is set up so that deployment runs recover from a host crash by themselves:

* concurrency leases (the slot a run of ``ocean-nightly`` holds under its ``concurrency_limit``)
  are kept in files under ``PREFECT_HOME/concurrency_leases`` instead of the server's memory, so
  a restarted server still knows them and frees them when they expire (300 s after the last
  renewal by the dead run);
* the automation :data:`ZOMBIE_AUTOMATION` marks a flow run tagged :data:`RUN_TAG` Crashed
  when it has sent no heartbeat for :data:`ZOMBIE_SECONDS` (deployment runs send one every
  30 s: ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` in ``prefect.yaml``; ``minart run`` sets the same);
  Crashed frees its slot at once. Other flows on the server are not watched: Prefect's default
  heartbeat comes every 180 s, which the window would take for a death;
* at every start, runs still Running are given a fresh window (:func:`watch_running_flow_runs`),
  so a run that died while the server was down is caught too.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

__all__ = [
    "LEASE_STORAGE",
    "QUIET_ENV",
    "RUN_TAG",
    "WATCH_EVENT",
    "ZOMBIE_AUTOMATION",
    "ZOMBIE_SECONDS",
    "ServerHandle",
    "client_host",
    "ensure_zombie_automation",
    "free_port",
    "start_server",
    "wait_healthy",
    "watch_running_flow_runs",
]

QUIET_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_CLI_PROMPT": "false",
}
"""Environment that keeps Prefect off the network (no telemetry) and non-interactive."""

LEASE_STORAGE = "prefect.server.concurrency.lease_storage.filesystem"
"""Prefect's on-disk concurrency lease storage (the default keeps leases in memory, so a server
restart forgets the lease of a run that died and its deployment slot stays taken forever)."""

RUN_TAG = "minart"
"""Tag of the flow runs the zombie automation watches: minart's deployments (``prefect.yaml``)
and ``minart run``, which send a heartbeat every 30 s. Other flows on the same server, whose
heartbeats may come every 180 s (Prefect's default), are left alone."""

ZOMBIE_AUTOMATION = "minart: crash zombie flow runs"
"""Name of the automation that marks flow runs whose heartbeats stopped as Crashed."""

ZOMBIE_SECONDS = 90.0
"""Seconds without a heartbeat after which a flow run counts as dead: three missed beats at
``PREFECT_FLOWS_HEARTBEAT_FREQUENCY=30`` (Prefect's minimum, set in ``prefect.yaml``)."""

WATCH_EVENT = "minart.flow-run.watch"
"""Event :func:`watch_running_flow_runs` emits for a run: it opens the zombie window like a
heartbeat does, without claiming to be one."""

_FALSE = {"0", "false", "no", "off"}


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


def _family(host: str) -> socket.AddressFamily:
    """The socket family uvicorn listens with on ``host``: IPv6 when it holds a ``:``."""
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _is_wildcard(host: str) -> bool:
    """Whether ``host`` is a wildcard bind address (``0.0.0.0``, ``::``): every interface."""
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:  # a host name
        return False


def client_host(host: str) -> str:
    """The address a client on this machine connects to, for a server listening on ``host``.

    A wildcard bind address means "every interface" to a server but leads a client nowhere
    useful, so the loopback address of the same family stands in for it.

    Example:
        >>> client_host("0.0.0.0"), client_host("::"), client_host("192.168.1.20")
        ('127.0.0.1', '::1', '192.168.1.20')
    """
    if _is_wildcard(host):
        return "::1" if ":" in host else "127.0.0.1"
    return host


def _api_url(host: str, port: int) -> str:
    """``http://HOST:PORT/api``, an IPv6 address in brackets."""
    return f"http://[{host}]:{port}/api" if ":" in host else f"http://{host}:{port}/api"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(_family(host)) as sock:
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


def ensure_zombie_automation(url: str, *, within: float = ZOMBIE_SECONDS,
                             name: str = ZOMBIE_AUTOMATION) -> str:
    """Create or update the automation that marks silent flow runs Crashed; return its id.

    Prefect's documented remedy for "zombie" runs (docs.prefect.io/v3/advanced/detect-zombie-flows):
    a proactive trigger opened by each ``prefect.flow-run.heartbeat`` that fires when neither
    another heartbeat nor a final state (Completed, Failed, Cancelled, Crashed) of the same run
    follows within ``within`` seconds, and sets that run Crashed (forced, so a dead run left
    Cancelling by ``prefect flow-run cancel`` is also closed). Crashed releases the run's
    deployment concurrency slot. Runs that send no heartbeats are never touched.

    Idempotent: an automation of the same name is left alone when it already matches, so the
    trigger's open windows (kept in the database) survive a restart of the server; else it is
    updated in place (the server then gives the trigger a new id, dropping its open windows, which
    :func:`watch_running_flow_runs` reopens).

    Args:
        url: the server's API URL (``.../api``).
        within: seconds of silence after which a run counts as dead; more than the heartbeat
            period (30 s) plus slack for a busy machine.
        name: the automation's name.

    Raises:
        RuntimeError: the server refused the automation.
    """
    from datetime import timedelta

    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    def wanted(trigger_id=None) -> AutomationCore:
        trigger = EventTrigger(
            after={"prefect.flow-run.heartbeat", WATCH_EVENT},
            expect={"prefect.flow-run.heartbeat", "prefect.flow-run.Completed",
                    "prefect.flow-run.Failed", "prefect.flow-run.Cancelled",
                    "prefect.flow-run.Crashed"},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            match_related=ResourceSpecification({"prefect.resource.role": "tag",
                                                 "prefect.resource.id": f"prefect.tag.{RUN_TAG}"}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=within),
            **({"id": trigger_id} if trigger_id else {}))
        return AutomationCore(
            name=name, enabled=True, trigger=trigger,
            description=f"Marks a flow run tagged {RUN_TAG!r} Crashed when it sent no heartbeat "
                        f"for {within:g} s (created by minart server).",
            actions=[ChangeFlowRunState(
                state=StateType.CRASHED, force=True,
                message=f"No heartbeat for {within:g} s: the flow-run process is gone "
                        "(marked Crashed by minart's zombie automation).")])

    def same(a: AutomationCore, b: AutomationCore) -> bool:  # models compare sets as sets
        return all(getattr(a, key) == getattr(b, key)
                   for key in ("name", "description", "enabled", "trigger", "actions"))

    try:
        with SyncPrefectClient(url) as client:
            existing = client.read_automations_by_name(name)
            if not existing:
                return str(client.create_automation(wanted()))
            first, *duplicates = existing
            desired = wanted(getattr(first.trigger, "id", None))  # compare all but the id
            if not same(first, desired):
                client.update_automation(first.id, desired)
            for extra in duplicates:  # two servers raced on one home: keep one automation
                client.delete_automation(extra.id)
            return str(first.id)
    except Exception as exc:  # httpx errors, a server that refuses the schema
        raise RuntimeError(f"could not create the automation {name!r} on {url}: {exc}") from exc


def _post(url: str, path: str, body: object, *, waits: tuple[float, ...] = (0.5, 1, 2, 4)) -> object:
    """POST ``body`` as JSON and return the decoded answer.

    A busy server's 503 (its SQLite database locked) is tried again after each of ``waits``
    seconds, as Prefect's own client does, rather than failing the server's start-up.
    """
    request = urllib.request.Request(f"{url}{path}", method="POST", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})

    def send() -> object:
        with urllib.request.urlopen(request, timeout=30) as response:
            data = response.read()
        return json.loads(data) if data else None

    for wait in waits:
        try:
            return send()
        except urllib.error.HTTPError as exc:
            if exc.code != 503:
                raise
        time.sleep(wait)
    return send()


def _running_flow_runs(url: str) -> list[dict]:
    """Every Running or Cancelling flow run, read page by page.

    ``/flow_runs/filter`` answers at most ``PREFECT_SERVER_API_DEFAULT_LIMIT`` runs (200 by
    default) and refuses a larger ``limit``, so none is sent: each page is the server's largest.
    Pages are not read by offset, which a run ending between two pages would shift by one, hiding
    a run from the next page; each page asks for the runs not read yet (``id.not_any_``), so the
    first empty one means that no Running or Cancelling run is left unread. The ids read travel
    with each request: a few thousand cost nothing (SQLite takes up to 32766 in one query).
    """
    runs: dict[str, dict] = {}
    while True:
        page = _post(url, "/flow_runs/filter", {
            "flow_runs": {"state": {"type": {"any_": ["RUNNING", "CANCELLING"]}},
                          "id": {"not_any_": list(runs)}},
            "sort": "ID_DESC"})
        new = {run["id"]: run for run in page if run["id"] not in runs}
        if not new:  # an empty page (or a server that ignored the filter: stop, not loop)
            return list(runs.values())
        runs.update(new)


def watch_running_flow_runs(url: str) -> list[str]:
    """Open a fresh zombie window for every Running or Cancelling run that sends heartbeats.

    The automation's trigger state (one bucket per run, in the database) is swept about a minute
    after its window closes, so a run that died while the server was down for longer than that
    would stay Running forever. Called at every start of the server, this emits
    :data:`WATCH_EVENT` for each such run: a run that is alive sends a heartbeat within 30 s and
    nothing happens; a dead one is marked Crashed after the automation's window. Runs without
    the :data:`RUN_TAG` tag, or that never sent a heartbeat, are left alone.

    Returns:
        The ids of the runs now watched.

    Raises:
        RuntimeError: the server did not answer.
    """
    try:
        events = []
        for run in _running_flow_runs(url):
            resource = f"prefect.flow-run.{run['id']}"
            beats = _post(url, "/events/filter", {"limit": 1, "filter": {
                "event": {"name": ["prefect.flow-run.heartbeat"]},
                "resource": {"id": [resource]},
                "occurred": {"since": run["start_time"] or run["created"]}}})
            if RUN_TAG in (run.get("tags") or ()) and beats["events"]:
                events.append({
                    "id": str(uuid.uuid4()),
                    "occurred": datetime.now(timezone.utc).isoformat(),
                    "event": WATCH_EVENT,
                    "resource": {"prefect.resource.id": resource,
                                 "prefect.resource.name": run["name"]},
                    "related": [{"prefect.resource.id": f"prefect.tag.{RUN_TAG}",
                                 "prefect.resource.role": "tag"}],  # what the trigger matches
                    "payload": {"reason": "minart server started while this run was "
                                          f"{run['state_type']}: it must send a heartbeat"}})
        if events:
            _post(url, "/events", events)
    except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
        raise RuntimeError(f"could not check the running flow runs on {url}: {exc}") from exc
    return [e["resource"]["prefect.resource.id"].rpartition(".")[2] for e in events]


def _die_with_parent() -> None:
    """In the child before exec: ask Linux for SIGTERM when the parent dies (prctl
    PR_SET_PDEATHSIG); elsewhere nothing."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1: PDEATHSIG
        except OSError:
            pass


def _ui_api_url_is_set(env: dict[str, str]) -> bool:
    """Whether a Prefect process started with ``env`` finds a UI API URL the user set.

    Prefect's own settings answer, from every place a server reads them: ``PREFECT_UI_API_URL``
    or ``PREFECT_SERVER_UI_API_URL`` in ``env``, in the active profile of the ``profiles.toml``
    that ``env`` leads to (``PREFECT_HOME``, ``PREFECT_PROFILE``, ``PREFECT_PROFILES_PATH``), in
    ``prefect.toml`` or ``.env``. Prefect's default (the API URL) does not count. ``os.environ``
    holds ``env`` while the settings are read, as the server's will.

    Raises:
        RuntimeError: a Prefect setting has a value Prefect refuses.
    """
    from prefect.settings import Settings  # first: its import builds this process's settings

    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        return "api_url" in Settings().server.ui.model_fields_set
    except ValueError as exc:  # pydantic's ValidationError
        error = exc.errors()[0] if hasattr(exc, "errors") else {"msg": str(exc)}
        name = ".".join(map(str, error.get("loc", ())))
        raise RuntimeError(f"Prefect setting {name}={error.get('input')!r} is invalid for the "
                           f"server ({error['msg']}); fix it in the environment or the active "
                           "profile ('prefect config view' shows both)") from None
    finally:
        os.environ.clear()
        os.environ.update(saved)


def start_server(*, host: str = "127.0.0.1", port: int | None = None,
                 home: str | os.PathLike | None = None, log: str | os.PathLike | None = None,
                 timeout: float = 90.0, detach: bool = True,
                 env: dict[str, str] | None = None, ui: bool | None = None,
                 zombie_seconds: float | None = ZOMBIE_SECONDS,
                 die_with_parent: bool = False) -> ServerHandle:
    """Start ``prefect server start`` in the background and wait until it is healthy.

    The server keeps concurrency leases on disk (:data:`LEASE_STORAGE`, unless
    ``PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE`` is set) and, once healthy, gets the zombie
    automation (:func:`ensure_zombie_automation`), and every run that was Running when it started
    is watched again (:func:`watch_running_flow_runs`).

    Args:
        host: interface to listen on; a wildcard (``0.0.0.0``, ``::``) listens on all of them.
        port: TCP port (default: a free one).
        home: ``PREFECT_HOME`` of the server (its database lives there).
        log: file for the server's output (default ``<PREFECT_HOME>/minart-server.log``).
        timeout: seconds to wait for ``/api/health``.
        detach: start it in its own session, so it outlives this process.
        env: extra environment variables.
        ui: serve the Prefect UI at ``http://HOST:PORT``; default on, off when
            ``PREFECT_SERVER_UI_ENABLED`` is false in ``env`` or the environment. Its browser code
            finds the API at the ``PREFECT_UI_API_URL`` the user set (``env``, the environment or
            the active profile), else at ``HOST`` (this machine's name for a wildcard ``host``).
        zombie_seconds: heartbeat silence after which the automation marks a run Crashed;
            ``None`` leaves automations alone.
        die_with_parent: on Linux, the server gets SIGTERM when this process dies, even by
            ``kill -9`` (for a server that lives only as long as one command).

    Returns:
        A :class:`ServerHandle` whose ``url`` is the value for ``PREFECT_API_URL`` on this machine
        (on the loopback address for a wildcard ``host``: :func:`client_host`).

    Raises:
        RuntimeError: the port is taken, a Prefect setting is invalid, the server did not start,
            or it refused the automation.
    """
    url_host = client_host(host)
    if port:
        # else /health would be answered by whoever holds it
        with socket.socket(_family(host)) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will
            try:
                sock.bind((host, port))
            except OSError as exc:
                raise RuntimeError(f"port {port} on {host} is not free ({exc.strerror or exc}): "
                                   "is a server already running there? Use it with "
                                   f"PREFECT_API_URL={_api_url(url_host, port)}, or pick another "
                                   "--port") from None
    port = port or free_port(host)
    full_env = {"PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": LEASE_STORAGE, **os.environ,
                **QUIET_ENV, **(env or {})}
    full_env.pop("PREFECT_API_URL", None)
    full_env.update(PREFECT_SERVER_API_HOST=host, PREFECT_SERVER_API_PORT=str(port))
    if home is not None:
        full_env["PREFECT_HOME"] = os.fspath(home)
    # Where the UI's browser code finds the API. Prefect's default, http://HOST:PORT/api, leads a
    # browser nowhere for a wildcard host (0.0.0.0, ::), so this machine's name stands in (not
    # socket.getfqdn(), which often answers "localhost"); a PREFECT_UI_API_URL the user set, in
    # the environment or the active profile, wins, for a browser elsewhere that knows this machine
    # by another name or address.
    if not _ui_api_url_is_set(full_env):
        full_env["PREFECT_SERVER_UI_API_URL"] = _api_url(
            socket.gethostname() if _is_wildcard(host) else host, port)
    if ui is None:
        ui = full_env.get("PREFECT_SERVER_UI_ENABLED", "true").strip().lower() not in _FALSE
    full_env["PREFECT_SERVER_UI_ENABLED"] = "true" if ui else "false"
    home_dir = Path(full_env.get("PREFECT_HOME", Path.home() / ".prefect"))
    try:
        home_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file there, or a folder that cannot be made
        named = "--home" if home is not None else "PREFECT_HOME"
        problem = ("is a file, not a folder" if home_dir.exists() else
                   f"cannot be created ({exc.strerror or exc})")
        raise RuntimeError(f"{named} {home_dir}: {problem}; give a folder for the server's "
                           "database") from None
    log_path = Path(log) if log else home_dir / "minart-server.log"
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port",
               str(port), "--analytics-off", *([] if ui else ["--no-ui"])]
    with open(log_path, "ab") as out:
        process = subprocess.Popen(command, env=full_env, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=detach,
                                   preexec_fn=_die_with_parent if die_with_parent else None)  # noqa: PLW1509
    url = _api_url(url_host, port)
    try:
        wait_healthy(url, timeout=timeout, process=process, log=log_path)
        if zombie_seconds is not None:
            ensure_zombie_automation(url, within=zombie_seconds)
            watch_running_flow_runs(url)
    except BaseException:  # not up, refused, or interrupted: leave no server behind
        if process.poll() is None:
            process.kill()
        raise
    return ServerHandle(url=url, pid=process.pid, log=log_path, process=process,
                        detached=detach)
