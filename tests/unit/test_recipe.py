"""The recipe checker: every error class with its exact one-line message, overrides, preview."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from minart.composite import grid_shape
from minart.errors import ParamError, RecipeError
from minart.io import write_image
from minart.recipe import load_recipe, parse_recipe, recipe_schema
from minart.registry import get_stage

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
SRC = "recipes/ocean.yaml"

BASE = """\
name: ocean
seed: 7
size: [64, 48]
steps:
  base:
    stage: fractal
    params: {power: 7, iterations: 32}
  soften:
    stage: perona_malik
    input: base
    params:
      steps: 10
      kappa: 0.1
      dt: 0.2
  art:
    stage: minimize
    input: soften
    params: {iterations: 30, frame_every: 10}
outputs:
  still: {step: soften, path: "{name}-{seed}.png"}
  sheet: {step: art, path: "{name}-sheet.png", sheet: {frames: 3}}
  movie: {step: art, path: "{name}.webm", fps: 12}
"""


def _parse(text: str = BASE, **kw):
    return parse_recipe(text, source=SRC, **kw)


def _error(old: str, new: str, **kw) -> RecipeError | ParamError:
    assert old in BASE, old
    with pytest.raises((RecipeError, ParamError)) as info:
        _parse(BASE.replace(old, new, 1), **kw)
    return info.value


def test_valid_recipe_steps_outputs_and_kinds():
    r = _parse()
    assert (r.name, r.seed, r.size, r.device) == ("ocean", 7, (64, 48), "auto")
    assert [(s.name, s.stage, s.inputs, s.kind) for s in r.steps] == [
        ("base", "fractal", (), "image"),
        ("soften", "perona_malik", ("base",), "image"),
        ("art", "minimize", ("soften",), "frames"),
        ("out.still", "save_image", ("soften",), "image"),
        ("out.sheet.sheet", "contact_sheet", ("art",), "image"),
        ("out.sheet", "save_image", ("out.sheet.sheet",), "image"),
        ("out.movie", "encode_video", ("art",), "frames"),
    ]
    assert [(o.name, o.step, o.source, o.kind) for o in r.outputs] == [
        ("still", "out.still", "soften", "image"),
        ("sheet", "out.sheet", "art", "contact_sheet"),
        ("movie", "out.movie", "art", "video"),
    ]
    soften = r.step("soften")
    assert (soften.location.line, soften.location.column) == (9, 5)
    assert soften.params.dt == 0.2 and soften.params.scheme == "classic"
    # generators get the recipe's size written into their params (so it enters cache keys)
    assert (r.step("base").params.width, r.step("base").params.height) == (64, 48)
    assert r.text == BASE and r.path is None


def test_steps_are_sorted_topologically():
    text = """steps:
  b: {stage: perona_malik, input: a, params: {steps: 1, kappa: 0.1, dt: 0.1}}
  c: {stage: blend, inputs: [b, a]}
  a: {stage: fractal}
