"""The stage registry: lookup, suggestions, registration rules, models mirroring the library."""

from __future__ import annotations

import importlib
import inspect

import pytest
from pydantic import BaseModel, ConfigDict

from minart.errors import RecipeError
from minart.registry import Stage, StageContext, get_stage, register, stages, suggest

REQUIRED = {
    "fractal", "fractal_frames", "load_image", "perona_malik", "minimize", "blend", "resize",
    "grid", "crossfade", "boomerang", "reverse", "subsample", "concatenate", "hold",
    "save_image", "encode_video", "contact_sheet", "luminance_mask", "colorize",
}

# Arguments that are inputs or run-time context (the engine supplies resume state and the
# checkpoint), not recipe parameters.
NOT_PARAMS = {"image", "base", "top", "a", "b", "frames_in", "images", "sequences", "mask",
              "device", "callback", "callback_every", "generator", "operator", "state",
              "checkpoint"}
# Stages whose model is exactly the library function's keyword arguments.
MIRRORS = ("fractal", "fractal_frames", "perona_malik", "minimize", "blend", "resize", "grid",
           "crossfade", "subsample", "hold", "reverse", "boomerang", "concatenate",
           "luminance_mask", "colorize")


def test_every_required_stage_is_registered_and_sorted():
    names = [s.name for s in stages()]
    assert REQUIRED <= set(names)
    assert names == sorted(names)


def test_unknown_stage_suggests_the_closest_name():
    with pytest.raises(RecipeError) as info:
        get_stage("perona_malk")
    assert str(info.value) == "unknown stage 'perona_malk'; did you mean 'perona_malik'?"
    with pytest.raises(RecipeError) as info:
        get_stage("sharpen")
    assert str(info.value) == "unknown stage 'sharpen'"


def test_suggest():
    assert suggest("kapa", ["kappa", "dt"]) == "; did you mean 'kappa'?"
    assert suggest("zzz", ["kappa", "dt"]) == ""


class _Open(BaseModel):
    x: int = 1


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _stage(name: str, params=_Closed, **kw) -> Stage:
    return Stage(name=name, params=params, run=lambda i, p, c: i[0], summary="s",
                 consumes=kw.pop("consumes", ("image",)), produces=kw.pop("produces", "image"),
                 inputs=("image",), **kw)


@pytest.mark.parametrize("stage,message", [
    (_stage("fractal"), "stage 'fractal' is registered twice"),
    (_stage("Sharpen"), "stage name 'Sharpen' must be snake_case"),
    (_stage("sharp en"), "stage name 'sharp en' must be snake_case"),
    (_stage("sharpen", consumes=("video",)), "stage 'sharpen' consumes unknown kinds ('video',)"),
    (_stage("sharpen", produces="video"), "stage 'sharpen' produces unknown kind 'video'"),
    (_stage("sharpen", params=_Open), "stage 'sharpen': its params model must set extra='forbid'"),
    (_stage("sharpen", optional=1), "stage 'sharpen': optional=1 must leave at least one input, "
     "and a variadic stage has none optional"),
    (_stage("sharpen", optional=-1), "stage 'sharpen': optional=-1 must leave at least one "
     "input, and a variadic stage has none optional"),
])
def test_register_refuses_bad_stages(stage, message):
    with pytest.raises(RecipeError) as info:
        register(stage)
    assert str(info.value) == message
    assert "sharpen" not in [s.name for s in stages()]


def test_inputs_and_output_kinds():
    blend, pm, grid, fractal = (get_stage(n) for n in ("blend", "perona_malik", "grid", "fractal"))
    assert blend.accepts(2) and blend.accepts(3) and not blend.accepts(1)  # base, top[, mask]
    assert not blend.accepts(4) and blend.input_count() == "2 or 3"
    assert grid.input_count() == "at least 1" and pm.input_count() == "1"
    assert grid.accepts(1) and grid.accepts(5) and not grid.accepts(0)
    assert fractal.generator and fractal.accepts(0) and not fractal.accepts(1)
    assert pm.output_kind(["image"]) == "image" and pm.output_kind(["frames"]) == "frames"
    assert blend.output_kind(["image", "frames"]) == "frames"
    assert get_stage("minimize").output_kind(["image"]) == "frames"
    assert get_stage("contact_sheet").consumes == ("frames",)


@pytest.mark.parametrize("stage", sorted(REQUIRED))
def test_models_forbid_extras_and_describe_every_field(stage):
    model = get_stage(stage).params
    assert model.model_config.get("extra") == "forbid"
    for name, info in model.model_fields.items():
        assert info.description and len(info.description) > 10, f"{stage}.{name}"
    assert get_stage(stage).summary and "\n" not in get_stage(stage).summary
    assert isinstance(get_stage(stage).version, int)


@pytest.mark.parametrize("stage", MIRRORS)
def test_params_are_exactly_the_library_keyword_arguments(stage):
    entry = get_stage(stage)
    module, _, name = entry.function.partition(":")
    fn = getattr(importlib.import_module(module), name, None)
    if fn is None:
        pytest.skip(f"{entry.function} has not landed yet")
    signature = inspect.signature(fn)
    positional_inputs = [p.name for p in signature.parameters.values()
                         if p.kind is p.POSITIONAL_OR_KEYWORD and p.name not in ("width", "height")]
    keywords = {p for p in signature.parameters if p not in NOT_PARAMS} - set(positional_inputs)
    assert set(entry.params.model_fields) == keywords


def test_stage_context_defaults():
    ctx = StageContext()
    assert ctx.size == (256, 256) and ctx.device.type == "cpu" and ctx.written == []
    assert StageContext().written is not ctx.written
