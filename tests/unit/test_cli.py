"""The non-rendering CLI commands: check, stages, describe, schema; exit codes, no tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_check_missing_file_and_bad_yaml(capsys, tmp_path):
    code, _, err = _cli(capsys, "check", str(tmp_path / "none.yaml"))
    assert code == EXIT_INVALID and err == f"error: {tmp_path / 'none.yaml'}: no such recipe file\n"
    broken = tmp_path / "broken.yaml"
    broken.write_text("steps:\n  a: [\n")
    code, _, err = _cli(capsys, "check", str(broken))
    assert code == EXIT_INVALID and err.startswith(f"error: {broken}:3:1: invalid YAML: ")
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
    import json

    import torch

    from minart.io import write_image
    from minart.recipe import load_recipe

    write_image(tmp_path / "pic.png", torch.rand(3, 8, 8))
    recipe = tmp_path / "fi.yaml"
    recipe.write_text("size: [8, 8]\nsteps:\n  photo: {stage: load_image, params: {path: pic.png}}"
                      "\noutputs:\n  still: {step: photo, path: out.png}\n")
    digest = load_recipe(recipe).step("photo").params.sha256
    output = tmp_path / "out.png"
    write_image(output, torch.rand(3, 8, 8), metadata={
        "minart_recipe": recipe.read_text(), "minart_recipe_path": str(recipe),
        "minart_overrides": "[]", "minart_preview": "1",
        "minart_inputs": json.dumps({"photo": digest})})
    write_image(tmp_path / "pic.png", torch.rand(3, 8, 8))  # replaced since the render
    code, _out, err = _cli(capsys, "reproduce", str(output), "-o", str(tmp_path / "again"))
    assert code == EXIT_INVALID and err == (
        f"error: {output} was rendered from another version of the input image of step 'photo' "
        "(path='pic.png' has changed since); put the original back to reproduce it, or render "
        "the new one with 'minart run'\n")
