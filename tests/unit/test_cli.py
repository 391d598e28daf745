"""The non-rendering CLI commands: check, stages, describe, schema; exit codes, no tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

import minart
from minart.cli import EXIT_INVALID, describe_stage, main, params_table
from minart.recipe import recipe_schema
from minart.registry import get_stage, stages

ROOT = Path(__file__).resolve().parents[2]
OCEAN = ROOT / "recipes" / "ocean.yaml"


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_check_ok_prints_an_ok_line_then_what_each_step_makes(capsys):
    code, out, err = _cli(capsys, "check", str(OCEAN))
    assert code == 0 and err == ""
    first, *steps = out.splitlines()
    assert first.startswith(f"OK {OCEAN}: 'ocean', 4 steps (droplet, soften, art, loop), 192x192, "
                            "seed 7; writes {name}/{name}-{seed}.png")
    assert [line.split()[:2] for line in steps] == [
        ["droplet", "fractal"], ["soften", "perona_malik"], ["art", "minimize"],
        ["loop", "boomerang"], ["outputs.sheet", "contact_sheet"]]
    assert steps[2].endswith("minimize       a 30-frame 192x192 RGB clip, 13.3 MB")


def test_check_with_overrides_and_preview(capsys):
    code, out, _ = _cli(capsys, "check", str(OCEAN), "--set", "seed=11", "-s",
                        "steps.art.params.lr=1e-5", "--preview")
    assert code == 0 and "'ocean-preview'" in out and "48x48, seed 11" in out


def test_check_error_is_one_line_with_location_and_exit_2(capsys, tmp_path):
    recipe = tmp_path / "bad.yaml"
    text = OCEAN.read_text()
    assert "      dt: 0.2\n" in text
    text = text.replace("scheme: seed", "scheme: classic", 1)  # the bound is the classic one
    recipe.write_text(text.replace("      dt: 0.2\n", "      dt: 0.4\n      substep: off\n", 1))
    code, out, err = _cli(capsys, "check", str(recipe))
    assert code == EXIT_INVALID and out == ""
    assert err == (f"error: {recipe}:38:11: step 'soften': dt=0.4 exceeds the stability bound "
                   "0.25 for scheme 'classic'; use dt <= 0.25 or substep: auto\n")
    assert "Traceback" not in err


def test_check_override_error_names_the_override(capsys):
    code, _, err = _cli(capsys, "check", str(OCEAN), "--set", "steps.soften.params.kapa=1")
    assert code == EXIT_INVALID
    assert err == ("error: --set steps.soften.params.kapa: step 'soften': unknown parameter "
                   "'kapa' for stage 'perona_malik'; did you mean 'kappa'?\n")


def test_check_refuses_a_colour_yaml_read_as_a_comment_and_takes_one_from_set(capsys, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("size: [16, 16]\nsteps:\n  f:\n    stage: fractal\n    params:\n"
                      "      interior: #ff0000\noutputs:\n  a8: {step: f, path: x.png}\n")
    code, out, err = _cli(capsys, "check", str(recipe))
    assert (code, out) == (EXIT_INVALID, "")
    assert err == (f"error: {recipe}:6:17: step 'f': interior is empty: '#' starts a YAML "
                   'comment; quote the colour: "#ff0000"\n')
    code, out, err = _cli(capsys, "check", str(recipe), "--set",
                          "steps.f.params.interior=#00ff00", "--set",
                          "outputs.a8.path={name}/x.png")
    assert (code, err) == (0, "") and out.startswith(f"OK {recipe}: 'r', 1 step (f), 16x16, "
                                                      "seed 0; writes {name}/x.png\n")


def test_check_names_the_override_an_error_comes_from(capsys):
    code, _, err = _cli(capsys, "check", str(OCEAN), "--set", "outputs.still.path=x.webm")
    assert code == EXIT_INVALID
    assert err == ("error: --set outputs.still.path: output 'still': step 'soften' produces an "
                   "image, but a video needs a clip of frames; write it to an image path (.png) "
                   "instead\n")


def test_check_missing_file_and_bad_yaml(capsys, tmp_path):
    code, _, err = _cli(capsys, "check", str(tmp_path / "none.yaml"))
    assert code == EXIT_INVALID and err == f"error: {tmp_path / 'none.yaml'}: no such recipe file\n"
    broken = tmp_path / "broken.yaml"
    broken.write_text("steps:\n  a: [\n")
    code, _, err = _cli(capsys, "check", str(broken))
    assert code == EXIT_INVALID and err == (f"error: {broken}:2:6: invalid YAML: the '[' opened "
                                            "here is never closed (the file ends first)\n")
    assert err.count("\n") == 1


def test_usage_errors_exit_2_without_traceback(capsys):
    code, _, err = _cli(capsys, "chek", "x.yaml")
    assert code == 2 and "No such command 'chek'" in err and "Traceback" not in err


def test_stages_lists_one_line_each(capsys):
    code, out, _ = _cli(capsys, "stages")
    lines = out.splitlines()
    assert code == 0 and len(lines) == len(stages())
    assert [line.split()[0] for line in lines] == [s.name for s in stages()]
    assert any(line.startswith("minimize") and "-> frames" in line for line in lines)


def test_describe_is_generated_from_the_model(capsys):
    code, out, _ = _cli(capsys, "describe", "perona_malik")
    assert code == 0
    assert out.startswith("perona_malik: Edge-preserving Perona-Malik diffusion")
    for name, info in get_stage("perona_malik").params.model_fields.items():
        assert name in out and info.description in out
    assert '"classic" | "seed"' in out and "> 0, <= 10" in out and "required" in out
    code, _, err = _cli(capsys, "describe", "perona")
    assert code == EXIT_INVALID
    assert err == "error: unknown stage 'perona'; did you mean 'perona_malik'?\n"


def test_describe_markdown_and_params_table():
    text = describe_stage("subsample", markdown=True)
    assert text.startswith("## `subsample`")
    assert "| `every` | whole number | `2` | >= 1, <= 10000 | Keep one frame in this many. |" in text
    assert params_table(get_stage("boomerang").params) == "(no parameters)"
    # a value-or-list parameter shows the limits of each value and of the list's length
    sweep = describe_stage("perona_malik_sweep", markdown=True)
    assert "| `kappa` | number or [number, ...] | `required` | each >= 1e-18, <= 10; 1 to 64 " \
           "values |" in sweep
    assert "| `dt` | number or [number, ...] | `required` | each > 0, <= 10; 1 to 64 values |" \
           in sweep


def test_schema_to_stdout_and_file(capsys, tmp_path):
    code, out, _ = _cli(capsys, "schema")
    assert code == 0 and json.loads(out) == recipe_schema()
    target = tmp_path / "schema.json"
    code, out, _ = _cli(capsys, "schema", "-o", str(target))
    assert code == 0 and json.loads(target.read_text()) == recipe_schema()
    assert target.read_text() == (ROOT / "recipes" / "schema.json").read_text()


def test_help_teaches_with_examples(capsys):
    code, out, _ = _cli(capsys, "--help")
    assert code == 0 and "minart check recipes/ocean.yaml" in out and "--set" in out
    code, out, _ = _cli(capsys, "check", "--help")
    assert code == 0 and "steps.art.params.lr=1e-6" in out and "Examples" in out


@pytest.mark.slow
def test_entry_point_and_light_import():
    probe = ("import sys, minart.cli; sys.exit(1 if 'prefect' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", probe], check=False).returncode == 0
    done = subprocess.run([sys.executable, "-m", "minart.cli", "check", str(OCEAN), "--set",
                           "seed=-3"], check=False, capture_output=True, text=True)
    assert done.returncode == EXIT_INVALID
    assert done.stderr == "error: --set seed: seed=-3 must be a whole number from 0 to 2^63-1\n"


def test_the_script_entry_point_is_minart_entry_and_import_minart_is_light():
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"minart": "minart._entry:main"}
    probe = "import sys, minart, minart._entry; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", probe], check=False).returncode == 0


@pytest.mark.parametrize(("module", "swallowed"), [("typer", False), ("torch", False),
                                                   ("torch", True), ("torch.distributed", False)])
def test_ctrl_c_while_the_command_line_loads_is_one_line_not_a_traceback(module, swallowed):
    # the first seconds of `minart ...` import typer, then torch: a Ctrl-C there used to print a
    # Python traceback before the CLI's own handler existed; one inside torch's start-up could be
    # swallowed by a broad except there (the command ran on, or failed on a half-imported
    # module), or thrown through pybind11 code, which aborted the process. The child sends itself
    # SIGINT as `module` starts to import, so the moment is the same on every machine;
    # `swallowed` catches the KeyboardInterrupt there, as such a library; torch.distributed is
    # imported in the middle of torch's start-up, where the script now holds SIGINT back.
    # (A shell's background job starts with SIGINT ignored: the child's first statement puts
    # Python's handler back, as in a terminal.)
    code = f"""