"""
    assert [s.name for s in parse_recipe(text).steps] == ["a", "b", "c"]


@pytest.mark.parametrize("old,new,cls,message", [
    ("dt: 0.2", "dt: -0.4", ParamError,
     "recipes/ocean.yaml:14:11: step 'soften': dt=-0.4 must be > 0"),
    ("kappa: 0.1", "kappa: 1.0e-30", ParamError,
     "recipes/ocean.yaml:13:14: step 'soften': kappa=1e-30 must be >= 1e-18"),
    ("dt: 0.2", "dt: 0.4\n      substep: off", ParamError,
     "recipes/ocean.yaml:14:11: step 'soften': dt=0.4 exceeds the stability bound 0.25 for "
     "scheme 'classic'; use dt <= 0.25 or substep: auto"),
    ("dt: 0.2", "dt: 0.2\n      kapa: 3", ParamError,
     "recipes/ocean.yaml:15:7: step 'soften': unknown parameter 'kapa' for stage "
     "'perona_malik'; did you mean 'kappa'?"),
    ("      kappa: 0.1\n", "", ParamError,
     "recipes/ocean.yaml:11:5: step 'soften': missing parameter 'kappa' (Edge threshold in "
     "brightness units (0-1): differences below it are smoothed, edges above it are kept)"),
    ("iterations: 32}", "iterations: 32.5}", ParamError,
     "recipes/ocean.yaml:7:36: step 'base': iterations=32.5 must be a whole number"),
    ("iterations: 32}", "iterations: '32'}", ParamError,
     "recipes/ocean.yaml:7:36: step 'base': iterations='32' must be a whole number"),
    ("power: 7,", "power: 7, formula: mandelbrot,", ParamError,
     "recipes/ocean.yaml:7:33: step 'base': formula='mandelbrot' is not one of 'inverse_power' or "
     "'multibrot'; did you mean 'multibrot'?"),
    ("power: 7,", "power: 99,", ParamError,
     "recipes/ocean.yaml:7:21: step 'base': power=99 must be <= 24"),
    ("power: 7,", "power: 7, coefficient: [1],", ParamError,
     "recipes/ocean.yaml:7:37: step 'base': coefficient needs more items"),
    ("power: 7,", "coloring: smooth,", ParamError,
     "recipes/ocean.yaml:7:24: step 'base': coloring='smooth' needs an escape-time map, but "
     "formula='inverse_power' sends a large |z| straight back to about c; use 'pole', a trap, "
     "'modulus' or 'argument'"),
    ("scheme", "scheme", None, None),
    ("input: base", "input: bsae", RecipeError,
     "recipes/ocean.yaml:10:12: step 'soften': input 'bsae' is not a step of this recipe; did "
     "you mean 'base'?"),
    ("input: soften", "input: art", RecipeError,
     "recipes/ocean.yaml:17:12: step 'art': steps form a cycle: art -> art"),
    ("stage: minimize", "stage: minimise", RecipeError,
     "recipes/ocean.yaml:16:12: step 'art': unknown stage 'minimise'; did you mean 'minimize'?"),
    ("stage: minimize", "stage: sharpen", RecipeError,
     "recipes/ocean.yaml:16:12: step 'art': unknown stage 'sharpen'"),
    ("seed: 7", "seed: -1", ParamError,
     "recipes/ocean.yaml:2:7: seed=-1 must be a whole number from 0 to 2^63-1"),
    ("seed: 7", "sead: 7", RecipeError,
     "recipes/ocean.yaml:2:1: unknown key 'sead' in the recipe; did you mean 'seed'? (allowed: "
     "name, description, seed, device, size, steps, outputs)"),
    ("seed: 7", "seed: 7\ndevice: gpu", ParamError,
     "recipes/ocean.yaml:3:9: device='gpu' must be auto, cpu, mps, cuda or cuda:N"),
    ("size: [64, 48]", "size: [64, 4]", ParamError,
     "recipes/ocean.yaml:3:12: size height=4 must be a whole number from 8 to 16384"),
    ("size: [64, 48]", "size: {width: 64}", ParamError,
     "recipes/ocean.yaml:3:7: size needs both width and height"),
    ("name: ocean", "name: ../evil", RecipeError,
     "recipes/ocean.yaml:1:7: name='../evil' must not contain '..' (it is used in file names, "
     "where '..' means the folder above)"),
    ("name: ocean", "name: sea/evil", RecipeError,
     "recipes/ocean.yaml:1:7: name='sea/evil' must be ASCII letters, digits, '_', '-' or '.', "
     "starting with a letter or digit (it is used in file names)"),
    ("    input: base\n", "    input: base\n    inputs: [base]\n", RecipeError,
     "recipes/ocean.yaml:11:5: step 'soften': give either 'input' or 'inputs', not both"),
    ("    input: base\n", "    inptu: base\n", RecipeError,
     "recipes/ocean.yaml:10:5: unknown key 'inptu' in step 'soften'; did you mean 'input'? "
     "(allowed: stage, input, inputs, params)"),
    ("    input: base\n", "", RecipeError,
     "recipes/ocean.yaml:8:3: step 'soften': stage 'perona_malik' takes 1 input(s) (image), "
     "got 0"),
    ("    stage: fractal\n", "    stage: fractal\n    input: art\n", RecipeError,
     "recipes/ocean.yaml:7:5: step 'base': stage 'fractal' makes its own image and takes no "
     "input"),
    ("  art:\n    stage: minimize\n    input: soften",
     "  art:\n    stage: encode_video\n    input: soften", RecipeError,
     "recipes/ocean.yaml:17:12: step 'art': input 'soften' produces an image but stage "
     "'encode_video' needs a clip of frames; put a step of stage concatenate, crossfade, "
     "minimize or perona_malik_sweep in between"),
    ('"{name}.webm"', '"{nam}.webm"', RecipeError,
     "recipes/ocean.yaml:22:28: output 'movie': path '{nam}.webm' uses unknown field {nam}; did "
     "you mean 'name'? (fields: {name}, {seed}, {date}, {step})"),
    ('"{name}.webm"', '"../x.webm"', RecipeError,
     "recipes/ocean.yaml:22:28: output 'movie': path '../x.webm' must stay inside the output "
     "folder (no '..')"),
    ('"{name}.webm"', '"/tmp/x.webm"', RecipeError,
     "recipes/ocean.yaml:22:28: output 'movie': path '/tmp/x.webm' must be relative to the "
     "output folder, not absolute"),
    ('"{name}.webm"', '"{name}.avi"', RecipeError,
     "recipes/ocean.yaml:22:28: output 'movie': path '{name}.avi' needs a known extension "
     "(.png, .jpg, .jpeg, .webm, .mp4, .gif)"),
    ('"{name}.webm"', '"{name!r}.webm"', RecipeError,
     "recipes/ocean.yaml:22:28: output 'movie': path '{name!r}.webm': field {name} takes no "
     "format or conversion; write {name}"),
    ('step: soften, path: "{name}-{seed}.png"', 'step: art, path: "{name}-{seed}.png"',
     RecipeError,
     "recipes/ocean.yaml:20:17: output 'still': step 'art' produces a clip of frames; write it "
     "to a video path (.webm, .mp4, .gif) or add 'sheet: true' for a contact sheet"),
    ('step: art, path: "{name}.webm"', 'step: soften, path: "{name}.webm"', RecipeError,
     "recipes/ocean.yaml:22:17: output 'movie': step 'soften' produces an image, but a video "
     "needs a clip of frames; write it to an image path (.png) instead"),
    ("fps: 12", "bits: 16", RecipeError,
     "recipes/ocean.yaml:22:43: output 'movie': 'bits' does not apply to a .webm output"),
    ("fps: 12", "fsp: 12", RecipeError,
     "recipes/ocean.yaml:22:43: output 'movie': unknown key 'fsp'; did you mean 'fps'? "
     "(allowed: step, path, fps, quality, loop, codec, pad, embed_recipe)"),
    ("fps: 12", "loop: 2", ParamError,
     "recipes/ocean.yaml:22:49: output 'movie': loop=2 applies to GIF only; webm videos loop "
     "in the player, so leave loop out"),
    ("{frames: 3}", "{frames: 0}", ParamError,
     "recipes/ocean.yaml:21:64: output 'sheet': frames=0 must be >= 1"),
    ("step: soften, path", "step: nope, path", RecipeError,
     "recipes/ocean.yaml:20:17: output 'still': step 'nope' is not a step of this recipe; its "
     "steps are base, soften, art"),
    ("    params: {power: 7, iterations: 32}", "    params: {power: 7, iterations: 32\n",
     RecipeError, "recipes/ocean.yaml:7:13: invalid YAML: the '{' opened here is never closed "
     "(expected ',' or '}', but got ':' at 9:9)"),
    ('path: "{name}-sheet.png"', 'path: "ocean-7.png"', RecipeError,
     "recipes/ocean.yaml:21:28: output 'sheet': path 'ocean-7.png' writes the same file as "
     "output 'still'"),
    ('step: art, path: "{name}.webm"', 'step: out.still, path: "{name}.webm"', RecipeError,
     "recipes/ocean.yaml:22:17: output 'movie': step 'out.still' is not a step of this recipe; its steps are "
     "base, soften, art"),
    ("  soften:\n", "  soften:\n  soften:\n", RecipeError,
     "recipes/ocean.yaml:9:3: key 'soften' appears twice (first on line 8); keep one"),
])
def test_error_messages(old, new, cls, message):
    if cls is None:  # a no-op row keeps the table's unchanged recipe honest
        assert _parse(BASE.replace(old, new)).name == "ocean"
        return
    err = _error(old, new)
    assert type(err) is cls
    assert str(err) == message
    assert "\n" not in str(err)


def test_error_fields_name_file_line_column_step_and_param():
    err = _error("dt: 0.2", "dt: -0.4")
    assert (err.file, err.line, err.column, err.step, err.param) == (SRC, 14, 11, "soften", "dt")


def test_many_errors_report_the_first_and_count_the_rest():
    err = _error("dt: 0.2", "dt: -1\n      kappa2: 1\n      steps2: 1")
    assert str(err).endswith("(and 2 more: kappa2, steps2)")
    err = _error("      steps: 10\n      kappa: 0.1\n      dt: 0.2\n", "      scheme: seed\n")
    assert str(err) == (f"{SRC}:11:5: step 'soften': missing parameters 'steps', 'kappa' and 'dt'; "
                        "'minart describe perona_malik' explains them")
    err = _error("      steps: 10\n      kappa: 0.1\n", "      zzz: 1\n")
    assert str(err).startswith(f"{SRC}:11:5: step 'soften': missing parameters 'steps' and 'kappa'; ")
    assert str(err).endswith(" them (and 1 more: zzz)")


@pytest.mark.parametrize("text,message", [
    ("", "<string>: the recipe is empty; it needs at least 'steps:'"),
    ("- a\n- b\n", "<string>:1:1: a recipe is a mapping of keys (name, seed, size, steps, "
                   "outputs), not a list or a single value"),
    ("name: x\n", "<string>:1:1: the recipe needs 'steps:', a mapping of step name to "
                  "{stage, input, params}"),
    ("steps:\n  a: fractal\n", "<string>:2:6: step 'a': a step is a mapping with 'stage' (and "
                               "'input', 'params')"),
    ("steps:\n  a: {params: {}}\n", "<string>:2:3: step 'a': missing 'stage' (run 'minart "
                                    "stages' for the list)"),
    ("steps:\n  9a: {stage: fractal}\n", "<string>:2:3: step name '9a' must start with an ASCII "
     "letter or '_' and use only ASCII letters, digits, '_' and '-'"),
    ("description: &b {stage: fractal}\nsteps:\n  a:\n    <<: *b\n",
     "<string>:4:5: merge keys ('<<') are not supported; write the keys out"),
    ("steps: {a: {stage: fractal}}\nnmae: x\n",
     "<string>:2:1: unknown key 'nmae' in the recipe; did you mean 'name'? (allowed: name, "
     "description, seed, device, size, steps, outputs)"),
    ("steps: &s\n  a: *s\n", "<string>:1:8: invalid YAML: an alias refers to itself"),
    ("!!python/object:os.system {}\n", "<string>:1:1: invalid YAML: tag "
     "'tag:yaml.org,2002:python/object:os.system' is not allowed in recipes (plain values, lists "
     "and mappings only)"),
    ("steps: !!binary aGVsbG8=\n", "<string>:1:8: invalid YAML: tag 'tag:yaml.org,2002:binary' "
     "is not allowed in recipes (plain values, lists and mappings only)"),
    ("steps: {a: {stage: fractal}}\noutputs: {o: {step: a, path: x.png, sheet: 3}}\n",
     "<string>:2:44: output 'o': sheet=3 must be true or a mapping of contact-sheet options "
     "(frames, columns, ...)"),
    ("steps: {a: {stage: fractal}}\noutputs: {o: {step: a, path: x.png, sheet: true}}\n",
     "<string>:2:21: output 'o': step 'a' produces an image; 'sheet' makes a contact sheet of a "
     "clip, so drop it"),
    ("steps:\n  a:\n    <<: {stage: fractal}\n",
     "<string>:3:5: merge keys ('<<') are not supported; write the keys out"),
    ("steps: {a: {stage: fractal}}\noutputs:\n  o: {path: x.png}\n",
     "<string>:3:3: output 'o': missing 'step'"),
    ("steps:\n  a: {stage: perona_malik, input: b, params: {steps: 1, kappa: 1, dt: 0.1}}\n"
     "  b: {stage: perona_malik, input: a, params: {steps: 1, kappa: 1, dt: 0.1}}\n",
     "<string>:2:35: step 'a': steps form a cycle: a -> b -> a"),
])
def test_structural_errors(text, message):
    with pytest.raises(RecipeError) as info:
        parse_recipe(text)
    assert str(info.value) == message


def test_alias_bombs_are_refused(monkeypatch):
    import minart.recipe as recipe_module

    monkeypatch.setattr(recipe_module, "_MAX_NODES", 500)
    text = ("a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
            "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nsteps: {}\n")
    with pytest.raises(RecipeError) as info:
        parse_recipe(text)
    assert str(info.value) == ("<string>:1:32: invalid YAML: more than 500 values once aliases "
                               "are expanded")


def test_yaml_12_scalars_exponent_floats_and_off_is_a_string():
    r = parse_recipe("steps:\n  a: {stage: fractal}\n  b: {stage: minimize, input: a, params: "
                     "{iterations: 2, lr: 2e-6}}\n  c: {stage: perona_malik, input: a, params: "
                     "{steps: 1, kappa: 0.1, dt: 0.1, substep: off}}\n")
    assert r.step("b").params.lr == 2e-6
    assert r.step("c").params.substep == "off"



@pytest.mark.parametrize("written,read", [("010", 10), ("0o10", 8), ("0x10", 16), ("+12", 12)])
def test_yaml_12_integers_no_octal_surprise(written, read):
    r = parse_recipe(f"steps:\n  a: {{stage: fractal, params: {{iterations: {written}}}}}\n")
    assert r.step("a").params.iterations == read


@pytest.mark.parametrize("written", ["1:30", "1_000", "0b11"])
def test_yaml_11_only_numbers_are_text_and_refused(written):
    with pytest.raises(ParamError, match=f"iterations='{written}' must be a whole number"):
        parse_recipe(f"steps:\n  a: {{stage: fractal, params: {{iterations: {written}}}}}\n")


@pytest.mark.parametrize("params,message", [
    ("{span: .inf}", "<string>:1:44: step 'a': span=inf must be a finite number"),
    ("{span: .nan}", "<string>:1:44: step 'a': span=nan must be a finite number"),
    ("{palette: [[0, '#000000'], [2, '#ffffff']]}",
     "<string>:1:65: step 'a': palette[1][0]=2 must be <= 1"),
])
def test_parameter_values_are_checked_inside_lists(params, message):
    with pytest.raises(ParamError) as info:
        parse_recipe(f"steps: {{a: {{stage: fractal, params: {params}}}}}\n")
    assert str(info.value) == message


def test_union_errors_name_the_item_not_the_union_member():
    with pytest.raises(ParamError) as info:
        parse_recipe("steps: {a: {stage: fractal}, b: {stage: resize, input: a, params: "
                     "{background: [0.1, 2]}}}\n")
    assert str(info.value) == "<string>:1:86: step 'b': background[1]=2 must be <= 1"


def test_dates_stay_text():
    r = parse_recipe("description: 2026-11-27\nsteps: {a: {stage: fractal}}\n")
    assert r.description == "2026-11-27"


def test_booleans_are_not_numbers():
    with pytest.raises(ParamError, match=r"power=true must be a whole number"):
        parse_recipe("steps:\n  a: {stage: fractal, params: {power: true}}\n")


def test_complex_and_point_forms():
    r = parse_recipe("steps:\n  a: {stage: fractal, params: {coefficient: {re: 0.5, im: -1}}}\n"
                     "  b: {stage: fractal, params: {coefficient: 0.25, center: [1, 2]}}\n")
    assert r.step("a").params.coefficient == (0.5, -1.0)
    assert r.step("b").params.coefficient == (0.25, 0.0)
    assert r.step("b").params.center == (1.0, 2.0)


# -- overrides -----------------------------------------------------------------------------------


def test_override_is_typed_and_applied_before_validation():
    r = _parse(overrides=["steps.art.params.lr=1e-6", "seed=3", "size=[32, 32]",
                          "steps.soften.params.scheme=seed"])
    assert r.step("art").params.lr == 1e-6 and isinstance(r.step("art").params.lr, float)
    assert (r.seed, r.size, r.step("soften").params.scheme) == (3, (32, 32), "seed")
    assert r.step("base").params.width == 32
    assert r.overrides == ("steps.art.params.lr=1e-6", "seed=3", "size=[32, 32]",
                           "steps.soften.params.scheme=seed")


@pytest.mark.parametrize(("override", "message"), [
    ("steps.base.params.iterations=1e30",
     "--set steps.base.params.iterations: step 'base': iterations=1e+30 is too large; use at "
     "most 100000"),
    ("steps.base.params.iterations=5.0",
     "--set steps.base.params.iterations: step 'base': iterations=5.0 must be written as a whole "
     "number (5, not 5.0)"),
    ("steps.base.params.iterations=2.5",
     "--set steps.base.params.iterations: step 'base': iterations=2.5 must be a whole number"),
    ('steps.base.params.palette=[[0, "#zzzzzz"], [1, "#ffffff"]]',
     "--set steps.base.params.palette: step 'base': palette stop 0 colour='#zzzzzz' must be "
     "'#rrggbb' or an (r, g, b) triple in [0, 1]"),
])
def test_an_override_error_points_at_the_override(override, message):
    with pytest.raises(ParamError) as caught:
        _parse(overrides=[override])
    assert str(caught.value) == message


def test_steps_written_as_a_list_are_told_how_to_write_them():
    with pytest.raises(RecipeError) as caught:
        parse_recipe("steps:\n  - a: {stage: fractal}\n", source="r.yaml")
    assert str(caught.value) == (
        "r.yaml:2:3: steps must be a mapping of step name to {stage, input, params}, not a list: "
        "write 'name:' instead of '- ' before each step")


def test_override_fixes_an_invalid_file_and_creates_params():
    text = BASE.replace("dt: 0.2", "dt: 0.4\n      substep: off")
    assert parse_recipe(text, overrides=["steps.soften.params.dt=0.2"]).step("soften").params.dt \
        == 0.2
    r = parse_recipe("steps:\n  a: {stage: fractal}\n", overrides=["steps.a.params.power=3"])
    assert r.step("a").params.power == 3


@pytest.mark.parametrize("override,cls,message", [
    ("steps.art.params.lr=-1", ParamError,
     "--set steps.art.params.lr: step 'art': lr=-1 must be > 0"),
    ("steps.arts.params.lr=1", RecipeError,
     "--set steps.arts.params.lr: steps has no 'arts'; did you mean 'art'?"),
    ("seed=abc", ParamError, "--set seed: seed='abc' must be a whole number from 0 to 2^63-1"),
    ("foo", RecipeError, "--set 'foo': expected PATH=VALUE, e.g. steps.art.params.lr=1e-6"),
    ("=3", RecipeError, "--set '=3': expected PATH=VALUE, e.g. steps.art.params.lr=1e-6"),
    ("steps..x=1", RecipeError, "--set steps..x: path 'steps..x' has an empty part"),
    ("steps.base.params.power=[", RecipeError,
     "--set steps.base.params.power: value '[' is not valid YAML (expected the node content, "
     "but found '<stream end>'); quote it: --set 'steps.base.params.power=\"[\"'"),
    ("steps.base.params.iterationz=3", ParamError,
     "--set steps.base.params.iterationz: step 'base': unknown parameter 'iterationz' for "
     "stage 'fractal'; did you mean 'iterations'?"),
    ("seed.x=1", RecipeError, "--set seed.x: seed is not a mapping, cannot set 'x' in it"),
    ("size.5=1", RecipeError, "--set size.5: size has no item '5'"),
])
def test_override_errors(override, cls, message):
    with pytest.raises(cls) as info:
        _parse(overrides=[override])
    assert str(info.value) == message


# -- canonical form and preview ------------------------------------------------------------------


def test_canonical_is_json_and_int_equals_float():
    a = parse_recipe("steps:\n  a: {stage: perona_malik, input: b, params: {steps: 1, kappa: 1, "
                     "dt: 0.1}}\n  b: {stage: fractal, params: {span: 3}}\n")
    b = parse_recipe("steps:\n  a: {stage: perona_malik, input: b, params: {steps: 1, kappa: 1.0,"
                     " dt: 0.1}}\n  b: {stage: fractal, params: {span: 3.0}}\n")
    assert json.dumps(a.canonical(), sort_keys=True) == json.dumps(b.canonical(), sort_keys=True)
    c = a.canonical()
    assert [s["name"] for s in c["steps"]] == ["b", "a"]
    # each step carries its stage's version (it enters the cache keys)
    assert c["steps"][0]["version"] == get_stage("fractal").version
    assert c["steps"][1]["version"] == get_stage("perona_malik").version
    assert c["steps"][1]["inputs"] == ["b"]


def test_preview_scales_size_and_params():
    text = BASE.replace("size: [64, 48]", "size: [256, 128]").replace(
        "{iterations: 30, frame_every: 10}", "{iterations: 30, frame_every: 10, lr: 1.0e-6}")
    r = _parse(text)
    p = r.preview(4)
    assert p.size == (64, 32) and p.name == "ocean-preview" and p.preview_factor == 4
    assert (p.step("base").params.width, p.step("base").params.height) == (64, 32)
    assert p.step("soften").params.steps == 1  # 10 / 16, at least one
    assert p.step("art").params.lr == pytest.approx(16e-6)  # summed loss: lr * factor^2
    art = p.step("art").params  # 3 frames every 10 of 30 iterations -> every 2 of 6
    assert (art.iterations, art.frame_every) == (6, 2)
    assert r.step("soften").params.steps == 10  # the original is untouched
    mean = _parse(text.replace("lr: 1.0e-6", "lr: 0.5, reduction: mean")).preview(4)
    assert mean.step("art").params.lr == 0.5
    assert r.preview(1) is r
    with pytest.raises(ParamError, match="factor=0 must be a whole number >= 1"):
        r.preview(0)
    big = _parse(text.replace("lr: 1.0e-6", "lr: 10.0"))  # 10 * 4^2 is past lr's limit of 100
    with pytest.raises(ParamError) as info:
        big.preview(4)
    assert str(info.value) == (
        f"{big.step('art').location}: step 'art': the preview (4x smaller) would set lr=160.0, "
        "but lr=160.0 must be <= 100; render without --preview or change lr")


def test_a_preview_never_writes_over_the_full_render():
    text = """\
