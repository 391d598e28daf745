"""SIGTERM to a flow-run process (a worker stopping, ``prefect flow-run cancel``, systemd): the
step in progress stops at its next progress report and keeps its checkpoint, as Ctrl-C does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from flow_helpers import ART, run_report

from minart.cache import TensorCache

FLOW = ("import sys\nfrom minart.flows.render import render\n"
        "render(recipe=sys.argv[1], output_dir=sys.argv[2])\n")


def test_sigterm_stops_the_step_in_progress_keeping_its_checkpoint(tmp_path, env):
    recipe = tmp_path / "art.yaml"
    recipe.write_text(ART % 4000)
    cache = TensorCache(env["MINART_CACHE"])
    # no periodic checkpoint: one can only come from the stop itself
    run_env = {**env, "PREFECT_LOGGING_LEVEL": "INFO", "MINART_CHECKPOINT_SECONDS": "3600"}
    process = subprocess.Popen([sys.executable, "-c", FLOW, str(recipe), str(tmp_path / "out")],
                               env=run_env, cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        for line in process.stdout:  # the flow process itself, as a worker starts it
            lines.append(line)
            if "step 'art' (minimize): computing" in line:
                break
        time.sleep(2)  # well into the loop
        os.kill(process.pid, signal.SIGTERM)
        sent = time.monotonic()
        lines.extend(process.stdout)
        process.wait(timeout=60)
        took = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    log = "".join(lines)
    assert took < 20, log[-3000:]
    assert "termination requested" in log, log[-3000:]
    saved = [e for e in cache.entries() if e.kind == "checkpoint"]
    assert [e.step for e in saved] == ["art"], log[-3000:]

    report = run_report(recipe, env=run_env, cwd=tmp_path)  # the same run again: resumes
    art = next(s for s in report["steps"] if s["step"] == "art")
    assert art["status"] == "computed" and art["resumed_from"] > 0
    assert (tmp_path / "out" / "art.png").is_file()
