"""The built-in stages: each library operation registered under the name recipes use.

Importing this module (``import minart`` does) registers every stage and does nothing else: the
library functions are looked up only when a stage runs, so a recipe can be checked without
touching the tensors.

Parameter models mirror the keyword arguments of the library function named in each stage's
``function``; values that YAML cannot express directly have a YAML form:

* complex numbers (``coefficient``, ``julia``): ``[re, im]``, ``{re: 0, im: -0.318}`` or a plain
  number for a real value;
* points (``center``): ``[x, y]``; colours (``background``): ``[r, g, b]`` in [0, 1];
* dtypes: the names ``float32`` / ``float64``.

Outputs (``save_image``, ``contact_sheet`` + ``save_image``, ``encode_video``) are stages too; the
recipe's ``outputs:`` section is sugar that adds them as steps. Their ``path`` is a template
(``{name}``, ``{seed}``, ``{date}``, ``{step}``) confined to the output folder, see
:func:`expand_output_path`. An output stage returns its input unchanged.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib
import json
import math
import string
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema
from torch import Tensor

from .diffusion import KAPPA_MIN
from .errors import MediaError, ParamError, RecipeError, ShapeError
from .registry import CheckContext, Stage, StageContext, register

__all__ = [
    "IMAGE_SUFFIXES",
    "TEMPLATE_FIELDS",
    "VIDEO_SUFFIXES",
    "check_output_template",
    "contact_sheet_indices",
    "expand_output_path",
    "file_sha256",
    "input_path",
    "output_source",
    "output_targets",
]

TEMPLATE_FIELDS = ("name", "seed", "date", "step")
"""Fields an output ``path`` template may use: recipe name, recipe seed, UTC date, source step."""

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
"""Extensions an image output may have."""

VIDEO_SUFFIXES = (".webm", ".mp4", ".gif")
"""Extensions a video output may have."""


# -- output paths --------------------------------------------------------------------------------


def check_output_template(template: str) -> list[str]:
    """Validate an output path template and return the fields it uses.

    A template is a relative POSIX path; ``{name}``, ``{seed}``, ``{date}`` and ``{step}`` are
    replaced at run time. Absolute paths, ``..`` components, backslashes and other fields are
    refused, so an expanded path always stays inside the output folder.

    Args:
        template: e.g. ``"{name}/{date}-{seed}.png"``.

    Returns:
        The template fields used, in order.

    Raises:
        RecipeError: empty, absolute, ``..``, unknown or malformed fields.

    Example:
        >>> check_output_template("{name}/{seed}.png")
        ['name', 'seed']
        >>> check_output_template("../x.png")
        Traceback (most recent call last):
        ...
        minart.errors.RecipeError: path '../x.png' must stay inside the output folder (no '..')
    """
    if not isinstance(template, str) or not template.strip():
        raise RecipeError(f"path {template!r} must be a non-empty relative file path", param="path")
    if "\\" in template:
        raise RecipeError(f"path {template!r} must use '/' between folders, not '\\'",
                          param="path")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in template):
        raise RecipeError(f"path {template!r} must not contain control characters", param="path")
    if any(len(part.encode("utf-8")) > 255 for part in PurePosixPath(template).parts):
        raise RecipeError(f"path {template!r} has a name longer than 255 bytes, more than a "
                          "file system allows", param="path")
    if template.startswith("/") or template.startswith("~") or (
            len(template) > 1 and template[1] == ":"):
        raise RecipeError(f"path {template!r} must be relative to the output folder, not absolute",
                          param="path")
    if ".." in PurePosixPath(template).parts:
        raise RecipeError(f"path {template!r} must stay inside the output folder (no '..')",
                          param="path")
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:  # "Single '}' encountered ...", "expected '}' before end ..."
        brace = "}" if str(exc).startswith("Single '}'") else "{"
        problem, fix = (("a '}' that closes no field", "add the missing '{' or write '}}'")
                        if brace == "}" else
                        ("a '{' that is never closed", "add the missing '}' or write '{{'"))
        raise RecipeError(f"path {template!r} has {problem}; {fix} for a literal brace",
                          param="path") from None
    used: list[str] = []
    for _, field_name, spec, conversion in parsed:
        if field_name is None:
            continue
        if field_name in TEMPLATE_FIELDS and (spec or conversion):
            raise RecipeError(f"path {template!r}: field {{{field_name}}} takes no format or "
                              f"conversion; write {{{field_name}}}", param="path")
        if field_name not in TEMPLATE_FIELDS:
            from .registry import suggest

            fields = ", ".join("{" + f + "}" for f in TEMPLATE_FIELDS)
            raise RecipeError(f"path {template!r} uses unknown field {{{field_name}}}"
                              f"{suggest(field_name, TEMPLATE_FIELDS)} (fields: {fields})",
                              param="path")
        used.append(field_name)
    return used


def expand_output_path(template: str, *, output_dir: str | Path, name: str, seed: int | None,
                       step: str, date: str | None = None) -> Path:
    """Fill in an output path template and confine it to ``output_dir``.

    ``path = output_dir / template.format(name=..., seed=..., date=YYYY-MM-DD, step=...)``

    Args:
        template: a template accepted by :func:`check_output_template`.
        output_dir: the folder every output must stay in.
        name: the recipe name.
        seed: the recipe seed.
        step: the step whose result is written.
        date: ``YYYY-MM-DD`` (default: today, UTC).

    Returns:
        The absolute output path.

    Raises:
        RecipeError: a bad template, or an expansion that would leave ``output_dir``.

    Example:
        >>> expand_output_path("{name}-{seed}.png", output_dir="/tmp/out", name="ocean", seed=3,
        ...                    step="art").as_posix()
        '/tmp/out/ocean-3.png'
    """
    check_output_template(template)
    date = date or _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d")
    relative = template.format(name=name, seed=seed, date=date, step=step)
    root = Path(output_dir).resolve()
    target = (root / relative).resolve()
    if PurePosixPath(relative).is_absolute() or ".." in PurePosixPath(relative).parts or (
            target != root and root not in target.parents):
        raise RecipeError(f"path {template!r} expands to {relative!r}, outside the output folder",
                          param="path")
    return target


# -- YAML-friendly parameter types ---------------------------------------------------------------


def _to_pair(value: Any) -> Any:
    """Accept ``[re, im]``, ``{re, im}`` or a real number for a complex parameter."""
    if isinstance(value, Mapping) and set(value) <= {"re", "im"}:
        return (value.get("re", 0.0), value.get("im", 0.0))
    if isinstance(value, complex):
        return (value.real, value.imag)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (value, 0.0)
    return _to_tuple(value)


def _to_tuple(value: Any) -> Any:
    """YAML has no tuples: accept a list where a fixed-length tuple is expected."""
    return tuple(value) if isinstance(value, list) else value


_NUMBER = {"type": "number"}
ComplexPair = Annotated[
    tuple[float, float],
    BeforeValidator(_to_pair),
    WithJsonSchema({"anyOf": [
        _NUMBER,
        {"type": "array", "prefixItems": [_NUMBER, _NUMBER], "minItems": 2, "maxItems": 2},
        {"type": "object", "properties": {"re": _NUMBER, "im": _NUMBER},
         "additionalProperties": False},
    ], "description": "a complex number as [re, im], {re: .., im: ..} or a real number"}),
]
Point = Annotated[tuple[float, float], BeforeValidator(_to_tuple)]
Unit = Annotated[float, Field(ge=0.0, le=1.0)]
Shade = Annotated[Unit | tuple[Unit, ...], BeforeValidator(_to_tuple)]
"""A grey level in [0, 1] or one value per channel, e.g. ``[1, 0.9, 0.8]``."""


def _to_stops(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(tuple(v) if isinstance(v, list) else v for v in value)
    return value


Stop = tuple[Unit, str | Annotated[tuple[Unit, Unit, Unit], BeforeValidator(_to_tuple)]]
Palette = Annotated[str | tuple[Stop, ...], BeforeValidator(_to_stops)]


class _Params(BaseModel):
    # strict: YAML "0.4" (a string) or true (a boolean) is not silently taken as a number
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


def _kwargs(params: BaseModel, *, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """The model's fields as keyword arguments, leaving out a ``None`` that is the field's own
    default (= the library's default); a ``None`` chosen over another default is passed on
    (``refresh_every: null``: no refresh, where the library's default refreshes every 375)."""
    fields = type(params).model_fields
    return {k: getattr(params, k) for k in fields
            if k not in drop and (getattr(params, k) is not None or fields[k].default is not None)}


def _warn_unused(params: BaseModel, ctx: CheckContext, unused: dict[str, str], *,
                 otherwise: str = "") -> None:
    """Warn about each parameter the recipe sets that has no effect (``{name: why}``): valid,
    but probably not what the artist meant. Left-out parameters are not mentioned."""
    for name, why in unused.items():
        if name in params.model_fields_set:
            value = getattr(params, name)
            shown = list(value) if isinstance(value, tuple) else value
            ctx.warn(f"{name}={shown!r} has no effect {why}; remove {name}"
                     + (f", or {otherwise}" if otherwise else ""), param=name)


def _function(path: str) -> Callable[..., Any]:
    module, _, name = path.partition(":")
    fn = getattr(importlib.import_module(module), name, None)
    if fn is None:
        raise RecipeError(f"{path.replace(':', '.')} is not available in this minart build")
    return fn


def _progress(ctx: StageContext, total: int) -> Callable[..., None] | None:
    if ctx.progress is None:
        return None
    report = ctx.progress
    return lambda done, *_: report(int(done), total)


def _shrink(value: int | None, factor: int, *, least: int = 8) -> int | None:
    # floor, as load_image's downscale does, so sizes that agree in full agree in the preview
    return None if value is None else max(least, value // factor)


# -- generators ----------------------------------------------------------------------------------


class FractalParams(_Params):
    """Parameters of :func:`minart.fractal.fractal`."""

    width: int | None = Field(None, ge=1, le=16384, description=(
        "Image width in pixels; leave out to use the recipe's size."))
    height: int | None = Field(None, ge=1, le=16384, description=(
        "Image height in pixels; leave out to use the recipe's size."))
    formula: Literal["inverse_power", "multibrot"] = Field("inverse_power", description=(
        "'inverse_power' iterates z <- a z^-p + c (the post's ocean); 'multibrot' z <- z^p + c "
        "(power 2 is the Mandelbrot set)."))
    power: int = Field(7, ge=1, le=24, description=(
        "Exponent p: more petals as it grows (Multibrot needs 2 or more)."))
    coefficient: ComplexPair = Field((0.0, -1.0 / math.pi), description=(
        "Factor a of the inverse-power map as [re, im]; the post's -i/pi is [0, -0.3183]."))
    center: Point = Field((0.0, 0.0), description=(
        "Point of the complex plane at the image centre, [re, im]."))
    span: float = Field(2.8, gt=0, le=1e6, description=(
        "Width of the view in the complex plane; smaller values zoom in."))
    iterations: int = Field(64, ge=1, le=100000, description=(
        "Iterations per pixel: more shows finer detail and takes longer."))
    coloring: Literal["auto", "pole", "smooth", "trap_point", "trap_circle", "trap_line",
                      "modulus", "argument"] = Field("auto", description=(
        "How each orbit becomes a colour: 'auto' ('pole' for inverse power, 'smooth' for "
        "Multibrot), orbit traps, or the final value's modulus or argument."))
    palette: Palette = Field("sea", description=(
        "'sea' (alias 'ocean'), 'fire', 'gray', 'twilight', or stops [[position, '#rrggbb'], "
        "...] with positions from 0 to 1."))
    interior: Shade | str | None = Field(None, description=(
        "Colour of points that never escape, '#rrggbb' or [r, g, b]; leave out for the "
        "palette's."))
    supersample: int = Field(1, ge=1, le=4, description=(
        "Samples per pixel along each axis, averaged: 2 or 3 removes jagged edges."))
    julia: Point | None = Field(None, description=(
        "Draw the Julia set of this fixed c, [re, im], instead of the parameter-plane picture."))
    eps: float = Field(0.75, gt=0, le=1e6, description=(
        "Pole radius of the inverse-power map: an orbit is done once |z| is below it ('pole' "
        "colouring counts the steps until then)."))
    bailout: float = Field(16.0, ge=2, le=1e12, description=(
        "Escape radius for Multibrot: an orbit is done once |z| is above it."))
    trap_point: Point = Field((0.0, 0.0), description=(
        "Orbit-trap point, trap circle centre or a point on the trap line, [re, im]."))
    trap_radius: float = Field(0.5, gt=0, le=1e6, description="Radius of the trap circle.")
    trap_angle: float = Field(0.0, ge=-2 * math.pi, le=2 * math.pi, description=(
        "Angle of the trap line to the real axis, in radians from -2 pi to 2 pi (45 degrees "
        "is 0.785)."))
    dtype: Literal["float32", "float64"] = Field("float32", description=(
        "Precision of the iteration: float64 for deep zooms (the image is stored as float32)."))


class FractalFramesParams(FractalParams):
    """Parameters of :func:`minart.fractal.fractal_frames`."""

    frames: int = Field(16, ge=1, le=10000, description=(
        "Number of frames: the fractal grows with its iteration budget from frame to frame."))


def _fractal_kwargs(params: FractalParams, device: torch.device | str) -> dict[str, Any]:
    kw = _kwargs(params, drop=("width", "height"))
    kw["coefficient"] = complex(*params.coefficient)
    kw["dtype"] = getattr(torch, params.dtype)
    kw["device"] = device
    return kw


def _size(params: BaseModel, ctx: StageContext) -> tuple[int, int]:
    width, height = ctx.size
    return (getattr(params, "width", None) or width, getattr(params, "height", None) or height)


def _run_fractal(inputs: list[Tensor], params: FractalParams, ctx: StageContext) -> Tensor:
    width, height = _size(params, ctx)
    image = _function("minart.fractal:fractal")(width, height,
                                                  **_fractal_kwargs(params, ctx.device))
    return image.float()


def _run_fractal_frames(inputs: list[Tensor], params: FractalFramesParams,
                        ctx: StageContext) -> Tensor:
    width, height = _size(params, ctx)
    frames = _function("minart.fractal:fractal_frames")(width, height,
                                                        **_fractal_kwargs(params, ctx.device))
    return frames.float()


def _fill_size(params: BaseModel, ctx: CheckContext) -> dict[str, Any]:
    """Resolve ``width``/``height`` left out to the recipe's size (so they enter cache keys)."""
    return {"width": params.width or ctx.size[0], "height": params.height or ctx.size[1]}


def _check_fractal(params: FractalParams, ctx: CheckContext) -> dict[str, Any]:
    """Let the library reject inconsistent options (palette names, colouring vs formula)."""
    from .fractal import check_view, fractal, unused_options

    kw = _fractal_kwargs(params, "cpu")
    size = _fill_size(params, ctx)
    check_view(size["width"], size["height"], center=kw["center"], span=kw["span"],
               supersample=kw["supersample"], dtype=kw["dtype"])  # the real view's limits
    kw.update(iterations=1, supersample=1)  # a 2x2, one-iteration probe: validation, no work
    if isinstance(params, FractalFramesParams):
        kw["frames"] = min(params.frames, 2)  # the frame count changes only the budgets
        from .fractal import fractal_frames as fractal
    fractal(2, 2, **kw)
    _warn_unused(params, ctx, unused_options(formula=params.formula, coloring=params.coloring))
    return size


def _preview_size(params: BaseModel, factor: int) -> dict[str, Any]:
    return {"width": _shrink(params.width, factor), "height": _shrink(params.height, factor)}


class LoadImageParams(_Params):
    """Parameters of the ``load_image`` stage (:func:`minart.io.read_image`)."""

    path: str = Field(..., min_length=1, description=(
        "Image file to start from, relative to the recipe's folder (PNG, JPEG, WebP, TIFF); "
        "colours are mapped to sRGB by the profile it embeds, as viewers show them."))
    max_pixels: int | None = Field(None, ge=1, le=1_000_000_000, description=(
        "Refuse images with more pixels than this (protects memory); leave out for the "
        "default, 64 megapixels or $MINART_MAX_PIXELS."))
    downscale: int = Field(1, ge=1, le=64, description=(
        "Shrink by this whole factor after reading (area average); previews raise it."))
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description=(
        "Expected SHA-256 of the file, 64 hex digits; filled in when the recipe is checked, so editing the "
        "image invalidates cached results."))
    background: Shade | None = Field(None, description=(
        "Colour put behind transparent pixels: one grey level (1 is white) or [r, g, b] in 0-1. "
        "Leave out to refuse an image that has any (their hidden colours would show)."))


def input_path(params: LoadImageParams, recipe_dir: Path) -> Path:
    """The file a ``load_image`` step reads: its ``path``, relative to the recipe's folder.

    Example:
        >>> input_path(LoadImageParams(path="in.png"), Path("/art")).as_posix()
        '/art/in.png'
    """
    path = Path(params.path).expanduser()
    return path if path.is_absolute() else Path(recipe_dir) / path


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB chunks).

    Args:
        path: the file.

    Returns:
        64 lowercase hex digits.

    Raises:
        OSError: the file cannot be read.

    Example:
        >>> len(file_sha256(Path(__file__)))
        64
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_load_image(params: LoadImageParams, ctx: CheckContext) -> dict[str, Any]:
    path = input_path(params, ctx.recipe_dir)
    try:
        found = path.is_file()
    except (OSError, ValueError) as exc:  # a name too long, a NUL byte
        raise ParamError(f"path={params.path!r}: not a usable file path ({exc})",
                         param="path") from None
    if not found:
        what = "a folder, not a file" if path.is_dir() else "no such file"
        raise ParamError(f"path={params.path!r}: {what} {path.as_posix()}", param="path")
    from .io import colour_profile, has_transparency, image_frames, verify_image

    try:  # a file cut short or damaged fails here, not when the step runs
        verify_image(path, max_pixels=params.max_pixels)
        transparent = params.background is None and has_transparency(
            path, max_pixels=params.max_pixels)
        frames = image_frames(path, max_pixels=params.max_pixels)
        profile = colour_profile(path, max_pixels=params.max_pixels)
    except MediaError as exc:
        raise ParamError(f"path={params.path!r}: {exc.message}", param="path") from None
    if transparent:
        raise _transparency_error(params)
    if frames > 1:
        ctx.warn(f"path={params.path!r} holds {frames} frames (an animation or a multi-page "
                 "file); load_image reads only the first", param="path")
    if profile is not None and profile[1] is not None:
        name = f" {profile[0]!r}" if profile[0] else ""
        ctx.warn(f"path={params.path!r}: its colour profile{name} cannot be applied "
                 f"({profile[1]}), so its colours are read as sRGB; export the image in sRGB "
                 "to keep them", param="path")
    digest = file_sha256(path)
    if params.sha256 is not None and digest != params.sha256:
        raise ParamError(f"path={params.path!r}: the file's SHA-256 is not the expected "
                         f"{params.sha256[:12]}...; drop sha256 to accept the new file",
                         param="sha256")
    return {"sha256": digest}


def _transparency_error(params: LoadImageParams) -> ParamError:
    return ParamError(f"path={params.path!r}: the image has transparent pixels, and their "
                      "hidden colours would show; set background (e.g. background: 1 for "
                      "white) to put a colour behind them", param="background")


def _run_load_image(inputs: list[Tensor], params: LoadImageParams, ctx: StageContext) -> Tensor:
    path = input_path(params, ctx.recipe_dir)
    rgba = _function("minart.io:read_image")(path, mode="RGBA", max_pixels=params.max_pixels,
                                             sha256=params.sha256)  # hashes the bytes it decodes
    rgba = rgba.to(ctx.device, torch.float32)
    image, alpha = rgba[:3], rgba[3:]  # (4, H, W) -> (3, H, W), (1, H, W)
    if params.background is not None:
        from .composite import _color

        image = image * alpha + _color(params.background, 3, "background", image) * (1 - alpha)
    elif bool((alpha < 1).any()):
        raise _transparency_error(params)
    if params.downscale > 1:
        _, height, width = image.shape
        _check_downscale(params.downscale, width, height)
        # an explicit size: scale_factor=1/49 makes 98 px 1 px (98 * (1/49) rounds below 2)
        size = (height // params.downscale, width // params.downscale)
        image = F.interpolate(image[None], size=size,
                              mode="area")[0]  # (C, H, W) -> (1, C, H, W) -> (C, h, w)
    return image


# -- diffusion and minimization ------------------------------------------------------------------


class PeronaMalikParams(_Params):
    """Parameters of :func:`minart.diffusion.perona_malik`."""

    steps: int = Field(..., ge=0, le=100000, description=(
        "Number of diffusion steps: more steps smooth larger areas."))
    kappa: float = Field(..., ge=KAPPA_MIN, le=10, description=(
        "Edge threshold in brightness units (0-1): differences below it are smoothed, edges "
        "above it are kept."))
    dt: float = Field(..., gt=0, le=10, description=(
        "Time step. The classic scheme is stable up to 0.25 (larger values are split into "
        "substeps unless substep: off)."))
    scheme: Literal["classic", "seed"] = Field("classic", description=(
        "'classic' (Perona-Malik 1990, per channel) or 'seed' (the post's dense 3x3 operator "
        "mixing channels, clamped to [0, 1])."))
    conduction: Literal["exp", "inverse", "tukey"] = Field("exp", description=(
        "Edge-stopping function: 'exp' keeps high-contrast edges, 'inverse' favours wide "
        "regions, 'tukey' stops diffusion sharply at edges."))
    substep: Literal["auto", "off"] = Field("auto", description=(
        "'auto' splits unstable classic steps (dt > 0.25) into stable substeps; 'off' refuses "
        "them."))


def _check_perona_malik(params: PeronaMalikParams, ctx: CheckContext) -> None:
    from .diffusion import perona_malik

    if params.scheme == "seed":
        _warn_unused(params, ctx, {"substep": "with scheme 'seed' (it splits 'classic' steps)"})
    probe = _kwargs(params)
    probe["steps"] = 0  # validates every option, including the stability bound, without work
    perona_malik(torch.zeros(1, 3, 2, 2), **probe)


def _run_perona_malik(inputs: list[Tensor], params: PeronaMalikParams,
                      ctx: StageContext) -> Tensor:
    from .diffusion import perona_malik

    # progress about every 1 % of the run, in pairs of steps (a GPU does two per pass)
    return perona_malik(inputs[0], **_kwargs(params), callback=_progress(ctx, params.steps),
                        callback_every=2 * max(1, params.steps // 200))


def _preview_perona_malik(params: PeronaMalikParams, factor: int) -> dict[str, Any]:
    # Diffusion spreads over about sqrt(steps * dt) pixels: 1/factor the pixels, 1/factor^2 steps.
    return {"steps": max(1, round(params.steps / factor**2)) if params.steps else 0}


SWEEP_MAX = 64
"""Most variants of a ``perona_malik_sweep`` step."""

# one value of a sweep: within perona_malik's limits (Python 3.10 has no * in a subscript)
_Kappa = Annotated[(float, *PeronaMalikParams.model_fields["kappa"].metadata)]
_Dt = Annotated[(float, *PeronaMalikParams.model_fields["dt"].metadata)]


class PeronaMalikSweepParams(PeronaMalikParams):
    """Parameters of :func:`minart.diffusion.perona_malik_sweep`: ``perona_malik``'s, with a
    list of values for ``kappa`` and/or ``dt``."""

    kappa: Annotated[_Kappa | Annotated[tuple[_Kappa, ...], Field(min_length=1,
                                                               max_length=SWEEP_MAX)],
                     BeforeValidator(_to_tuple)] = Field(..., description=(
        "Edge threshold(s): one value, or a list of values to compare (a variant each), e.g. "
        "[0.02, 0.05, 0.1, 0.2]."))
    dt: Annotated[_Dt | Annotated[tuple[_Dt, ...], Field(min_length=1, max_length=SWEEP_MAX)],
                  BeforeValidator(_to_tuple)] = Field(..., description=(
        "Time step(s): one value, or a list (a variant each; as many as kappa's when both are "
        "lists)."))


def _check_perona_malik_sweep(params: PeronaMalikSweepParams, ctx: CheckContext) -> None:
    from .diffusion import perona_malik_sweep

    if params.scheme == "seed":
        _warn_unused(params, ctx, {"substep": "with scheme 'seed' (it splits 'classic' steps)"})
    if not isinstance(params.kappa, tuple) and not isinstance(params.dt, tuple):
        ctx.warn(f"kappa={params.kappa} and dt={params.dt} make a sweep of one variant; give a "
                 "list of values to either, or use stage perona_malik", param="kappa")
    probe = _kwargs(params)
    probe["steps"] = 0  # validates every option, and the lists' lengths, without work
    perona_malik_sweep(torch.zeros(1, 3, 2, 2), **probe)


def _run_perona_malik_sweep(inputs: list[Tensor], params: PeronaMalikSweepParams,
                            ctx: StageContext) -> Tensor:
    from .diffusion import perona_malik_sweep

    return perona_malik_sweep(inputs[0], **_kwargs(params), callback=_progress(ctx, params.steps),
                              callback_every=2 * max(1, params.steps // 200))


class MinimizeParams(_Params):
    """Parameters of :func:`minart.minimize.minimize`."""

    iterations: int = Field(..., ge=1, le=1_000_000, description=(
        "Gradient steps of the minimization; every step is one diffusion step of the image."))
    frame_every: int = Field(75, ge=1, le=1_000_000, description=(
        "Keep one frame every this many iterations: the clip has ceil(iterations / frame_every) "
        "frames."))
    lr: float = Field(2e-6, gt=0, le=100.0, description=(
        "Learning rate of the operator. With reduction 'sum' it must shrink as images grow "
        "(the post used 2e-6 for ~800 px photos)."))
    kappa: float = Field(0.2, ge=KAPPA_MIN, le=10, description="Conduction scale of the diffusion step.")
    dt: float = Field(0.2, gt=0, le=10, description="Time step of the diffusion step.")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum of the operator.")
    weight_decay: float = Field(5e-4, ge=0, le=1, description="SGD weight decay of the operator.")
    refresh_every: int | None = Field(375, ge=1, le=1_000_000, description=(
        "Refresh period: once per period the image is blended back towards the original and "
        "the learned operator restarts; null for no refresh (as in the post's demo_video.py)."))
    refresh_at: int = Field(300, ge=0, le=1_000_000, description=(
        "Iteration within each refresh period at which the refresh happens (below "
        "refresh_every, on a frame boundary)."))
    blend: float = Field(0.6, ge=0, le=1, description=(
        "Weight of the current image in the refresh blend (1 keeps it, 0 restarts)."))
    loss: Literal["seed", "seed_video"] = Field("seed", description=(
        "'seed': fidelity + operator response + intensity (the post's loss) on one image; "
        "'seed_video' the variant of the post's videos, which also takes a clip as input."))
    reduction: Literal["sum", "mean"] = Field("sum", description=(
        "Sum the loss over pixels (the post; lr must shrink as the image grows) or average it "
        "(lr independent of the size)."))
    conduction: Literal["exp", "inverse", "tukey"] = Field("exp", description=(
        "Edge-stopping function of the diffusion step, as in perona_malik's seed scheme."))


def _check_minimize(params: MinimizeParams, ctx: CheckContext) -> None:
    from .minimize import minimize

    if "frames" in ctx.input_kinds and params.loss != "seed_video":
        raise ParamError(f"loss={params.loss!r} takes one image, but the input is a clip of "
                         "frames; use loss: seed_video", param="loss")
    if params.refresh_every is None:
        why = "with refresh_every: null (no refresh)"
        _warn_unused(params, ctx, {"refresh_at": why, "blend": why},
                     otherwise="give refresh_every a period")
    probe = _kwargs(params)
    probe["iterations"] = 0  # validates every option (refresh_at < refresh_every, ...) without work
    try:
        minimize(torch.zeros(3, 2, 2), **probe)
    except ShapeError as exc:  # the probe's own tiny image is not the recipe's problem
        raise ParamError(exc.message, param=exc.param) from None


def _run_minimize(inputs: list[Tensor], params: MinimizeParams, ctx: StageContext) -> Tensor:
    minimize = _function("minart.minimize:minimize")
    checkpoint = ctx.checkpoint  # minart.engine.Checkpoint: resume a killed run, save as it goes
    saved = checkpoint.load() if checkpoint is not None else None
    result = minimize(inputs[0], **_kwargs(params), generator=ctx.generator,
                      callback=_progress(ctx, params.iterations),
                      state=saved[0] if saved else None, checkpoint=checkpoint)
    return result.frames


def _preview_minimize(params: MinimizeParams, factor: int) -> dict[str, Any]:
    """A preview ``factor`` times smaller: the same clip (frame count, refresh frame), run faster.

    The learned dynamics act per pixel and are chaotic, so no rule makes a small render repeat a
    large one; this one came out closest over three recipes (docs/minimize.md). As with
    diffusion, features ``factor`` times smaller in pixels evolve ``factor`` times sooner:
    ``iterations``, ``frame_every`` and the refresh schedule are divided by ``factor`` keeping
    the number of frames and the frame of each refresh; a summed loss has ``factor^2`` fewer
    terms, so ``lr`` is multiplied by ``factor^2``. ``seed_video`` keeps its schedule (it reads
    input frame ``i % T`` at iteration ``i``) and only scales ``lr``.
    """
    update: dict[str, Any] = {"lr": params.lr * factor**2} if params.reduction == "sum" else {}
    if params.loss != "seed":
        return update
    every = params.frame_every
    fe = max(1, round(every / factor))
    frames = math.ceil(params.iterations / every)
    iterations = min(max(round(params.iterations / factor), fe * (frames - 1) + 1), fe * frames)
    if params.refresh_every is None:
        refresh_every, refresh_at = None, params.refresh_at
    elif params.refresh_every % every == 0 and params.refresh_at % every == 0:  # whole frames
        refresh_every = params.refresh_every // every * fe
        refresh_at = params.refresh_at // every * fe
    else:
        refresh_every = max(1, round(params.refresh_every / factor))
        refresh_at = min(round(params.refresh_at / factor), refresh_every - 1)
        # on a frame boundary the full schedule reaches, as minimize() requires
        reach = math.gcd(fe, refresh_every)
        refresh_at = refresh_at // reach * reach
    return {**update, "iterations": iterations, "frame_every": fe,
            "refresh_every": refresh_every, "refresh_at": refresh_at}


# -- compositing ---------------------------------------------------------------------------------


class BlendParams(_Params):
    """Parameters of :func:`minart.composite.blend`."""

    mode: Literal["normal", "multiply", "screen", "overlay", "add", "difference",
                  "soft_light"] = Field("normal", description=(
        "How the top layer combines with the base (W3C blend modes): 'multiply' darkens, "
        "'screen' lightens, 'overlay' and 'soft_light' add contrast."))
    opacity: float = Field(1.0, ge=0, le=1, description=(
        "Opacity of the top layer: 0 keeps the base, 1 applies the mode fully; a mask (the "
        "third input) multiplies it pixel by pixel."))


def _run_blend(inputs: list[Tensor], params: BlendParams, ctx: StageContext) -> Tensor:
    base, top, *mask = inputs  # the mask is optional
    return _function("minart.composite:blend")(base, top, mask=mask[0] if mask else None,
                                               **_kwargs(params))


class LuminanceMaskParams(_Params):
    """Parameters of :func:`minart.composite.luminance_mask`."""

    low: float = Field(0.0, ge=0, lt=1, description=(
        "Brightness (0-1) below which the mask is 0: darker pixels keep the base."))
    high: float = Field(1.0, gt=0, le=1, description=(
        "Brightness (0-1) above which the mask is 1: brighter pixels show the top fully; "
        "between low and high it rises smoothly. Must be above low."))
    invert: bool = Field(False, description=(
        "Swap the mask: dark pixels show the top, bright ones keep the base."))


class ColorizeParams(_Params):
    """Parameters of :func:`minart.composite.colorize`."""

    palette: Palette = Field("gray", description=(
        "Colours for dark to bright: a name ('gray', 'sea', 'fire', 'twilight') or stops "
        "[[position, '#rrggbb'], ...]; 'gray' turns a grey image or mask into the same grey "
        "in RGB."))


def _check_colorize(params: ColorizeParams, ctx: CheckContext) -> None:
    from .palettes import palette_stops

    palette_stops(params.palette)  # names and stops are checked before anything runs


def _check_luminance_mask(params: LuminanceMaskParams, ctx: CheckContext) -> None:
    from .composite import luminance_mask

    luminance_mask(torch.zeros(1, 1, 1), **_kwargs(params))  # low < high, on a 1-pixel probe


class ResizeParams(_Params):
    """Parameters of :func:`minart.composite.resize`."""

    width: int | None = Field(None, ge=1, le=16384, description=(
        "New width in pixels; leave out to use the recipe's size."))
    height: int | None = Field(None, ge=1, le=16384, description=(
        "New height in pixels; leave out to use the recipe's size."))
    fit: Literal["stretch", "cover", "contain"] = Field("stretch", description=(
        "When the aspect ratio changes: 'stretch' distorts, 'cover' crops the centre, "
        "'contain' letterboxes on the background colour."))
    background: Shade = Field(0.0, description=(
        "Letterbox colour for 'contain': one grey level or [r, g, b] in 0-1."))
    interpolation: Literal["bilinear", "bicubic"] = Field("bilinear", description=(
        "Resampling filter (both antialiased when shrinking); bicubic is sharper."))


def _check_resize(params: ResizeParams, ctx: CheckContext) -> dict[str, Any]:
    if params.fit != "contain":
        _warn_unused(params, ctx, {"background": f"with fit {params.fit!r} (it fills the "
                                                 "letterbox of 'contain')"})
    return _fill_size(params, ctx)


def _run_resize(inputs: list[Tensor], params: ResizeParams, ctx: StageContext) -> Tensor:
    width, height = _size(params, ctx)
    kw = _kwargs(params, drop=("width", "height"))
    return _function("minart.composite:resize")(inputs[0], width, height, **kw)


class GridParams(_Params):
    """Parameters of :func:`minart.composite.grid`."""

    columns: int | None = Field(None, ge=1, le=1000, description=(
        "Tiles per row; leave out for a near-square grid."))
    spacing: int = Field(4, ge=0, le=1000, description=(
        "Pixels of background between tiles and around the sheet."))
    background: Shade = Field(1.0, description=(
        "Sheet colour: one grey level or [r, g, b] in 0-1 (default white)."))
    labels: list[str] | None = Field(None, description=(
        "One caption per tile, drawn under it; leave out for none. {step.param} shows a "
        "parameter of a step the grid is made from; one that varies along a clip (a sweep's "
        "kappa, minimize's iterations) makes a caption per frame: [\"kappa {kappas.kappa}\"]; "
        "{step.param:.2f} formats a number; {name} and {seed} are the recipe's."))
    label_color: Shade = Field(0.0, description="Caption colour (default black).")


def _check_grid(params: GridParams, ctx: CheckContext) -> None:
    from .composite import check_labels

    if params.labels is None:
        _warn_unused(params, ctx, {"label_color": "without labels"}, otherwise="add labels")
    else:
        check_labels(params.labels)


def _run_grid(inputs: list[Tensor], params: GridParams, ctx: StageContext) -> Tensor:
    images = [im for x in inputs for im in (x.unbind(0) if x.ndim == 4 else [x])]
    return _function("minart.composite:grid")(images, **_kwargs(params))


def _preview_spacing(params: BaseModel, factor: int) -> dict[str, Any]:
    return {"spacing": round(params.spacing / factor)}


class ContactSheetParams(_Params):
    """Parameters of the ``contact_sheet`` stage (:func:`minart.composite.grid` of frames)."""

    frames: int | None = Field(None, ge=1, le=10000, description=(
        "How many frames to show, evenly spaced from first to last (at most the clip's); "
        "leave out for 12, or every frame of a shorter clip."))
    columns: int | None = Field(None, ge=1, le=1000, description=(
        "Frames per row; leave out for a near-square sheet."))
    spacing: int = Field(4, ge=0, le=1000, description=(
        "Pixels of background between frames and around the sheet."))
    background: Shade = Field(1.0, description=(
        "Sheet colour: one grey level or [r, g, b] in 0-1 (default white)."))
    labels: bool | str | list[str] = Field(False, description=(
        "true captions each frame with its number; a text captions each with the values of its "
        "own frame, \"it {art.iterations}\" ({step.param} as in grid labels, naming the "
        "clip's step); or a list of captions, one per frame of the clip (or one for all)."))
    label_color: Shade | None = Field(None, description=(
        "Caption colour: one grey level or [r, g, b] in 0-1; leave out for black on a light "
        "background and white on a dark one."))


def _caption_color(params: ContactSheetParams) -> Any:
    """The caption colour: as given, or black or white, whichever stands out on the background."""
    if params.label_color is not None:
        return params.label_color
    shade = params.background
    values = (shade,) if isinstance(shade, (int, float)) else tuple(shade)
    if len(values) == 1:
        values *= 3
    if len(values) < 3:  # not a colour: grid() refuses the background itself
        return 0.0
    r, g, b = values[:3]
    return 0.0 if 0.2126 * r + 0.7152 * g + 0.0722 * b >= 0.5 else 1.0  # Rec. 709 luminance


def contact_sheet_indices(total: int, count: int) -> list[int]:
    """``count`` frame indices evenly spaced over ``0 .. total-1`` (first and last included).

    ``i_k = round(k (total - 1) / (count - 1))``; every frame when ``count >= total``.

    Args:
        total: frames in the clip (>= 1).
        count: frames wanted (>= 1).

    Returns:
        Sorted distinct indices.

    Example:
        >>> contact_sheet_indices(10, 4)
        [0, 3, 6, 9]
    """
    if count >= total:
        return list(range(total))
    if count == 1:
        return [total - 1]
    return [round(i * (total - 1) / (count - 1)) for i in range(count)]


_SHEET_FRAMES = 12
"""Frames of a contact sheet whose ``frames`` is left out (fewer for a shorter clip)."""


def _sheet_count(params: ContactSheetParams, total: int) -> int:
    """How many frames the sheet shows of a ``total``-frame clip; more than it has is refused."""
    if params.frames is None:
        return min(_SHEET_FRAMES, total)
    if params.frames > total:
        raise ParamError(f"frames={params.frames} is more than the clip's {total} frames; use "
                         f"frames <= {total}, or leave frames out for up to {_SHEET_FRAMES}",
                         param="frames")
    return params.frames


def _check_contact_sheet(params: ContactSheetParams, ctx: CheckContext) -> None:
    from .composite import check_labels

    if params.labels is False:
        _warn_unused(params, ctx, {"label_color": "without labels"},
                     otherwise="set labels: true")
    elif isinstance(params.labels, (str, list)):
        check_labels([params.labels] if isinstance(params.labels, str) else params.labels)


def _sheet_labels(labels: bool | str | list[str], total: int, picked: list[int]) -> list[str] | None:
    """The captions of the ``picked`` frames of a ``total``-frame clip; ``None`` for none.

    Raises:
        ParamError: a list of captions that is neither one for all nor one per frame.
    """
    if labels is False:
        return None
    if labels is True:
        return [str(i) for i in picked]
    captions = [labels] if isinstance(labels, str) else labels
    if len(captions) not in (1, total):
        raise ParamError(f"labels has {len(captions)} captions but the clip has {total} frames; "
                         "give one per frame of the clip (the sheet shows those of the frames "
                         "it picks), or one for all", param="labels")
    return [captions[i if len(captions) > 1 else 0] for i in picked]


def _run_contact_sheet(inputs: list[Tensor], params: ContactSheetParams,
                       ctx: StageContext) -> Tensor:
    frames = inputs[0]
    picked = contact_sheet_indices(frames.shape[0], _sheet_count(params, frames.shape[0]))
    labels = _sheet_labels(params.labels, frames.shape[0], picked)
    return _function("minart.composite:grid")(frames[picked], columns=params.columns,
                                              spacing=params.spacing,
                                              background=params.background, labels=labels,
                                              label_color=_caption_color(params))


class CrossfadeParams(_Params):
    """Parameters of :func:`minart.composite.crossfade`."""

    frames: int = Field(24, ge=2, le=10000, description=(
        "Length of the fade in frames; clips fed in must have exactly this many frames."))


def _run_crossfade(inputs: list[Tensor], params: CrossfadeParams, ctx: StageContext) -> Tensor:
    a, b = inputs
    return _function("minart.composite:crossfade")(a, b, frames=params.frames)


class NoParams(_Params):
    """A stage without parameters."""


def _unary(function: str) -> Callable[[list[Tensor], BaseModel, StageContext], Tensor]:
    def run(inputs: list[Tensor], params: BaseModel, ctx: StageContext) -> Tensor:
        return _function(function)(inputs[0], **_kwargs(params))

    return run


class SubsampleParams(_Params):
    """Parameters of :func:`minart.composite.subsample`."""

    every: int = Field(2, ge=1, le=10000, description="Keep one frame in this many.")
    offset: int = Field(0, ge=0, le=10000, description=(
        "Index of the first frame kept (must be shorter than the clip)."))


class HoldParams(_Params):
    """Parameters of :func:`minart.composite.hold`."""

    first: int = Field(0, ge=0, le=100000, description=(
        "Extra copies of the first frame at the start."))
    last: int = Field(0, ge=0, le=100000, description="Extra copies of the last frame at the end.")


def _run_concatenate(inputs: list[Tensor], params: BaseModel, ctx: StageContext) -> Tensor:
    return _function("minart.composite:concatenate")(inputs)


# -- outputs -------------------------------------------------------------------------------------


class SaveImageParams(_Params):
    """Parameters of the ``save_image`` stage (:func:`minart.io.write_image`)."""

    path: str = Field(..., min_length=1, description=(
        "File to write inside the output folder; a template with {name}, {seed}, {date}, "
        "{step}. The extension picks the format (.png, .jpg)."))
    bits: Literal[8, 16] = Field(8, description="Bits per channel: 16 keeps smooth gradients "
                                 "(PNG only).")
    quality: int = Field(95, ge=1, le=100, description="JPEG quality (PNG is lossless).")
    embed_recipe: bool = Field(True, description=(
        "Store the recipe in the file's metadata so 'minart reproduce' can render it again."))


class EncodeVideoParams(_Params):
    """Parameters of the ``encode_video`` stage (:func:`minart.video.encode_video`)."""

    path: str = Field(..., min_length=1, description=(
        "File to write inside the output folder; a template with {name}, {seed}, {date}, "
        "{step}. The extension picks the format (.webm, .mp4, .gif)."))
    fps: float = Field(24.0, gt=0, le=240, description=(
        "Frames per second. GIF: 0.001526 to 50, each frame's delay rounded to 1/100 s "
        "(24 fps: delays of 4 or 5 hundredths, 24 fps on average)."))
    quality: int = Field(55, ge=0, le=100, description=(
        "0 smallest file ... 100 best picture (WebM/MP4; 55 is the codec's usual default)."))
    loop: int = Field(0, ge=-1, le=65535, description=(
        "GIF only: 0 loops forever, -1 plays once, n repeats n more times."))
    codec: Literal["libvpx-vp9", "libx264", "libx265"] | None = Field(None, description=(
        "Leave out for the container's default (VP9 for WebM, H.264 for MP4)."))
    pad: Literal["even", "refuse"] = Field("even", description=(
        "WebM/MP4 need even sizes: 'even' repeats the last row/column, 'refuse' stops."))
    embed_recipe: bool = Field(True, description=(
        "Write the recipe to a <file>.json sidecar so 'minart reproduce' can render it again."))


def _check_suffix(path: str, allowed: tuple[str, ...], kind: str) -> None:
    suffix = PurePosixPath(path).suffix.lower()
    if suffix not in allowed:
        raise ParamError(f"path={path!r} needs {kind} extension ({', '.join(allowed)})",
                         param="path")


def _check_save_image(params: SaveImageParams, ctx: CheckContext) -> None:
    check_output_template(params.path)
    _check_suffix(params.path, IMAGE_SUFFIXES, "an image")
    if params.bits == 16 and PurePosixPath(params.path).suffix.lower() != ".png":
        raise ParamError(f"bits=16 needs a .png path, got {params.path!r}", param="bits")
    if params.quality != SaveImageParams.model_fields["quality"].default \
            and PurePosixPath(params.path).suffix.lower() == ".png":
        raise ParamError(f"quality={params.quality} applies to JPEG only; PNG is lossless, so "
                         "leave quality out", param="quality")


def _check_encode_video(params: EncodeVideoParams, ctx: CheckContext) -> None:
    check_output_template(params.path)
    _check_suffix(params.path, VIDEO_SUFFIXES, "a video")
    suffix = PurePosixPath(params.path).suffix.lower()
    if params.loop != 0 and suffix != ".gif":
        raise ParamError(f"loop={params.loop} applies to GIF only; {suffix[1:]} videos loop in "
                         "the player, so leave loop out", param="loop")
    if suffix == ".gif":
        from .video import check_gif_fps

        if params.quality != EncodeVideoParams.model_fields["quality"].default:
            raise ParamError(f"quality={params.quality} applies to WebM/MP4 only; a GIF has one "
                             "256-colour palette and no quality setting, so leave quality out",
                             param="quality")
        check_gif_fps(params.fps)
    if params.codec is not None:
        allowed = {".webm": ("libvpx-vp9",), ".mp4": ("libx264", "libx265"), ".gif": ()}[suffix]
        if params.codec not in allowed:
            raise ParamError(f"codec={params.codec!r} does not fit a {suffix} file; use "
                             f"{' or '.join(allowed) or 'no codec'}", param="codec")


def _preview_path(params: BaseModel, factor: int) -> dict[str, Any]:
    """A preview writes ``stem-preview.ext`` where the path has no ``{name}`` (which gets it)."""
    if "{name}" in params.path:
        return {}
    path = PurePosixPath(params.path)
    return {"path": str(path.with_name(f"{path.stem}-preview{path.suffix}"))}


def output_source(recipe: Any, step: str) -> str:
    """The step whose result an output step writes (``{step}`` in path templates).

    For a step made from the recipe's ``outputs:`` this is the output's ``step:``, also when a
    contact sheet sits between them; otherwise the output step's first input.

    Args:
        recipe: a :class:`minart.recipe.Recipe` (or anything with ``outputs`` and ``steps``).
        step: the output step's name.

    Returns:
        The source step's name (``step`` itself when nothing better is known).

    Example:
        >>> from types import SimpleNamespace as S
        >>> output_source(S(outputs=[S(step="out.x", source="art")], steps=[]), "out.x")
        'art'
    """
    for output in getattr(recipe, "outputs", None) or ():
        if getattr(output, "step", None) == step:
            return output.source
    for candidate in getattr(recipe, "steps", None) or ():
        if candidate.name == step and candidate.inputs:
            return candidate.inputs[0]
    return step


def output_targets(params: BaseModel, ctx: StageContext) -> list[Path]:
    """The files an output stage will write, expanded and confined to ``ctx.output_dir``.

    Args:
        params: ``SaveImageParams`` or ``EncodeVideoParams`` (anything with a ``path`` template).
        ctx: the step's context (``recipe``, ``seed``, ``step``, ``output_dir``).

    Returns:
        One absolute path.

    Raises:
        RecipeError: the template expands outside the output folder.

    Example:
        >>> p = SaveImageParams(path="{name}/{step}.png")
        >>> [t.name for t in output_targets(p, StageContext(output_dir=Path("/tmp/o"), step="s"))]
        ['s.png']
    """
    recipe = ctx.recipe
    return [expand_output_path(params.path, output_dir=ctx.output_dir or Path.cwd(),
                               name=getattr(recipe, "name", None) or "minart", seed=ctx.seed,
                               step=output_source(recipe, ctx.step), date=ctx.date)]


def _metadata(ctx: StageContext) -> dict[str, str]:
    """The recipe, its overrides and preview factor, for ``minart reproduce``."""
    recipe = ctx.recipe
    if recipe is None or not getattr(recipe, "text", None):
        return {}
    return {
        "minart_recipe": recipe.text,
        "minart_recipe_path": str(getattr(recipe, "origin", None) or getattr(recipe, "path", "")
                                  or ""),
        "minart_overrides": json.dumps(list(getattr(recipe, "overrides", ()) or ())),
        "minart_preview": str(getattr(recipe, "preview_factor", 1)),
        "minart_seed": str(ctx.seed),
        "minart_step": output_source(recipe, ctx.step),
        "minart_inputs": json.dumps({  # the input images, so reproduce can refuse other ones
            s.name: s.params.sha256 for s in getattr(recipe, "steps", ())
            if s.stage == "load_image" and s.params.sha256}),
    }


def _run_save_image(inputs: list[Tensor], params: SaveImageParams, ctx: StageContext) -> Tensor:
    (target,) = output_targets(params, ctx)
    metadata = _metadata(ctx) if params.embed_recipe else None
    _function("minart.io:write_image")(target, inputs[0], bits=params.bits,
                                       quality=params.quality, metadata=metadata)
    ctx.written.append(target)
    return inputs[0]


def _run_encode_video(inputs: list[Tensor], params: EncodeVideoParams,
                      ctx: StageContext) -> Tensor:
    (target,) = output_targets(params, ctx)
    metadata = _metadata(ctx) if params.embed_recipe else None
    _function("minart.video:encode_video")(target, inputs[0], fps=params.fps,
                                           quality=params.quality, loop=params.loop,
                                           codec=params.codec, pad=params.pad, metadata=metadata)
    ctx.written.append(target)
    if metadata is not None:  # its recipe, for 'minart reproduce': checked with the video
        ctx.written.append(_function("minart.video:sidecar_path")(target))
    return inputs[0]


# -- shapes of results (checked before anything runs; see minart.shapes) ------------------------


def _named(ctx: CheckContext, index: int) -> str:
    """``"input 'photo' (a 512x384 RGB image)"`` for the step's ``index``-th input."""
    from .shapes import describe

    return f"{ctx.input_names[index]!r} ({describe(ctx.input_shapes[index])})"


def _frames_of(shape: tuple[int, ...]) -> tuple[int, tuple[int, ...]]:
    """``(T, (C, H, W))`` of a clip, ``(1, shape)`` of an image."""
    return (shape[0], shape[1:]) if len(shape) == 4 else (1, shape)


def _least(ctx: CheckContext, stage: str, pixels: int = 2) -> None:
    for i, shape in enumerate(ctx.input_shapes):
        if shape[-1] < pixels or shape[-2] < pixels:
            raise ShapeError(f"input {_named(ctx, i)} is too small: {stage} needs at least "
                             f"{pixels}x{pixels} pixels")


def _fits_channels(value: Any, channels: int, name: str) -> None:
    """A colour parameter (one level or one per channel) that fits ``channels`` channels."""
    if isinstance(value, tuple) and len(value) != channels:
        raise ParamError(f"{name}={list(value)} has {len(value)} values but the image has "
                         f"{channels} channel{'s' if channels > 1 else ''}; give one level or "
                         f"{channels}", param=name)


def _same_tiles(ctx: CheckContext, what: str) -> tuple[int, ...]:
    """The ``(C, H, W)`` every input shares (frames of clips included), or a ShapeError."""
    first = _frames_of(ctx.input_shapes[0])[1]
    for i, shape in enumerate(ctx.input_shapes[1:], start=1):
        tile = _frames_of(shape)[1]
        if tile != first:
            remedies = ["resize them first (stage: resize)"] if tile[1:] != first[1:] else []
            then = "" if remedies else " first"
            if {tile[0], first[0]} == {1, 3}:
                remedies.append(f"turn the grey one into RGB{then} (stage: colorize)")
            elif tile[0] != first[0]:
                remedies.append(f"give them one colour model{then}")
            raise ShapeError(f"{what} need one size and colour model, but {_named(ctx, 0)} and "
                             f"{_named(ctx, i)} differ; {' and '.join(remedies)}")
    return first


def _shape_generator(params: BaseModel, ctx: CheckContext) -> tuple[int, ...]:
    width, height = _size(params, ctx)
    frames = getattr(params, "frames", None)
    return (3, height, width) if frames is None else (frames, 3, height, width)


def _check_downscale(factor: int, width: int, height: int) -> None:
    """Refuse a ``downscale`` that would leave less than one pixel of the image's ``width x
    height`` (at check time from the file's header, and again when it is read)."""
    if height < factor or width < factor:
        raise ParamError(f"downscale={factor} is larger than the image ({width}x{height}); use "
                         f"downscale <= {min(width, height)}", param="downscale")


def _shape_load_image(params: LoadImageParams, ctx: CheckContext) -> tuple[int, ...]:
    from .io import image_size

    try:
        width, height = image_size(input_path(params, ctx.recipe_dir),
                                   max_pixels=params.max_pixels)
    except MediaError as exc:
        raise ParamError(f"path={params.path!r}: {exc.message}", param="path") from None
    _check_downscale(params.downscale, width, height)
    if isinstance(params.background, tuple) and len(params.background) not in (1, 3):
        raise ParamError(f"background={params.background} has {len(params.background)} values; "
                         "give one grey level or [r, g, b]", param="background")
    return (3, height // params.downscale, width // params.downscale)


def _shape_same(params: BaseModel, ctx: CheckContext) -> tuple[int, ...]:
    return ctx.input_shapes[0]


def _shape_perona_malik(params: PeronaMalikParams, ctx: CheckContext) -> tuple[int, ...]:
    _least(ctx, "perona_malik")
    return ctx.input_shapes[0]


def _shape_perona_malik_sweep(params: PeronaMalikSweepParams,
                              ctx: CheckContext) -> tuple[int, ...]:
    _least(ctx, "perona_malik_sweep")
    return (len(_per_frame_perona_malik_sweep(params)), *ctx.input_shapes[0])


def _per_frame_perona_malik_sweep(params: PeronaMalikSweepParams) -> list[dict[str, float]]:
    from .diffusion import sweep_variants

    kappas, dts = sweep_variants(params.kappa, params.dt)
    return [{"kappa": k, "dt": d} for k, d in zip(kappas, dts, strict=True)]


def _shape_minimize(params: MinimizeParams, ctx: CheckContext) -> tuple[int, ...]:
    _least(ctx, "minimize")
    tile = _frames_of(ctx.input_shapes[0])[1]
    return (len(_per_frame_minimize(params)), *tile)


def _per_frame_minimize(params: MinimizeParams) -> list[dict[str, int]]:
    from .minimize import frame_iterations

    return [{"iterations": n} for n in frame_iterations(params.iterations, params.frame_every)]


def _per_frame_fractal_frames(params: FractalFramesParams) -> list[dict[str, int]]:
    from .fractal import frame_budgets

    return [{"iterations": n} for n in frame_budgets(params.iterations, params.frames)]


_LAYERS = {"top": ("a clip on top", "swap them, or subsample/hold the clips to one length"),
           "mask": ("a clip as mask", "subsample/hold the clips to one length")}
"""How a blend's top layer and mask over a still base read in messages, and their remedy."""


def _fit_base(ctx: CheckContext, i: int, role: str, *, size_only: bool = False) -> None:
    """Blend's input ``i`` (``role``: top or mask) has the base's size (and colour model unless
    ``size_only``) and one frame or as many as the base."""
    (base_t, base_tile), (t, tile) = _frames_of(ctx.input_shapes[0]), _frames_of(ctx.input_shapes[i])
    fits = tile[1:] == base_tile[1:] if size_only else tile == base_tile  # (C, H, W)
    if not fits:
        raise ShapeError(f"{role} {_named(ctx, i)} does not fit base {_named(ctx, 0)}; resize "
                         "one to the other's size first (stage: resize)")
    if t not in (1, base_t):
        what = "a clip of the same length" if len(ctx.input_shapes[0]) == 4 else "a clip"
        clip, remedy = _LAYERS[role]
        raise ShapeError(f"{role} {_named(ctx, i)} does not fit base {_named(ctx, 0)}: {clip} "
                         f"needs {what} as base ({remedy})")


def _shape_blend(params: BlendParams, ctx: CheckContext) -> tuple[int, ...]:
    base, top, *mask = ctx.input_shapes
    if mask:
        channels = _frames_of(mask[0])[1][0]
        if channels != 1:
            raise ShapeError(f"mask {_named(ctx, 2)} has {channels} channels, but a mask has one "
                             "(the opacity of each pixel); make it with a step of stage "
                             "luminance_mask")
        _fit_base(ctx, 2, "mask", size_only=True)
    _fit_base(ctx, 1, "top")
    return base if len(base) == 4 or all(len(x) == 3 for x in (top, *mask)) else (1, *base)


def _from_brightness(ctx: CheckContext, what: str, channels: int) -> tuple[int, ...]:
    """The shape of ``what`` made from the input's brightness: ``channels`` of the same size."""
    shape = ctx.input_shapes[0]
    if shape[-3] not in (1, 3, 4):
        raise ShapeError(f"input {_named(ctx, 0)} has {shape[-3]} channels; {what} is made "
                         "from 1 (grey), 3 (RGB) or 4 (RGBA)")
    return (*shape[:-3], channels, *shape[-2:])


def _shape_luminance_mask(params: LuminanceMaskParams, ctx: CheckContext) -> tuple[int, ...]:
    return _from_brightness(ctx, "a luminance mask", 1)


def _shape_colorize(params: ColorizeParams, ctx: CheckContext) -> tuple[int, ...]:
    return _from_brightness(ctx, "a gradient map", 3)


def _shape_resize(params: ResizeParams, ctx: CheckContext) -> tuple[int, ...]:
    width, height = _size(params, ctx)
    shape = ctx.input_shapes[0]
    if params.fit == "contain":
        _fits_channels(params.background, shape[-3], "background")
    return (*shape[:-2], height, width)


def _shape_grid(params: GridParams, ctx: CheckContext) -> tuple[int, ...]:
    from .composite import grid_shape

    tile = _same_tiles(ctx, "grid tiles")
    count = sum(_frames_of(shape)[0] for shape in ctx.input_shapes)
    if params.labels is not None and len(params.labels) != count:
        raise ParamError(f"labels has {len(params.labels)} captions but the grid has {count} "
                         "tiles; give one per tile", param="labels")
    _fits_channels(params.background, tile[0], "background")
    _fits_channels(params.label_color, tile[0], "label_color")
    _warn_cut_labels(params.labels or [], tile[-1], ctx)
    _warn_empty_columns(params.columns, count, "tiles", ctx)
    return grid_shape(count, tile, columns=params.columns, spacing=params.spacing,
                      labels=params.labels is not None)


def _warn_cut_labels(captions: Sequence[str], width: int, ctx: CheckContext) -> None:
    """Warn when captions are wider than the tiles they go under (their ends are cut off)."""
    from .composite import label_width

    cut = [c for c in captions if label_width(c) > width]
    if cut:
        others = f" (and {len(cut) - 1} more)" if len(cut) > 1 else ""
        ctx.warn(f"the caption {cut[0]!r} is {label_width(cut[0])} px wide but the tiles are "
                 f"{width} px, so its end is cut off{others}; shorten the labels (6 px a "
                 "character) or make the tiles wider", param="labels")


def _warn_empty_columns(columns: int | None, count: int, what: str, ctx: CheckContext) -> None:
    if columns is not None and columns > count:
        ctx.warn(f"columns={columns} but there are {count} {what}, so {columns - count} "
                 f"column(s) stay empty; use columns <= {count}, or leave columns out",
                 param="columns")


def _shape_contact_sheet(params: ContactSheetParams, ctx: CheckContext) -> tuple[int, ...]:
    from .composite import grid_shape

    total, tile = _frames_of(ctx.input_shapes[0])
    _fits_channels(params.background, tile[0], "background")
    picked = contact_sheet_indices(total, _sheet_count(params, total))
    _warn_cut_labels(_sheet_labels(params.labels, total, picked) or [], tile[-1], ctx)
    _warn_empty_columns(params.columns, len(picked), "frames on the sheet", ctx)
    return grid_shape(len(picked), tile, columns=params.columns, spacing=params.spacing,
                      labels=params.labels is not False)


def _shape_crossfade(params: CrossfadeParams, ctx: CheckContext) -> tuple[int, ...]:
    tile = _same_tiles(ctx, "the two ends of a crossfade")
    for i, shape in enumerate(ctx.input_shapes):
        if len(shape) == 4 and shape[0] != params.frames:
            raise ParamError(f"frames={params.frames} but {'ab'[i]} {_named(ctx, i)} has "
                             f"{shape[0]} frames; a clip must last the whole fade: set frames to "
                             f"{shape[0]}, or subsample/hold the clip", param="frames")
    return (params.frames, *tile)


def _shape_boomerang(params: BaseModel, ctx: CheckContext) -> tuple[int, ...]:
    total, tile = _frames_of(ctx.input_shapes[0])
    return (max(1, 2 * total - 2), *tile)


def _shape_subsample(params: SubsampleParams, ctx: CheckContext) -> tuple[int, ...]:
    total, tile = _frames_of(ctx.input_shapes[0])
    if params.offset >= total:
        raise ParamError(f"offset={params.offset} is past the end of {_named(ctx, 0)}; use an "
                         f"offset below {total}", param="offset")
    return (len(range(params.offset, total, params.every)), *tile)


def _shape_concatenate(params: BaseModel, ctx: CheckContext) -> tuple[int, ...]:
    tile = _same_tiles(ctx, "clips joined one after another")
    return (sum(_frames_of(shape)[0] for shape in ctx.input_shapes), *tile)


def _shape_hold(params: HoldParams, ctx: CheckContext) -> tuple[int, ...]:
    total, tile = _frames_of(ctx.input_shapes[0])
    return (total + params.first + params.last, *tile)


def _shape_save_image(params: SaveImageParams, ctx: CheckContext) -> tuple[int, ...]:
    shape = ctx.input_shapes[0]
    if shape[0] not in (1, 3, 4):
        raise ShapeError(f"{_named(ctx, 0)} has {shape[0]} channels; an image file holds 1 "
                         "(grey), 3 (RGB) or 4 (RGBA)")
    if shape[0] == 4 and PurePosixPath(params.path).suffix.lower() != ".png":
        raise ParamError(f"path={params.path!r}: JPEG has no alpha channel but "
                         f"{_named(ctx, 0)} has one; write a .png", param="path")
    return shape


def _shape_encode_video(params: EncodeVideoParams, ctx: CheckContext) -> tuple[int, ...]:
    from .video import output_size

    shape = ctx.input_shapes[0]
    if shape[1] not in (1, 3):
        raise ShapeError(f"{_named(ctx, 0)} has {shape[1]} channels; a video holds 1 (grey) or "
                         "3 (RGB): blend an alpha channel onto a background first")
    container = {".webm": "webm", ".mp4": "mp4", ".gif": "gif"}[
        PurePosixPath(params.path).suffix.lower()]
    try:
        output_size(shape[3], shape[2], container=container, pad=params.pad)
    except MediaError as exc:
        raise ParamError(f"pad={params.pad!r}: {exc.message}", param="pad") from None
    return shape


# -- registration --------------------------------------------------------------------------------

_ANY = ("image", "frames")

register(Stage(
    name="fractal", params=FractalParams, run=_run_fractal, consumes=("none",), produces="image",
    # 2: on CUDA the orbits run in the Triton kernel (other rounding at basin boundaries)
    # 3: on CUDA the point trap's root is taken once per orbit (trap distances change in the
    #    last bits)
    # 4: iterated in bands of rows (bounded memory); smooth colouring changes in the last bits
    version=4,
    summary="Render a fractal image (the post's inverse-power ocean by default).",
    check=_check_fractal, preview=_preview_size, shape=_shape_generator,
    function="minart.fractal:fractal"))
register(Stage(
    name="fractal_frames", params=FractalFramesParams, run=_run_fractal_frames,
    consumes=("none",), produces="frames", version=4,  # 2, 3, 4: as fractal
    summary="Render an animated fractal as a clip of frames.",
    check=_check_fractal, preview=_preview_size, shape=_shape_generator,
    per_frame=_per_frame_fractal_frames, function="minart.fractal:fractal_frames"))
register(Stage(
    name="load_image", params=LoadImageParams, run=_run_load_image, consumes=("none",),
    produces="image", summary="Read an image file (relative to the recipe) as the start image.",
    # 2: downscale gives floor(size / downscale) pixels (1/d rounded some sizes one pixel lower)
    # 3: transparent pixels are refused or put over `background` (their hidden colours showed)
    # 4: 8-bit colours are mapped from an embedded ICC profile to sRGB (they were read as sRGB)
    version=4,
    check=_check_load_image, shape=_shape_load_image,
    preview=lambda p, f: {"downscale": p.downscale * f}, function="minart.io:read_image"))
register(Stage(
    name="perona_malik", params=PeronaMalikParams, run=_run_perona_malik, consumes=_ANY,
    produces="same", inputs=("image",), check=_check_perona_malik, preview=_preview_perona_malik,
    shape=_shape_perona_malik,
    # 2: on CUDA the kernels' multiply-adds are all written out, none left to the compiler (the
    #    tile, strip and two-step kernels write the same bits; renders change in the last bits)
    # 3: the seed scheme clamps an input's rounding overshoot (within 1e-6 of [0, 1]) first
    version=3,
    summary="Edge-preserving Perona-Malik diffusion (classic or the post's seed scheme).",
    function="minart.diffusion:perona_malik"))
register(Stage(
    name="perona_malik_sweep", params=PeronaMalikSweepParams, run=_run_perona_malik_sweep,
    consumes=("image",), produces="frames", inputs=("image",), check=_check_perona_malik_sweep,
    preview=_preview_perona_malik, shape=_shape_perona_malik_sweep,
    per_frame=_per_frame_perona_malik_sweep,
    summary="Perona-Malik diffusions of one image side by side, a kappa or dt each; a clip.",
    function="minart.diffusion:perona_malik_sweep"))
register(Stage(
    name="minimize", params=MinimizeParams, run=_run_minimize, consumes=_ANY, produces="frames",
    inputs=("image",), check=_check_minimize, preview=_preview_minimize, shape=_shape_minimize,
    per_frame=_per_frame_minimize,
    # 2: on CUDA the fused learned step sums dL/dK per row strip (another float order)
    # 3: on CUDA seed_video's steps run in the Triton kernels (they were eager there)
    # 4: on CUDA the kernels' multiply-adds are all written out (as perona_malik 2)
    # 5: on CUDA the fused learned step's row strips are 128 rows high (another float order)
    # 6: on CUDA the fused learned step sums the loss per output channel first
    # 7: refresh_every: null reaches the library (it fell back to 375 and refreshed)
    version=7,
    summary="Minimization art: learn the diffusion operator by gradient descent; a clip.",
    function="minart.minimize:minimize"))
register(Stage(
    name="blend", params=BlendParams, run=_run_blend, consumes=_ANY, produces="same",
    # 2: inputs within 1e-6 outside [0, 1] (float rounding of earlier steps) are clamped first
    version=2,
    inputs=("base", "top", "mask"), optional=1, shape=_shape_blend,
    summary="Blend a top layer over a base with a mode and opacity (and an optional mask).",
    function="minart.composite:blend"))
register(Stage(
    name="colorize", params=ColorizeParams, run=_unary("minart.composite:colorize"),
    consumes=_ANY, produces="same", inputs=("image",), check=_check_colorize,
    shape=_shape_colorize,
    summary="Recolour an image or mask by its brightness through a palette (a gradient map).",
    function="minart.composite:colorize"))
register(Stage(
    name="luminance_mask", params=LuminanceMaskParams, run=_unary("minart.composite:"
                                                                  "luminance_mask"),
    consumes=_ANY, produces="same", inputs=("image",), check=_check_luminance_mask,
    shape=_shape_luminance_mask,
    summary="A one-channel mask from an image's brightness, for blend's third input.",
    function="minart.composite:luminance_mask"))
register(Stage(
    name="resize", params=ResizeParams, run=_run_resize, consumes=_ANY, produces="same",
    inputs=("image",), check=_check_resize, preview=_preview_size, shape=_shape_resize,
    # 2: the result is clamped to [0, 1] for bilinear too (rounding left white at 1 + 2.4e-7),
    #    and inputs within 1e-6 outside [0, 1] are clamped first
    version=2,
    summary="Resample an image or clip to a new size.",
    function="minart.composite:resize"))
register(Stage(
    name="grid", params=GridParams, run=_run_grid, consumes=_ANY, produces="image",
    inputs=("images",), variadic=True, check=_check_grid, preview=_preview_spacing,
    shape=_shape_grid,
    # 2: inputs within 1e-6 outside [0, 1] (float rounding of earlier steps) are clamped first
    version=2,
    summary="Lay out images (and the frames of clips) in a grid.",
    function="minart.composite:grid"))
register(Stage(
    name="contact_sheet", params=ContactSheetParams, run=_run_contact_sheet, consumes=("frames",),
    produces="image", inputs=("frames",), check=_check_contact_sheet, preview=_preview_spacing,
    shape=_shape_contact_sheet,
    # 2: inputs within 1e-6 outside [0, 1] (float rounding of earlier steps) are clamped first
    version=2,
    summary="A grid of evenly spaced frames of a clip, to see it at a glance.",
    function="minart.composite:grid"))
register(Stage(
    name="crossfade", params=CrossfadeParams, run=_run_crossfade, consumes=_ANY,
    produces="frames", inputs=("a", "b"), shape=_shape_crossfade,
    # 2: inputs within 1e-6 outside [0, 1] (float rounding of earlier steps) are clamped first
    version=2,
    summary="Dissolve from one image or clip to another over some frames.",
    function="minart.composite:crossfade"))
register(Stage(
    name="boomerang", params=NoParams, run=_unary("minart.composite:boomerang"),
    consumes=("frames",), produces="frames", inputs=("frames",), shape=_shape_boomerang,
    summary="Play a clip forwards then backwards, for a seamless loop.",
    function="minart.composite:boomerang"))
register(Stage(
    name="reverse", params=NoParams, run=_unary("minart.composite:reverse"), consumes=("frames",),
    produces="frames", inputs=("frames",), shape=_shape_same, summary="Play a clip backwards.",
    function="minart.composite:reverse"))
register(Stage(
    name="subsample", params=SubsampleParams, run=_unary("minart.composite:subsample"),
    consumes=("frames",), produces="frames", inputs=("frames",), shape=_shape_subsample,
    summary="Keep every n-th frame of a clip.", function="minart.composite:subsample"))
register(Stage(
    name="concatenate", params=NoParams, run=_run_concatenate, consumes=_ANY,
    produces="frames", inputs=("clips",), variadic=True, shape=_shape_concatenate,
    summary="Join clips (and single images, as one frame) one after another.", function="minart.composite:concatenate"))
register(Stage(
    name="hold", params=HoldParams, run=_unary("minart.composite:hold"), consumes=("frames",),
    produces="frames", inputs=("frames",), shape=_shape_hold,
    summary="Freeze a clip's first and last frames for a while (a pause at each end).",
    function="minart.composite:hold"))
register(Stage(
    name="save_image", params=SaveImageParams, run=_run_save_image, consumes=("image",),
    produces="image", inputs=("image",), check=_check_save_image, targets=output_targets,
    shape=_shape_save_image, preview=_preview_path,
    summary="Write a PNG or JPEG file into the output folder.",
    function="minart.io:write_image"))
register(Stage(
    name="encode_video", params=EncodeVideoParams, run=_run_encode_video, consumes=("frames",),
    produces="frames", inputs=("frames",), check=_check_encode_video, targets=output_targets,
    shape=_shape_encode_video, preview=_preview_path,
    summary="Encode a clip as WebM, MP4 or GIF into the output folder.",
    function="minart.video:encode_video"))