steps:
  a: {stage: fractal, params: {iterations: 2}}
  clip: {stage: fractal_frames, params: {iterations: 2, frames: 2}}
outputs:
  still: {step: a, path: renders/final.png}
  named: {step: a, path: "{name}/a.png"}
  movie: {step: clip, path: clip.gif}
"""
    recipe = parse_recipe(text)
    paths = {s.name: s.params.path for s in recipe.steps if hasattr(s.params, "path")}
    small = {s.name: s.params.path for s in recipe.preview(4).steps if hasattr(s.params, "path")}
    assert sorted(paths.values()) == ["clip.gif", "renders/final.png", "{name}/a.png"]
    assert {paths[n]: small[n] for n in paths} == {
        "renders/final.png": "renders/final-preview.png", "clip.gif": "clip-preview.gif",
        "{name}/a.png": "{name}/a.png"}  # {name} gets -preview itself


# -- files ---------------------------------------------------------------------------------------


def test_load_recipe_resolves_inputs_and_records_the_checksum(tmp_path):
    write_image(tmp_path / "in.png", torch.rand(3, 8, 8, generator=torch.Generator()
                                                .manual_seed(0)))
    recipe = tmp_path / "r.yaml"
    recipe.write_text("steps:\n  photo: {stage: load_image, params: {path: in.png}}\n")
    r = load_recipe(recipe)
    assert r.name == "r" and r.path == recipe and r.recipe_dir == tmp_path
    sha = r.step("photo").params.sha256
    assert sha is not None and len(sha) == 64
    recipe.write_text(f"steps:\n  photo: {{stage: load_image, params: {{path: in.png, sha256: "
                      f"'{'0' * 64}'}}}}\n")
    with pytest.raises(ParamError) as info:
        load_recipe(recipe)
    assert str(info.value) == (f"{recipe}:2:61: step 'photo': path='in.png': the file's SHA-256 "
                               "is not the expected 000000000000...; drop sha256 to accept the "
                               "new file")
    recipe.write_text("steps:\n  photo: {stage: load_image, params: {path: missing.png}}\n")
    with pytest.raises(ParamError) as info:
        load_recipe(recipe)
    assert str(info.value) == (f"{recipe}:2:45: step 'photo': path='missing.png': no such file "
                               f"{(tmp_path / 'missing.png').as_posix()}")
    (tmp_path / "folder.png").mkdir()
    recipe.write_text("steps:\n  photo: {stage: load_image, params: {path: folder.png}}\n")
    with pytest.raises(ParamError, match=r"path='folder.png': a folder, not a file"):
        load_recipe(recipe)
    recipe.write_text("steps:\n  photo: {stage: load_image, params: {path: %s.png}}\n" % ("a" * 300))
    with pytest.raises(ParamError, match="not a usable file path"):
        load_recipe(recipe)


def test_load_recipe_missing_file(tmp_path):
    with pytest.raises(RecipeError) as info:
        load_recipe(tmp_path / "none.yaml")
    assert str(info.value) == f"{tmp_path / 'none.yaml'}: no such recipe file"


def test_writer_steps_among_steps_are_outputs():
    r = parse_recipe("steps:\n  a: {stage: fractal}\n  save: {stage: save_image, input: a, "
                     "params: {path: 'x/{step}.png'}}\n")
    assert [(o.name, o.step, o.source, o.path) for o in r.outputs] == [
        ("save", "save", "a", "x/{step}.png")]
    with pytest.raises(RecipeError) as info:
        parse_recipe("steps:\n  a: {stage: fractal}\n  save: {stage: save_image, input: a, "
                     "params: {path: 'x/{step}.png'}}\noutputs:\n  o: {step: a, path: x/a.png}\n")
    assert str(info.value) == ("<string>:5:22: output 'o': path 'x/a.png' writes the same file "
                               "as step 'save'")
    with pytest.raises(RecipeError) as info:
        parse_recipe("steps:\n  a: {stage: fractal}\n  save: {stage: save_image, input: a, "
                     "params: {path: '/abs.png'}}\n")
    assert str(info.value) == ("<string>:3:54: step 'save': path '/abs.png' must be relative to "
                               "the output folder, not absolute")


# -- shipped recipes and schema ------------------------------------------------------------------


def test_recipes_are_shipped():
    names = {p.name for p in RECIPES}
    assert {"ocean.yaml", "from_image.yaml"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_shipped_recipe_checks_and_declares_the_schema(path):
    text = path.read_text()
    assert text.startswith("# yaml-language-server: $schema=./schema.json\n")
    recipe = load_recipe(path)
    assert recipe.steps and recipe.outputs
    json.dumps(recipe.canonical())
    assert recipe.preview().size[0] < recipe.size[0]
    for step in recipe.steps:  # a caption per frame: as many values as the clip has frames
        stage = get_stage(step.stage)
        if stage.per_frame is not None:
            assert len(stage.per_frame(step.params)) == step.shape[0], step.name


def test_shipped_recipes_use_every_stage():
    from minart.registry import stages

    used = {s.stage for p in RECIPES for s in load_recipe(p).steps}
    assert used == {s.name for s in stages()}


def test_shipped_schema_is_up_to_date():
    shipped = json.loads((ROOT / "recipes" / "schema.json").read_text())
    assert shipped == recipe_schema(), "run: minart schema -o recipes/schema.json"


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_shipped_recipes_match_the_schema(path):
    jsonschema = pytest.importorskip("jsonschema")
    from minart.recipe import _Loader

    data = _Loader(path.read_text()).get_single_data()
    jsonschema.Draft202012Validator(recipe_schema()).validate(data)


def test_schema_discriminates_steps_on_stage():
    schema = recipe_schema()
    steps = schema["properties"]["steps"]["additionalProperties"]
    assert steps["discriminator"]["propertyName"] == "stage"
    assert set(steps["discriminator"]["mapping"]) >= {"fractal", "perona_malik", "minimize",
                                                     "save_image", "encode_video"}
    pm = schema["$defs"]["PeronaMalikParams"]
    assert pm["additionalProperties"] is False
    assert pm["properties"]["dt"]["exclusiveMinimum"] == 0


def test_step_lookup_suggests_a_name():
    r = _parse()
    assert r.step("out.movie").stage == "encode_video"
    with pytest.raises(RecipeError) as info:
        r.step("sotfen")
    assert str(info.value) == "no step named 'sotfen'; did you mean 'soften'?"


@pytest.mark.parametrize("key,reads", [("~", "null"), ("null", "null"), ("true", "true/false")])
def test_null_and_boolean_keys_are_refused_not_turned_into_names(key, reads):
    with pytest.raises(RecipeError) as info:
        parse_recipe(f"steps:\n  {key}: {{stage: fractal}}\n")
    assert str(info.value) == (f"<string>:2:3: key '{key}' reads as {reads}, not a name; quote it "
                               "or choose another name")


@pytest.mark.parametrize("value", ["[]", "0", "false", "''"])
def test_outputs_that_are_not_a_mapping_are_refused(value):
    with pytest.raises(RecipeError, match="outputs must be a mapping of output name"):
        parse_recipe(f"steps:\n  a: {{stage: fractal}}\noutputs: {value}\n")
    assert parse_recipe("steps:\n  a: {stage: fractal}\noutputs:\n").outputs == ()



@pytest.mark.parametrize(("stem", "name"), [
    ("ocean", "ocean"), ("my recipe (v2)", "my-recipe-v2"), ("Mar\u00e9e d'\u00e9t\u00e9", "Maree-d-ete"),
    ("--draft--", "draft"), ("a..b", "a.b")])
def test_a_recipe_without_a_name_is_named_after_its_file(tmp_path, stem, name):
    path = tmp_path / f"{stem}.yaml"
    path.write_text("steps: {a: {stage: fractal}}\n")
    assert load_recipe(path).name == name


def test_files_named_without_latin_letters_get_names_that_differ(tmp_path):
    names = set()
    for stem in ("\u6d77", "\u6ce2", "\u96e8"):
        path = tmp_path / f"{stem}.yaml"
        path.write_text("steps: {a: {stage: fractal}}\n")
        names.add(load_recipe(path).name)
    assert len(names) == 3 and all(n.startswith("recipe-") for n in names)


def test_a_value_of_the_wrong_form_is_told_the_form():
    with pytest.raises(ParamError) as caught:
        parse_recipe("steps:\n  p: {stage: load_image, params: {path: x.png, sha256: abc}}\n",
                     source="r.yaml")
    assert str(caught.value) == ("r.yaml:2:56: step 'p': sha256='abc' does not have the expected "
                                 "form (expected SHA-256 of the file, 64 hex digits)")


def test_an_input_of_the_wrong_kind_names_the_stages_that_bridge_the_two():
    with pytest.raises(RecipeError) as err:
        parse_recipe("size: [8, 8]\nsteps:\n  a: {stage: fractal}\n"
                     "  v: {stage: encode_video, input: a, params: {path: a.webm}}\n")
    assert str(err.value) == (
        "<string>:4:35: step 'v': input 'a' produces an image but stage 'encode_video' needs a "
        "clip of frames; put a step of stage concatenate, crossfade, minimize or "
        "perona_malik_sweep in between")
    with pytest.raises(RecipeError) as err:
        parse_recipe("size: [8, 8]\nsteps:\n  a: {stage: fractal_frames}\n"
                     "  s: {stage: save_image, input: a, params: {path: a.png}}\n")
    assert str(err.value).endswith("needs an image; put a step of stage contact_sheet or grid in "
                                   "between")


# -- what an artist meets: colours YAML reads as comments, overrides, syntax ----------------------

COLOUR = """\
name: r
size: [16, 16]
steps:
  f:
    stage: fractal
    params:
      interior: "#ff0000"
