"""The built-in stages run the library functions they mirror, on tiny tensors."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from pydantic import ValidationError

from minart import composite
from minart.diffusion import perona_malik
from minart.errors import MediaError, MinartError, ParamError, RecipeError, ShapeError
from minart.fractal import fractal
from minart.io import read_metadata, write_image
from minart.recipe import parse_recipe
from minart.registry import CheckContext, StageContext, get_stage
from minart.stages import (
    check_output_template,
    contact_sheet_indices,
    expand_output_path,
    file_sha256,
    output_source,
)


def _run(stage: str, inputs=(), ctx: StageContext | None = None, **params):
    entry = get_stage(stage)
    return entry.run(list(inputs), entry.params(**params), ctx or StageContext(size=(12, 8)))


@pytest.fixture
def img(gen) -> torch.Tensor:
    return torch.rand(3, 8, 12, generator=gen)


@pytest.fixture
def clip(gen) -> torch.Tensor:
    return torch.rand(5, 3, 8, 12, generator=gen)


# -- output paths --------------------------------------------------------------------------------


def test_template_fields():
    assert check_output_template("{name}/{date}/{seed}-{step}.png") == ["name", "date", "seed",
                                                                         "step"]
    assert check_output_template("plain.png") == []


@pytest.mark.parametrize("template,message", [
    ("", "path '' must be a non-empty relative file path"),
    ("/abs/x.png", "path '/abs/x.png' must be relative to the output folder, not absolute"),
    ("~/x.png", "path '~/x.png' must be relative to the output folder, not absolute"),
    ("C:/x.png", "path 'C:/x.png' must be relative to the output folder, not absolute"),
    ("a/../../x.png", "path 'a/../../x.png' must stay inside the output folder (no '..')"),
    ("a\\x.png", "path 'a\\\\x.png' must use '/' between folders, not '\\'"),
    ("{user}.png", "path '{user}.png' uses unknown field {user} (fields: {name}, {seed}, {date}, "
                   "{step})"),
    ("{seed:04d}.png", "path '{seed:04d}.png': field {seed} takes no format or conversion; "
                       "write {seed}"),
    ("{nmae}.png", "path '{nmae}.png' uses unknown field {nmae}; did you mean 'name'? (fields: "
                   "{name}, {seed}, {date}, {step})"),
    ("{name.png", "path '{name.png' has a '{' that is never closed; add the missing '}' or "
                  "write '{{' for a literal brace"),
    ("x\x00.png", "path 'x\\x00.png' must not contain control characters"),
    ("a/" + "b" * 256 + ".png", f"path 'a/{'b' * 256}.png' has a name longer than 255 bytes, more "
                                "than a file system allows"),
])
def test_unsafe_templates_are_refused(template, message):
    with pytest.raises(RecipeError) as info:
        check_output_template(template)
    assert str(info.value) == message


def test_expand_output_path_stays_in_the_folder(tmp_path):
    path = expand_output_path("{name}/{date}-{seed}-{step}.png", output_dir=tmp_path,
                              name="ocean", seed=7, step="art", date="2026-11-27")
    assert path == tmp_path.resolve() / "ocean" / "2026-11-27-7-art.png"
    today = expand_output_path("{date}.png", output_dir=tmp_path, name="n", seed=0, step="s")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d\.png", today.name)
    with pytest.raises(RecipeError, match="outside the output folder"):
        expand_output_path("{name}/x.png", output_dir=tmp_path, name="..", seed=0, step="s")


def test_output_source_of_outputs_and_writer_steps():
    r = parse_recipe("steps:\n  a: {stage: fractal_frames, params: {frames: 2}}\n"
                     "  w: {stage: encode_video, input: a, params: {path: x.gif}}\n"
                     "outputs:\n  s: {step: a, path: s.png, sheet: true}\n")
    assert output_source(r, "out.s") == "a"  # through the contact sheet
    assert output_source(r, "w") == "a"
    assert output_source(r, "a") == "a"


def test_contact_sheet_indices():
    assert contact_sheet_indices(10, 4) == [0, 3, 6, 9]
    assert contact_sheet_indices(3, 12) == [0, 1, 2]
    assert contact_sheet_indices(5, 1) == [4]
    assert contact_sheet_indices(31, 12)[-1] == 30


# -- parameter forms -----------------------------------------------------------------------------


def test_complex_forms_and_strict_numbers():
    model = get_stage("fractal").params
    assert model(coefficient=[0, -0.5]).coefficient == (0.0, -0.5)
    assert model(coefficient={"re": 1}).coefficient == (1.0, 0.0)
    assert model(coefficient=0.3).coefficient == (0.3, 0.0)
    assert model(palette=[[0, "#000000"], [1, [1, 1, 1]]]).palette == ((0.0, "#000000"),
                                                                       (1.0, (1.0, 1.0, 1.0)))
    for bad in ({"power": "7"}, {"power": True}, {"span": "2"}, {"coefficient": [1, 2, 3]}):
        with pytest.raises(ValidationError):
            model(**bad)


# -- running stages ------------------------------------------------------------------------------


def test_fractal_uses_the_recipe_size_and_matches_the_library():
    out = _run("fractal", iterations=8, power=3)
    assert out.shape == (3, 8, 12)
    assert torch.equal(out, fractal(12, 8, iterations=8, power=3))
    frames = _run("fractal_frames", iterations=8, frames=3, width=10, height=6)
    assert frames.shape == (3, 3, 6, 10)


def test_fractal_check_hook_surfaces_library_errors():
    ctx = CheckContext(recipe_dir=Path("."), size=(16, 16))
    params = get_stage("fractal").params(formula="multibrot", power=2, coloring="pole")
    with pytest.raises(ParamError, match="coloring='pole'"):
        get_stage("fractal").check(params, ctx)
    assert get_stage("fractal").check(get_stage("fractal").params(), ctx) == {"width": 16,
                                                                              "height": 16}


@pytest.mark.parametrize("stage", ["fractal", "fractal_frames"])
@pytest.mark.parametrize("params, message", [
    (dict(width=8192, supersample=3), "supersample=3 at 8192x16 computes 24576x48 samples"),
    (dict(width=512, center=[0.3, 0.5], span=1e-4), "below the resolution of float32; use dtype "
                                                   "float64"),
])
def test_fractal_check_hook_checks_the_real_view_not_its_probe(stage, params, message):
    ctx = CheckContext(recipe_dir=Path("."), size=(16, 16))
    with pytest.raises(ParamError, match=re.escape(message)):
        get_stage(stage).check(get_stage(stage).params(**params), ctx)
    if "span" in params:  # float64 resolves it
        deep = get_stage(stage).params(**params, dtype="float64")
        assert get_stage(stage).check(deep, ctx)["width"] == 512


def test_perona_malik_stage_is_the_library_call_and_reports_progress(img, clip):
    seen = []
    ctx = StageContext(progress=lambda done, total: seen.append((done, total)))
    out = _run("perona_malik", [img], ctx, steps=3, kappa=0.1, dt=0.2, scheme="seed")
    assert torch.equal(out, perona_malik(img, steps=3, kappa=0.1, dt=0.2, scheme="seed"))
    assert seen == [(2, 3), (3, 3)]  # in pairs of steps, and after the last
    assert _run("perona_malik", [clip], steps=1, kappa=0.1, dt=0.2).shape == clip.shape


def test_perona_malik_check_hook_uses_the_library_bound():
    entry = get_stage("perona_malik")
    params = entry.params(steps=5, kappa=0.1, dt=0.4, substep="off")
    with pytest.raises(ParamError) as info:
        entry.check(params, CheckContext(recipe_dir=Path("."), size=(8, 8)))
    assert str(info.value) == ("dt=0.4 exceeds the stability bound 0.25 for scheme 'classic'; "
                               "use dt <= 0.25 or substep: auto")
    assert info.value.param == "dt"


def test_perona_malik_sweep_stage_is_a_clip_of_the_library_variants(img):
    seen = []
    ctx = StageContext(progress=lambda done, total: seen.append((done, total)))
    out = _run("perona_malik_sweep", [img], ctx, steps=3, kappa=[0.05, 0.1, 0.3], dt=0.2)
    assert out.shape == (3, *img.shape) and seen == [(2, 3), (3, 3)]
    for n, kappa in enumerate((0.05, 0.1, 0.3)):
        assert torch.equal(out[n], perona_malik(img, steps=3, kappa=kappa, dt=0.2)), n


@pytest.mark.parametrize(("params", "message"), [
    ("{steps: 2, kappa: [0.1, 0.2, 0.3], dt: [0.1, 0.2]}",
     "<string>:3:91: step 's': dt has 2 values but kappa has 3; give dt 3 values or one"),
    ("{steps: 2, kappa: [0.1, 0, 0.3], dt: 0.2}",
     "<string>:3:76: step 's': kappa[1]=0 must be >= 1e-18"),
    ("{steps: 2, kappa: [], dt: 0.2}",
     "<string>:3:70: step 's': kappa=[] has 0 items; give at least 1"),
    ("{steps: 2, kappa: 0.1, dt: [0.1, 0.4], substep: off}",
     "<string>:3:79: step 's': dt[1]=0.4 exceeds the stability bound 0.25 for scheme "
     "'classic'; use dt <= 0.25 or substep: auto"),
])
def test_perona_malik_sweep_errors_point_at_the_list(params, message):
    """Located at the list (the dt list at 3:91), or at its bad item (kappa's 0 at 3:76)."""
    text = f"steps:\n  z: {{stage: fractal}}\n  s: {{stage: perona_malik_sweep, input: z, params: {params}}}\n"
    with pytest.raises(MinartError) as info:
        parse_recipe(text)
    assert str(info.value) == message


def test_perona_malik_sweep_shapes_and_warnings():
    text = ("size: [16, 8]\nsteps:\n  z: {stage: fractal}\n"
            "  s: {stage: perona_malik_sweep, input: z, params: {steps: 2, kappa: 0.1, dt: [0.1, 0.2]}}\n"
            "  one: {stage: perona_malik_sweep, input: z, params: {steps: 2, kappa: 0.1, dt: 0.2}}\n"
            "  sheet: {stage: contact_sheet, input: s}\n")
    recipe = parse_recipe(text)
    shapes = {step.name: step.shape for step in recipe.steps}
    assert shapes["s"] == (2, 3, 8, 16) and shapes["one"] == (1, 3, 8, 16)
    assert recipe.warnings == (
        "<string>:5:72: step 'one': kappa=0.1 and dt=0.2 make a sweep of one variant; give a list "
        "of values to either, or use stage perona_malik",)
    with pytest.raises(MinartError, match="input 'c' produces a clip of frames but stage "
                                          "'perona_malik_sweep' needs an image"):
        parse_recipe("steps:\n  c: {stage: fractal_frames, params: {frames: 2}}\n"
                     "  s: {stage: perona_malik_sweep, input: c, params: {steps: 1, kappa: [0.1], dt: 0.2}}\n")


def test_compositing_stages_match_the_library(img, clip, gen):
    other = torch.rand(3, 8, 12, generator=gen)
    assert torch.equal(_run("blend", [img, other], mode="multiply", opacity=0.5),
                       composite.blend(img, other, mode="multiply", opacity=0.5))
    mask = _run("luminance_mask", [other], low=0.2, high=0.7, invert=True)
    assert torch.equal(mask, composite.luminance_mask(other, low=0.2, high=0.7, invert=True))
    assert torch.equal(_run("blend", [img, other, mask], mode="screen"),
                       composite.blend(img, other, mode="screen", mask=mask))
    assert _run("resize", [img], width=6, height=4).shape == (3, 4, 6)
    assert _run("resize", [clip], fit="contain").shape == (5, 3, 8, 12)  # the recipe size
    tiles = _run("grid", [img, clip], columns=3, spacing=1)
    assert torch.equal(tiles, composite.grid([img, *clip.unbind(0)], columns=3, spacing=1))
    assert _run("crossfade", [img, other], frames=4).shape == (4, 3, 8, 12)
    assert torch.equal(_run("reverse", [clip]), clip.flip(0))
    assert _run("boomerang", [clip]).shape[0] == composite.boomerang(clip).shape[0]
    assert torch.equal(_run("subsample", [clip], every=2, offset=1), clip[1::2])
    assert _run("concatenate", [clip, img]).shape == (6, 3, 8, 12)
    assert _run("hold", [clip], first=1, last=2).shape == (8, 3, 8, 12)
    sheet = _run("contact_sheet", [clip], frames=3, columns=3, spacing=0)
    assert torch.equal(sheet, composite.grid(clip[[0, 2, 4]], columns=3, spacing=0,
                                             background=1.0))


@pytest.mark.parametrize("background, given, ink", [
    (1.0, None, 0.0), ([0.0, 0.0, 0.2], None, 1.0), ([0.9, 0.9, 0.2], None, 0.0),
    (0.0, [1.0, 0.5, 0.0], [1.0, 0.5, 0.0])])
def test_contact_sheet_captions_stand_out_on_the_background_or_take_a_colour(clip, background,
                                                                            given, ink):
    sheet = _run("contact_sheet", [clip], frames=2, labels=True, background=background,
                 label_color=given)
    expected = composite.grid(clip[[0, 4]], background=background, labels=["0", "4"],
                              label_color=ink)
    assert torch.equal(sheet, expected)


def test_contact_sheet_captions_are_those_of_the_frames_it_picks(clip):
    sheet = _run("contact_sheet", [clip], frames=2, labels=["a", "b", "c", "d", "e"])
    assert torch.equal(sheet, composite.grid(clip[[0, 4]], background=1.0, labels=["a", "e"]))
    for one in ("x", ["x"]):  # one caption serves every frame
        sheet = _run("contact_sheet", [clip], frames=2, labels=one)
        assert torch.equal(sheet, composite.grid(clip[[0, 4]], background=1.0, labels=["x", "x"]))
    with pytest.raises(ParamError, match="labels has 2 captions but the clip has 5 frames"):
        _run("contact_sheet", [clip], frames=2, labels=["a", "b"])


def test_load_image_reads_relative_to_the_recipe_and_downscales(tmp_path, img):
    write_image(tmp_path / "in.png", img)
    ctx = StageContext(recipe_dir=tmp_path)
    out = _run("load_image", ctx=ctx, path="in.png")
    assert out.shape == (3, 8, 12) and torch.allclose(out, img, atol=1 / 255)
    half = _run("load_image", ctx=ctx, path="in.png", downscale=2)
    assert torch.allclose(half, torch.nn.functional.avg_pool2d(out[None], 2)[0], atol=1e-6)
    with pytest.raises(MediaError, match="changed since the recipe was checked"):
        _run("load_image", ctx=ctx, path="in.png", sha256="0" * 64)
    assert _run("load_image", ctx=ctx, path="in.png",
                sha256=file_sha256(tmp_path / "in.png")).shape == (3, 8, 12)


def test_load_image_check_hook_refuses_a_file_cut_short_or_damaged(tmp_path, img):
    write_image(tmp_path / "in.png", img)
    write_image(tmp_path / "in.jpg", img)
    entry, ctx = get_stage("load_image"), CheckContext(recipe_dir=tmp_path, size=(8, 8))
    for name in ("in.png", "in.jpg"):
        assert entry.check(entry.params(path=name), ctx) == {
            "sha256": file_sha256(tmp_path / name)}
    data = (tmp_path / "in.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[:len(data) // 2])
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "in.jpg").read_bytes()[:-40])
    with pytest.raises(ParamError) as info:
        entry.check(entry.params(path="cut.png"), ctx)
    assert str(info.value) == (f"path='cut.png': truncated PNG: the file ends inside its 'IDAT' "
                               f"chunk (at byte {len(data) // 2}); it was cut short or damaged: "
                               "copy or export it again")
    assert info.value.param == "path"
    with pytest.raises(ParamError, match=r"^path='cut\.jpg': not a readable image \(OSError: image "
                                         r"file is truncated"):
        entry.check(entry.params(path="cut.jpg"), ctx)
    with pytest.raises(MediaError, match=r"cut\.png: truncated PNG"):  # and the run says the same
        _run("load_image", ctx=StageContext(recipe_dir=tmp_path), path="cut.png")


