"""A host crash during the nightly run: the dead run becomes Crashed and the next run completes.

Real server, pool, deployment (``ocean-nightly`` from prefect.yaml, ``concurrency_limit: 1``) and
process worker; ``kill -9`` of the worker, the flow-run process and the server, then the server
restarted on the same home and port, as after a reboot (slow, ~2.5 min: the zombie window is
90 s).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from flow_helpers import TINY
from minart.flows.server import (
    ZOMBIE_AUTOMATION,
    ZOMBIE_SECONDS,
    free_port,
    start_server,
)

REPO = Path(__file__).resolve().parents[2]
PREFECT = [sys.executable, "-m", "prefect"]
SLOW = TINY.replace("size: [32, 32]", "size: [256, 256]").replace("steps: 3,", "steps: 100000,")
"""The tiny recipe with a diffusion of minutes: it is still running when it is killed."""


def _api(url: str, path: str, body: object | None = None) -> dict | list:
    request = urllib.request.Request(
        f"{url}{path}", method="GET" if body is None else "POST",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"})
    for attempt in range(5):  # SQLite under load answers 503 now and then
        try:
            with urllib.request.urlopen(request, timeout=20) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code != 503 or attempt == 4:
                raise
            time.sleep(1)


def _state(url: str, run_id: str) -> tuple[str, str]:
    state = _api(url, f"/flow_runs/{run_id}")["state"]
    return state["type"], state["name"]


def _wait(url: str, run_id: str, done, timeout: float) -> tuple[str, str]:
    deadline = time.monotonic() + timeout
    while not done(state := _state(url, run_id)):
        assert time.monotonic() < deadline, f"flow run still {state} after {timeout:.0f} s"
        time.sleep(1)
    return state


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (the flow-run process may sit in a session of its own)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _kill9(*pids: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _prefect(*args: str, env: dict) -> None:
    done = subprocess.run([*PREFECT, *args], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=240, check=False)
    assert done.returncode == 0, (f"prefect {' '.join(args)} exited {done.returncode}:\n"
                                  f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


def _worker(env: dict, log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen([*PREFECT, "worker", "start", "--pool", "minart-cpu", "--limit",
                                 "1"], env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds processes in /proc")
def test_dead_nightly_run_is_crashed_and_the_next_run_completes(env, tiny, tmp_path):
    home, port = tmp_path / "server-home", free_port()
    server = start_server(home=home, port=port, timeout=120, die_with_parent=True)
    url = server.url
    env = {**env, "PREFECT_API_URL": url, "PREFECT_WORKER_QUERY_SECONDS": "1",
           "PREFECT_LOGGING_LEVEL": "INFO", "MINART_KERNELS": "eager"}
    slow = tmp_path / "slow.yaml"
    slow.write_text(SLOW)
    worker = None
    try:
        _prefect("work-pool", "create", "minart-cpu", "--type", "process", env=env)
        _prefect("--no-prompt", "deploy", "--name", "ocean-nightly", env=env)
        deployment = _api(url, "/deployments/name/render/ocean-nightly")
        assert deployment["job_variables"]["env"]["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == "30"
        worker = _worker(env, tmp_path / "worker.log")

        def run(recipe: Path) -> str:
            return _api(url, f"/deployments/{deployment['id']}/create_flow_run", {"parameters": {
                "recipe": str(recipe), "output_dir": str(tmp_path / "out")}})["id"]

        dead = run(slow)
        _wait(url, dead, lambda s: s[0] == "RUNNING", 120)
        deadline = time.monotonic() + 30
        while not _api(url, "/events/filter", {"limit": 1, "filter": {
                "event": {"name": ["prefect.flow-run.heartbeat"]},
                "resource": {"id": [f"prefect.flow-run.{dead}"]}}})["events"]:
            assert time.monotonic() < deadline, "the deployment run sent no heartbeat"
            time.sleep(0.5)
        following = run(tiny)  # the worker (--limit 1) is busy: it waits Scheduled

        # the host goes down: worker, flow-run process and server, all at once
        _kill9(worker.pid, *_descendants(worker.pid), server.pid, *_descendants(server.pid))
        worker.wait()
        server.process.wait()
        killed = time.monotonic()
        server = start_server(home=home, port=port, timeout=120, die_with_parent=True)
        assert list((home / "concurrency_leases").glob("*-*.json")), "no lease kept on disk"
        assert _state(url, dead) == ("RUNNING", "Running")
        worker = _worker(env, tmp_path / "worker.log")
        # the restarted server still counts the dead run's slot: the next run has to wait
        _wait(url, following, lambda s: s[1] == "AwaitingConcurrencySlot", 60)

        _wait(url, dead, lambda s: s[0] != "RUNNING", ZOMBIE_SECONDS + 90)
        crashed_after = time.monotonic() - killed
        crashed = _api(url, f"/flow_runs/{dead}")["state"]
        assert crashed["type"] == "CRASHED", crashed
        assert "zombie automation" in crashed["message"]
        assert crashed_after < ZOMBIE_SECONDS + 45, crashed_after
        assert _wait(url, following, lambda s: s[0] in {"COMPLETED", "FAILED", "CRASHED"},
                     120) == ("COMPLETED", "Completed")
        assert (tmp_path / "out" / "tiny-5.png").is_file()
        limit = _api(url, f"/v2/concurrency_limits/{deployment['global_concurrency_limit']['id']}")
        assert limit["active_slots"] == 0
        assert len([a for a in _api(url, "/automations/filter", {})
                    if a["name"] == ZOMBIE_AUTOMATION]) == 1  # not duplicated by the restart
    finally:
        if worker is not None:
            _kill9(*_descendants(worker.pid), worker.pid)
            worker.wait()
        server.stop()