outputs:
  a8: {step: f, path: "{name}/x.png"}
"""


def _message(text: str, overrides=(), cls=(RecipeError, ParamError)) -> str:
    with pytest.raises(cls) as info:
        parse_recipe(text, source="r.yaml", overrides=overrides)
    assert "\n" not in str(info.value)
    return str(info.value)


@pytest.mark.parametrize("old,new,message", [
    ('interior: "#ff0000"', "interior: #ff0000",
     "r.yaml:7:17: step 'f': interior is empty: '#' starts a YAML comment; quote the colour: "
     '"#ff0000"'),
    ('interior: "#ff0000"', "palette: #ff0000",
     "r.yaml:7:16: step 'f': palette is empty: '#' starts a YAML comment; quote the colour: "
     '"#ff0000"'),
    ('interior: "#ff0000"', 'palette:\n        - [0, "#000000"]\n        - #fff',
     "r.yaml:9:11: step 'f': palette[1] is empty: '#' starts a YAML comment; quote the colour: "
     '"#fff"'),
    ('    params:\n      interior: "#ff0000"', "    params: {interior: #ff0000}",
     "r.yaml:6:24: invalid YAML: '#' starts a YAML comment, which hides the rest of the line; "
     'quote the colour: "#ff0000"'),
    ('interior: "#ff0000"', 'palette: [[0, #000000], [1, "#ffffff"]]',
     "r.yaml:7:21: invalid YAML: '#' starts a YAML comment, which hides the rest of the line; "
     'quote the colour: "#000000"'),
    ('interior: "#ff0000"', 'palette: [\n        [0, "#000000"],\n        [1, #ffffff]]',
     "r.yaml:9:13: invalid YAML: '#' starts a YAML comment, which hides the rest of the line; "
     'quote the colour: "#ffffff"'),
])
def test_an_unquoted_colour_is_not_silently_dropped(old, new, message):
    assert old in COLOUR
    assert _message(COLOUR.replace(old, new)) == message


def test_a_comment_that_is_not_a_colour_still_leaves_the_value_out():
    r = parse_recipe(COLOUR.replace('interior: "#ff0000"', "interior: # the palette's own"))
    assert r.step("f").params.interior is None
    assert parse_recipe(COLOUR).step("f").params.interior == "#ff0000"


def test_a_set_colour_is_the_colour_and_fixes_a_swallowed_one():
    broken = COLOUR.replace('interior: "#ff0000"', "interior: #ff0000")
    r = parse_recipe(broken, overrides=["steps.f.params.interior=#00ff00"])
    assert r.step("f").params.interior == "#00ff00"
    assert r.overrides == ("steps.f.params.interior=#00ff00",)
    assert _message(COLOUR, ["steps.f.params.palette=[[0, #000000], [1, #ffffff]]"]) == (
        "--set steps.f.params.palette: value '[[0, #000000], [1, #ffffff]]' is not valid YAML: "
        "'#' starts a YAML comment; quote the colours: --set "
        "'steps.f.params.palette=[[0, \"#000000\"], [1, \"#ffffff\"]]'")


def test_a_misspelled_required_parameter_is_told_its_spelling():
    err = _error("      kappa: 0.1\n", "      kapa: 0.1\n")
    assert str(err) == ("recipes/ocean.yaml:13:7: step 'soften': unknown parameter 'kapa' for "
                        "stage 'perona_malik'; did you mean 'kappa'?")
    assert (type(err), err.param) == (ParamError, "kapa")
    flow = ("steps:\n  base: {stage: fractal}\n  soft: {stage: perona_malik, input: base, "
            "params: {steps: 2, kapa: 0.1, dt: 0.2}}\n")
    assert _message(flow) == ("r.yaml:3:63: step 'soft': unknown parameter 'kapa' for stage "
                              "'perona_malik'; did you mean 'kappa'?")
    # an unrelated unknown key does not hide what is missing
    err = _error("      kappa: 0.1\n", "      zzz: 0.1\n")
    assert str(err).startswith("recipes/ocean.yaml:11:5: step 'soften': missing parameter 'kappa' ")


def test_a_set_value_for_text_is_taken_as_text():
    r = parse_recipe(COLOUR, overrides=["outputs.a8.path={name}/{seed}.png",
                                        "description=hello: world", "name=123"])
    assert (r.outputs[0].path, r.description, r.name) == ("{name}/{seed}.png", "hello: world",
                                                          "123")
    # a value that is not YAML where the field is not text: quote it
    assert _message(COLOUR, ["steps.f.params.palette={sea"]) == (
        "--set steps.f.params.palette: value '{sea' is not valid YAML (expected ',' or '}', but "
        "got '<stream end>'); quote it: --set 'steps.f.params.palette=\"{sea\"'")
    assert parse_recipe(COLOUR, overrides=["size={width: 32, height: 24}"]).size == (32, 24)


@pytest.mark.parametrize("overrides,message", [
    (["outputs.still.path=x.webm"],
     "--set outputs.still.path: output 'still': step 'soften' produces an image, but a video "
     "needs a clip of frames; write it to an image path (.png) instead"),
    (["outputs.movie.path={name}.png"],
     "recipes/ocean.yaml:22:43: output 'movie': 'fps' does not apply to a .png output (after "
     "--set outputs.movie.path={name}.png)"),
    (["outputs.sheet.sheet=false"],
     "recipes/ocean.yaml:21:17: output 'sheet': step 'art' produces a clip of frames; write it "
     "to a video path (.webm, .mp4, .gif) or add 'sheet: true' for a contact sheet (after --set "
     "outputs.sheet.sheet=false)"),
    (["outputs.still.sheet=true"],
     "--set outputs.still.sheet: output 'still': step 'soften' produces an image; 'sheet' makes "
     "a contact sheet of a clip, so drop it"),
    (["steps.base.stage=fractal_frames"],  # two steps upstream
     "recipes/ocean.yaml:18:13: step 'art': loss='seed' takes one image, but the input is a "
     "clip of frames; use loss: seed_video (after --set steps.base.stage=fractal_frames)"),
    (["steps.soften.params.substep=off", "seed=3"],
     "recipes/ocean.yaml:14:11: step 'soften': dt=0.4 exceeds the stability bound 0.25 for "
     "scheme 'classic'; use dt <= 0.25 or substep: auto (after --set "
     "steps.soften.params.substep=off)"),
])
def test_an_error_the_overrides_caused_says_so(overrides, message):
    text = BASE.replace("dt: 0.2", "dt: 0.4") if "substep" in overrides[0] else BASE
    with pytest.raises((RecipeError, ParamError)) as info:
        _parse(text, overrides=overrides)
    assert str(info.value) == message


@pytest.mark.parametrize("text,message", [
    ("name: r\nsteps:\n\tf: {stage: fractal}\n",
     "r.yaml:3:1: invalid YAML: found character '\\t' that cannot start any token; indent with "
     "spaces, not tabs"),
    ('name: "e\nsteps:\n  f: {stage: fractal}\n',
     "r.yaml:1:7: invalid YAML: the quote opened here is never closed"),
    ("name: r\nsize: [64, 48\nsteps:\n  f: {stage: fractal}\n",
     "r.yaml:2:7: invalid YAML: the '[' opened here is never closed (expected ',' or ']', but "
     "got ':' at 3:6)"),
    ("steps:\n  f: {stage: fractal, params: {power: 3}\n",
     "r.yaml:2:6: invalid YAML: the '{' opened here is never closed (the file ends first)"),
    ("steps:\n  f:\n    stage: fractal\n    params:\n      iterations: 3\n      iterations: 4\n",
     "r.yaml:6:7: step 'f': key 'iterations' appears twice (first on line 5); keep one"),
    ("steps: {f: {stage: fractal}}\noutputs:\n  o: {step: f, path: a.png, path: b.png}\n",
     "r.yaml:3:29: output 'o': key 'path' appears twice (first on line 3); keep one"),
])
def test_yaml_syntax_errors_point_where_the_problem_starts(text, message):
    assert _message(text, cls=RecipeError) == message


@pytest.mark.parametrize("text,message", [
    ("name: 123\nsteps:\n  f: {stage: fractal}\n",
     'r.yaml:1:7: name=123 is a number, but a name is text; quote it: name: "123"'),
    ("description: 12\nsteps:\n  f: {stage: fractal}\n",
     "r.yaml:1:14: description=12 must be text; put it in quotes"),
    ("steps:\n  f: {stage: fractal}\n  g: {stage: blend, input: [f, f]}\n",
     "r.yaml:3:21: step 'g': input takes one step name; for several, use inputs: [f, f]"),
    ("steps:\n  f\u00e9: {stage: fractal}\n",
     "r.yaml:2:3: step name 'f\u00e9' must start with an ASCII letter or '_' and use only ASCII "
     "letters, digits, '_' and '-'"),
    ("steps:\n  f: {stage: fractal_frames, params: {frames: 1e2}}\n",
     "r.yaml:2:47: step 'f': frames=1e2 must be written as a whole number (100, not 1e2)"),
])
def test_small_messages_say_what_was_written(text, message):
    assert _message(text) == message


def test_a_quoted_number_is_a_name():
    assert parse_recipe('name: "123"\nsteps:\n  f: {stage: fractal}\n').name == "123"


@pytest.mark.parametrize("path,message", [
    ("name}.png", "path 'name}.png' has a '}' that closes no field; add the missing '{' or write "
                  "'}}' for a literal brace"),
    ("{name.png", "path '{name.png' has a '{' that is never closed; add the missing '}' or write "
                  "'{{' for a literal brace"),
])
def test_an_unmatched_brace_in_a_path_says_which_and_how_to_fix_it(path, message):
    text = f'steps:\n  f: {{stage: fractal}}\noutputs:\n  a: {{step: f, path: "{path}"}}\n'
    assert _message(text) == f"r.yaml:4:22: output 'a': {message}"
    assert parse_recipe(text.replace(path, "{{name}}.png")).outputs[0].path == "{{name}}.png"


SWEEPS = """\
size: [16, 16]
steps:
  base: {stage: fractal, params: {iterations: 8}}
  other: {stage: fractal, params: {iterations: 9}}
  kappas:
    stage: perona_malik_sweep
    input: base
    params: {steps: 2, kappa: [0.05, 0.1, 0.2], dt: 0.25}
  dts:
    stage: perona_malik_sweep
    input: base
    params: {scheme: seed, steps: 3, kappa: 0.2, dt: [0.1, 0.4]}
  compare:
    stage: grid
    inputs: [kappas, dts, base]
    params:
      labels: ["kappa {kappas.kappa} dt {kappas.dt}", "dt {dts.dt:.2f}", "{base.iterations} it"]