def test_save_image_writes_inside_the_output_folder_with_the_recipe(tmp_path, img):
    recipe = SimpleNamespace(name="tiny", text="name: tiny\n", path=None, overrides=("seed=3",),
                             preview_factor=4, steps=[], outputs=[])
    ctx = StageContext(output_dir=tmp_path, recipe=recipe, seed=3, step="save")
    out = _run("save_image", [img], ctx, path="{name}/{seed}.png")
    assert out is img
    target = tmp_path / "tiny" / "3.png"
    assert ctx.written == [target.resolve()] and target.is_file()
    meta = read_metadata(target)
    assert meta["minart_recipe"] == "name: tiny\n"
    assert json.loads(meta["minart_overrides"]) == ["seed=3"]
    assert meta["minart_preview"] == "4" and meta["minart_seed"] == "3"
    assert get_stage("save_image").targets(get_stage("save_image").params(path="a.png"), ctx) == [
        tmp_path.resolve() / "a.png"]


def test_encode_video_writes_a_gif(tmp_path, clip):
    ctx = StageContext(output_dir=tmp_path, step="movie")
    out = _run("encode_video", [clip], ctx, path="{step}.gif", fps=10, embed_recipe=False)
    assert out is clip and (tmp_path / "movie.gif").stat().st_size > 0


