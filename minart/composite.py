"""Compositing: blend modes, luminance masks, gradient maps, resizing, contact sheets and
frame-sequence edits.

Images are float32 ``(C, H, W)`` or ``(B, C, H, W)`` in [0, 1]; frame sequences are
``(T, C, H, W)``. Every function here is a pure tensor function: it validates its inputs, never
clips, resizes or casts them silently, and returns a new tensor on the input's device and dtype.
Values within 1e-6 of [0, 1] are float rounding of an earlier op: they are accepted and clamped
(:func:`minart._checks.check_unit_range`), anything further out is refused.

Blend modes follow the W3C "Compositing and Blending Level 1" recommendation (section 10,
"Blending", https://www.w3.org/TR/compositing-1/#blending), whose separable modes are the
Photoshop ones. With backdrop ``b`` (``base``), source ``s`` (``top``) and per-pixel opacity
``a = opacity * mask``::

    result = (1 - a) * b + a * B(b, s)

    normal      B = s
    multiply    B = b * s
    screen      B = b + s - b * s
    overlay     B = 2 b s                   if b <= 1/2
                  = 1 - 2 (1 - b)(1 - s)    otherwise      (hard_light with b and s swapped)
    add         B = min(b + s, 1)           (linear dodge; the clamped sum IS the mode)
    difference  B = |b - s|
    soft_light  B = b - (1 - 2 s) b (1 - b)        if s <= 1/2
                  = b + (2 s - 1) (D(b) - b)        otherwise,
                D(b) = ((16 b - 12) b + 4) b if b <= 1/4 else sqrt(b)   (W3C soft-light)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import as_batch, check_choice, check_range, check_unit_range, check_whole
from .errors import ParamError, ShapeError
from .palettes import Palette, map_palette, palette_stops

__all__ = [
    "BLEND_MODES",
    "blend",
    "boomerang",
    "check_labels",
    "colorize",
    "concatenate",
    "crossfade",
    "grid",
    "grid_shape",
    "hold",
    "label_width",
    "luminance_mask",
    "resize",
    "reverse",
    "subsample",
]

BlendMode = Literal["normal", "multiply", "screen", "overlay", "add", "difference", "soft_light"]
Fit = Literal["stretch", "cover", "contain"]
Interpolation = Literal["bilinear", "bicubic"]
Color = float | Sequence[float]

BLEND_MODES: tuple[str, ...] = (
    "normal", "multiply", "screen", "overlay", "add", "difference", "soft_light",
)
"""The blend modes :func:`blend` accepts, in the order of the module docstring."""

_REC709 = (0.2126, 0.7152, 0.0722)
_HALF_DTYPES = (torch.float16, torch.bfloat16)


def _image(image: Tensor, name: str) -> tuple[Tensor, bool]:
    """``as_batch`` plus finiteness and the [0, 1] range (within 1e-6, clamped), one device wait."""
    batch, single = as_batch(image, name=name)
    return check_unit_range(name, batch, hint="clamp or normalise it explicitly first"), single


def _frames(frames: Tensor, name: str = "frames") -> Tensor:
    """Check a ``(T, C, H, W)`` floating frame sequence with ``T >= 1``."""
    if not isinstance(frames, Tensor):
        raise ShapeError(f"{name} must be a torch.Tensor, got {type(frames).__name__}")
    if frames.ndim != 4:
        raise ShapeError(f"{name} must be a (T, C, H, W) frame sequence, got shape {tuple(frames.shape)}")
    if not frames.is_floating_point():
        raise ShapeError(f"{name} must be a floating tensor in [0, 1], got dtype {frames.dtype}")
    if frames.shape[0] < 1:
        raise ShapeError(f"{name} must hold at least one frame, got shape {tuple(frames.shape)}")
    return frames


def _color(value: Color, channels: int, name: str, like: Tensor) -> Tensor:
    """A colour as a ``(C, 1, 1)`` tensor: one number for every channel or one per channel."""
    values = [value] if isinstance(value, (int, float)) else list(value)
    if isinstance(value, (int, float)):
        values = values * channels
    if len(values) != channels:
        raise ParamError(
            f"{name}={tuple(values)} has {len(values)} values but the image has {channels} "
            f"channels; give one level or {channels}",
            param=name,
        )
    for v in values:
        check_range(name, v, ge=0.0, le=1.0)
    return torch.tensor(values, dtype=like.dtype, device=like.device).view(channels, 1, 1)  # (C,) -> (C, 1, 1)


def _blend_function(mode: str, b: Tensor, s: Tensor) -> Tensor:
    """``B(b, s)`` of the module docstring."""
    if mode == "normal":
        return s.expand_as(b) if s.shape != b.shape else s
    if mode == "multiply":
        return b * s
    if mode == "screen":
        return b + s - b * s
    if mode == "overlay":
        return torch.where(b <= 0.5, 2 * b * s, 1 - 2 * (1 - b) * (1 - s))
    if mode == "add":
        return (b + s).clamp(max=1.0)
    if mode == "difference":
        return (b - s).abs()
    d = torch.where(b <= 0.25, ((16 * b - 12) * b + 4) * b, b.sqrt())
    return torch.where(s <= 0.5, b - (1 - 2 * s) * b * (1 - b), b + (2 * s - 1) * (d - b))


def blend(base: Tensor, top: Tensor, *, mode: BlendMode = "normal", opacity: float = 1.0,
          mask: Tensor | None = None) -> Tensor:
    """Blend ``top`` over ``base`` with a W3C / Photoshop separable blend mode.

    ``result = (1 - a) * base + a * B(base, top)`` with ``a = opacity * mask`` and ``B`` one of the
    modes in the module docstring (W3C Compositing and Blending Level 1, section 10). Opacity 0
    (or a zero mask) returns ``base`` exactly; ``mode="normal"`` with opacity 1 returns ``top``
    exactly. The result is clamped to [0, 1] only to absorb float rounding (every mode maps
    [0, 1] inputs into [0, 1]).

    Args:
        base: backdrop ``(C, H, W)`` or ``(B, C, H, W)`` in [0, 1].
        top: source layer, same ``C, H, W``; its batch size is ``base``'s or 1 (broadcast).
        mode: one of :data:`BLEND_MODES`.
        opacity: global opacity in [0, 1].
        mask: per-pixel opacity ``(1, H, W)`` or ``(B, 1, H, W)`` in [0, 1], multiplied by
            ``opacity``; see :func:`luminance_mask`.

    Returns:
        Tensor ``(B, C, H, W)``, or ``(C, H, W)`` when ``base``, ``top`` and ``mask`` are all
        unbatched.

    Raises:
        ShapeError: not images, NaN/Inf or values outside [0, 1], mismatched sizes, or a
            ``top`` or ``mask`` of another dtype than ``base``.
        ParamError: unknown ``mode`` or ``opacity`` outside [0, 1].

    Example:
        >>> base, top = torch.full((3, 2, 2), 0.5), torch.full((3, 2, 2), 0.4)
        >>> blend(base, top, mode="multiply")[0, 0, 0].item()
        0.20000000298023224
        >>> torch.equal(blend(base, top, opacity=0.0), base)
        True
    """
    check_choice("mode", mode, BLEND_MODES)
    check_range("opacity", opacity, ge=0.0, le=1.0)
    b, single_b = _image(base, "base")
    s, single_s = _image(top, "top")
    if b.shape[1:] != s.shape[1:] or s.shape[0] not in (1, b.shape[0]):
        raise ShapeError(
            f"top {tuple(top.shape)} does not match base {tuple(base.shape)}; "
            "resize it first (composite.resize) or give one top per base image"
        )
    if s.dtype != b.dtype:
        raise ShapeError(f"top has dtype {s.dtype} but base has {b.dtype}")
    single = single_b and single_s
    alpha: Tensor | float = opacity
    if mask is not None:
        m, single_m = _image(mask, "mask")
        if m.shape[1] != 1 or m.shape[2:] != b.shape[2:] or m.shape[0] not in (1, b.shape[0]):
            raise ShapeError(
                f"mask must be (1, H, W) or (B, 1, H, W) matching base {tuple(base.shape)}, "
                f"got {tuple(mask.shape)}"
            )
        if m.dtype != b.dtype:
            raise ShapeError(f"mask has dtype {m.dtype} but base has {b.dtype}; convert one of them "
                             "explicitly")
        alpha = m * opacity
        single = single and single_m
    out = ((1 - alpha) * b + alpha * _blend_function(mode, b, s)).clamp(0.0, 1.0)
    return out[0] if single else out  # (1, C, H, W) -> (C, H, W)


def luminance_mask(image: Tensor, *, low: float = 0.0, high: float = 1.0,
                   invert: bool = False) -> Tensor:
    """A soft mask from an image's Rec. 709 luma, for :func:`blend`'s ``mask``.

    ``Y = 0.2126 R + 0.7152 G + 0.0722 B`` (ITU-R BT.709 luma on the stored, gamma-encoded
    values; a 1-channel image is its own luma, a 4th alpha channel is ignored), then the
    smoothstep ``t = clamp((Y - low) / (high - low), 0, 1)``, ``m = t^2 (3 - 2 t)``, and
    ``1 - m`` when ``invert``. Pixels darker than ``low`` get 0, brighter than ``high`` get 1.

    Args:
        image: ``(C, H, W)`` or ``(B, C, H, W)`` in [0, 1] with 1, 3 or 4 channels.
        low: luma where the mask starts to rise, in [0, 1).
        high: luma where the mask reaches 1, in (low, 1].
        invert: return ``1 - m`` (mask the highlights out instead of in).

    Returns:
        Tensor ``(1, H, W)`` or ``(B, 1, H, W)`` in [0, 1].

    Raises:
        ShapeError: not an image in [0, 1], or 2 or more than 4 channels.
        ParamError: ``low``/``high`` outside [0, 1] or ``low >= high``.

    Example:
        >>> luminance_mask(torch.tensor([[[0.0, 0.5, 1.0]]])).tolist()
        [[[0.0, 0.5, 1.0]]]
        >>> luminance_mask(torch.ones(3, 1, 2), low=0.2, high=0.6, invert=True).tolist()
        [[[0.0, 0.0]]]
    """
    check_range("low", low, ge=0.0, le=1.0)
    check_range("high", high, ge=0.0, le=1.0)
    if low >= high:
        raise ParamError(f"low={low} must be below high={high}", param="low")
    x, single = _image(image, "image")
    y = _luma(x, "a luminance mask")
    t = ((y - low) / (high - low)).clamp(0.0, 1.0)
    m = t * t * (3 - 2 * t)
    if invert:
        m = 1 - m
    return m[0] if single else m  # (1, 1, H, W) -> (1, H, W)


def _luma(x: Tensor, purpose: str) -> Tensor:
    """Rec. 709 luma ``(B, 1, H, W)`` of a ``(B, C, H, W)`` batch: a grey image is its own, an
    alpha channel is ignored."""
    channels = x.shape[1]
    if channels == 1:
        return x
    if channels not in (3, 4):
        raise ShapeError(f"image must have 1, 3 or 4 channels for {purpose}, got {channels}")
    weights = torch.tensor(_REC709, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)  # (3,) -> (1, 3, 1, 1)
    return (x[:, :3] * weights).sum(dim=1, keepdim=True)


def colorize(image: Tensor, *, palette: Palette = "gray") -> Tensor:
    """A gradient map: each pixel's brightness looked up in a palette, giving an RGB image.

    ``Y = 0.2126 R + 0.7152 G + 0.0722 B`` (Rec. 709 luma, as :func:`luminance_mask`; a grey
    image is its own), then ``colour(Y)`` by :func:`minart.palettes.apply_palette`'s
    piecewise-linear interpolation. With the default ``"gray"`` palette a grey image (a mask)
    becomes the same grey in RGB, exactly, so it can share a grid with colour images.

    Args:
        image: ``(C, H, W)`` or ``(B, C, H, W)`` in [0, 1] with 1, 3 or 4 channels.
        palette: a palette name or stops, as for :func:`minart.fractal.fractal`.

    Returns:
        Tensor ``(3, H, W)`` or ``(B, 3, H, W)`` in [0, 1].

    Raises:
        ShapeError: not an image in [0, 1], or 2 or more than 4 channels.
        ParamError: a bad palette.

    Example:
        >>> colorize(torch.tensor([[[0.0, 0.25, 1.0]]]))[:, 0, 1].tolist()  # grey stays grey
        [0.25, 0.25, 0.25]
        >>> colorize(torch.ones(3, 1, 1), palette="fire")[:, 0, 0].tolist()  # white: fire's end
        [1.0, 0.9843137264251709, 0.9019607901573181]
    """
    x, single = _image(image, "image")
    y = _luma(x, "a gradient map").clamp(0.0, 1.0)  # (B, 1, H, W); luma rounding past 1
    positions, colours = palette_stops(palette, dtype=x.dtype, device=x.device)
    rgb = map_palette(y[:, 0], positions, colours)  # (B, H, W) -> (B, 3, H, W)
    return rgb[0] if single else rgb


def resize(image: Tensor, width: int, height: int, *, fit: Fit = "stretch",
           background: Color = 0.0, interpolation: Interpolation = "bilinear") -> Tensor:
    """Resize to exactly ``width x height`` with antialiasing (never called implicitly).

    ``torch.nn.functional.interpolate(mode=interpolation, antialias=True, align_corners=False)``,
    so downscaling averages over the footprint instead of aliasing. ``fit`` decides what happens
    when the aspect ratio changes:

    ``"stretch"``  scale each axis independently (aspect changes).
    ``"cover"``    scale by ``max(width / W, height / H)`` (sizes rounded, at least the target)
                   and crop the centre; nothing is letterboxed, edges are cut.
    ``"contain"``  scale by ``min(width / W, height / H)`` and centre the result on a
                   ``background`` canvas (letterbox / pillarbox); nothing is cut.

    The result is clamped to [0, 1]: bicubic interpolation overshoots near edges, and bilinear
    rounding can leave a white image about 2.4e-7 above 1, which later steps would refuse. For an
    image in [0, 1] the clamp changes nothing else.

    Args:
        image: ``(C, H, W)`` or ``(B, C, H, W)`` in [0, 1].
        width: output width in pixels (>= 1).
        height: output height in pixels (>= 1).
        fit: ``"stretch"``, ``"cover"`` or ``"contain"``.
        background: letterbox colour for ``"contain"``: one number or one per channel, in [0, 1]
            (default black).
        interpolation: ``"bilinear"`` or ``"bicubic"``.

    Returns:
        Tensor ``(C, height, width)`` or ``(B, C, height, width)``.

    Raises:
        ShapeError: not an image in [0, 1], or a float16/bfloat16 image on the CPU that needs
            resampling (torch has no antialiased CPU kernel for them; convert it to float32).
        ParamError: bad size, ``fit``, ``interpolation`` or ``background``.

    Example:
        >>> resize(torch.ones(3, 4, 8), 4, 4, fit="contain")[0].tolist()
        [[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]]
        >>> resize(torch.rand(2, 3, 10, 20), 5, 5, fit="cover").shape
        torch.Size([2, 3, 5, 5])
    """
    check_whole("width", width, ge=1)
    check_whole("height", height, ge=1)
    check_choice("fit", fit, ("stretch", "cover", "contain"))
    check_choice("interpolation", interpolation, ("bilinear", "bicubic"))
    x, single = _image(image, "image")
    channels, h, w = x.shape[1:]
    color = _color(background, channels, "background", x) if fit == "contain" else None

    def scale(t: Tensor, new_h: int, new_w: int) -> Tensor:
        if (new_h, new_w) == tuple(t.shape[2:]):
            return t.clone()
        if t.device.type == "cpu" and t.dtype in _HALF_DTYPES:
            raise ShapeError(f"image is {t.dtype}, which torch cannot resample with antialiasing "
                             "on the CPU; convert it to float32 first (image.float())")
        out = F.interpolate(t, size=(new_h, new_w), mode=interpolation, antialias=True,
                            align_corners=False)
        return out.clamp(0.0, 1.0)  # bicubic overshoot, bilinear rounding

    if fit == "stretch":
        out = scale(x, height, width)
    elif fit == "cover":
        factor = max(width / w, height / h)
        new_h, new_w = max(height, round(h * factor)), max(width, round(w * factor))
        scaled = scale(x, new_h, new_w)
        top, left = (new_h - height) // 2, (new_w - width) // 2
        out = scaled[:, :, top:top + height, left:left + width].contiguous()
    else:
        factor = min(width / w, height / h)
        new_h, new_w = min(height, max(1, round(h * factor))), min(width, max(1, round(w * factor)))
        scaled = scale(x, new_h, new_w)
        out = color.expand(x.shape[0], channels, height, width).clone()  # (C, 1, 1) -> (B, C, h, w)
        top, left = (height - new_h) // 2, (width - new_w) // 2
        out[:, :, top:top + new_h, left:left + new_w] = scaled
    return out[0] if single else out  # (1, C, h, w) -> (C, h, w)


@functools.cache
def _font() -> Any:
    """Pillow's built-in bitmap font, loaded once (a sheet of many captions measures and draws
    each with it)."""
    from PIL import ImageFont

    return ImageFont.load_default_imagefont()


def _label_band(text: str, width: int, height: int) -> Tensor:
    """Coverage ``(height, width)`` in [0, 1] of ``text`` in Pillow's built-in bitmap font."""
    from PIL import Image, ImageDraw

    canvas = Image.new("L", (width, height), 0)
    ImageDraw.Draw(canvas).text((1, 1), text, fill=255, font=_font())
    return torch.from_numpy(np.asarray(canvas, dtype=np.float32) / 255.0)