"""


def test_grid_labels_show_the_values_of_the_steps_they_caption():
    labels = parse_recipe(SWEEPS).step("compare").params.labels
    assert labels == ["kappa 0.05 dt 0.25", "kappa 0.1 dt 0.25", "kappa 0.2 dt 0.25",
                      "dt 0.10", "dt 0.40", "8 it"]
    # the recipe's own name and seed, as in output paths (after --set too)
    r = parse_recipe(SWEEPS.replace('"{base.iterations} it"', '"{name} seed {seed}"'),
                     overrides=["seed=11", "name=study"])
    assert r.step("compare").params.labels[-1] == "study seed 11"
    # after --set, the captions follow the new values (and their count the new frames)
    r = parse_recipe(SWEEPS, overrides=["steps.dts.params.dt=[0.2, 0.3, 0.5]",
                                        "steps.kappas.params.kappa=0.3"])
    assert r.step("compare").params.labels == ["kappa 0.3 dt 0.25", "dt 0.20", "dt 0.30",
                                               "dt 0.50", "8 it"]
    assert r.step("compare").shape == grid_shape(5, (3, 16, 16), columns=None, spacing=4,
                                                 labels=True)
    # the canonical recipe (and so the step's cache key) holds the captions drawn
    compare = next(s for s in r.canonical()["steps"] if s["name"] == "compare")
    assert compare["params"]["labels"][1] == "dt 0.20"


@pytest.mark.parametrize(("label", "message"), [
    ("{kapas.kappa}", "<string>:17:16: step 'compare': labels[0]: {kapas.kappa}: 'kapas' is not "
     "a step of this recipe; did you mean 'kappas'?"),
    ("{other.iterations}", "<string>:17:16: step 'compare': labels[0]: {other.iterations}: step "
     "'other' does not feed this step; a caption shows a parameter of a step it is made from"),
    ("{later.iterations}", "<string>:17:16: step 'compare': labels[0]: {later.iterations}: step "
     "'later' does not feed this step; a caption shows a parameter of a step it is made from"),
    ("{kappas.kapa}", "<string>:17:16: step 'compare': labels[0]: {kappas.kapa}: stage "
     "'perona_malik_sweep' of step 'kappas' has no parameter 'kapa'; did you mean 'kappa'? "
     "('minart describe perona_malik_sweep' lists them)"),
    ("{kappas}", "<string>:17:16: step 'compare': labels[0]: {kappas} is not a field: write "
     "{step.param} for a step's parameter, or {name} or {seed} for the recipe's"),
    ("{sed}", "<string>:17:16: step 'compare': labels[0]: {sed} is not a field; did you mean "
     "'seed'?"),
    ("k \u2603 {kappas.kappa}", "<string>:17:16: step 'compare': labels[0] gives 'k \u2603 0.05', "
     "which must be one line of Latin-1 text (the built-in bitmap font has no other glyphs)"),
    ("{kappas.kappa} {dts.dt}", "<string>:17:16: step 'compare': labels[0]: label "
     "'{kappas.kappa} {dts.dt}': {kappas.kappa} has 3 values and {dts.dt} has 2 values; one "
     "caption can follow one sweep's values (split it into two labels)"),
])
def test_a_caption_template_error_points_at_its_label(label, message):
    text = SWEEPS.replace('"kappa {kappas.kappa} dt {kappas.dt}"', f'"{label}"') + (
        "  later: {stage: perona_malik, input: compare, params: {steps: 1, kappa: 1, dt: 0.1}}\n")
    with pytest.raises(ParamError) as info:
        parse_recipe(text)
    assert str(info.value) == message


def test_captions_follow_the_frames_of_growing_fractals_and_minimizations():
    text = """\