import os, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
class Hook:
    def find_spec(self, name, path=None, target=None):
        if name == {module!r}:
            sys.meta_path.remove(self)
            try:
                os.kill(os.getpid(), signal.SIGINT)
                for _ in range(10000):  # the handler runs between two bytecodes
                    pass
                print("held back", flush=True)  # (no KeyboardInterrupt here)
            except KeyboardInterrupt:
                if not {swallowed}:
                    raise
        return None
sys.meta_path.insert(0, Hook())
from minart._entry import main
sys.exit(main(["stages"]))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)
    assert (proc.returncode, proc.stderr) == (130, "error: interrupted\n"), proc.stderr[-2000:]
    # interrupted while loading the command line: nothing ran; swallowed during the command's
    # torch import: it ran on, and still ends as interrupted
    assert ("reverse" in proc.stdout) == swallowed
    # inside torch's start-up the signal waits for the import to end
    assert ("held back" in proc.stdout) == (module == "torch.distributed")


def test_docs_stage_reference_is_up_to_date():
    text = (ROOT / "docs" / "recipes.md").read_text()
    marker = "<!-- generated stage reference: do not edit below this line -->\n"
    assert marker in text
    generated = "\n".join(describe_stage(s.name, markdown=True) for s in stages()) + "\n"
    assert text.split(marker, 1)[1] == generated, "regenerate the reference (see docs/recipes.md)"


