"""prefect.yaml end to end: deploy, a process worker, two runs of the deployment (slow, ~45 s)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from flow_helpers import task_run_states

REPO = Path(__file__).resolve().parents[2]
PREFECT = [sys.executable, "-m", "prefect"]


def _prefect(*args: str, env: dict, timeout: float = 240) -> subprocess.CompletedProcess:
    done = subprocess.run([*PREFECT, *args], env=env, cwd=REPO, check=False, capture_output=True, text=True,
                          timeout=timeout)
    if done.returncode != 0:
        raise AssertionError(f"prefect {' '.join(args)} exited {done.returncode}:\n"
                             f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


@pytest.mark.slow
def test_deploy_worker_and_two_runs(prefect_server, tiny, env, tmp_path):
    env = {**env, "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_LOGGING_LEVEL": "INFO"}
    _prefect("work-pool", "create", "minart-cpu", "--type", "process", env=env)
    _prefect("--no-prompt", "deploy", "--name", "ocean-nightly", env=env)
    worker = subprocess.Popen([*PREFECT, "worker", "start", "--pool", "minart-cpu", "--limit", "1"],
                              env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        reports = []
        for attempt in (1, 2):
            report = tmp_path / f"report-{attempt}.json"
            _prefect("deployment", "run", "render/ocean-nightly", "--param", f"recipe={tiny}",
                     "--param", f"output_dir={tmp_path / 'out' / '{date}'}", "--param", f"report={report}",
                     "--watch", env=env)
            reports.append(json.loads(report.read_text()))
            if attempt == 2:
                states = task_run_states(prefect_server.url)
    finally:
        worker.send_signal(signal.SIGINT)
        try:
            worker.wait(5)
        except subprocess.TimeoutExpired:
            worker.send_signal(signal.SIGINT)  # workers stop on the second signal
            try:
                worker.wait(10)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
    first, second = reports
    assert sorted(first["computed"]) == ["base", "mix", "other", "out.still", "soft"]
    [written] = (tmp_path / "out").glob("*/tiny-5.png")  # out/{date}: the run's UTC date
    assert re.fullmatch(r"\d{4}-\d\d-\d\d", written.parent.name), written
    assert second["computed"] == []
    assert states == {"out.still": "Cached"}