size: [16, 16]
steps:
  growth: {stage: fractal_frames, params: {frames: 3, iterations: 10}}
  art: {stage: minimize, input: growth, params: {iterations: 7, frame_every: 3, loss: seed_video}}
  sheet:
    stage: grid
    inputs: [growth, art]
    params: {labels: ["budget {growth.iterations}", "it {art.iterations:03d}"]}
"""
    # a frame's own value (the budget it was drawn with, the iterations done when it was kept)
    assert parse_recipe(text).step("sheet").params.labels == [
        "budget 4", "budget 7", "budget 10", "it 001", "it 004", "it 007"]
    # frames that pass through another step may be reordered or dropped: refused
    text = text.replace("inputs: [growth, art]", "inputs: [growth, back]").replace(
        "  sheet:", "  back: {stage: reverse, input: art}\n  sheet:")
    with pytest.raises(ParamError) as info:
        parse_recipe(text)
    assert str(info.value) == (
        "<string>:9:53: step 'sheet': labels[1]: {art.iterations}: iterations changes from frame "
        "to frame of step 'art', whose frames reach this step through others that may reorder or "
        "drop them; caption the frames of an input (growth, back)")


def test_a_contact_sheet_caption_template_gives_each_frame_its_values():
    text = """\
size: [16, 16]
steps:
  growth: {stage: fractal_frames, params: {frames: 5, iterations: 10}}
  art: {stage: minimize, input: growth, params: {iterations: 9, frame_every: 2, loss: seed_video}}
