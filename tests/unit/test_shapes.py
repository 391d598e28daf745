"""Shapes known before anything runs: every stage's hook agrees with what the stage makes."""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest
import torch
from PIL import Image

from minart.cli import main
from minart.errors import MediaError, MinartError, ParamError, ShapeError
from minart.io import image_size, read_image, write_image
from minart.recipe import parse_recipe
from minart.registry import StageContext, get_stage, stages
from minart.shapes import describe, nbytes, step_shape

SIZE = (10, 6)  # the recipe size (width, height) that size-less steps fall back to

# stage -> [(params, input shapes)]: each case runs the stage on random inputs of those shapes
CASES: dict[str, list[tuple[dict, list[tuple[int, ...]]]]] = {
    "fractal": [({"width": 12, "height": 8, "iterations": 4}, []),
                ({"iterations": 3, "supersample": 2}, [])],
    "fractal_frames": [({"width": 9, "height": 5, "iterations": 4, "frames": 3}, [])],
    "load_image": [({"path": "in.png"}, []), ({"path": "in.png", "downscale": 3}, []),
                   ({"path": "turned.jpg", "downscale": 2}, [])],
    "perona_malik": [({"steps": 2, "kappa": 0.1, "dt": 0.2}, [(3, 6, 5)]),
                     ({"steps": 1, "kappa": 0.1, "dt": 0.2, "scheme": "seed"}, [(4, 1, 6, 5)])],
    "perona_malik_sweep": [({"steps": 2, "kappa": [0.1, 0.2, 0.3], "dt": 0.2}, [(3, 6, 5)]),
                           ({"steps": 1, "kappa": 0.1, "dt": [0.1], "scheme": "seed"},
                            [(4, 6, 5)])],
    "minimize": [({"iterations": 5, "frame_every": 2}, [(3, 6, 5)]),
                 ({"iterations": 4, "frame_every": 4, "loss": "seed_video"}, [(2, 3, 5, 4)])],
    "blend": [({}, [(3, 6, 5), (3, 6, 5)]), ({"mode": "screen"}, [(4, 3, 6, 5), (3, 6, 5)]),
              ({}, [(4, 3, 6, 5), (4, 3, 6, 5)]), ({}, [(4, 3, 6, 5), (1, 3, 6, 5)]),
              ({}, [(3, 6, 5), (1, 3, 6, 5)]),
              ({}, [(3, 6, 5), (3, 6, 5), (1, 6, 5)]),  # with a mask
              ({"mode": "multiply"}, [(4, 3, 6, 5), (3, 6, 5), (4, 1, 6, 5)]),
              ({}, [(4, 3, 6, 5), (4, 3, 6, 5), (1, 6, 5)]),
              ({}, [(3, 6, 5), (3, 6, 5), (1, 1, 6, 5)])],
    "colorize": [({}, [(1, 6, 5)]), ({"palette": "fire"}, [(2, 3, 6, 5)]), ({}, [(4, 6, 5)])],
    "luminance_mask": [({}, [(3, 6, 5)]), ({"low": 0.2, "high": 0.4, "invert": True},
                                           [(2, 4, 6, 5)]), ({}, [(1, 6, 5)])],
    "resize": [({"width": 7, "height": 4}, [(3, 6, 5)]),
               ({"fit": "contain", "background": [0, 1, 0]}, [(2, 3, 6, 5)]),
               ({"width": 8, "height": 8, "fit": "cover"}, [(1, 3, 6, 5)])],
    "grid": [({"columns": 2, "spacing": 1}, [(3, 4, 5), (2, 3, 4, 5)]),
             ({"labels": ["a", "b", "c", "d", "e"]}, [(5, 3, 4, 5)]),
             ({"columns": 7, "spacing": 0}, [(3, 4, 5)])],
    "contact_sheet": [({"frames": 3, "labels": True}, [(7, 3, 4, 5)]),
                      ({"columns": 2}, [(5, 3, 4, 5)]),  # frames left out: all 5 (up to 12)
                      ({}, [(15, 3, 4, 5)]), ({"frames": 5}, [(5, 3, 4, 5)]),
                      ({"frames": 1}, [(5, 3, 4, 5)]),
                      ({"frames": 2, "labels": ["a", "b", "c", "d", "e"]}, [(5, 3, 4, 5)]),
                      ({"labels": "one for all"}, [(3, 3, 4, 5)]),
                      ({"labels": ["one for all"]}, [(3, 3, 4, 5)])],
    "crossfade": [({"frames": 4}, [(3, 4, 5), (4, 3, 4, 5)]), ({"frames": 2}, [(3, 4, 5), (3, 4, 5)])],
    "boomerang": [({}, [(1, 3, 4, 5)]), ({}, [(2, 3, 4, 5)]), ({}, [(4, 3, 4, 5)])],
    "reverse": [({}, [(3, 3, 4, 5)])],
    "subsample": [({"every": 3, "offset": 1}, [(8, 3, 4, 5)]), ({"every": 5}, [(3, 3, 4, 5)])],
    "concatenate": [({}, [(2, 3, 4, 5), (3, 4, 5), (1, 3, 4, 5)])],
    "hold": [({"first": 2, "last": 1}, [(3, 3, 4, 5)])],
    "save_image": [({"path": "a.png"}, [(3, 4, 5)]), ({"path": "b.jpg"}, [(3, 4, 5)])],
    "encode_video": [({"path": "v.gif"}, [(2, 3, 5, 5)]), ({"path": "v.mp4"}, [(2, 3, 5, 7)])],
}