@pytest.mark.parametrize("stage,params,message", [
    ("save_image", {"path": "x.jpg", "bits": 16}, "bits=16 needs a .png path, got 'x.jpg'"),
    ("save_image", {"path": "x.gif"}, "path='x.gif' needs an image extension (.png, .jpg, .jpeg)"),
    ("encode_video", {"path": "x.mp4", "loop": 1},
     "loop=1 applies to GIF only; mp4 videos loop in the player, so leave loop out"),
    ("encode_video", {"path": "x.webm", "codec": "libx264"},
     "codec='libx264' does not fit a .webm file; use libvpx-vp9"),
    ("encode_video", {"path": "x.gif", "quality": 10},
     "quality=10 applies to WebM/MP4 only; a GIF has one 256-colour palette and no quality "
     "setting, so leave quality out"),
    ("save_image", {"path": "x.png", "quality": 80},
     "quality=80 applies to JPEG only; PNG is lossless, so leave quality out"),
    ("encode_video", {"path": "x.gif", "fps": 240},
     "fps=240 does not fit a GIF: a GIF stores each frame's delay in whole 1/100 s, at most "
     "65535 (2 bytes, 655.35 s), and browsers play delays under 2/100 s as 1/10 s; use "
     "0.001526 <= fps <= 50, or a .webm/.mp4 path"),
    ("encode_video", {"path": "x.gif", "fps": 0.001},
     "fps=0.001 does not fit a GIF: a GIF stores each frame's delay in whole 1/100 s, at most "
     "65535 (2 bytes, 655.35 s), and browsers play delays under 2/100 s as 1/10 s; use "
     "0.001526 <= fps <= 50, or a .webm/.mp4 path"),
])
def test_output_check_hooks(stage, params, message):
    entry = get_stage(stage)
    with pytest.raises(ParamError) as info:
        entry.check(entry.params(**params), CheckContext(recipe_dir=Path("."), size=(8, 8)))
    assert str(info.value) == message