LABEL_BAND = 13
"""Height in pixels of a label band under a tile (Pillow's built-in bitmap font)."""


def label_width(text: str) -> int:
    """The width in pixels a caption needs under a tile: drawn from x = 1 in Pillow's built-in
    bitmap font (6 px a character, whose last column is spacing); a tile narrower cuts it.

    Example:
        >>> label_width("kappa 0.05")
        60
    """
    return math.ceil(_font().getlength(text))


def grid_shape(count: int, tile: tuple[int, int, int], *, columns: int | None = None,
               spacing: int = 4, labels: bool = False) -> tuple[int, int, int]:
    """The ``(C, H, W)`` of the sheet :func:`grid` makes of ``count`` tiles of shape ``tile``.

    ``columns`` defaults to ``min(count, ceil(sqrt(count)))``; see :func:`grid` for the layout.

    Args:
        count: number of tiles (>= 1).
        tile: ``(C, H, W)`` of every tile.
        columns: tiles per row, or ``None``.
        spacing: pixels between tiles and around the sheet.
        labels: whether each tile has a label band under it.

    Returns:
        ``(C, rows * (H + L) + (rows + 1) * spacing, columns * W + (columns + 1) * spacing)``.

    Example:
        >>> grid_shape(3, (3, 2, 2), columns=2, spacing=1)
        (3, 7, 7)
    """
    channels, h, w = tile
    if columns is None:
        columns = min(count, math.ceil(math.sqrt(count)))
    band = LABEL_BAND if labels else 0
    rows = math.ceil(count / columns)
    return (channels, rows * (h + band) + (rows + 1) * spacing, columns * w + (columns + 1) * spacing)


