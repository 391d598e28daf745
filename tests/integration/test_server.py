"""``minart server`` (flows/server.py) against the session's real server: UI, leases, automation;
against a second one configured by its Prefect profile (UI API URL, a small page size); and the
URLs ``start_server`` gives for a wildcard host, with the server process faked."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timezone

import pytest
from minart.flows import server
from minart.flows.server import (
    LEASE_STORAGE,
    RUN_TAG,
    WATCH_EVENT,
    ZOMBIE_AUTOMATION,
    ZOMBIE_SECONDS,
    ensure_zombie_automation,
    watch_running_flow_runs,
)


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=20) as response:
        assert response.status == 200
        return response.read()


def _post(url: str, body: object, tries: int = 20) -> object:
    """POST ``body``; a 503 (SQLite busy under a burst of writes) is retried, as Prefect's client
    does."""
    request = urllib.request.Request(url, method="POST", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    for attempt in range(tries):
        try:
            with urllib.request.urlopen(request, timeout=20) as response:
                data = response.read()
            return json.loads(data) if data else None
        except urllib.error.HTTPError as exc:
            if exc.code != 503 or attempt == tries - 1:
                raise
            time.sleep(0.2)


def _automations(api_url: str) -> list[dict]:
    return [a for a in _post(f"{api_url}/automations/filter", {})
            if a["name"] == ZOMBIE_AUTOMATION]


def _events(api_url: str, name: str, run_id: str, timeout: float = 20) -> list[dict]:
    """Events ``name`` of the run, waiting up to ``timeout`` s for the pipeline to store one."""
    deadline = time.monotonic() + timeout
    while True:
        found = _post(f"{api_url}/events/filter", {"limit": 5, "filter": {
            "event": {"name": [name]}, "resource": {"id": [f"prefect.flow-run.{run_id}"]}}})
        if found["events"] or time.monotonic() > deadline:
            return found["events"]
        time.sleep(0.3)


def _heartbeat(run_id: str, tags: tuple[str, ...] = (RUN_TAG,)) -> dict:
    """A heartbeat as Prefect's flow engine sends it: the run's tags are related resources."""
    return {"id": str(uuid.uuid4()), "occurred": datetime.now(timezone.utc).isoformat(),
            "event": "prefect.flow-run.heartbeat",
            "resource": {"prefect.resource.id": f"prefect.flow-run.{run_id}"},
            "related": [{"prefect.resource.id": f"prefect.tag.{tag}",
                         "prefect.resource.role": "tag"} for tag in tags]}


def _running_run(api_url: str, flow_name: str, tags: tuple[str, ...] = (RUN_TAG,)) -> dict:
    flow = _post(f"{api_url}/flows/", {"name": flow_name})
    return _post(f"{api_url}/flow_runs/", {"flow_id": flow["id"], "tags": list(tags),
                                           "state": {"type": "RUNNING", "name": "Running"}})


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


_PROFILE_ENV = ("PREFECT_UI_API_URL", "PREFECT_SERVER_UI_API_URL", "PREFECT_PROFILE",
                "PREFECT_PROFILES_PATH", "PREFECT_TEST_MODE", "PREFECT_TESTING_TEST_MODE",
                "PREFECT_UNIT_TEST_MODE", "PREFECT_TESTING_UNIT_TEST_MODE")
"""Variables that would override a test's ``profiles.toml``, or hide it (the test mode reads none)."""

STUDIO_UI_API_URL = "http://studio.example:4200/api"

PROFILES = f"""\
active = "studio"

[profiles.studio]
PREFECT_UI_API_URL = "{STUDIO_UI_API_URL}"
PREFECT_SERVER_API_DEFAULT_LIMIT = 3

[profiles.local]
PREFECT_API_URL = "http://127.0.0.1:4200/api"
"""
"""A user's ``profiles.toml``: the active profile sets the UI's API URL and a page size of 3."""


class _FakeServer:
    """Stands in for the ``prefect server start`` process: keeps the command and environment."""

    pid = 4242
    killed = False

    def __init__(self, command: list[str], *, env: dict[str, str], **_) -> None:
        self.command, self.env = command, env

    def poll(self) -> None:
        return None

    def kill(self) -> None:
        self.killed = True