outputs:
  s: {step: art, path: a.png, sheet: {frames: 3, labels: "i{art.iterations} lr {art.lr:.0e}"}}
  g: {step: growth, path: b.png, sheet: {labels: "{growth.iterations:d}"}}
"""
    r = parse_recipe(text)
    assert r.step("out.s.sheet").params.labels == [f"i{n} lr 2e-06" for n in (1, 3, 5, 7, 9)]
    assert r.step("out.g.sheet").params.labels == ["2", "4", "6", "8", "10"]
    with pytest.raises(ParamError) as info:
        parse_recipe(text.replace("{growth.iterations:d}", "{art.iterations}"))
    assert str(info.value) == (
        "<string>:7:50: output 'g': labels: {art.iterations}: step 'art' does not feed this step; "
        "a caption shows a parameter of a step it is made from")


def test_a_caption_count_that_does_not_fit_says_which_labels_became_several():
    with pytest.raises(ParamError) as info:
        parse_recipe(SWEEPS, overrides=['steps.compare.params.labels=["{kappas.kappa}", b]'])
    assert str(info.value) == (
        "--set steps.compare.params.labels: step 'compare': labels has 4 captions but the grid "
        "has 6 tiles; give one per tile (labels[0] makes 3, one per frame of its clip)")
    # one text where a list is wanted, a label without fields, and a list that is not all
    # text, are left to validation as written
    with pytest.raises(ParamError, match=r"labels='\{kappas.kappa\}' must be a list like \[a, b\]"):
        parse_recipe(SWEEPS, overrides=['steps.compare.params.labels="{kappas.kappa}"'])
    with pytest.raises(ParamError, match=r"labels\.1=5 must be text|labels\[1\]"):
        parse_recipe(SWEEPS, overrides=['steps.compare.params.labels=["{kappas.kappa}", 5]'])