def check_labels(labels: Sequence[str], *, names: Sequence[str] | None = None) -> None:
    """Refuse a caption the label band cannot draw: not a string, or not one line of Latin-1.

    Args:
        labels: the captions, one per tile.
        names: how messages name each caption (default ``labels[i]='text'``).

    Raises:
        ParamError: naming the first bad caption.

    Example:
        >>> check_labels(["kappa 0.05", "dt 0.1"])
    """
    for i, label in enumerate(labels):
        name = f"labels[{i}]={label!r}" if names is None else names[i]
        if not isinstance(label, str):
            raise ParamError(f"{name} must be a string", param="labels")
        if not label.isprintable() or any(ord(ch) > 255 for ch in label):
            raise ParamError(
                f"{name} must be one line of Latin-1 text "
                "(the built-in bitmap font has no other glyphs)", param="labels")


def grid(images: Sequence[Tensor] | Tensor, *, columns: int | None = None, spacing: int = 4,
         background: Color = 1.0, labels: Sequence[str] | None = None,
         label_color: Color = 0.0) -> Tensor:
    """A contact sheet: equal-size tiles in rows, with optional text labels under each tile.

    With ``n`` tiles of ``H x W``, ``columns`` (default ``ceil(sqrt(n))``) and
    ``rows = ceil(n / columns)``, tile ``i`` sits at row ``r = i // columns``, column
    ``c = i % columns``, with its top-left pixel at::

        x = spacing + c * (W + spacing)
        y = spacing + r * (H + L + spacing)

    where ``L`` is the label band height (0 without labels, 13 with Pillow's built-in bitmap
    font, ``ImageFont.load_default_imagefont()``; no font is downloaded). The sheet is
    ``(C, rows * (H + L) + (rows + 1) * spacing, columns * W + (columns + 1) * spacing)``.
    Labels are drawn in ``label_color`` from the band's left edge; text wider than the tile
    is cut at the tile's right edge.

    Args:
        images: a list of ``(C, H, W)`` images or a ``(T, C, H, W)`` frame tensor, in [0, 1],
            all of the same shape (resize first with :func:`resize` if they differ).
        columns: tiles per row, >= 1 (default ``ceil(sqrt(n))``, capped at ``n``).
        spacing: pixels of ``background`` between tiles and around the sheet, >= 0.
        background: sheet colour, one number or one per channel, in [0, 1] (default white).
        labels: one single-line Latin-1 string per tile, or ``None``.
        label_color: text colour, one number or one per channel, in [0, 1] (default black).

    Returns:
        Tensor ``(C, sheet_height, sheet_width)``.

    Raises:
        ShapeError: no images, not images in [0, 1] (all tiles are checked at once, one wait
            for the device; the message names the first bad tile), or tiles of different
            shapes, dtypes or devices.
        ParamError: bad ``columns``, ``spacing``, colours or label count.

    Example:
        >>> sheet = grid([torch.zeros(3, 2, 2)] * 3, columns=2, spacing=1)
        >>> sheet.shape
        torch.Size([3, 7, 7])
        >>> sheet[0, 1:3, 4:6].tolist()
        [[0.0, 0.0], [0.0, 0.0]]
    """
    if isinstance(images, Tensor):
        stack = _frames(images, "images")
    else:
        tiles = list(images)
        if not tiles:
            raise ShapeError("grid needs at least one image, got none")
        for i, tile in enumerate(tiles):
            if not isinstance(tile, Tensor) or tile.ndim != 3:
                shape = tuple(tile.shape) if isinstance(tile, Tensor) else type(tile).__name__
                raise ShapeError(f"images[{i}] must be a (C, H, W) image, got {shape}")
        first = tiles[0]
        for i, tile in enumerate(tiles[1:], start=1):
            if tile.shape != first.shape or tile.dtype != first.dtype or tile.device != first.device:
                raise ShapeError(
                    f"grid tiles must share one shape, dtype and device: images[0] is "
                    f"{tuple(first.shape)} {first.dtype} on {first.device}, images[{i}] is "
                    f"{tuple(tile.shape)} {tile.dtype} on {tile.device}; resize or move them first"
                )
        stack = torch.stack(tiles)  # n x (C, H, W) -> (n, C, H, W)
    n = stack.shape[0]
    if columns is None:
        columns = min(n, math.ceil(math.sqrt(n)))
    check_whole("columns", columns, ge=1)
    check_whole("spacing", spacing, ge=0)
    if labels is not None:
        if isinstance(labels, str) or len(labels) != n:
            count = "a string" if isinstance(labels, str) else f"{len(labels)} labels"
            raise ParamError(f"labels must be a list of {n} strings (one per tile), got {count}",
                             param="labels")
        check_labels(labels)
    stack = _tiles_in_range(stack)  # the call's one wait for the device
    channels, h, w = stack.shape[1:]
    bg = _color(background, channels, "background", stack)
    ink = _color(label_color, channels, "label_color", stack)
    band = 0 if labels is None else LABEL_BAND
    _, sheet_h, sheet_w = grid_shape(n, (channels, h, w), columns=columns, spacing=spacing,
                                     labels=labels is not None)
    sheet = bg.expand(channels, sheet_h, sheet_w).clone()  # (C, 1, 1) -> (C, sheet_h, sheet_w)
    for i, tile in enumerate(stack.unbind(0)):  # (n, C, H, W) -> n x (C, H, W)
        y = spacing + (i // columns) * (h + band + spacing)
        x = spacing + (i % columns) * (w + spacing)
        sheet[:, y:y + h, x:x + w] = tile
        if labels is not None and band:
            cover = _label_band(labels[i], w, band).to(device=stack.device, dtype=stack.dtype)
            region = sheet[:, y + h:y + h + band, x:x + w]
            sheet[:, y + h:y + h + band, x:x + w] = (1 - cover) * region + cover * ink
    return sheet


def _tiles_in_range(stack: Tensor) -> Tensor:
    """:func:`_image` of the ``(n, C, H, W)`` tiles at once; on failure, name the first bad tile."""
    try:
        return _image(stack, "images")[0]
    except ShapeError:
        for i, tile in enumerate(stack.unbind(0)):  # (n, C, H, W) -> n x (C, H, W)
            _image(tile, f"images[{i}]")
        raise


def _as_sequence(x: Tensor, name: str) -> Tensor:
    """An image ``(C, H, W)`` as one frame ``(1, C, H, W)``, a sequence as itself; range-checked."""
    if isinstance(x, Tensor) and x.ndim == 3:
        return _image(x, name)[0]
    return _image(_frames(x, name), name)[0]


def crossfade(a: Tensor, b: Tensor, *, frames: int) -> Tensor:
    """A linear dissolve from ``a`` to ``b`` over ``frames`` frames.

    Frame ``k`` (``k = 0 .. frames - 1``) is ``(1 - t_k) a_k + t_k b_k`` with
    ``t_k = k / (frames - 1)``, so frame 0 is exactly ``a_0`` and the last frame exactly
    ``b_last``. An image ``(C, H, W)`` is held still for every frame; a sequence
    ``(T, C, H, W)`` must have ``T == frames`` and plays while it fades (both may move).

    Args:
        a: first image ``(C, H, W)`` or sequence ``(frames, C, H, W)`` in [0, 1].
        b: second image or sequence, same ``C, H, W``.
        frames: number of output frames, >= 2.

    Returns:
        Tensor ``(frames, C, H, W)``.

    Raises:
        ShapeError: not images/sequences in [0, 1], sizes differ, or a sequence length is not
            ``frames``.
        ParamError: ``frames < 2``.

    Example:
        >>> crossfade(torch.zeros(1, 1, 1), torch.ones(1, 1, 1), frames=5).flatten().tolist()
        [0.0, 0.25, 0.5, 0.75, 1.0]
    """
    check_whole("frames", frames, ge=2)
    sa, sb = _as_sequence(a, "a"), _as_sequence(b, "b")
    if sa.shape[1:] != sb.shape[1:] or sa.dtype != sb.dtype:
        raise ShapeError(f"a {tuple(a.shape)} {a.dtype} and b {tuple(b.shape)} {b.dtype} "
                         "must share C, H, W and dtype")
    for name, original, seq in (("a", a, sa), ("b", b, sb)):
        if original.ndim == 4 and seq.shape[0] != frames:
            raise ShapeError(f"{name} has {seq.shape[0]} frames but frames={frames}; "
                             "subsample, hold or cut it to that length first")
    t = torch.linspace(0.0, 1.0, frames, dtype=sa.dtype, device=sa.device).view(-1, 1, 1, 1)  # (T,) -> (T, 1, 1, 1)
    out = (1 - t) * sa + t * sb
    return out.clamp(0.0, 1.0)


def reverse(frames: Tensor) -> Tensor:
    """The sequence played backwards: ``out[k] = frames[T - 1 - k]``.

    Args:
        frames: ``(T, C, H, W)``.

    Returns:
        Tensor ``(T, C, H, W)``.

    Raises:
        ShapeError: not a ``(T, C, H, W)`` floating tensor with ``T >= 1``.

    Example:
        >>> reverse(torch.arange(3.0).view(3, 1, 1, 1)).flatten().tolist()
        [2.0, 1.0, 0.0]
    """
    return _frames(frames).flip(0)


def boomerang(frames: Tensor) -> Tensor:
    """Forwards then backwards, for a seamless loop: ``f0 .. f(T-1) f(T-2) .. f1``.

    Neither end frame is repeated, so when the result loops there is no stutter; the length is
    ``2T - 2`` for ``T >= 2`` (and 1 for a single frame, returned as a copy).

    Args:
        frames: ``(T, C, H, W)``.

    Returns:
        Tensor ``(max(1, 2T - 2), C, H, W)``.

    Raises:
        ShapeError: not a ``(T, C, H, W)`` floating tensor with ``T >= 1``.

    Example:
        >>> boomerang(torch.arange(4.0).view(4, 1, 1, 1)).flatten().tolist()
        [0.0, 1.0, 2.0, 3.0, 2.0, 1.0]
    """
    seq = _frames(frames)
    if seq.shape[0] == 1:
        return seq.clone()
    return torch.cat([seq, seq[1:-1].flip(0)], dim=0)


def subsample(frames: Tensor, *, every: int = 2, offset: int = 0) -> Tensor:
    """Keep every ``every``-th frame starting at ``offset``: ``frames[offset::every]``.

    Args:
        frames: ``(T, C, H, W)``.
        every: step between kept frames, >= 1.
        offset: index of the first kept frame, in ``[0, T)``.

    Returns:
        Tensor ``(ceil((T - offset) / every), C, H, W)``.

    Raises:
        ShapeError: not a ``(T, C, H, W)`` floating tensor with ``T >= 1``.
        ParamError: ``every < 1`` or ``offset`` outside ``[0, T)``.

    Example:
        >>> subsample(torch.arange(7.0).view(7, 1, 1, 1), every=3, offset=1).flatten().tolist()
        [1.0, 4.0]
    """
    seq = _frames(frames)
    check_whole("every", every, ge=1)
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset < seq.shape[0]:
        raise ParamError(f"offset={offset!r} must be an integer in [0, {seq.shape[0]})", param="offset")
    return seq[offset::every].clone()


def concatenate(sequences: Sequence[Tensor]) -> Tensor:
    """Play sequences one after another; an image ``(C, H, W)`` counts as one frame.

    Args:
        sequences: ``(T_i, C, H, W)`` sequences and/or ``(C, H, W)`` images, all with the same
            ``C, H, W`` and dtype.

    Returns:
        Tensor ``(sum T_i, C, H, W)``.

    Raises:
        ShapeError: empty list, a non-image, or mismatched ``C, H, W`` / dtype (both named).

    Example:
        >>> concatenate([torch.zeros(2, 1, 1, 1), torch.ones(1, 1, 1)]).flatten().tolist()
        [0.0, 0.0, 1.0]
    """
    if isinstance(sequences, Tensor) or len(sequences) == 0:
        raise ShapeError("concatenate needs a non-empty list of sequences")
    parts = []
    for i, seq in enumerate(sequences):
        if isinstance(seq, Tensor) and seq.ndim == 3:
            parts.append(as_batch(seq, name=f"sequences[{i}]")[0])
        else:
            parts.append(_frames(seq, f"sequences[{i}]"))
    for i, part in enumerate(parts[1:], start=1):
        if part.shape[1:] != parts[0].shape[1:] or part.dtype != parts[0].dtype:
            raise ShapeError(
                f"sequences[{i}] has frames {tuple(part.shape[1:])} {part.dtype} but sequences[0] has "
                f"{tuple(parts[0].shape[1:])} {parts[0].dtype}; resize them first"
            )
    return torch.cat(parts, dim=0)


def hold(frames: Tensor, *, first: int = 0, last: int = 0) -> Tensor:
    """Freeze the ends: repeat the first frame ``first`` more times and the last ``last`` more.

    Args:
        frames: ``(T, C, H, W)``.
        first: extra copies of ``frames[0]`` at the start, >= 0.
        last: extra copies of ``frames[-1]`` at the end, >= 0.

    Returns:
        Tensor ``(first + T + last, C, H, W)``.

    Raises:
        ShapeError: not a ``(T, C, H, W)`` floating tensor with ``T >= 1``.
        ParamError: ``first`` or ``last`` negative or not an integer.

    Example:
        >>> hold(torch.arange(2.0).view(2, 1, 1, 1), first=1, last=2).flatten().tolist()
        [0.0, 0.0, 1.0, 1.0, 1.0]
    """
    seq = _frames(frames)
    check_whole("first", first, ge=0)
    check_whole("last", last, ge=0)
    head = seq[:1].expand(first, *seq.shape[1:])  # (1, C, H, W) -> (first, C, H, W)
    tail = seq[-1:].expand(last, *seq.shape[1:])  # (1, C, H, W) -> (last, C, H, W)
    return torch.cat([head, seq, tail], dim=0)