def test_output_options_the_format_uses_pass_the_check():
    ctx = CheckContext(recipe_dir=Path("."), size=(8, 8))
    video, image = get_stage("encode_video"), get_stage("save_image")
    for fps in (24, 30, 12, 50, 0.002):
        video.check(video.params(path="x.gif", fps=fps, loop=2), ctx)
    for path in ("x.webm", "x.mp4"):
        video.check(video.params(path=path, fps=240, quality=10), ctx)
    image.check(image.params(path="x.jpg", quality=80), ctx)


def test_recipe_check_points_at_the_parameter_a_gif_or_a_clip_cannot_take():
    text = ("size: [16, 16]\n"
            "steps:\n"
            "  art: {stage: fractal_frames, params: {frames: 3}}\n"
            "outputs:\n"
            "  gif: {step: art, path: a.gif, fps: 240}\n"
            "  sheet: {step: art, path: s.png, sheet: {frames: 50}}\n")
    with pytest.raises(ParamError, match=r"^<string>:5:38: output 'gif': fps=240 does not fit a "
                       r"GIF: .*; use 0.001526 <= fps <= 50, or a .webm/.mp4 path$"):
        parse_recipe(text)
    with pytest.raises(ParamError, match=r"^<string>:5:42: output 'gif': quality=10 applies to "
                       r"WebM/MP4 only"):
        parse_recipe(text.replace("fps: 240", "quality: 10"))
    text = text.replace("fps: 240", "fps: 30")
    with pytest.raises(ParamError, match=r"^<string>:6:51: output 'sheet': frames=50 is more than "
                       r"the clip's 3 frames; use frames <= 3, or leave frames out for up to 12$"):
        parse_recipe(text)
    sheet = parse_recipe(text.replace("{frames: 50}", "true")).step("out.sheet.sheet")
    # sheet: true on a clip shorter than 12 frames shows all of its frames
    assert sheet.shape == composite.grid_shape(3, (3, 16, 16), columns=None, spacing=4,
                                               labels=False)


