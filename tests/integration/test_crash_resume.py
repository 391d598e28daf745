"""kill -9 in the middle of a run loses at most the step in progress; locks do not outlive it."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from flow_helpers import ART, MINART, artifacts, run_report

from minart import engine
from minart.cache import TensorCache

SLOW = """\
name: slow
seed: 2
size: [48, 48]
device: cpu
steps:
  base:  {stage: fractal, params: {iterations: 16}}
  other: {stage: fractal, params: {iterations: 8, power: 5}}
  soft:  {stage: perona_malik, input: base, params: {steps: %d, kappa: 0.1, dt: 0.2}}
  mix:   {stage: blend, inputs: [soft, other], params: {opacity: 0.5}}
outputs:
  still: {step: mix, path: "{name}.png"}
"""


def _start_and_kill_during(recipe, marker: str, env: dict, cwd, *, timeout: float = 120,
                          then=None) -> str:
    """Start ``minart run``, SIGKILL it once ``marker`` shows in its log (and ``then()``
    returned); return the log."""
    run_env = {**env, "PREFECT_LOGGING_LEVEL": "INFO", "MINART_KERNELS": "eager"}  # no compile
    process = subprocess.Popen([*MINART, "run", str(recipe), "--output-dir", str(cwd / "out")],
                               env=run_env, cwd=cwd, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    lines = []
    deadline = time.monotonic() + timeout
    try:
        for line in process.stdout:
            lines.append(line)
            if marker in line or time.monotonic() > deadline:
                if then is not None and marker in line:
                    then()
                break
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    log = "".join(lines)
    assert marker in log, log[-3000:]
    return log


def _wait_for_progress_artifact(api_url: str, key: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not artifacts(api_url, key):
        assert time.monotonic() < deadline, f"no progress artifact {key!r} within {timeout} s"
        time.sleep(0.5)
    found = artifacts(api_url, key)[0]
    assert found["type"] == "progress" and 0 <= float(found["data"]) < 100


def test_kill_9_mid_step_then_rerun_resumes_from_the_cache(tmp_path, env, prefect_server):
    recipe = tmp_path / "slow.yaml"
    recipe.write_text(SLOW % 100000)  # long enough to be killed while it runs
    _start_and_kill_during(  # killed once the long step has published its progress artifact
        recipe, "step 'soft' (perona_malik): computing", env, tmp_path,
        then=lambda: _wait_for_progress_artifact(prefect_server.url, "minart-progress-soft"))
    cache = TensorCache(env["MINART_CACHE"])
    done_before = {e.step for e in cache.entries()}
    assert {"base", "other"} <= done_before and "soft" not in done_before
    killed = engine.load_plan(recipe, output_dir=tmp_path / "out").steps["soft"].key
    with cache.lock(killed, timeout=5):  # the dead holder's lock is free at once
        pass

    recipe.write_text(SLOW % 20)  # same recipe but a short diffusion, so the test is quick
    report = run_report(recipe, env=env, cwd=tmp_path)  # does not hang on the dead run's lock
    assert sorted(report["computed"]) == ["mix", "out.still", "soft"]  # base, other: cached
    assert (tmp_path / "out" / "slow.png").is_file()


def test_kill_9_mid_minimize_resumes_from_its_checkpoint(tmp_path, env):
    recipe = tmp_path / "art.yaml"
    recipe.write_text(ART % 1500)
    cache = TensorCache(env["MINART_CACHE"])
    env = {**env, "MINART_CHECKPOINT_SECONDS": "0.5"}

    def checkpoint_written(timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.kind == "checkpoint" for e in cache.entries()):
            assert time.monotonic() < deadline, f"no checkpoint within {timeout} s"
            time.sleep(0.2)

    _start_and_kill_during(recipe, "step 'art' (minimize): computing", env, tmp_path,
                           then=checkpoint_written)
    saved = next(e for e in cache.entries() if e.kind == "checkpoint")
    assert saved.step == "art"
    report = run_report(recipe, env=env, cwd=tmp_path)
    art = next(s for s in report["steps"] if s["step"] == "art")
    assert art["status"] == "computed" and art["resumed_from"] and art["resumed_from"] > 0
    assert "base" not in report["computed"]  # finished before the kill: cached
    assert not any(e.kind == "checkpoint" for e in cache.entries())  # dropped once stored
    assert (tmp_path / "out" / "art.png").is_file()


def test_ctrl_c_stops_the_step_in_progress_soon_and_says_how_to_resume(tmp_path, env):
    recipe = tmp_path / "slow.yaml"
    recipe.write_text(SLOW % 100000)  # minutes of diffusion: Ctrl-C must not wait for it
    run_env = {**env, "PREFECT_LOGGING_LEVEL": "INFO", "MINART_KERNELS": "eager"}
    del run_env["PREFECT_API_URL"]  # as an artist runs it: minart starts a temporary server
    process = subprocess.Popen([*MINART, "run", str(recipe), "--output-dir", str(tmp_path / "o")],
                               env=run_env, cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        for line in process.stdout:
            if "step 'soft' (perona_malik): computing" in line:
                break
        time.sleep(1.0)
        os.killpg(process.pid, signal.SIGINT)  # a terminal signals the whole process group
        sent = time.monotonic()
        rest = process.communicate(timeout=60)[0]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130 and time.monotonic() - sent < 30, rest[-3000:]
    assert "step 'soft': stopped on request at" in rest
    assert ("error: interrupted: finished steps are cached and a long step keeps its last "
            "checkpoint; run the same command again to resume") in rest
    assert "Traceback" not in rest and "Error logging to API" not in rest
    assert {"base", "other"} <= {e.step for e in TensorCache(env["MINART_CACHE"]).entries()}