# stage -> [(params, input shapes, error class, message)]: refused by the hook and by the run
REFUSED = {
    "blend": [({}, [(3, 6, 5), (3, 5, 5)], ShapeError,
               "top 'in1' (a 5x5 RGB image) does not fit base 'in0' (a 5x6 RGB image); resize "
               "one to the other's size first (stage: resize)"),
              ({}, [(3, 6, 5), (2, 3, 6, 5)], ShapeError,
               "top 'in1' (a 2-frame 5x6 RGB clip) does not fit base 'in0' (a 5x6 RGB image): a "
               "clip on top needs a clip as base (swap them, or subsample/hold the clips to one "
               "length)"),
              ({}, [(3, 3, 6, 5), (2, 3, 6, 5)], ShapeError, "needs a clip of the same length"),
              ({}, [(3, 6, 5), (3, 6, 5), (3, 6, 5)], ShapeError,
               "mask 'in2' (a 5x6 RGB image) has 3 channels, but a mask has one (the opacity of "
               "each pixel); make it with a step of stage luminance_mask"),
              ({}, [(3, 6, 5), (3, 6, 5), (1, 5, 5)], ShapeError,
               "mask 'in2' (a 5x5 grey image) does not fit base 'in0' (a 5x6 RGB image); resize "
               "one to the other's size first (stage: resize)"),
              ({}, [(3, 6, 5), (3, 6, 5), (2, 1, 6, 5)], ShapeError,
               "mask 'in2' (a 2-frame 5x6 grey clip) does not fit base 'in0' (a 5x6 RGB image): "
               "a clip as mask needs a clip as base"),
              ({}, [(3, 3, 6, 5), (3, 6, 5), (2, 1, 6, 5)], ShapeError,
               "a clip as mask needs a clip of the same length as base")],
    "colorize": [({}, [(2, 6, 5)], ShapeError, "has 2 channels; a gradient map is made from")],
    "luminance_mask": [({}, [(2, 6, 5)], ShapeError,
                        "input 'in0' (a 5x6 2-channel image) has 2 channels; a luminance mask is "
                        "made from 1 (grey), 3 (RGB) or 4 (RGBA)")],
    "resize": [({"fit": "contain", "background": [0, 1, 0, 1]}, [(3, 6, 5)], ParamError,
                "background=[0.0, 1.0, 0.0, 1.0] has 4 values but the image has 3 channels; give "
                "one level or 3")],
    "grid": [({"labels": ["a", "b"]}, [(3, 4, 5)], ParamError,
              "labels has 2 captions but the grid has 1 tiles; give one per tile"),
             ({}, [(3, 4, 5), (3, 4, 6)], ShapeError,
              "grid tiles need one size and colour model, but 'in0' (a 5x4 RGB image) and 'in1' "
              "(a 6x4 RGB image) differ; resize them first (stage: resize)"),
             ({"background": [1, 1]}, [(3, 4, 5)], ParamError, "background=[1.0, 1.0] has 2 values"),
             ({}, [(3, 4, 5), (1, 4, 5)], ShapeError,
              "'in0' (a 5x4 RGB image) and 'in1' (a 5x4 grey image) differ; turn the grey one "
              "into RGB first (stage: colorize)"),
             ({}, [(3, 4, 5), (1, 4, 6)], ShapeError,
              "differ; resize them first (stage: resize) and turn the grey one into RGB (stage: "
              "colorize)")],
    "contact_sheet": [({"background": [1, 1]}, [(3, 3, 4, 5)], ParamError,
                       "background=[1.0, 1.0] has 2 values"),
                      ({"frames": 50}, [(3, 3, 4, 5)], ParamError,
                       "frames=50 is more than the clip's 3 frames; use frames <= 3, or leave "
                       "frames out for up to 12"),
                      ({"frames": 2, "labels": ["a", "b"]}, [(3, 3, 4, 5)], ParamError,
                       "labels has 2 captions but the clip has 3 frames; give one per frame of "
                       "the clip (the sheet shows those of the frames it picks), or one for all")],
    "crossfade": [({"frames": 4}, [(3, 4, 5), (5, 3, 4, 5)], ParamError,
                   "frames=4 but b 'in1' (a 5-frame 5x4 RGB clip) has 5 frames; a clip must last "
                   "the whole fade: set frames to 5, or subsample/hold the clip"),
                  ({"frames": 4}, [(3, 4, 5), (1, 4, 5)], ShapeError,
                   "the two ends of a crossfade need one size and colour model")],
    "subsample": [({"offset": 3}, [(3, 3, 4, 5)], ParamError,
                   "offset=3 is past the end of 'in0' (a 3-frame 5x4 RGB clip); use an offset "
                   "below 3")],
    "concatenate": [({}, [(2, 3, 4, 5), (3, 4, 4)], ShapeError,
                     "clips joined one after another need one size and colour model")],
    "perona_malik": [({"steps": 1, "kappa": 0.1, "dt": 0.2}, [(3, 1, 5)], ShapeError,
                      "input 'in0' (a 5x1 RGB image) is too small: perona_malik needs at least "
                      "2x2 pixels")],
    "perona_malik_sweep": [({"steps": 1, "kappa": [0.1, 0.2], "dt": 0.2}, [(3, 1, 5)],
                            ShapeError, "perona_malik_sweep needs at least 2x2 pixels")],
    "minimize": [({"iterations": 2}, [(3, 4, 1)], ShapeError, "minimize needs at least 2x2")],
    "save_image": [({"path": "a.png"}, [(2, 4, 5)], ShapeError,
                    "'in0' (a 5x4 2-channel image) has 2 channels; an image file holds 1 (grey), "
                    "3 (RGB) or 4 (RGBA)"),
                   ({"path": "a.jpg"}, [(4, 4, 5)], ParamError, "JPEG has no alpha channel")],
    "encode_video": [({"path": "v.mp4", "pad": "refuse"}, [(2, 3, 5, 7)], ParamError,
                      "pad='refuse': mp4 video (4:2:0 chroma) needs an even width and height, got "
                      "7x5"),
                     ({"path": "v.webm"}, [(2, 4, 4, 4)], ShapeError, "has 4 channels; a video")],
    "load_image": [({"path": "in.png", "downscale": 12}, [], ParamError,
                    "downscale=12 is larger than the image (11x7); use downscale <= 7"),
                   ({"path": "in.png", "max_pixels": 50}, [], ParamError,
                    "11x7 = 77 pixels exceeds max_pixels=50"),
                   ({"path": "junk.png"}, [], ParamError, "not a readable image")],
}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Input images for load_image: an 11x7 PNG, a 6x4 JPEG whose EXIF turns it to 4x6."""
    write_image(tmp_path / "in.png", torch.rand(3, 7, 11, generator=torch.Generator().manual_seed(1)))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    Image.new("RGB", (6, 4), (200, 10, 10)).save(tmp_path / "turned.jpg", exif=exif.tobytes())
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    return tmp_path


def _inputs(shapes, gen) -> list[torch.Tensor]:
    return [torch.rand(shape, generator=gen) for shape in shapes]


def _hook(stage, params, shapes, folder):
    names = [f"in{i}" for i in range(len(shapes))]
    kinds = {n: "frames" if len(s) == 4 else "image" for n, s in zip(names, shapes, strict=True)}
    return step_shape(stage, params, inputs=names, shapes=dict(zip(names, shapes, strict=True)), kinds=kinds,
                      recipe_dir=folder, size=SIZE)


def _run(stage, params, shapes, folder, gen):
    ctx = StageContext(size=SIZE, recipe_dir=folder, output_dir=folder / "out", step="s",
                       generator=gen)
    return stage.run(_inputs(shapes, gen), params, ctx)


def test_every_stage_has_a_shape_hook_and_cases():
    names = {s.name for s in stages()}
    assert {s.name for s in stages() if s.shape is None} == set()
    assert names == set(CASES)


@pytest.mark.parametrize("name,params,shapes", [
    (name, params, shapes) for name, cases in CASES.items() for params, shapes in cases])
def test_hook_predicts_the_shape_the_stage_makes(name, params, shapes, folder, gen):
    stage = get_stage(name)
    model = stage.params(**params)
    predicted = _hook(stage, model, shapes, folder)
    made = _run(stage, model, shapes, folder, gen)
    assert predicted == tuple(made.shape)


@pytest.mark.parametrize("name,params,shapes,error,message", [
    (name, *case) for name, cases in REFUSED.items() for case in cases])
def test_hook_refuses_what_the_stage_refuses(name, params, shapes, error, message, folder, gen):
    stage = get_stage(name)
    model = stage.params(**params)
    with pytest.raises(error) as caught:
        _hook(stage, model, shapes, folder)
    assert message in caught.value.message
    with pytest.raises(MinartError):
        _run(stage, model, shapes, folder, gen)


def test_image_size_applies_the_exif_orientation_as_read_image_does(folder, tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 8
    Image.new("RGB", (9, 3)).save(tmp_path / "turned.png", exif=exif.tobytes())
    for name in ("in.png", "turned.jpg", "turned.png"):
        _, height, width = read_image(folder / name).shape
        assert image_size(folder / name) == (width, height)
    assert image_size(folder / "turned.png") == (3, 9)
    with pytest.raises(MediaError, match="no such image file"):
        image_size(folder / "missing.png")


def test_image_size_reads_the_headers_not_the_pixels(tmp_path, gen, monkeypatch):
    import builtins

    from minart import io as minart_io

    exif = Image.Exif()
    exif[0x0112] = 6
    noise = (torch.rand(600, 400, 3, generator=gen) * 255).to(torch.uint8).numpy()
    path = tmp_path / "noise.png"
    # eXIf after the pixels (Pillow writes it before them): the chunk walk must reach it
    Image.fromarray(noise).save(path, compress_level=0)
    data = path.read_bytes()
    chunk = len(exif.tobytes()).to_bytes(4, "big") + b"eXIf" + exif.tobytes()
    path.write_bytes(data[:-12] + chunk + zlib.crc32(chunk[4:]).to_bytes(4, "big") + data[-12:])
    read = []

    class Counting:
        def __init__(self, handle):
            self.handle = handle

        def read(self, *size):
            out = self.handle.read(*size)
            read.append(len(out))
            return out

        def __getattr__(self, name):
            return getattr(self.handle, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

    monkeypatch.setattr(minart_io, "open", lambda *a: Counting(builtins.open(*a)),  # noqa: SIM115
                        raising=False)
    assert image_size(path) == (600, 400)  # turned a quarter by orientation 6
    assert path.stat().st_size > 700_000 and 0 < sum(read) < 20_000


def test_load_image_downscale_keeps_every_whole_block(tmp_path, gen):
    # 98 px / 49 used to give 1 px: F.interpolate(scale_factor=1/49) rounds 98 * (1/49) down
    write_image(tmp_path / "p.png", torch.rand(3, 98, 147, generator=gen))
    stage = get_stage("load_image")
    out = stage.run([], stage.params(path="p.png", downscale=49), StageContext(recipe_dir=tmp_path))
    assert out.shape == (3, 2, 3)


def test_describe_and_sizes():
    assert describe((1, 2, 3)) == "a 3x2 grey image"
    assert describe((5, 4, 2, 3)) == "a 5-frame 3x2 RGBA clip"
    assert describe((2, 2, 3)) == "a 3x2 2-channel image"
    assert nbytes((2, 3, 4, 5)) == 480


MISMATCH = """\
name: mix
size: [64, 48]
steps:
  sea:
    stage: fractal
  small:
    stage: fractal
    params: {width: 32, height: 24}
  mixed:
    stage: blend
    inputs: [sea, small]
