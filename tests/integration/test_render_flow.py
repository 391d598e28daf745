"""The render flow end to end: real Prefect server, real files, counting computed steps."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
import zlib

import torch
from flow_helpers import MINART, artifacts, minart, minart_after, run_report, task_run_states

from minart.cache import TensorCache
from minart.io import write_image

ALL = ["base", "mix", "other", "out.still", "soft"]


def test_caching_numbers(tiny, env, tmp_path, prefect_server):
    first = run_report(tiny, env=env, cwd=tmp_path)
    assert sorted(first["computed"]) == ALL
    assert (tmp_path / "out" / "tiny-5.png").is_file()

    second = run_report(tiny, env=env, cwd=tmp_path)
    assert second["computed"] == []  # an unchanged recipe computes no step
    assert {s["step"]: s["status"] for s in second["steps"]}["out.still"] == "cached"
    assert task_run_states(prefect_server.url) == {"out.still": "Cached"}  # shown by Prefect
    summary = artifacts(prefect_server.url, "minart-render")[0]  # the run's markdown artifact
    assert summary["type"] == "markdown" and "| out.still | save_image | hit |" in summary["data"]

    last = run_report(tiny, "--set", "outputs.still.path=again-{seed}.png", env=env,
                      cwd=tmp_path)
    assert last["computed"] == ["out.still"]  # a parameter of the last step: only that step
    assert (tmp_path / "out" / "again-5.png").is_file()

    upstream = run_report(tiny, "--set", "steps.soft.params.kappa=0.2", env=env, cwd=tmp_path)
    assert sorted(upstream["computed"]) == ["mix", "out.still", "soft"]  # and its descendants
    keys = {s["step"]: s["key"] for s in first["steps"]}
    assert {s["step"]: s["key"] for s in upstream["steps"]}["other"] == keys["other"]


def test_corrupt_entry_is_recomputed_and_reported(tiny, env, tmp_path):
    first = run_report(tiny, env=env, cwd=tmp_path)
    cache = TensorCache(env["MINART_CACHE"])
    mix = next(s["key"] for s in first["steps"] if s["step"] == "mix")
    path = cache.payload_path(mix)
    raw = bytearray(cache.fs.cat_file(path))
    raw[len(raw) // 2] ^= 0xFF
    cache.fs.pipe_file(path, bytes(raw))
    (tmp_path / "out" / "tiny-5.png").unlink()  # the output needs mix again

    done = minart("run", tiny, "--output-dir", tmp_path / "out", "--report",
                  tmp_path / "again.json", env=env, cwd=tmp_path)
    again = json.loads((tmp_path / "again.json").read_text())
    assert sorted(again["computed"]) == ["mix", "out.still"] and again["corrupt"] == 1
    assert "fails its sha256 checksum" in done.stdout + done.stderr
    assert "1 corrupt cache entries recomputed" in done.stdout
    assert (tmp_path / "out" / "tiny-5.png").is_file()


def test_a_moved_cache_and_damaged_records_still_answer_from_the_cache(tiny, env, tmp_path):
    first = run_report(tiny, env=env, cwd=tmp_path)
    assert sorted(first["computed"]) == ALL
    moved = tmp_path / "moved-cache"
    (tmp_path / "cache").rename(moved)  # Prefect's records hold the old absolute path
    env = {**env, "MINART_CACHE": str(moved)}
    (tmp_path / "out" / "tiny-5.png").unlink()  # so the run needs the cached 'mix'
    again = run_report(tiny, env=env, cwd=tmp_path, name="again.json")
    assert again["computed"] == ["out.still"] and (tmp_path / "out" / "tiny-5.png").is_file()

    key = next(s["key"] for s in first["steps"] if s["step"] == "out.still")
    (moved / "records" / "results" / key).write_text("garbage")
    third = run_report(tiny, env=env, cwd=tmp_path, name="third.json")
    assert third["computed"] == [] and third["steps"][-1]["status"] == "cached"


def test_two_processes_at_once_compute_each_step_once(tiny, env, tmp_path):
    runs = []
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        runs.append(subprocess.Popen(
            [*MINART, "run", str(tiny), "--output-dir", str(folder), "--report",
             str(folder / "report.json")], env=env, cwd=folder, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True))
    outputs = [run.communicate(timeout=240)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    reports = [json.loads((tmp_path / n / "report.json").read_text()) for n in ("a", "b")]
    computed = sorted(step for r in reports for step in r["computed"] if step != "out.still")
    assert computed == ["base", "mix", "other", "soft"]  # every shared step computed once
    assert all("out.still" in r["computed"] for r in reports)  # each writes its own file
    images = [(tmp_path / n / "tiny-5.png").read_bytes() for n in ("a", "b")]
    assert hashlib.sha256(images[0]).digest() == hashlib.sha256(images[1]).digest()


def test_reproduce_and_cache_commands(tiny, env, tmp_path):
    run_report(tiny, "--set", "steps.mix.params.opacity=0.25", env=env, cwd=tmp_path)
    image = tmp_path / "out" / "tiny-5.png"
    done = minart("reproduce", image, "--output-dir", tmp_path / "again", "--report",
                  tmp_path / "rep.json", env=env, cwd=tmp_path)
    report = json.loads((tmp_path / "rep.json").read_text())
    assert report["computed"] == ["out.still"], done.stdout  # same recipe + overrides: cached
    assert (tmp_path / "again" / "tiny-5.png").read_bytes() == image.read_bytes()

    listing = minart("cache", "ls", "--json", env=env, cwd=tmp_path).stdout.splitlines()
    assert len(listing) == 6 and all(json.loads(line)["key"] for line in listing)
    minart("cache", "gc", "--max-size", "1kB", env=env, cwd=tmp_path)
    assert len(TensorCache(env["MINART_CACHE"]).entries()) <= 2
    assert "removed" in minart("cache", "clear", "--yes", env=env, cwd=tmp_path).stdout
    assert TensorCache(env["MINART_CACHE"]).entries() == []


def test_bad_recipe_fails_fast_without_prefect(tmp_path, env):
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps:\n  a: {stage: fractl}\n")
    done = minart("run", bad, env=env, cwd=tmp_path, check=False)
    assert done.returncode == 2
    assert "unknown stage 'fractl'; did you mean 'fractal'?" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_step_failing_on_bad_input_prints_one_line_and_no_traceback(tmp_path, env):
    # a PNG whose chunks are sound (lengths, CRCs, IEND) but whose compressed pixels are not:
    # check does not inflate them, so the step itself fails, inside the Prefect flow
    write_image(tmp_path / "broken.png", torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0)))
    data = bytearray((tmp_path / "broken.png").read_bytes())
    at = data.index(b"IDAT") - 4
    length = int.from_bytes(data[at:at + 4], "big")
    data[at + 8 + length // 2:at + 8 + length // 2 + 64] = bytes(range(64))  # garbage mid-stream
    data[at + 8 + length:at + 12 + length] = zlib.crc32(data[at + 4:at + 8 + length]).to_bytes(4, "big")
    (tmp_path / "broken.png").write_bytes(bytes(data))
    recipe = tmp_path / "broken.yaml"
    recipe.write_text("name: broken\nsize: [16, 16]\nsteps:\n"
                      "  img: {stage: load_image, params: {path: broken.png}}\n"
                      "outputs:\n  still: {step: img, path: out.png}\n")
    assert minart("check", recipe, env=env, cwd=tmp_path, check=False).returncode == 0
    days = {time.strftime("%Y-%m-%d", time.gmtime())}
    done = minart("run", recipe, "--output-dir", tmp_path / "out", "--report",
                  tmp_path / "reports" / "{date}.json", env=env, cwd=tmp_path, check=False)
    days.add(time.strftime("%Y-%m-%d", time.gmtime()))
    assert done.returncode == 2  # the input image's fault, not the machine's
    output = done.stdout + done.stderr
    assert "Traceback" not in output
    assert f"error: {tmp_path / 'broken.png'}: step 'img': not a readable image (" in done.stderr
    assert not (tmp_path / "out" / "out.png").exists()
    # the failed run still writes its report, named by the run's date
    (written,) = [p for p in (tmp_path / "reports").iterdir()]
    assert written.stem in days and not any(p.name.startswith(".") for p in written.parent.iterdir())
    report = json.loads(written.read_text())
    assert report["status"] == "failed" and uuid.UUID(report["flow_run_id"])
    assert done.stderr.endswith(f"error: {report['error']}\n")
    steps = {s["step"]: (s["status"], s["hit"]) for s in report["steps"]}
    assert steps == {"img": ("failed", False), "out.still": ("blocked", False)}
    # a file that is no image at all is found by the check, before Prefect starts
    (tmp_path / "broken.png").write_bytes(b"this is not a picture")
    done = minart("run", recipe, "--output-dir", tmp_path / "out", env=env, cwd=tmp_path,
                  check=False)
    assert done.returncode == 2 and "Traceback" not in done.stdout + done.stderr
    assert done.stderr == (f"error: {recipe}:4:43: step 'img': path='broken.png': not a readable "
                           "image: Pillow recognises no image format in it (use PNG or JPEG)\n")


def test_cache_at_an_fsspec_url(tiny, env, tmp_path):
    url = f"file://{tmp_path}/shared-cache"
    first = run_report(tiny, "--cache", url, env=env, cwd=tmp_path)
    second = run_report(tiny, "--cache", url, env=env, cwd=tmp_path)
    assert sorted(first["computed"]) == ALL and second["computed"] == []
    assert {e.step for e in TensorCache(url).entries()} == set(ALL)
    assert TensorCache(env["MINART_CACHE"]).entries() == []  # --cache wins over MINART_CACHE


def test_minart_server_starts_a_server_to_export(tmp_path, env):
    import os
    import re
    import signal
    import urllib.request

    from minart.flows.server import free_port

    port = free_port()
    done = minart("server", "--port", port, "--home", tmp_path / "home", env=env, cwd=tmp_path)
    pid = int(re.search(r"pid (\d+)", done.stdout).group(1))
    try:
        assert f"export PREFECT_API_URL=http://127.0.0.1:{port}/api" in done.stdout
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=10) as reply:
            assert reply.status == 200
    finally:
        os.killpg(pid, signal.SIGTERM)  # the server runs in its own session


def test_a_bad_override_given_to_the_flow_names_its_overrides_parameter(tiny, env, tmp_path):
    code = ("import sys\nfrom minart.flows.render import render\n"
            "try:\n    render(recipe=sys.argv[1], overrides={'steps.soft.params.dt': -1})\n"
            "except Exception as exc:\n    print('FAILED:', exc)\n")
    done = subprocess.run([sys.executable, "-c", code, str(tiny)], env=env, cwd=tmp_path,
                          check=False, capture_output=True, text=True, timeout=180)
    assert "FAILED: overrides steps.soft.params.dt: step 'soft': dt=-1 must be > 0" in done.stdout, (
        done.stdout[-2000:] + done.stderr[-2000:])
    # Prefect's ERROR line names the whole message, not only its last part
    assert ("Encountered exception during execution: ParamError(\"overrides steps.soft.params.dt: "
            "step 'soft': dt=-1 must be > 0") in done.stderr, done.stderr[-2000:]


def test_a_deployment_run_checks_its_parameters_before_any_step(tiny, env, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("")
    (tmp_path / "o" / "tiny-5.png").mkdir(parents=True)
    code = ("import json, sys\nfrom minart.flows.render import render\n"
            "for params in json.loads(sys.argv[2]):\n"
            "    try:\n        render(recipe=sys.argv[1], **params)\n"
            "    except Exception as exc:\n        print('FAILED:', exc)\n")
    cases = [({"report": str(tiny)}, f"report {tiny}: writing it would overwrite the recipe"),
             ({"report": str(tmp_path / "o")}, f"report {tmp_path / 'o'}: is a folder; give a file path"),
             ({"output_dir": str(afile)}, f"output_dir {afile}: is a file, not a folder"),
             ({"output_dir": str(tmp_path / "o")},
              f"{tiny}:11:28: step 'out.still': output {tmp_path / 'o' / 'tiny-5.png'} is a "
              "folder; move it away"),
             ({"output_dir": "{name}"}, "output folder '{name}': unknown field {name}; "),
             ({"cache": str(afile)}, f"{afile}: is a file, not a folder; give a folder"),
             ({"cache_max_size": "lots"}, "cache_max_size='lots' is not a size; use a size such as")]
    done = subprocess.run([sys.executable, "-c", code, str(tiny), json.dumps([c for c, _ in cases])],
                          env=env, cwd=tmp_path, check=False, capture_output=True, text=True,
                          timeout=240)
    failed = [line for line in done.stdout.splitlines() if line.startswith("FAILED: ")]
    assert len(failed) == len(cases), done.stdout[-3000:] + done.stderr[-3000:]
    for line, (_, message) in zip(failed, cases, strict=True):
        assert line.startswith(f"FAILED: {message}"), line
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".yaml"
               and not p.relative_to(tmp_path).parts[0].startswith("prefect-")]  # Prefect's own
    assert written == [afile]  # no step ran: nothing cached, no picture, no report


def test_a_deployment_run_can_shrink_the_cache_once_its_steps_are_done(tiny, env, tmp_path):
    code = ("import sys\nfrom minart.flows.render import render\n"
            "print('COMPUTED', render(recipe=sys.argv[1], cache_max_size=sys.argv[2])['computed'])\n")
    cache = TensorCache(env["MINART_CACHE"])

    def render(limit: str) -> str:
        done = subprocess.run([sys.executable, "-c", code, str(tiny), limit], env=env,
                              cwd=tmp_path, check=False, capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return next(line for line in done.stdout.splitlines() if line.startswith("COMPUTED"))

    assert render("1GB") == "COMPUTED ['base', 'soft', 'other', 'mix', 'out.still']"
    sizes = sorted(e.size for e in cache.entries())
    assert len(sizes) == len(ALL)
    limit = sum(sizes[-2:])  # room for two entries at the most
    assert render(str(limit)) == "COMPUTED []"  # the run itself is served from the cache
    left = cache.entries()
    assert 1 <= len(left) <= 2 and sum(e.size for e in left) <= limit
    (tmp_path / "tiny-5.png").unlink()
    render("0")
    assert cache.entries() == [] and (tmp_path / "tiny-5.png").is_file()


def test_a_progress_artifact_the_api_refuses_does_not_fail_the_step(monkeypatch):
    import types

    import prefect
    import prefect.artifacts
    from minart.tasks import render_step

    calls, warnings = [], []

    def refused(*args, **kwargs):
        calls.append(args)
        raise RuntimeError("503 Service Unavailable")

    logger = types.SimpleNamespace(warning=lambda text, *args: warnings.append(text % args))
    monkeypatch.setattr(prefect.artifacts, "create_progress_artifact", refused)
    monkeypatch.setattr(prefect, "get_run_logger", lambda: logger)
    monkeypatch.setattr(render_step, "PROGRESS_EVERY", 0.0)
    progress = render_step._ProgressArtifact("soft")
    for done in range(1, 6):
        progress("soft", done, 5)  # would raise into the stage, failing the step
    assert len(calls) == 1  # tried once, then the step goes on without an artifact
    assert warnings == ["step 'soft': no progress artifact from now on (RuntimeError: "
                        "503 Service Unavailable)"]


def test_cache_max_size_takes_a_number_of_bytes_in_the_flows_parameter_schema():
    # what 'prefect deployment run ... --param cache_max_size=0' is validated against
    from minart.flows.render import render
    from prefect.utilities.callables import parameter_schema
    from prefect.utilities.schema_tools import validate

    schema = parameter_schema(render).model_dump_for_openapi()
    for value in (0, 20_000_000_000, "20GB", None):
        assert validate({"recipe": "r.yaml", "cache_max_size": value}, schema) == [], value
    assert render.validate_parameters({"recipe": "r.yaml", "cache_max_size": 0})[
        "cache_max_size"] == 0


_FULL_DISK = """\
import errno
import minart.io
_write = minart.io.write_bytes_atomically
def _full(target, data):  # the image's disk is full; the report goes elsewhere
    if str(target).endswith(".png"):
        raise OSError(errno.ENOSPC, "No space left on device", str(target))
    _write(target, data)
