"""``minart server`` (flows/server.py) against the session's real server: UI, leases, automation."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from datetime import datetime, timezone

from minart.flows.server import (
    LEASE_STORAGE,
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


def _post(url: str, body: object) -> object:
    request = urllib.request.Request(url, method="POST", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=20) as response:
        data = response.read()
    return json.loads(data) if data else None


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
    flow = _post(f"{url}/flows/", {"name": "minart-watch-test"})
    run = _post(f"{url}/flow_runs/", {"flow_id": flow["id"],
                                      "state": {"type": "RUNNING", "name": "Running"}})
    try:
        assert run["id"] not in watch_running_flow_runs(url)  # no heartbeat yet: not watched
        _post(f"{url}/events", [{
            "id": str(uuid.uuid4()), "occurred": datetime.now(timezone.utc).isoformat(),
            "event": "prefect.flow-run.heartbeat",
            "resource": {"prefect.resource.id": f"prefect.flow-run.{run['id']}"}}])
        assert _events(url, "prefect.flow-run.heartbeat", run["id"])
        assert run["id"] in watch_running_flow_runs(url)
        (watch,) = _events(url, WATCH_EVENT, run["id"])
        assert watch["resource"]["prefect.resource.id"] == f"prefect.flow-run.{run['id']}"
    finally:
        _post(f"{url}/flow_runs/{run['id']}/set_state",
              {"state": {"type": "COMPLETED", "name": "Completed"}, "force": True})
