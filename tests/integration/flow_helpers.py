"""Helpers of the integration tests: the tiny recipe and running the ``minart`` CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

MINART = [sys.executable, "-c", "import sys; from minart.cli import main; sys.exit(main())"]

TINY = """\
name: tiny
seed: 5
size: [32, 32]
device: cpu
steps:
  base:  {stage: fractal, params: {iterations: 16}}
  soft:  {stage: perona_malik, input: base, params: {steps: 3, kappa: 0.1, dt: 0.2}}
  other: {stage: fractal, params: {iterations: 8, power: 5}}
  mix:   {stage: blend, inputs: [soft, other], params: {opacity: 0.5}}
outputs:
  still: {step: mix, path: "{name}-{seed}.png"}
"""
"""A 32x32 recipe: two fractal branches, a diffusion, a blend and one PNG output."""

ART = """\
name: art
seed: 3
size: [24, 24]
device: cpu
steps:
  base: {stage: fractal, params: {iterations: 16}}
  art:  {stage: minimize, input: base, params: {iterations: %d, frame_every: 50}}
outputs:
  sheet: {step: art, path: "{name}.png", sheet: {frames: 4}}
"""
"""A 24x24 minimization of ``%d`` iterations (a few seconds per thousand) and its contact sheet."""


def minart(*args: str, env: dict, cwd: Path, check: bool = True, timeout: float = 180
           ) -> subprocess.CompletedProcess:
    """Run the ``minart`` CLI in a fresh process."""
    done = subprocess.run([*MINART, *map(str, args)], env=env, cwd=cwd, check=False, capture_output=True,
                          text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"minart {' '.join(map(str, args))} exited {done.returncode}:\n"
                             f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def minart_after(prelude: str, *args: str, env: dict, cwd: Path, timeout: float = 180
                 ) -> subprocess.CompletedProcess:
    """Run the ``minart`` CLI in a fresh process after the Python ``prelude`` (a patch that
    stands in for a full disk or a server that cannot start); never raises on its exit status."""
    code = f"import sys\n{prelude}\nfrom minart.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], env=env, cwd=cwd,
                          check=False, capture_output=True, text=True, timeout=timeout)


def run_report(recipe: Path, *extra: str, env: dict, cwd: Path, name: str = "report.json"
               ) -> dict:
    """``minart run RECIPE --report`` and the report it wrote."""
    report = cwd / name
    minart("run", recipe, "--output-dir", cwd / "out", "--report", report, *extra, env=env,
           cwd=cwd)
    return json.loads(report.read_text())


def task_run_states(api_url: str) -> dict[str, str]:
    """``{task run name: state name}`` of the most recently started completed flow run."""
    request = urllib.request.Request(
        f"{api_url}/flow_runs/filter", method="POST",
        data=json.dumps({"sort": "START_TIME_DESC", "limit": 1, "flow_runs": {
            "state": {"type": {"any_": ["COMPLETED"]}}}}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        flow_run = json.loads(response.read())[0]
    request = urllib.request.Request(
        f"{api_url}/task_runs/filter", method="POST",
        data=json.dumps({"flow_runs": {"id": {"any_": [flow_run["id"]]}}}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return {t["name"]: t["state"]["name"] for t in json.loads(response.read())}


def artifacts(api_url: str, key: str) -> list[dict]:
    """The server's artifacts stored under ``key``, newest first."""
    request = urllib.request.Request(
        f"{api_url}/artifacts/filter", method="POST",
        data=json.dumps({"artifacts": {"key": {"any_": [key]}},
                         "sort": "CREATED_DESC"}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())