outputs:
  still: {step: mixed, path: mix.png}
"""


def test_recipe_with_inputs_that_do_not_fit_fails_at_the_step(tmp_path):
    with pytest.raises(ShapeError) as caught:
        parse_recipe(MISMATCH, source="mix.yaml")
    assert str(caught.value) == (
        "mix.yaml:11:14: step 'mixed': top 'small' (a 32x24 RGB image) does not fit base 'sea' "
        "(a 64x48 RGB image); resize one to the other's size first (stage: resize)")


def test_a_parameter_error_points_at_the_parameter():
    text = """\
steps:
  grow:
    stage: fractal_frames
    params: {frames: 10, iterations: 4}
  cut:
    stage: subsample
    inputs: [grow]
    params:
      every: 2
      offset: 10
"""
    with pytest.raises(ParamError) as caught:
        parse_recipe(text, source="cut.yaml")
    assert str(caught.value) == (
        "cut.yaml:10:15: step 'cut': offset=10 is past the end of 'grow' (a 10-frame 256x256 RGB "
        "clip); use an offset below 10")


def test_output_errors_name_the_output():
    text = """\
size: [33, 20]
steps:
  grow: {stage: fractal_frames, params: {frames: 2, iterations: 2}}
outputs:
  movie: {step: grow, path: m.mp4, pad: refuse}
