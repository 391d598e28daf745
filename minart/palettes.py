"""Colour palettes: named or custom colour stops, mapped onto scalar fields by interpolation.

A palette is a list of stops ``(position, colour)`` with positions in [0, 1], non-decreasing, and
colours given as ``"#rrggbb"`` or as an ``(r, g, b)`` triple of floats in [0, 1]. A value ``t`` in
[0, 1] takes the colour linearly interpolated between the two stops around it; values below the
first stop take its colour, values above the last stop take the last colour. Two stops at the same
position make a hard edge.

Each named palette also carries an *interior* colour, for pixels a fractal colouring leaves
undefined (orbits that never escape or never reach the pole).

:func:`apply_palette` checks its values and builds the stops at every call; a loop over frames
builds them once with :func:`palette_stops` and maps each frame with :func:`map_palette`, which
never waits for the device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ._checks import check_unit_range, suggest
from .errors import ParamError, ShapeError

__all__ = [
    "PALETTES",
    "PALETTE_INTERIORS",
    "apply_palette",
    "map_palette",
    "palette_interior",
    "palette_stops",
    "parse_color",
]

Color = str | Sequence[float]
Stops = Sequence[tuple[float, Color]]
Palette = str | Stops

PALETTES: dict[str, tuple[tuple[float, str], ...]] = {
    # The post's ocean: bright blue, deep navy, sea green and teal, foam at the far end.
    "sea": (
        (0.0, "#2236e0"),
        (0.17, "#123f33"),
        (0.3, "#0b0d4f"),
        (0.45, "#2e7048"),
        (0.62, "#1f6f86"),
        (0.8, "#3a5fe0"),
        (1.0, "#e6ea7a"),
    ),
    "fire": (
        (0.0, "#000000"),
        (0.3, "#7a0a00"),
        (0.6, "#e85d04"),
        (0.85, "#ffba08"),
        (1.0, "#fffbe6"),
    ),
    "gray": ((0.0, "#000000"), (1.0, "#ffffff")),
    "twilight": (
        (0.0, "#e2d9e2"),
        (0.25, "#6a7fc1"),
        (0.5, "#2f1436"),
        (0.75, "#b5504a"),
        (1.0, "#e2d9e2"),
    ),
}
"""Named palettes: stops ``(position, "#rrggbb")``. ``"ocean"`` is an alias of ``"sea"``."""

PALETTE_INTERIORS: dict[str, str] = {
    "sea": "#f8f8fc",
    "fire": "#000000",
    "gray": "#ffffff",
    "twilight": "#1a0f1f",
}
"""Interior colour of each named palette (custom stops default to white)."""

_ALIASES = {"ocean": "sea", "grey": "gray"}


def _named(name: str) -> str:
    key = _ALIASES.get(name, name)
    if key not in PALETTES:
        options = ", ".join(repr(n) for n in (*PALETTES, *_ALIASES))
        close = suggest(name, (*PALETTES, *_ALIASES)) if isinstance(name, str) else ""
        raise ParamError(f"palette={name!r} is not one of {options}, or a list of (position, "
                         f"colour) stops{close}", param="palette")
    return key


def parse_color(color: Color, *, name: str = "colour") -> tuple[float, float, float]:
    """Parse ``"#rrggbb"`` or an ``(r, g, b)`` triple of floats in [0, 1] into an RGB triple.

    Args:
        color: ``"#rrggbb"`` (case-insensitive) or three numbers in [0, 1].
        name: what the colour is, for error messages.

    Returns:
        ``(r, g, b)`` floats in [0, 1].

    Raises:
        ParamError: malformed hex string, wrong length, or a component outside [0, 1].

    Example:
        >>> parse_color("#ff8000")
        (1.0, 0.5019607843137255, 0.0)
        >>> parse_color((0.0, 0.5, 1.0))
        (0.0, 0.5, 1.0)
    """
    if isinstance(color, str):
        text = color.strip()
        digits = text[1:] if text.startswith("#") else ""
        if len(digits) != 6 or any(ch not in "0123456789abcdefABCDEF" for ch in digits):
            raise ParamError(f"{name}={color!r} must be '#rrggbb' or an (r, g, b) triple in [0, 1]",
                             param=name)
        return tuple(int(digits[i:i + 2], 16) / 255.0 for i in (0, 2, 4))  # type: ignore[return-value]
    if isinstance(color, Sequence) and len(color) == 3:
        rgb = []
        for v in color:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                    or not 0.0 <= v <= 1.0:
                raise ParamError(f"{name}={tuple(color)!r} must have components in [0, 1] "
                                 f"(write 0-255 colours as '#rrggbb')", param=name)
            rgb.append(float(v))
        return tuple(rgb)  # type: ignore[return-value]
    raise ParamError(f"{name}={color!r} must be '#rrggbb' or an (r, g, b) triple in [0, 1]", param=name)


def palette_stops(palette: Palette, *, dtype: torch.dtype = torch.float32,
                  device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """Positions and colours of a named palette or of custom stops, as tensors.

    Args:
        palette: a name from :data:`PALETTES` (or ``"ocean"``/``"grey"``), or a sequence of at
            least two stops ``(position, colour)``, positions in [0, 1] and non-decreasing.
        dtype: floating dtype of the result.
        device: where to allocate it (default CPU).

    Returns:
        ``(positions, colours)``: ``(S,)`` and ``(S, 3)`` tensors.

    Raises:
        ParamError: unknown name, fewer than two stops, bad positions or colours.

    Example:
        >>> pos, col = palette_stops([(0.0, "#000000"), (1.0, (1.0, 1.0, 1.0))])
        >>> pos.tolist(), col[1].tolist()
        ([0.0, 1.0], [1.0, 1.0, 1.0])
    """
    if isinstance(palette, str):
        stops: Stops = PALETTES[_named(palette)]
    else:
        stops = palette
    if not isinstance(stops, Sequence) or len(stops) < 2:
        raise ParamError("palette needs at least two (position, colour) stops", param="palette")
    positions: list[float] = []
    colours: list[tuple[float, float, float]] = []
    for i, stop in enumerate(stops):
        if not isinstance(stop, Sequence) or isinstance(stop, str) or len(stop) != 2:
            raise ParamError(f"palette stop {i} must be a (position, colour) pair, got {stop!r}",
                             param="palette")
        pos, colour = stop
        if isinstance(pos, bool) or not isinstance(pos, (int, float)) or not 0.0 <= pos <= 1.0:
            raise ParamError(f"palette stop {i}: position {pos!r} must be a number in [0, 1]",
                             param="palette")
        if positions and pos < positions[-1]:
            raise ParamError(f"palette stop {i}: position {pos} is below the previous {positions[-1]}; "
                             "positions must be non-decreasing", param="palette")
        positions.append(float(pos))
        try:
            colours.append(parse_color(colour, name=f"palette stop {i} colour"))
        except ParamError as exc:
            exc.param = "palette"  # the recipe's parameter, so the error points at it
            raise
    return (torch.tensor(positions, dtype=dtype, device=device),
            torch.tensor(colours, dtype=dtype, device=device))


def palette_interior(palette: Palette) -> tuple[float, float, float]:
    """The interior colour of a named palette; white for custom stops.

    Example:
        >>> palette_interior("fire")
        (0.0, 0.0, 0.0)
    """
    if isinstance(palette, str):
        return parse_color(PALETTE_INTERIORS[_named(palette)])
    return (1.0, 1.0, 1.0)


def apply_palette(values: Tensor, palette: Palette = "sea") -> Tensor:
    """Map values in [0, 1] to colours by piecewise-linear interpolation between palette stops.

    ``colour(t) = (1 - w) * C_j + w * C_{j+1}`` with ``p_j <= t < p_{j+1}`` and
    ``w = (t - p_j) / (p_{j+1} - p_j)``; constant beyond the first and last stops.

    Args:
        values: ``(H, W)`` or ``(B, H, W)`` floating tensor in [0, 1].
        palette: a palette name or custom stops (see :func:`palette_stops`).

    Returns:
        ``(3, H, W)`` or ``(B, 3, H, W)`` tensor in [0, 1], dtype and device of ``values``.

    Raises:
        ShapeError: ``values`` is not a floating 2-D or 3-D tensor, or holds NaN/Inf or values
            outside [0, 1] (values within 1e-6 of it are float rounding and are clamped).
        ParamError: a bad palette.

    Example:
        >>> rgb = apply_palette(torch.tensor([[0.0, 0.5, 1.0]]), [(0, "#000000"), (1, "#ffffff")])
        >>> rgb.shape, rgb[0, 0].tolist()
        (torch.Size([3, 1, 3]), [0.0, 0.5, 1.0])
    """
    _check_values(values)
    values = check_unit_range("values", values, hint="map them to [0, 1] first (clamp or normalise)")
    positions, colours = palette_stops(palette, dtype=values.dtype, device=values.device)
    return map_palette(values, positions, colours)


def _check_values(values: Tensor) -> None:
    if not isinstance(values, Tensor) or values.ndim not in (2, 3) or not values.is_floating_point():
        got = tuple(values.shape) if isinstance(values, Tensor) else type(values).__name__
        raise ShapeError(f"values must be a floating (H, W) or (B, H, W) tensor, got {got}")


def map_palette(values: Tensor, positions: Tensor, colours: Tensor) -> Tensor:
    """:func:`apply_palette` with the stops built once and no wait for the device, for loops.

    The same piecewise-linear interpolation (same results bit for bit), but the stops come from
    :func:`palette_stops`, built once on the values' dtype and device, and the values are not
    range-checked (that reads them back from the device): use it for values in [0, 1] by
    construction, such as the clamped colourings of :mod:`minart.fractal`. Values below 0 or
    above 1 take the end colours.

    Args:
        values: ``(H, W)`` or ``(B, H, W)`` floating tensor in [0, 1].
        positions: ``(S,)`` stop positions from :func:`palette_stops`, same dtype and device.
        colours: ``(S, 3)`` stop colours from :func:`palette_stops`, same dtype and device.

    Returns:
        ``(3, H, W)`` or ``(B, 3, H, W)`` tensor, dtype and device of ``values``.

    Raises:
        ShapeError: ``values`` is not a floating 2-D or 3-D tensor, or the stops are not
            ``(S,)`` and ``(S, 3)`` with ``S >= 2`` on the values' dtype and device.

    Example:
        >>> stops = palette_stops("gray")
        >>> frames = [torch.tensor([[0.0, 0.25]]), torch.tensor([[1.0, 0.5]])]
        >>> [map_palette(t, *stops)[0].tolist() for t in frames]
        [[[0.0, 0.25]], [[1.0, 0.5]]]
    """
    _check_values(values)
    if (not isinstance(positions, Tensor) or not isinstance(colours, Tensor) or positions.ndim != 1
            or positions.numel() < 2 or tuple(colours.shape) != (positions.numel(), 3)):
        got = tuple(tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
                    for t in (positions, colours))
        raise ShapeError(f"palette stops must be (S,) positions and (S, 3) colours with S >= 2, got "
                         f"{got}; build them with palette_stops()", param="palette")
    for name, t in (("positions", positions), ("colours", colours)):
        if t.dtype != values.dtype or t.device != values.device:
            raise ShapeError(f"palette {name} are {t.dtype} on {t.device} but the values are "
                             f"{values.dtype} on {values.device}; build them with "
                             "palette_stops(palette, dtype=values.dtype, device=values.device)",
                             param="palette")
    flat = values.reshape(-1)  # (..., H, W) -> (N,)
    upper = torch.searchsorted(positions, flat, right=True).clamp(1, positions.numel() - 1)
    lower = upper - 1
    p0, p1 = positions[lower], positions[upper]
    gap = p1 - p0
    w = torch.where(gap > 0, (flat - p0) / torch.where(gap > 0, gap, torch.ones_like(gap)),
                    torch.ones_like(flat))
    w = w.clamp(0.0, 1.0)  # constant colour before the first and after the last stop
    rgb = colours[lower] * (1 - w)[:, None] + colours[upper] * w[:, None]  # (N, 3)
    rgb = rgb.reshape(*values.shape, 3)  # (N, 3) -> (..., H, W, 3)
    return rgb.movedim(-1, -3)  # (..., H, W, 3) -> (..., 3, H, W)