@pytest.fixture
def fake_start(monkeypatch):
    """``start_server`` without a server: yields the processes started and the URLs polled."""
    started, polled = [], []

    def popen(*args, **kwargs):
        started.append(_FakeServer(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(server.subprocess, "Popen", popen)
    monkeypatch.setattr(server, "wait_healthy", lambda url, **_: polled.append(url))
    for name in _PROFILE_ENV:
        monkeypatch.delenv(name, raising=False)
    return started, polled


@pytest.mark.parametrize("error", [KeyboardInterrupt, ConnectionResetError, RuntimeError])
def test_a_start_that_does_not_finish_leaves_no_server_behind(error, fake_start, monkeypatch,
                                                                tmp_path):
    started, _ = fake_start

    def interrupted(url, **_):
        raise error("stopped while waiting for the server")

    monkeypatch.setattr(server, "wait_healthy", interrupted)
    with pytest.raises(error):
        server.start_server(home=tmp_path, zombie_seconds=None)
    assert started[0].killed


@pytest.mark.parametrize(("host", "loopback", "reachable"), [
    ("0.0.0.0", "127.0.0.1", "127.0.0.1"),
    pytest.param("::", "::1", "[::1]",
                 marks=pytest.mark.skipif(not _has_ipv6(), reason="no IPv6 on this machine")),
])
def test_a_server_on_every_interface_gives_urls_a_client_and_a_browser_can_reach(
        host, loopback, reachable, fake_start, tmp_path):
    started, polled = fake_start
    port = server.free_port(host)
    handle = server.start_server(host=host, port=port, home=tmp_path, zombie_seconds=None)
    assert handle.url == polled[0] == f"http://{reachable}:{port}/api"  # for PREFECT_API_URL
    (process,) = started
    assert process.command[process.command.index("--host") + 1] == host
    assert process.env["PREFECT_SERVER_UI_API_URL"] == f"http://{socket.gethostname()}:{port}/api"
    assert server.client_host(host) == loopback
    assert server.client_host("192.168.1.20") == "192.168.1.20"


def test_the_ui_api_url_the_user_set_is_kept(fake_start, tmp_path):
    started, _ = fake_start
    server.start_server(host="0.0.0.0", home=tmp_path, zombie_seconds=None,
                        env={"PREFECT_UI_API_URL": "http://studio.example:4200/api"})
    (process,) = started
    assert process.env["PREFECT_UI_API_URL"] == "http://studio.example:4200/api"
    assert "PREFECT_SERVER_UI_API_URL" not in process.env


@pytest.mark.parametrize(("profile", "kept"), [("studio", True), ("local", False)])
def test_the_ui_api_url_set_in_the_active_profile_is_kept(profile, kept, fake_start, tmp_path,
                                                          monkeypatch):
    started, _ = fake_start
    (tmp_path / "profiles.toml").write_text(PROFILES)
    monkeypatch.setenv("PREFECT_PROFILE", profile)
    before = dict(server.os.environ)
    port = server.free_port("0.0.0.0")
    server.start_server(host="0.0.0.0", port=port, home=tmp_path, zombie_seconds=None)
    assert dict(server.os.environ) == before  # the settings were read in the server's environment
    (process,) = started
    assert "PREFECT_UI_API_URL" not in process.env
    if kept:  # the server reads it from the profile itself; an environment variable would win
        assert "PREFECT_SERVER_UI_API_URL" not in process.env
    else:  # a profile's PREFECT_API_URL is Prefect's default for the UI, not a choice to keep
        assert (process.env["PREFECT_SERVER_UI_API_URL"]
                == f"http://{socket.gethostname()}:{port}/api")


def test_a_setting_prefect_refuses_is_reported_before_the_server_starts(fake_start, tmp_path):
    started, _ = fake_start
    with pytest.raises(RuntimeError, match=r"^Prefect setting default_limit='many' is invalid for "
                                           r"the server \(Input should be a valid integer"):
        server.start_server(home=tmp_path, zombie_seconds=None,
                            env={"PREFECT_SERVER_API_DEFAULT_LIMIT": "many"})
    assert started == []


def test_help_tells_a_remote_browser_how_to_reach_the_api(capsys):
    from minart.cli import main

    assert main(["server", "--help"]) == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert ("On --host 0.0.0.0 (or ::) the UI sends the browser to the API at this machine's name"
            in help_text)
    assert "PREFECT_UI_API_URL, which wins when set in the environment or in the active " \
           "Prefect profile" in help_text
    assert "PREFECT_UI_API_URL=http://10.0.0.5:4200/api minart server --host 0.0.0.0" in help_text


def test_ui_is_served_and_points_at_this_servers_api(prefect_server):
    root = prefect_server.url.removesuffix("/api")
    assert b"<html" in _get(f"{root}/").lower()
    settings = json.loads(_get(f"{root}/ui-settings"))
    assert settings["api_url"] == prefect_server.url  # not Prefect's default port 4200


def test_leases_are_kept_on_disk(prefect_server):
    settings = json.loads(_get(f"{prefect_server.url}/admin/settings"))
    assert settings["server"]["concurrency"]["lease_storage"] == LEASE_STORAGE


def test_zombie_automation_is_created_once_and_updated_in_place(prefect_server):
    url = prefect_server.url
    (created,) = _automations(url)  # start_server made it
    trigger = created["trigger"]
    assert trigger["posture"] == "Proactive" and trigger["within"] == ZOMBIE_SECONDS
    assert set(trigger["after"]) == {"prefect.flow-run.heartbeat", "minart.flow-run.watch"}
    assert trigger["match_related"] == {"prefect.resource.role": "tag",
                                        "prefect.resource.id": "prefect.tag.minart"}
    assert created["actions"][0]["type"] == "change-flow-run-state"
    assert created["actions"][0]["state"] == "CRASHED"

    assert ensure_zombie_automation(url) == created["id"]
    assert _automations(url) == [created]  # unchanged: not even its `updated` time
    try:
        assert ensure_zombie_automation(url, within=120) == created["id"]
        (changed,) = _automations(url)
        assert changed["trigger"]["within"] == 120
    finally:
        ensure_zombie_automation(url)
    (restored,) = _automations(url)
    assert restored["trigger"]["within"] == ZOMBIE_SECONDS


def test_watch_leaves_runs_without_heartbeats_alone(prefect_server):
    assert watch_running_flow_runs(prefect_server.url) == []


def test_watch_reopens_the_window_of_running_runs_that_send_heartbeats(prefect_server):
    url = prefect_server.url
    run = _running_run(url, "minart-watch-test")
    other = _running_run(url, "someone-elses-flow", tags=("nightly",))
    try:
        assert run["id"] not in watch_running_flow_runs(url)  # no heartbeat yet: not watched
        _post(f"{url}/events", [_heartbeat(run["id"]), _heartbeat(other["id"], ("nightly",))])
        assert _events(url, "prefect.flow-run.heartbeat", run["id"])
        assert _events(url, "prefect.flow-run.heartbeat", other["id"])
        watched = watch_running_flow_runs(url)
        assert run["id"] in watched and other["id"] not in watched  # not tagged minart
        (watch,) = _events(url, WATCH_EVENT, run["id"])
        assert watch["resource"]["prefect.resource.id"] == f"prefect.flow-run.{run['id']}"
        assert {"prefect.resource.id": "prefect.tag.minart",
                "prefect.resource.role": "tag"} in watch["related"]
    finally:
        for r in (run, other):
            _post(f"{url}/flow_runs/{r['id']}/set_state",
                  {"state": {"type": "COMPLETED", "name": "Completed"}, "force": True})


@pytest.mark.slow  # waits for a shortened zombie window: about 30 s
def test_the_automation_crashes_silent_minart_runs_only(prefect_server):
    url = prefect_server.url
    ours = _running_run(url, "minart-zombie-test")
    theirs = _running_run(url, "someone-elses-flow", tags=("nightly",))
    alive = _running_run(url, "minart-zombie-test")

    def state(run):
        return json.loads(_get(f"{url}/flow_runs/{run['id']}"))["state"]["type"]

    try:
        ensure_zombie_automation(url, within=10)
        time.sleep(2)  # the automation is loaded by the triggers service
        _post(f"{url}/events", [_heartbeat(ours["id"]), _heartbeat(alive["id"]),
                                _heartbeat(theirs["id"], ("nightly",))])
        deadline = time.monotonic() + 60
        while state(ours) != "CRASHED":
            assert time.monotonic() < deadline, "the silent minart run was not marked Crashed"
            _post(f"{url}/events", [_heartbeat(alive["id"])])
            time.sleep(2)
        assert state(theirs) == "RUNNING"  # a 180 s heartbeat of another flow is no death
        assert state(alive) == "RUNNING"
    finally:
        ensure_zombie_automation(url)
        for r in (ours, theirs, alive):
            _post(f"{url}/flow_runs/{r['id']}/set_state",
                  {"state": {"type": "COMPLETED", "name": "Completed"}, "force": True})


@pytest.mark.slow  # 201 flow runs: 10-15 s on two shared cores
def test_watch_reads_every_running_run_not_only_the_servers_first_page(prefect_server):
    url = prefect_server.url
    page = json.loads(_get(f"{url}/admin/settings"))["server"]["api"]["default_limit"]  # 200
    flow = _post(f"{url}/flows/", {"name": "minart-watch-pages-test"})
    ids = [_post(f"{url}/flow_runs/", {"flow_id": flow["id"], "tags": [RUN_TAG],
                                       "state": {"type": "RUNNING", "name": "Running"}})["id"]
           for _ in range(page + 1)]
    try:
        _post(f"{url}/events", [_heartbeat(run_id) for run_id in ids])
        beats = {"limit": 1, "filter": {
            "event": {"name": ["prefect.flow-run.heartbeat"]},
            "resource": {"id": [f"prefect.flow-run.{run_id}" for run_id in ids]}}}
        deadline = time.monotonic() + 20
        while _post(f"{url}/events/filter", beats)["total"] < len(ids):  # until all are stored
            assert time.monotonic() < deadline
            time.sleep(0.3)
        assert set(ids) <= set(watch_running_flow_runs(url))
    finally:
        for first in range(0, len(ids), 50):  # the most /flow_runs/bulk_set_state takes
            _post(f"{url}/flow_runs/bulk_set_state", {
                "flow_runs": {"id": {"any_": ids[first:first + 50]}}, "limit": 50, "force": True,
                "state": {"type": "COMPLETED", "name": "Completed"}})


@pytest.fixture(scope="module")
def profile_server(tmp_path_factory):
    """A second real server whose home's active profile sets the UI API URL and a page of 3."""
    home = tmp_path_factory.mktemp("prefect-profile-server")
    (home / "profiles.toml").write_text(PROFILES)
    with pytest.MonkeyPatch.context() as patch:
        for name in _PROFILE_ENV:
            patch.delenv(name, raising=False)
        handle = server.start_server(home=home, timeout=120, zombie_seconds=None,
                                     die_with_parent=True)
    yield handle
    handle.stop()


@pytest.mark.slow  # a server of its own: 10-15 s
def test_the_ui_api_url_of_the_active_profile_reaches_the_browser(profile_server):
    root = profile_server.url.removesuffix("/api")
    assert json.loads(_get(f"{root}/ui-settings"))["api_url"] == STUDIO_UI_API_URL
    assert json.loads(_get(f"{profile_server.url}/admin/settings"))["server"]["api"][
        "default_limit"] == 3  # the profile was read, not only its UI line


@pytest.mark.slow  # uses profile_server, whose pages hold 3 runs
def test_watch_misses_no_run_when_runs_end_while_it_reads_the_pages(profile_server, monkeypatch):
    url = profile_server.url
    flow = _post(f"{url}/flows/", {"name": "minart-watch-race-test"})
    ids = [_post(f"{url}/flow_runs/", {"flow_id": flow["id"],
                                       "state": {"type": "RUNNING", "name": "Running"}})["id"]
           for _ in range(7)]
    real_post, pages = server._post, []

    def post(url_: str, path: str, body: object, **kwargs) -> object:
        answer = real_post(url_, path, body, **kwargs)
        if path == "/flow_runs/filter":
            pages.append([run["id"] for run in answer])
            if len(pages) == 1:  # the first page's runs end before the second page is read
                for run_id in pages[0]:
                    _post(f"{url}/flow_runs/{run_id}/set_state", {
                        "state": {"type": "COMPLETED", "name": "Completed"}, "force": True})
        return answer

    monkeypatch.setattr(server, "_post", post)
    try:
        found = [run["id"] for run in server._running_flow_runs(url)]
        assert len(pages[0]) == 3  # the server's page size, from the profile
        assert sorted(found) == sorted(ids)  # the three that ended were Running when read
    finally:
        _post(f"{url}/flow_runs/bulk_set_state", {
            "flow_runs": {"id": {"any_": ids}}, "limit": 50, "force": True,
            "state": {"type": "COMPLETED", "name": "Completed"}})


def test_a_server_that_ignores_the_filter_ends_the_reading_instead_of_looping(monkeypatch):
    runs = [{"id": "a"}, {"id": "b"}]
    calls = []

    def post(url: str, path: str, body: dict) -> list[dict]:
        calls.append(body)
        if len(calls) > 5:
            raise RuntimeError("still reading the same page")
        return runs

    monkeypatch.setattr(server, "_post", post)
    assert server._running_flow_runs("http://unused/api") == runs
    assert [body["flow_runs"]["id"]["not_any_"] for body in calls] == [[], ["a", "b"]]


def test_a_busy_server_is_asked_again_not_given_up_on():
    import http.server
    import threading

    answers = [503, 503, 200]

    class Busy(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            code = answers.pop(0)
            body = b'{"ok": true}' if code == 200 else b"database is locked"
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Busy)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/api"
        assert server._post(url, "/x", {}, waits=(0.01, 0.01)) == {"ok": True}
        answers[:] = [503, 503, 503]
        with pytest.raises(urllib.error.HTTPError, match="503"):
            server._post(url, "/x", {}, waits=(0.01, 0.01))
        assert answers == []
    finally:
        httpd.shutdown()


def test_a_home_that_is_not_a_folder_is_reported_before_the_server_starts(fake_start, tmp_path,
                                                                          monkeypatch):
    started, _ = fake_start
    afile = tmp_path / "afile"
    afile.write_text("")
    with pytest.raises(RuntimeError, match=rf"^--home {afile}: is a file, not a folder; give a "
                                           "folder for the server's database$"):
        server.start_server(home=afile, zombie_seconds=None)
    monkeypatch.setenv("PREFECT_HOME", str(afile / "sub"))
    with pytest.raises(RuntimeError, match=rf"^PREFECT_HOME {afile / 'sub'}: cannot be created "):
        server.start_server(zombie_seconds=None)
    assert started == []