"""
    with pytest.raises(ParamError) as caught:
        parse_recipe(text, source="m.yaml")
    assert str(caught.value) == (
        "m.yaml:5:41: output 'movie': pad='refuse': mp4 video (4:2:0 chroma) needs an even width "
        "and height, got 33x20; use pad='even' to repeat the last column/row, or resize/crop first")


def test_shapes_follow_the_recipe_and_its_preview():
    recipe = parse_recipe(MISMATCH.replace("width: 32, height: 24", "width: 64, height: 48"))
    assert recipe.step("mixed").shape == (3, 48, 64)
    assert recipe.preview(4).step("mixed").shape == (3, 12, 16)


def _photo_over_sea(tmp_path, gen, height):
    """A recipe blending a 1003 px wide image over a fractal of the same size."""
    write_image(tmp_path / "in.png", torch.rand(3, height, 1003, generator=gen))
    text = f"""\
steps:
  photo: {{stage: load_image, params: {{path: in.png}}}}
  sea: {{stage: fractal, params: {{width: 1003, height: {height}, iterations: 2}}}}
  mixed: {{stage: blend, inputs: [photo, sea]}}
"""
    recipe = parse_recipe(text, source=str(tmp_path / "r.yaml"), path=tmp_path / "r.yaml")
    assert recipe.step("mixed").shape == (3, height, 1003)
    return recipe


def test_sizes_that_agree_in_full_agree_in_the_preview(tmp_path, gen):
    # both round down: a 1003 px image downscaled 4x and a 1003 px fractal previewed 4x are 250 px
    recipe = _photo_over_sea(tmp_path, gen, 83)
    assert recipe.preview(4).step("mixed").shape == (3, 20, 250)
    assert recipe.preview(4).preview(2).step("mixed").shape == (3, 10, 125)
    assert parse_recipe("size: [1003, 41]\nsteps: {a: {stage: fractal}}").preview(4).size == (
        250, 10)


def test_a_preview_that_breaks_a_fit_is_refused_with_the_step(tmp_path, gen):
    # a generator keeps at least 8 px in a preview; a 20 px image downscaled 4x is 5 px
    recipe = _photo_over_sea(tmp_path, gen, 20)
    with pytest.raises(ShapeError) as caught:
        recipe.preview(4)
    assert str(caught.value).startswith(
        f"{tmp_path / 'r.yaml'}:4:10: step 'mixed': the preview (4x smaller): top 'sea' (a 250x8 "
        "RGB image) does not fit base 'photo' (a 250x5 RGB image)")


def test_check_lists_what_each_step_makes_and_refuses_a_misfit(tmp_path, capsys):
    good = tmp_path / "good.yaml"
    good.write_text(MISMATCH.replace("width: 32, height: 24", "width: 64, height: 48"))
    assert main(["check", str(good)]) == 0
    assert "  mixed  blend    a 64x48 RGB image, 36.9 kB" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text(MISMATCH)
    assert main(["check", str(bad)]) == 2
    assert capsys.readouterr().err.startswith(
        f"error: {bad}:11:14: step 'mixed': top 'small' (a 32x24 RGB image) does not fit")


def test_a_result_larger_than_the_device_memory_is_refused_before_any_step_runs(tmp_path):
    from minart import engine
    from minart.cache import format_size

    recipe = tmp_path / "huge.yaml"
    recipe.write_text("size: [16, 16]\nsteps:\n"
                      "  f: {stage: fractal_frames, params: {frames: 1000, iterations: 2}}\n"
                      "  r: {stage: resize, input: f, params: {width: 16384, height: 16384}}\n")
    with pytest.raises(ParamError) as caught:
        engine.load_plan(recipe, output_dir=tmp_path)
    assert str(caught.value) == (
        f"{recipe}:4:6: step 'r': this step would make a 1000-frame 16384x16384 RGB clip "
        f"(3.2 TB) beside its inputs (3.1 MB), more than the "
        f"{format_size(engine.device_memory('cpu'))} of memory on cpu; "
        "lower its size, frames or iterations, or render with --preview")
    fits = recipe.read_text().replace("16384", "64")
    recipe.write_text(fits)
    assert engine.load_plan(recipe, output_dir=tmp_path).recipe.step("r").shape == (1000, 3, 64, 64)


def test_a_step_must_fit_beside_its_inputs(tmp_path, monkeypatch):
    from minart import engine

    recipe = tmp_path / "pair.yaml"
    recipe.write_text("size: [64, 64]\nsteps:\n"  # each image: 64 * 64 * 3 * 4 = 49152 bytes
                      "  a: {stage: fractal, params: {iterations: 2}}\n"
                      "  b: {stage: fractal, params: {iterations: 2}}\n"
                      "  mixed: {stage: blend, inputs: [a, b]}\n"
                      "  twice: {stage: blend, inputs: [a, a]}\n")
    monkeypatch.setattr(engine, "device_memory", lambda device: 3 * 49152)
    engine.load_plan(recipe, output_dir=tmp_path)  # a result and two inputs: exactly full
    monkeypatch.setattr(engine, "device_memory", lambda device: 3 * 49152 - 1)
    engine._load_plan_cached.cache_clear()  # plans are kept per recipe file and stamp
    with pytest.raises(ParamError) as caught:
        engine.load_plan(recipe, output_dir=tmp_path)
    assert str(caught.value) == (
        f"{recipe}:5:10: step 'mixed': this step would make a 64x64 RGB image (49.2 kB) beside "
        "its inputs (98.3 kB), more than the 147.5 kB of memory on cpu; lower its size, frames "
        "or iterations, or render with --preview")
    recipe.write_text(recipe.read_text().replace("  mixed: {stage: blend, inputs: [a, b]}\n", ""))
    engine.load_plan(recipe, output_dir=tmp_path)  # one input used twice is held once


def _cgroup_tree(tmp_path, membership, files):
    (tmp_path / "proc").write_text(membership)
    for name, text in files.items():
        path = tmp_path / "fs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return {"root": tmp_path / "fs", "membership": tmp_path / "proc"}


@pytest.mark.parametrize(("membership", "files", "expected"), [
    # cgroup v2: the lowest of the group's and its parents' memory.max
    ("0::/box/job\n", {"box/job/memory.max": "max\n", "box/memory.max": "2147483648\n",
                       "memory.max": "max\n"}, 2147483648),
    ("0::/box/job\n", {"box/job/memory.max": "1073741824\n", "box/memory.max": "4294967296"},
     1073741824),
    ("0::/\n", {"memory.max": "max\n"}, None),
    # cgroup v1: the memory controller's line; "no limit" is a number near 2**63
    ("4:memory:/job\n3:cpu:/\n", {"memory/job/memory.limit_in_bytes": "536870912\n"},
     536870912),
    ("5:cpuacct,memory:/job\n", {"memory/job/memory.limit_in_bytes": "9223372036854771712\n",
                                  "memory/memory.limit_in_bytes": "9223372036854771712\n"}, None),
    # the group's folder is not visible (another namespace): nothing known
    ("0::/elsewhere\n", {}, None),
])
def test_the_cgroup_memory_limit_is_the_lowest_on_the_way_up(tmp_path, membership, files,
                                                              expected):
    from minart.engine import cgroup_memory_limit

    assert cgroup_memory_limit(**_cgroup_tree(tmp_path, membership, files)) == expected


def test_the_cpu_memory_is_the_cgroup_limit_when_lower(monkeypatch):
    from minart import engine

    physical = engine.device_memory("cpu")
    monkeypatch.setattr(engine, "cgroup_memory_limit", lambda: 1 << 30)
    assert engine.device_memory("cpu") == min(physical, 1 << 30)
    monkeypatch.setattr(engine, "cgroup_memory_limit", lambda: None)
    assert engine.device_memory("cpu") == physical