def test_file_options_that_cannot_be_written_fail_before_any_work(capsys, tmp_path):
    code, _out, err = _cli(capsys, "schema", "-o", str(tmp_path))
    assert code == EXIT_INVALID and err == f"error: --output {tmp_path}: is a folder; give a file path\n"
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _out, err = _cli(capsys, "run", str(OCEAN), "--report", str(blocker / "r.json"))
    assert code == EXIT_INVALID and err.startswith(f"error: --report {blocker / 'r.json'}: cannot "
                                                   "create its folder")


def test_server_on_a_port_already_taken_says_so_instead_of_reporting_success(capsys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out, err = _cli(capsys, "server", "--port", str(port))
    assert code == 1 and out == ""
    assert err.startswith(f"error: port {port} on 127.0.0.1 is not free")


def test_reproduce_refuses_an_output_whose_input_image_has_changed(capsys, tmp_path):
    import torch

    from minart.io import write_image

    _, output = _rendered_png(tmp_path, image="pic.png")
    write_image(tmp_path / "pic.png", torch.rand(3, 8, 8))  # replaced since the render
    code, _out, err = _cli(capsys, "reproduce", str(output), "-o", str(tmp_path / "again"))
    assert code == EXIT_INVALID and err == (
        f"error: {output} was rendered from another version of the input image of step 'photo' "
        "(path='pic.png' has changed since); put the original back to reproduce it, or render "
        "the new one with 'minart run'\n")


def _picture_recipe(tmp_path: Path, outputs: str = "  still: {step: photo, path: out.png}\n") -> Path:
    """A recipe that loads ``pic.png`` beside it, with ``outputs``."""
    import torch

    from minart.io import write_image

    write_image(tmp_path / "pic.png", torch.rand(3, 8, 8))
    recipe = tmp_path / "r.yaml"
    recipe.write_text("size: [8, 8]\nsteps:\n  photo: {stage: load_image, params: {path: pic.png}}"
                      f"\noutputs:\n{outputs}")
    return recipe


def test_a_report_that_would_overwrite_the_recipe_an_input_or_an_output_is_refused(capsys, tmp_path):
    recipe = _picture_recipe(tmp_path)
    before = {p: p.read_bytes() for p in (recipe, tmp_path / "pic.png")}
    for target, what in [(recipe, "the recipe file"),
                         (tmp_path / "pic.png", "the input image of step 'photo'"),
                         (tmp_path / "out" / "out.png", "the output of step 'out.still'")]:
        code, out, err = _cli(capsys, "run", str(recipe), "--report", str(target), "-o",
                              str(tmp_path / "out") if "out" in target.parts else str(tmp_path))
        assert code == EXIT_INVALID and out == ""
        assert err == (f"error: --report {target}: writing it would overwrite {what}; give the "
                       "report another path\n")
    assert {p: p.read_bytes() for p in before} == before
    assert not (tmp_path / "out").exists()


def test_an_output_folder_that_is_a_file_is_refused_before_any_work(capsys, tmp_path):
    recipe = _picture_recipe(tmp_path)
    afile = tmp_path / "afile"
    afile.write_text("")
    code, _, err = _cli(capsys, "run", str(recipe), "-o", str(afile))
    assert code == EXIT_INVALID and err == (f"error: --output-dir {afile}: is a file, not a folder; "
                                            "give a folder (it is created if missing)\n")
    code, _, err = _cli(capsys, "run", str(recipe), "--output-dir", str(afile / "sub"))
    assert code == EXIT_INVALID and err == (f"error: --output-dir {afile / 'sub'}: {afile} is a "
                                            "file, not a folder; give a folder (it is created if "
                                            "missing)\n")
    (tmp_path / "o1" / "out.png").mkdir(parents=True)  # an output path that is a folder
    code, _, err = _cli(capsys, "run", str(recipe), "-o", str(tmp_path / "o1"))
    assert code == EXIT_INVALID and err == (
        f"error: {recipe}:5:30: step 'out.still': output {tmp_path / 'o1' / 'out.png'} is a "
        "folder; move it away, "
        "or give the output another path or output folder\n")
    (tmp_path / "o2").mkdir()
    (tmp_path / "o2" / "sub").write_text("")  # an output's folder that is a file
    recipe.write_text(recipe.read_text().replace("path: out.png", "path: sub/out.png"))
    code, _, err = _cli(capsys, "run", str(recipe), "-o", str(tmp_path / "o2"))
    assert code == EXIT_INVALID and err == (
        f"error: {recipe}:5:30: step 'out.still': output {tmp_path / 'o2' / 'sub' / 'out.png'} "
        "needs "
        f"{tmp_path / 'o2' / 'sub'} to be a folder, but it is a file; move it away, or give the "
        "output another path or output folder\n")


def test_date_in_the_output_folder(capsys, tmp_path):
    recipe = _picture_recipe(tmp_path)
    (tmp_path / "o" / time.strftime("%Y-%m-%d", time.gmtime()) / "out.png").mkdir(parents=True)
    code, _, err = _cli(capsys, "run", str(recipe), "-o", str(tmp_path / "o" / "{date}"))
    assert code == EXIT_INVALID and err.startswith(f"error: {recipe}:5:30: step 'out.still': "
                                                   "output ")
    assert "{date}" not in err and err.endswith("out.png is a folder; move it away, or give the "
                                                "output another path or output folder\n")
    code, _, err = _cli(capsys, "run", str(recipe), "-o", "renders/{name}")
    assert code == EXIT_INVALID and err == (
        "error: output folder 'renders/{name}': unknown field {name}; the folder may use {date} "
        "only (the outputs' own paths take {name}, {seed}, {step})\n")
    code, _, err = _cli(capsys, "run", str(recipe), "-o", "renders/{date")
    assert code == EXIT_INVALID and err == (
        "error: output folder 'renders/{date': a brace with no partner; write {date} for the "
        "run's date, {{ or }} for a brace\n")


def test_two_outputs_one_inside_the_other_fail_the_check(capsys, tmp_path):
    recipe = _picture_recipe(tmp_path, "  one: {step: photo, path: x.png}\n"
                                       "  two: {step: photo, path: x.png/y.png}\n")
    code, out, err = _cli(capsys, "check", str(recipe))
    assert code == EXIT_INVALID and out == ""
    assert err.startswith(f"error: {recipe}:6:28: step 'out.two': writing ") and err.endswith(
        "x.png to be a folder, but step 'out.one' writes a file there; give one of the outputs "
        "another path\n")


def test_bad_cache_locations_are_one_line_errors_naming_option_and_path(capsys, tmp_path,
                                                                        monkeypatch):
    recipe = _picture_recipe(tmp_path)
    afile = tmp_path / "afile"
    afile.write_text("")
    is_file = "is a file, not a folder; give a folder or an fsspec URL\n"
    monkeypatch.delenv("MINART_CACHE", raising=False)
    for args in (["run", str(recipe)], ["cache", "ls"], ["cache", "gc", "--max-size", "1GB"],
                 ["cache", "clear", "--yes"]):
        code, _, err = _cli(capsys, *args, "--cache", str(afile))
        assert (code, err) == (EXIT_INVALID, f"error: --cache {afile}: {is_file}"), args
    monkeypatch.setenv("MINART_CACHE", str(afile))
    for args in (["run", str(recipe)], ["cache", "ls"]):
        code, _, err = _cli(capsys, *args)
        assert (code, err) == (EXIT_INVALID, f"error: MINART_CACHE={afile}: {is_file}"), args
    code, _, err = _cli(capsys, "cache", "ls", "--cache", str(tmp_path / "none"))
    assert (code, err) == (EXIT_INVALID, f"error: --cache {tmp_path / 'none'}: no such folder\n")
    if Path("/proc/self").is_dir():
        code, _, err = _cli(capsys, "run", str(recipe), "--cache", "/proc/cachex")
        assert code == EXIT_INVALID and err.startswith(
            "error: --cache /proc/cachex: cannot create the folder in /proc (")
    code, out, _ = _cli(capsys, "cache", "ls", "--cache", "memory://minart-cli-remote")
    assert code == 0 and "0 entries, 0 B in memory://minart-cli-remote" in out  # URLs still work
    code, out, err = _cli(capsys, "server", "--home", str(afile))
    assert code == EXIT_INVALID and out == "" and err == (
        f"error: --home {afile}: is a file, not a folder; give a folder (it is created if "
        "missing)\n")


def test_a_bad_checkpoint_interval_is_refused_before_any_work(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("MINART_CHECKPOINT_SECONDS", "abc")
    code, _, err = _cli(capsys, "run", str(_picture_recipe(tmp_path)))
    assert code == EXIT_INVALID and err == (
        "error: MINART_CHECKPOINT_SECONDS='abc' must be a number of seconds >= 0 (how often long "
        "steps save a checkpoint; default 30); fix or unset it\n")


def test_check_refuses_a_step_that_cannot_fit_in_the_devices_memory(capsys, tmp_path):
    recipe = tmp_path / "huge.yaml"
    recipe.write_text("size: [16384, 16384]\nsteps:\n  clip: {stage: fractal_frames, "
                      "params: {frames: 1000}}\n")  # 3.2 TB: more than any machine holds
    code, out, err = _cli(capsys, "check", str(recipe))
    assert code == EXIT_INVALID and out == ""
    assert err.startswith(f"error: {recipe}:3:9: step 'clip': this step would make a 1000-frame "
                          "16384x16384 RGB clip (3.2 TB), more than the ") and err.endswith(
        " of memory on cpu; lower its size, frames or iterations, or render with --preview\n")
    recipe.write_text("size: [64, 64]\nsteps:\n  clip: {stage: fractal_frames, "
                      "params: {frames: 10}}\n")
    code, out, _ = _cli(capsys, "check", str(recipe))
    assert code == 0 and "memory not checked" not in out


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_check_of_a_recipe_for_a_gpu_this_machine_lacks_says_memory_was_not_checked(capsys,
                                                                                   tmp_path):
    recipe = tmp_path / "gpu.yaml"
    recipe.write_text("device: cuda\nsize: [16384, 16384]\nsteps:\n  clip: {stage: fractal_frames, "
                      "params: {frames: 1000}}\n")
    code, out, _ = _cli(capsys, "check", str(recipe))
    assert code == 0 and out.splitlines()[-1] == (
        "  (memory not checked: device='cuda' is not available: torch finds no CUDA GPU on this "
        "machine)")
    code, _, err = _cli(capsys, "check", str(recipe), "--device", "cpu")
    assert code == EXIT_INVALID and "of memory on cpu" in err


def _rendered_png(tmp_path: Path, image: str = "assets/pic.png") -> tuple[Path, Path]:
    """``out.png`` as 'minart run' writes it from ``fi.yaml`` (loading ``image``)."""
    import torch

    from minart.io import write_image
    from minart.recipe import load_recipe

    (tmp_path / image).parent.mkdir(parents=True, exist_ok=True)
    write_image(tmp_path / image, torch.rand(3, 8, 8))
    recipe = tmp_path / "fi.yaml"
    recipe.write_text("size: [8, 8]\nsteps:\n  photo: {stage: load_image, params: "
                      f"{{path: {image}}}}}\noutputs:\n  still: {{step: photo, path: out.png}}\n")
    digest = load_recipe(recipe).step("photo").params.sha256
    output = tmp_path / "out.png"
    write_image(output, torch.rand(3, 8, 8), metadata={
        "minart_recipe": recipe.read_text(), "minart_recipe_path": str(recipe),
        "minart_overrides": "[]", "minart_preview": "1",
        "minart_inputs": json.dumps({"photo": digest})})
    return recipe, output


def test_reproduce_errors_name_the_original_recipe_and_input_not_the_temporary_copy(capsys,
                                                                                   tmp_path):
    recipe, output = _rendered_png(tmp_path)
    recipe.write_text(recipe.read_text() + "# edited since\n")  # so a copy is rendered
    (tmp_path / "assets" / "pic.png").unlink()
    code, _, err = _cli(capsys, "reproduce", str(output), "-o", str(tmp_path / "again"))
    assert code == EXIT_INVALID and "minart-reproduce-" not in err
    assert err == (f"error: {recipe}:3:45: step 'photo': path='assets/pic.png': no such file "
                   f"{tmp_path / 'assets' / 'pic.png'} (reproducing {output} from the version of "
                   f"{recipe} it recorded; that file has changed since)\n")


def test_reproduce_says_what_a_file_it_cannot_read_is(capsys, tmp_path):
    cases = {"folder": "is a folder; give a PNG 'minart run' wrote, or a video with its .json "
                       "sidecar",
             "empty.png": "is empty; not an image minart wrote; give a PNG 'minart run' wrote, "
                          "or a video with its .json sidecar",
             "notes.txt": "not an image minart wrote; give a PNG 'minart run' wrote, or a video "
                          "with its .json sidecar",
             "clip.webm": f"no sidecar {tmp_path / 'clip.webm.json'} next to the video; minart "
                          "keeps a video's recipe in that file"}
    (tmp_path / "folder").mkdir()
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not a picture\n")
    (tmp_path / "clip.webm").write_bytes(b"\x1aE\xdf\xa3 not really a video")
    for name, message in cases.items():
        code, _, err = _cli(capsys, "reproduce", str(tmp_path / name))
        assert (code, err) == (EXIT_INVALID, f"error: {tmp_path / name}: {message}\n")


def test_reproduce_takes_a_videos_sidecar_with_or_without_the_video(capsys, tmp_path,
                                                                    monkeypatch):
    from minart import cli_render

    rendered = []
    monkeypatch.setattr(cli_render, "_render", lambda recipe, *a, **k: rendered.append(
        Path(recipe).read_text()))
    text = "size: [8, 8]\nsteps:\n  a: {stage: fractal}\noutputs:\n  m: {step: a, path: m.webm}\n"
    recipe = tmp_path / "v.yaml"
    recipe.write_text(text)
    sidecar = tmp_path / "m.webm.json"
    sidecar.write_text(json.dumps({"minart_recipe": text, "minart_recipe_path": str(recipe),
                                   "minart_overrides": [], "minart_preview": 1}))
    (tmp_path / "m.webm").write_bytes(b"video")
    assert _cli(capsys, "reproduce", str(sidecar))[0] == 0
    (tmp_path / "m.webm").unlink()  # the video is gone: its sidecar still holds the recipe
    assert _cli(capsys, "reproduce", str(sidecar))[0] == 0
    assert rendered == [text, text]


def test_a_prefect_api_url_where_nothing_answers_is_one_line(capsys, monkeypatch):
    import typer
    from minart.flows.server import free_port

    from minart.cli_render import _check_server_answers

    url = f"http://127.0.0.1:{free_port()}/api"
    monkeypatch.setenv("PREFECT_API_URL", url)
    with pytest.raises(typer.Exit) as info:
        _check_server_answers(url)
    assert info.value.exit_code == 1
    assert capsys.readouterr().err == (
        f"error: no Prefect server answers at {url} (PREFECT_API_URL: Connection refused); start "
        "it with 'minart server' or unset PREFECT_API_URL\n")
    monkeypatch.setenv("PREFECT_API_URL", "localhost:4200")
    with pytest.raises(typer.Exit):
        _check_server_answers("localhost:4200")
    assert capsys.readouterr().err == (
        "error: localhost:4200 (PREFECT_API_URL) is not a URL such as http://127.0.0.1:4200/api; "
        "set it to the URL 'minart server' prints, or unset PREFECT_API_URL\n")


@pytest.mark.slow
def test_run_against_a_stopped_prefect_server_is_one_line_before_any_work(tmp_path):
    import os

    from minart.flows.server import free_port

    recipe = _picture_recipe(tmp_path)
    url = f"http://127.0.0.1:{free_port()}/api"
    env = {**os.environ, "PREFECT_API_URL": url, "MINART_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-m", "minart.cli", "run", str(recipe)], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1
    assert done.stderr == (f"error: no Prefect server answers at {url} (PREFECT_API_URL: "
                           "Connection refused); start it with 'minart server' or unset "
                           "PREFECT_API_URL\n")
    assert not (tmp_path / "out.png").exists()


def test_check_and_run_refuse_an_input_image_cut_short_before_any_work(capsys, tmp_path):
    import torch

    from minart.io import write_image

    recipe = _picture_recipe(tmp_path)
    code, out, err = _cli(capsys, "check", str(recipe))
    assert code == 0 and err == "" and out.startswith(f"OK {recipe}:")
    picture = tmp_path / "pic.png"
    data = picture.read_bytes()
    picture.write_bytes(data[:len(data) // 2])
    expected = (f"error: {recipe}:3:45: step 'photo': path='pic.png': truncated PNG: the file "
                f"ends inside its 'IDAT' chunk (at byte {len(data) // 2}); it was cut short or "
                "damaged: copy or export it again\n")
    code, out, err = _cli(capsys, "check", str(recipe))
    assert code == EXIT_INVALID and out == "" and err == expected
    code, out, err = _cli(capsys, "run", str(recipe), "-o", str(tmp_path / "out"))
    assert code == EXIT_INVALID and out == "" and err == expected  # before Prefect starts
    assert not (tmp_path / "out").exists()
    write_image(tmp_path / "pic.jpg", torch.rand(3, 8, 8))
    (tmp_path / "pic.jpg").write_bytes((tmp_path / "pic.jpg").read_bytes()[:-40])
    recipe.write_text(recipe.read_text().replace("path: pic.png", "path: pic.jpg"))
    code, out, err = _cli(capsys, "check", str(recipe))
    assert code == EXIT_INVALID and out == "" and "Traceback" not in err
    assert err.startswith(f"error: {recipe}:3:45: step 'photo': path='pic.jpg': not a readable "
                          "image (OSError: image file is truncated")
    assert err.endswith("); it may be cut short or damaged: copy or export it again\n")


def test_ctrl_c_says_how_to_resume_only_where_a_render_was_under_way(capsys, tmp_path,
                                                                      monkeypatch):
    from minart import cli_render, engine

    recipe = _picture_recipe(tmp_path)

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_render, "_quiet_prefect", ctrl_c)  # Ctrl-C as Prefect starts
    code, out, err = _cli(capsys, "run", str(recipe))
    assert (code, out) == (130, "") and err == (
        "error: interrupted: finished steps are cached and a long step keeps its last checkpoint; "
        "run the same command again to resume\n")
    monkeypatch.setattr(engine, "plan", ctrl_c)  # Ctrl-C while a check plans the recipe
    assert _cli(capsys, "check", str(recipe)) == (130, "", "error: interrupted\n")


def test_the_lazy_package_names_are_what_all_lists():
    assert sorted([*minart._MODULES, *minart._NAMES, "__version__"]) == sorted(minart.__all__)
    for name in minart.__all__:
        assert getattr(minart, name) is not None
    assert minart.Recipe is minart.recipe.Recipe and minart.ParamError is minart.errors.ParamError
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        minart.nope  # noqa: B018