def test_preview_rules():
    pm = get_stage("perona_malik")
    assert pm.preview(pm.params(steps=40, kappa=0.1, dt=0.2), 4) == {"steps": 2}
    assert pm.preview(pm.params(steps=0, kappa=0.1, dt=0.2), 4) == {"steps": 0}
    sweep = get_stage("perona_malik_sweep")
    assert sweep.preview(sweep.params(steps=40, kappa=[0.1, 0.2], dt=0.2), 4) == {"steps": 2}
    mini = get_stage("minimize")
    # the schedule runs factor times faster, keeping the frame count and the refresh's frame
    assert mini.preview(mini.params(iterations=10, lr=1e-6), 2) == {
        "lr": 4e-6, "iterations": 5, "frame_every": 38, "refresh_every": 190, "refresh_at": 152}
    ocean = mini.params(iterations=600, frame_every=20, lr=6e-6, refresh_every=375, refresh_at=300)
    p = mini.preview(ocean, 4)
    assert p == {"lr": pytest.approx(96e-6), "iterations": 150, "frame_every": 5,
                 "refresh_every": 94, "refresh_at": 75}
    assert -(-600 // 20) == -(-p["iterations"] // p["frame_every"])  # 30 frames either way
    assert 300 // 20 == p["refresh_at"] // p["frame_every"]  # the refresh lands on frame 15
    for factor in (2, 3, 4, 8):
        for it, fe in ((600, 20), (1000, 75), (7, 3), (5, 1)):
            q = mini.preview(mini.params(iterations=it, frame_every=fe), factor)
            assert -(-it // fe) == -(-q["iterations"] // q["frame_every"]), (factor, it, fe)
            assert 0 <= q["refresh_at"] < q["refresh_every"]


def test_a_preview_keeps_a_refresh_schedule_that_fires():
    from minart.minimize import _check_refresh_schedule

    mini = get_stage("minimize")
    for fe, every in ((10, 25), (7, 30), (12, 45), (3, 8)):
        for at in range(0, every, math.gcd(fe, every)):  # every schedule valid at full size
            params = mini.params(iterations=10 * fe, frame_every=fe, refresh_every=every,
                                 refresh_at=at)
            for factor in (2, 3, 4):
                q = mini.preview(params, factor)
                _check_refresh_schedule(q["frame_every"], q["refresh_every"], q["refresh_at"])
    none = mini.preview(mini.params(iterations=100, frame_every=10, refresh_every=None), 4)
    assert none["refresh_every"] is None
    assert "lr" not in mini.preview(mini.params(iterations=10, reduction="mean"), 2)
    video = mini.params(iterations=40, frame_every=8, loss="seed_video", lr=1e-6)
    assert mini.preview(video, 2) == {"lr": 4e-6}  # reads input frame i % T: schedule kept
    frac = get_stage("fractal")
    assert frac.preview(frac.params(width=100, height=20), 4) == {"width": 25, "height": 8}
    assert get_stage("load_image").preview(get_stage("load_image").params(path="x"), 4) == {
        "downscale": 4}


def test_minimize_stage_matches_the_library_and_saves_checkpoints(img):
    from minart.minimize import minimize

    class Memory:
        def __init__(self):
            self.saved = []

        def load(self):
            return None

        def save(self, iteration, state):
            self.saved.append(iteration)

    memory = Memory()
    out = _run("minimize", [img], StageContext(checkpoint=memory), iterations=10, frame_every=5,
               lr=1e-3)
    assert torch.equal(out, minimize(img, iterations=10, frame_every=5, lr=1e-3).frames)
    assert out.shape == (2, 3, 8, 12) and len(memory.saved) == 2


def test_minimize_stage_with_refresh_every_null_never_refreshes(img):
    # null is the artist's choice over the default period (375): it must reach the library as
    # None, not fall back to the library's default, which would refresh at refresh_at
    from minart.minimize import minimize

    kw = dict(iterations=12, frame_every=4, lr=1e-3, refresh_at=4)
    out = _run("minimize", [img], refresh_every=None, **kw)
    assert torch.equal(out, minimize(img, refresh_every=None, **kw).frames)
    assert not torch.equal(out, minimize(img, refresh_every=375, **kw).frames)


@pytest.mark.parametrize("text,message", [
    ("  a: {stage: fractal_frames, params: {frames: 2}}\n"
     "  b: {stage: minimize, input: a, params: {iterations: 5}}\n",
     "<string>:3:42: step 'b': loss='seed' takes one image, but the input is a clip of frames; "
     "use loss: seed_video"),
    ("  a: {stage: fractal}\n"
     "  b: {stage: minimize, input: a, params: {iterations: 5, refresh_at: 400}}\n",
     "<string>:3:70: step 'b': refresh_at=400 must be < refresh_every=375"),
])
def test_minimize_check_hook(text, message):
    with pytest.raises(ParamError) as info:
        parse_recipe("steps:\n" + text)
    assert str(info.value) == message
    assert parse_recipe("steps:\n" + text.replace("iterations: 5", "iterations: 5, loss: "
                                                  "seed_video").replace(", refresh_at: 400", ""))


def test_a_refresh_at_without_refresh_is_a_located_warning(capsys, tmp_path):
    from minart.cli import main

    text = ("steps:\n  a: {stage: fractal}\n"
            "  b: {stage: minimize, input: a, params: {iterations: 5, refresh_every: null,\n"
            "      refresh_at: 25}}\n")
    assert parse_recipe(text).warnings == (
        "<string>:4:19: step 'b': refresh_at=25 has no effect with refresh_every: null (no "
        "refresh); remove refresh_at, or give refresh_every a period",)
    assert parse_recipe(text.replace(",\n      refresh_at: 25", "")).warnings == ()
    assert parse_recipe(text.replace("null", "100")).warnings == ()
    # an override that turns the refresh off warns too, naming the override
    recipe = tmp_path / "r.yaml"
    recipe.write_text(text.replace("null", "100"))
    assert main(["check", str(recipe), "--set", "steps.b.params.refresh_every=null"]) == 0
    err = capsys.readouterr().err
    assert err == (f"warning: {recipe}:4:19: step 'b': refresh_at=25 has no effect with "
                   "refresh_every: null (no refresh); remove refresh_at, or give refresh_every a "
                   "period (after --set steps.b.params.refresh_every=null)\n")
    # a parameter without effect that the command line itself sets: the advice drops that --set
    recipe.write_text(text.replace(",\n      refresh_at: 25", ""))
    assert main(["check", str(recipe), "--set", "steps.b.params.refresh_at=30"]) == 0
    assert capsys.readouterr().err == (
        "warning: --set steps.b.params.refresh_at: step 'b': refresh_at=30 has no effect with "
        "refresh_every: null (no refresh); drop --set steps.b.params.refresh_at, or give "
        "refresh_every a period\n")



@pytest.mark.parametrize("step,used,message", [
    ("{stage: fractal, params: {formula: multibrot, power: 2, eps: 0.5}}",
     "{stage: fractal, params: {eps: 0.5}}",
     "eps=0.5 has no effect with formula 'multibrot' (eps is the "
     "inverse-power map's pole radius); remove eps"),
    ("{stage: fractal, params: {bailout: 8}}",
     "{stage: fractal, params: {formula: multibrot, power: 2, bailout: 8}}",
     "bailout=8.0 has no effect with formula 'inverse_power' (bailout "
     "is the Multibrot escape radius); remove bailout"),
    ("{stage: fractal, params: {trap_angle: 1}}",
     "{stage: fractal, params: {coloring: trap_line, trap_angle: 1}}",
     "trap_angle=1.0 has no effect with coloring 'auto' ('pole' for "
     "'inverse_power'): only 'trap_line' uses it; remove trap_angle"),
    ("{stage: fractal_frames, params: {frames: 2, coloring: modulus, interior: '#ff0000'}}",
     "{stage: fractal_frames, params: {frames: 2, coloring: pole, interior: '#ff0000'}}",
     "interior='#ff0000' has no effect with coloring 'modulus': only "
     "'pole' and 'smooth' paint the orbits that never finish in it; remove interior"),
    ("{stage: perona_malik, input: z, params: {steps: 1, kappa: 0.1, dt: 0.2, scheme: seed, "
     "substep: 'off'}}",
     "{stage: perona_malik, input: z, params: {steps: 1, kappa: 0.1, dt: 0.2, substep: 'off'}}",
     "substep='off' has no effect with scheme 'seed' (it splits "
     "'classic' steps); remove substep"),
    ("{stage: resize, input: z, params: {width: 16, background: 0.5}}",
     "{stage: resize, input: z, params: {width: 16, background: 0.5, fit: contain}}",
     "background=0.5 has no effect with fit 'stretch' (it fills the "
     "letterbox of 'contain'); remove background"),
    ("{stage: minimize, input: z, params: {iterations: 2, refresh_every: null, blend: 0.3}}",
     "{stage: minimize, input: z, params: {iterations: 2, blend: 0.3}}",
     "blend=0.3 has no effect with refresh_every: null (no refresh); "
     "remove blend, or give refresh_every a period"),
    ("{stage: grid, inputs: [z, z], params: {label_color: [1, 0, 0]}}",
     "{stage: grid, inputs: [z, z], params: {label_color: [1, 0, 0], labels: [x, y]}}",
     "label_color=[1.0, 0.0, 0.0] has no effect without labels; "
     "remove label_color, or add labels"),
    ("{stage: contact_sheet, input: c, params: {label_color: 1}}",
     "{stage: contact_sheet, input: c, params: {label_color: 1, labels: true}}",
     "label_color=1.0 has no effect without labels; remove "
     "label_color, or set labels: true"),
])
def test_a_parameter_without_effect_is_a_located_warning(step, used, message):
    """Each option a stage ignores in some setting warns where it is set, and only there."""
    rest = "  z: {stage: fractal}\n  c: {stage: fractal_frames, params: {frames: 2}}\n"
    name = message.split("=")[0]
    column = len("  a: ") + re.search(f"[{{ ]{name}: ", step).end() + 1  # the value's column
    assert parse_recipe(f"steps:\n  a: {step}\n{rest}").warnings == (
        f"<string>:2:{column}: step 'a': {message}",)
    assert parse_recipe(f"steps:\n  a: {used}\n{rest}").warnings == ()


def test_captions_wider_than_their_tiles_are_a_warning():
    text = ("size: [40, 40]\nsteps:\n  a: {stage: fractal}\n"
            "  c: {stage: fractal_frames, params: {frames: 3}}\n"
            "  t: {stage: grid, inputs: [a, a], params: {labels: [fits40, one too wide]}}\n"
            "outputs:\n  s: {step: c, path: s.png, sheet: {labels: \"budget {c.iterations}\"}}\n")
    assert parse_recipe(text).warnings == (
        "<string>:5:53: step 't': the caption 'one too wide' is 72 px wide but the tiles are "
        "40 px, so its end is cut off; shorten the labels (6 px a character) or make the tiles "
        "wider",
        "<string>:7:45: output 's': the caption 'budget 22' is 54 px wide but the tiles are 40 px, "
        "so its end is cut off (and 2 more); shorten the labels (6 px a character) or make the "
        "tiles wider")
    assert parse_recipe(text.replace("40, 40", "72, 72")).warnings == ()


def test_more_columns_than_tiles_is_a_warning_and_outputs_name_themselves_in_warnings():
    text = ("steps:\n  a: {stage: fractal}\n  c: {stage: fractal_frames, params: {frames: 3}}\n"
            "  t: {stage: grid, inputs: [a, a, a], params: {columns: 5}}\n"
            "outputs:\n  s: {step: c, path: s.png, sheet: {columns: 4, label_color: 1}}\n")
    assert parse_recipe(text).warnings == (
        "<string>:4:57: step 't': columns=5 but there are 3 tiles, so 2 column(s) stay empty; "
        "use columns <= 3, or leave columns out",
        "<string>:6:62: output 's': label_color=1.0 has no effect without labels; remove "
        "label_color, or set labels: true",
        "<string>:6:46: output 's': columns=4 but there are 3 frames on the sheet, so 1 "
        "column(s) stay empty; use columns <= 3, or leave columns out")
    fitting = text.replace("columns: 5", "columns: 3").replace("columns: 4, label_color: 1",
                                                                "columns: 3")
    assert parse_recipe(fitting).warnings == ()
    # set on the command line: the advice is to drop that override, not to edit the file
    assert parse_recipe(fitting, overrides=["outputs.s.sheet.columns=4"]).warnings == (
        "--set outputs.s.sheet.columns: output 's': columns=4 but there are 3 frames on the "
        "sheet, so 1 column(s) stay empty; use columns <= 3, or drop --set "
        "outputs.s.sheet.columns",)


def test_a_mask_blends_the_top_in_where_it_is_bright_and_is_checked_in_the_recipe():
    text = ("size: [16, 8]\nsteps:\n  a: {stage: fractal}\n"
            "  b: {stage: fractal, params: {formula: multibrot, power: 2}}\n"
            "  m: {stage: luminance_mask, input: b, params: {low: 0.3, high: 0.6}}\n"
            "  mix: {stage: blend, inputs: [a, b, m]}\n")
    recipe = parse_recipe(text)
    assert next(s for s in recipe.steps if s.name == "m").shape == (1, 8, 16)
    assert next(s for s in recipe.steps if s.name == "mix").inputs == ("a", "b", "m")
    base, top = torch.zeros(3, 2, 2), torch.ones(3, 2, 2)
    source = torch.tensor([[[0.0, 0.3]], [[0.45, 1.0]]]).expand(2, 1, 2).reshape(1, 2, 2)
    mask = _run("luminance_mask", [source], low=0.3, high=0.6)  # grey: its own brightness
    out = _run("blend", [base, top, mask])
    assert out[:, 0, 0].tolist() == [0.0] * 3 and out[:, 1, 1].tolist() == [1.0] * 3
    assert out[0, 1, 0].item() == pytest.approx(0.5)  # halfway up the smoothstep
    with pytest.raises(ParamError) as info:
        parse_recipe(text.replace("low: 0.3", "low: 0.7"))
    assert str(info.value) == "<string>:5:54: step 'm': low=0.7 must be below high=0.6"
    with pytest.raises(RecipeError) as info:
        parse_recipe(text.replace("[a, b, m]", "[a, b, m, m]"))
    assert str(info.value) == ("<string>:6:23: step 'mix': stage 'blend' takes 2 or 3 input(s) "
                               "(base, top, mask), got 4")
    with pytest.raises(ShapeError, match="has 3 channels, but a mask has one"):
        parse_recipe(text.replace("[a, b, m]", "[a, b, b]"))
    # a grey mask beside colour images in a grid: colorize turns it into RGB, exactly
    tiles = text + ("  seen: {stage: colorize, input: m}\n"
                    "  t: {stage: grid, inputs: [a, seen, mix]}\n")
    assert parse_recipe(tiles).steps[-1].shape[0] == 3
    with pytest.raises(ShapeError, match=r"differ; turn the grey one into RGB first \(stage: "
                                         r"colorize\)"):
        parse_recipe(tiles.replace("[a, seen, mix]", "[a, m, mix]"))
    with pytest.raises(ParamError) as info:
        parse_recipe(tiles.replace("input: m}", "input: m, params: {palette: nope}}"))
    assert str(info.value).startswith("<string>:7:55: step 'seen': palette='nope' is not one of")


def test_load_image_check_refuses_float_pixels_and_warns_of_what_it_cannot_read(tmp_path):
    import numpy as np
    from PIL import Image

    entry, ctx = get_stage("load_image"), CheckContext(recipe_dir=tmp_path, size=(8, 8))
    Image.fromarray(np.full((4, 5), 0.5, np.float32), "F").save(tmp_path / "float.tif")
    with pytest.raises(ParamError) as info:
        entry.check(entry.params(path="float.tif"), ctx)
    assert str(info.value) == ("path='float.tif': floating-point images are not supported; "
                               "convert to 8 or 16 bit")
    assert info.value.param == "path"
    with pytest.raises(MediaError, match="floating-point images are not supported"):  # the run
        _run("load_image", ctx=StageContext(recipe_dir=tmp_path), path="float.tif")
    Image.fromarray(np.full((4, 5), 70000, np.int32), "I").save(tmp_path / "wide.tif")
    with pytest.raises(ParamError, match=r"^path='wide\.tif': 32-bit integer pixels span "
                                         r"\[70000, 70000\], outside the 16-bit range$"):
        entry.check(entry.params(path="wide.tif"), ctx)

    frames = [Image.new("RGB", (5, 4), (60 * i, 0, 0)) for i in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    assert entry.check(entry.params(path="anim.gif"), ctx)["sha256"]
    assert ctx.warnings == [("path='anim.gif' holds 3 frames (an animation or a multi-page "
                             "file); load_image reads only the first", "path")]
    first = _run("load_image", ctx=StageContext(recipe_dir=tmp_path), path="anim.gif")
    assert first.shape == (3, 4, 5) and float(first[0].mean()) == 0.0
    still = CheckContext(recipe_dir=tmp_path, size=(8, 8))
    frames[1].save(tmp_path / "still.gif")
    entry.check(entry.params(path="still.gif"), still)
    assert still.warnings == []

    frames[1].save(tmp_path / "odd.png", icc_profile=b"not a profile" * 10)
    damaged = CheckContext(recipe_dir=tmp_path, size=(8, 8))
    entry.check(entry.params(path="odd.png"), damaged)
    assert damaged.warnings == [(
        "path='odd.png': its colour profile cannot be applied (the profile is damaged: cannot "
        "open profile from string), so its colours are read as sRGB; export the image in sRGB "
        "to keep them", "path")]


def test_load_image_refuses_transparency_or_puts_a_background_behind_it(tmp_path):
    import numpy as np
    from PIL import Image

    pixels = np.zeros((4, 6, 4), np.uint8)
    pixels[..., 0] = 255  # red everywhere, opaque in the top two rows only
    pixels[:2, :, 3] = 255
    pixels[2, :, 3] = 128
    Image.fromarray(pixels, "RGBA").save(tmp_path / "logo.png")
    stage = get_stage("load_image")
    ctx = StageContext(recipe_dir=tmp_path, device=torch.device("cpu"))
    with pytest.raises(ParamError, match="has transparent pixels") as caught:
        stage.run([], stage.params(path="logo.png"), ctx)
    assert caught.value.param == "background"
    blue = stage.run([], stage.params(path="logo.png", background=[0, 0, 1]), ctx)
    assert blue[:, 0, 0].tolist() == [1.0, 0.0, 0.0]  # opaque: as it is
    assert blue[:, 3, 0].tolist() == [0.0, 0.0, 1.0]  # clear: the background
    half = 128 / 255
    torch.testing.assert_close(blue[:, 2, 0], torch.tensor([half, 0.0, 1 - half]))
    white = stage.run([], stage.params(path="logo.png", background=1), ctx)
    assert white[:, 3, 0].tolist() == [1.0, 1.0, 1.0]
    Image.fromarray(pixels[..., :3], "RGB").save(tmp_path / "opaque.png")  # no alpha: as before
    assert stage.run([], stage.params(path="opaque.png"), ctx)[:, 3, 0].tolist() == [1.0, 0.0, 0.0]


def test_load_image_check_refuses_transparency_before_anything_runs(tmp_path):
    import numpy as np
    from PIL import Image

    pixels = np.full((4, 6, 4), 255, np.uint8)
    Image.fromarray(pixels, "RGBA").save(tmp_path / "solid.png")  # alpha channel, all opaque
    pixels[3, 5, 3] = 254
    Image.fromarray(pixels, "RGBA").save(tmp_path / "logo.png")
    Image.fromarray(pixels[..., 0], "L").save(tmp_path / "keyed.png", transparency=255)  # tRNS
    stage = get_stage("load_image")
    ctx = CheckContext(recipe_dir=tmp_path, size=(6, 4))
    for name in ("logo.png", "keyed.png"):
        with pytest.raises(ParamError, match=r"has transparent pixels, .*; set background") as caught:
            stage.check(stage.params(path=name), ctx)
        assert caught.value.param == "background"
        assert stage.check(stage.params(path=name, background=1), ctx)["sha256"]
    assert stage.check(stage.params(path="solid.png"), ctx)["sha256"]


def test_trap_angle_is_in_radians_so_a_value_in_degrees_is_refused():
    params = get_stage("fractal").params
    assert params(trap_angle=-6.28).trap_angle == -6.28
    with pytest.raises(ValueError, match=r"less than or equal to 6\.28"):
        params(trap_angle=45)