minart.io.write_bytes_atomically = _full
"""


def test_a_full_output_disk_exits_1_in_one_line_and_reports_the_failure(tiny, env, tmp_path):
    done = minart_after(_FULL_DISK, "run", tiny, "--output-dir", tmp_path / "out", "--report",
                        tmp_path / "r.json", env=env, cwd=tmp_path)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stdout + done.stderr
    message = (f"{tmp_path / 'out' / 'tiny-5.png'}: step 'out.still': cannot write the image "
               "(No space left on device)")
    assert done.stderr.endswith(f"\nerror: {message}\n")
    report = json.loads((tmp_path / "r.json").read_text())
    assert (report["status"], report["error"]) == ("failed", message)
    assert sorted(report["computed"]) == ["base", "mix", "other", "soft"]


def test_a_temporary_server_that_cannot_start_is_one_line_and_exit_1(tiny, env, tmp_path):
    local = {k: v for k, v in env.items() if k != "PREFECT_API_URL"}
    afile = tmp_path / "afile"
    afile.write_text("")
    done = minart("run", tiny, env={**local, "PREFECT_HOME": str(afile)}, cwd=tmp_path,
                  check=False)
    assert done.returncode == 1 and "Traceback" not in done.stdout + done.stderr
    assert done.stderr.splitlines()[-1] == (
        f"error: cannot start a temporary Prefect server for the run: PREFECT_HOME {afile}: is a "
        "file, not a folder; give a folder for the server's database; fix that, or start one "
        "with 'minart server' and export its PREFECT_API_URL")
    exited = ("import minart.flows.server as server\n"
              "def _exited(**kwargs):\n"
              "    raise RuntimeError('prefect server exited with code 3:\\nstarting\\n"
              "sqlite3.OperationalError: disk I/O error\\n')\n"
              "server.start_server = _exited\n")
    done = minart_after(exited, "run", tiny, env=local, cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stdout + done.stderr
    assert done.stderr.splitlines()[-1] == (
        "error: cannot start a temporary Prefect server for the run: prefect server exited with "
        "code 3: ... sqlite3.OperationalError: disk I/O error; fix that, or start one with "
        "'minart server' and export its PREFECT_API_URL")


def test_a_cache_gc_that_fails_after_the_render_is_a_warning(tiny, env, tmp_path):
    code = ("import sys\nfrom minart.flows.render import render\n"
            "if sys.argv[3] == 'read-only':\n"
            "    import errno, fsspec.implementations.local as local\n"
            "    def refuse(fs, path, **kwargs):\n"
            "        raise OSError(errno.EROFS, 'Read-only file system', path)\n"
            "    local.LocalFileSystem.rm_file = refuse\n"
            "print('COMPUTED', render(recipe=sys.argv[1], cache_max_size=int(sys.argv[2]))"
            "['computed'])\n")

    def render(limit: int, how: str) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, "-c", code, str(tiny), str(limit), how], env=env,
                              cwd=tmp_path, check=False, capture_output=True, text=True,
                              timeout=240)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done

    assert "COMPUTED ['base', 'soft', 'other', 'mix', 'out.still']" in render(
        10**9, "writable").stdout
    done = render(0, "read-only")  # every step cached; then nothing can be evicted
    assert "COMPUTED []" in done.stdout
    assert "cache gc to 0 failed, the render is done: cannot evict cache entry " in done.stderr
    assert "(Read-only file system: " in done.stderr and "Traceback" not in done.stderr
    assert len(TensorCache(env["MINART_CACHE"]).entries()) == len(ALL)


def test_ctrl_c_writes_the_report_of_an_interrupted_run(tmp_path, env):
    recipe = tmp_path / "slow.yaml"
    recipe.write_text(
        "name: slow\nseed: 2\nsize: [48, 48]\ndevice: cpu\nsteps:\n"
        "  base: {stage: fractal, params: {iterations: 16}}\n"
        "  soft: {stage: perona_malik, input: base, params: {steps: 100000, kappa: 0.1, dt: 0.2}}\n"
        "outputs:\n  still: {step: soft, path: slow.png}\n")
    run_env = {**env, "PREFECT_LOGGING_LEVEL": "INFO", "MINART_KERNELS": "eager"}
    process = subprocess.Popen([*MINART, "run", str(recipe), "--output-dir", str(tmp_path / "o"),
                                "--report", str(tmp_path / "r.json")], env=run_env, cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in process.stdout:
            if "step 'soft' (perona_malik): computing" in line:
                break
        time.sleep(1.0)
        os.kill(process.pid, signal.SIGINT)
        rest = process.communicate(timeout=60)[0]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, rest[-3000:]
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["status"] == "interrupted" and report["error"].startswith("interrupted")
    steps = {s["step"]: s["status"] for s in report["steps"]}
    assert steps["base"] == "computed" and steps["soft"] == "interrupted"
    assert steps["out.still"] in ("interrupted", "blocked")
