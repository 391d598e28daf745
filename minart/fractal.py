"""Fractal seed images: the "Art with Math" inverse-power map and the Multibrot family.

Two maps are iterated over a grid of complex numbers, vectorised over all pixels:

``"inverse_power"``
    The post's recurrence ``z_{k+1} = -i / (pi z_k^7) + c`` with ``z_0 = c``, generalised to
    ``z <- a z^-p + c`` (``coefficient=a``, ``power=p >= 1``). It is evaluated as
    ``a (1/z)^p + c``, so a huge ``|z|`` maps to ``c`` instead of overflowing.

``"multibrot"``
    ``z <- z^p + c`` with ``z_0 = c`` (``p = 2`` is the Mandelbrot set), ``p >= 2``.

Each has a *Julia form*: with ``julia=(re, im)`` the constant ``c`` is fixed and ``z_0`` is the
grid point.

Why the inverse-power map needs its own colourings: a large ``|z|`` is mapped straight back to
about ``c`` (``a/z^p -> 0``), so "escape" is not absorbing and textbook escape-time or smooth
colouring measures nothing. What *is* a one-way event is coming close to the pole ``z = 0``: the
next iterate is then huge. The colourings are therefore:

- ``"pole"``: ``n = min{k : |z_k| < eps}``, the iterations until the orbit first comes within
  ``eps`` of the pole; orbits that never do are the interior.
- ``"trap_point"``, ``"trap_circle"``, ``"trap_line"``: orbit traps (Pickover), the smallest
  distance of ``z_0 .. z_n`` to a point, a circle or a line.
- ``"modulus"`` and ``"argument"``: ``|z_n|`` and ``arg z_n`` of the last iterate.
- ``"smooth"`` (Multibrot only): the continuous escape time
  ``mu = n + 1 - log_p(log|z_n| / log(bailout))`` with ``n = min{k : |z_k| > bailout}``
  (Linas Vepstas, "Renormalizing the Mandelbrot escape", 1997).

An orbit stops being iterated at ``n`` (pole reached or bailout passed); the iteration budget
``iterations`` bounds ``n``. Counts come from :func:`fractal_field`; :func:`fractal` maps them to
colours with :mod:`minart.palettes`; :func:`fractal_frames` renders the picture as its iteration
budget grows, as in the post's video.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import check_choice, check_range
from .errors import ParamError
from .palettes import Color, Palette, map_palette, palette_interior, palette_stops, parse_color

__all__ = ["FractalField", "check_view", "fractal", "fractal_field", "fractal_frames",
           "frame_budgets", "unused_options"]

Formula = Literal["inverse_power", "multibrot"]
Coloring = Literal["auto", "pole", "smooth", "trap_point", "trap_circle", "trap_line", "modulus",
                   "argument"]
Trap = Literal["point", "circle", "line"]

_FORMULAS = ("inverse_power", "multibrot")
_COLORINGS = ("auto", "pole", "smooth", "trap_point", "trap_circle", "trap_line", "modulus",
              "argument")
_TRAPS = ("point", "circle", "line")
_MAX_SIZE = 16384
_MAX_ITERATIONS = 100_000
_MAX_POWER = 24
_MAX_FRAMES = 10_000
_COMPACT_EVERY = 16
_BAND_SAMPLES = 1 << 21  # samples (times snapshots) iterated at once: bounds working memory
# Smallest pixel size, relative to max(|centre|, 1), that still gives distinct coordinates.
_MIN_PIXEL = {torch.float32: 2.0 ** -20, torch.float64: 2.0 ** -48}
_COMPLEX = {torch.float32: torch.complex64, torch.float64: torch.complex128}


class FractalField(NamedTuple):
    """Raw per-pixel result of :func:`fractal_field`, every tensor ``(H, W)``.

    Attributes:
        counts: int64 ``n``, the first ``k`` at which the orbit reached the pole (``|z_k| < eps``,
            inverse power) or passed the bailout (``|z_k| > bailout``, Multibrot); the iteration
            budget for orbits that did neither.
        done: bool, whether the orbit reached the pole / escaped within the budget.
        final_z: complex64 or complex128 ``z_n``, the last iterate.
        trap: real ``min_{k <= n}`` distance of the orbit to the trap.
    """

    counts: Tensor
    done: Tensor
    final_z: Tensor
    trap: Tensor


class _Spec(NamedTuple):
    formula: str
    power: int
    coefficient: complex
    julia: complex | None
    eps: float
    bailout: float
    trap: str | None
    trap_point: complex
    trap_radius: float
    trap_angle: float


# --------------------------------------------------------------------------------------------
# validation


def _whole(name: str, value, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value != int(value):
        raise ParamError(f"{name}={value!r} must be a whole number", param=name)
    if not lo <= value <= hi:
        raise ParamError(f"{name}={value!r} must be between {lo} and {hi}", param=name)
    return int(value)


def _point(name: str, value) -> complex:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        raise ParamError(f"{name}={value!r} must be a pair (re, im) of numbers", param=name)
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ParamError(f"{name}={tuple(value)!r} must be a pair (re, im) of finite numbers",
                             param=name)
    return complex(float(value[0]), float(value[1]))


def _real_dtype(dtype) -> torch.dtype:
    if dtype not in _COMPLEX:
        raise ParamError(f"dtype={dtype} must be torch.float32 or torch.float64 (float64 for deep "
                         "zooms)", param="dtype")
    return dtype


def _check_view(width, height, center: complex, span, dtype: torch.dtype,
                supersample: int = 1) -> tuple[int, int]:
    width = _whole("width", width, 1, _MAX_SIZE)
    height = _whole("height", height, 1, _MAX_SIZE)
    check_range("span", span, gt=0)
    if max(width, height) * supersample > _MAX_SIZE:
        most = _MAX_SIZE // max(width, height)
        raise ParamError(f"supersample={supersample} at {width}x{height} computes "
                         f"{width * supersample}x{height * supersample} samples, more than "
                         f"{_MAX_SIZE} a side; use supersample <= {most} or a smaller size",
                         param="supersample")
    pixel = span / (width * supersample)
    scale = max(abs(center.real), abs(center.imag), 1.0)
    if pixel < _MIN_PIXEL[dtype] * scale:
        hint = "use dtype float64" if dtype == torch.float32 else "zoom out"
        over = f"{width} pixels" + (f" x supersample {supersample}" if supersample > 1 else "")
        raise ParamError(f"span={span} over {over} at center=({center.real}, {center.imag}) "
                         f"is below the resolution of {str(dtype).removeprefix('torch.')}; {hint}",
                         param="span")
    return width, height


def check_view(width: int, height: int, *, center: tuple[float, float] = (0.0, 0.0),
               span: float = 2.8, supersample: int = 1,
               dtype: torch.dtype = torch.float32) -> None:
    """Check that a view can be rendered: its size, and a pixel the dtype can still resolve.

    What :func:`fractal` and :func:`fractal_frames` check first, without computing anything
    (``minart check`` calls it with the recipe's real size).

    Args:
        width, height: the picture's size in pixels (at most 16384 a side, supersampled).
        center: the view's centre ``(re, im)``.
        span: the view's width in the complex plane.
        supersample: samples per pixel along each axis (1..4).
        dtype: ``torch.float32`` or ``torch.float64``.

    Raises:
        ParamError: naming ``width``, ``height``, ``supersample``, ``span`` or ``dtype``.

    Example:
        >>> check_view(512, 512, center=(0.3, 0.5), span=1e-4)
        Traceback (most recent call last):
        ...
        minart.errors.ParamError: span=0.0001 over 512 pixels at center=(0.3, 0.5) is below ...
        >>> check_view(512, 512, center=(0.3, 0.5), span=1e-4, dtype=torch.float64)
    """
    s = _whole("supersample", supersample, 1, 4)
    _check_view(width, height, _point("center", center), span, _real_dtype(dtype), s)


def _spec(*, formula, power, coefficient, julia, eps, bailout, trap, trap_point, trap_radius,
          trap_angle, dtype: torch.dtype) -> _Spec:
    check_choice("formula", formula, _FORMULAS)
    p = _whole("power", power, -_MAX_POWER, _MAX_POWER)
    if formula == "multibrot" and p < 2:
        raise ParamError(f"power={power!r} must be >= 2 for formula='multibrot' (z <- z^p + c)",
                         param="power")
    if formula == "inverse_power" and p < 1:
        raise ParamError(f"power={power!r} must be >= 1 for formula='inverse_power' "
                         "(z <- a z^-p + c); for z^p + c use formula='multibrot'", param="power")
    if isinstance(coefficient, bool) or not isinstance(coefficient, (int, float, complex)) \
            or not (math.isfinite(complex(coefficient).real)
                    and math.isfinite(complex(coefficient).imag)):
        raise ParamError(f"coefficient={coefficient!r} must be a finite complex number",
                         param="coefficient")
    c_julia = None if julia is None else _point("julia", julia)
    check_range("eps", eps, gt=0)
    check_range("bailout", bailout, ge=2)
    if formula == "multibrot":
        limit = math.log(torch.finfo(dtype).max) - 2
        if p * math.log(bailout) > limit:
            raise ParamError(f"bailout={bailout} to the power {p} overflows {dtype}; use "
                             f"bailout <= {math.exp(limit / p):.3g}", param="bailout")
    if trap is not None:
        check_choice("trap", trap, _TRAPS)
    check_range("trap_radius", trap_radius, gt=0)
    check_range("trap_angle", trap_angle)
    return _Spec(formula, p, complex(coefficient), c_julia, float(eps), float(bailout), trap,
                 _point("trap_point", trap_point), float(trap_radius), float(trap_angle))


# --------------------------------------------------------------------------------------------
# iteration


def _grid(width: int, height: int, center: complex, span: float, dtype: torch.dtype,
          device, rows: tuple[int, int] | None = None) -> Tensor:
    """Pixel centres ``(col + 1/2 - W/2) * step - 1j * (row + 1/2 - H/2) * step + center``.

    Computed in float64 and then cast; returns ``(H, W)`` complex, or only ``rows`` ``(r0, r1)``
    of it (the same values). Rows go down, imaginary up.
    """
    step = span / width
    r0, r1 = rows if rows is not None else (0, height)
    x = center.real + (torch.arange(width, dtype=torch.float64, device=device) + 0.5 - width / 2) * step
    y = center.imag - (torch.arange(r0, r1, dtype=torch.float64, device=device) + 0.5 - height / 2) * step
    n = r1 - r0
    grid = torch.complex(x.expand(n, width), y[:, None].expand(n, width))  # (W,), (n,) -> (n, W)
    return grid.to(_COMPLEX[dtype])


def _ipow(z: Tensor, n: int) -> Tensor:
    """``z^n`` for a whole ``n >= 1`` by binary exponentiation (the order CPython's ``complex`` uses)."""
    result = None
    base = z
    while True:
        if n & 1:
            result = base if result is None else result * base
        n >>= 1
        if not n:
            return result
        base = base * base


def _step_fn(spec: _Spec, real_dtype: torch.dtype) -> Callable[[Tensor, Tensor | complex], Tensor]:
    p, a = spec.power, spec.coefficient
    if spec.formula == "multibrot":
        return lambda z, c: _ipow(z, p) + c
    far = torch.finfo(real_dtype).max

    def inverse_power(z: Tensor, c: Tensor | complex) -> Tensor:
        new = a * _ipow(1 / z, p) + c
        # An overflowed iterate is the point at infinity; the next step maps it to c.
        return torch.where(torch.isfinite(new), new, torch.full_like(new, far))

    return inverse_power


def _trap_fn(spec: _Spec) -> Callable[[Tensor], Tensor] | None:
    q = spec.trap_point
    if spec.trap == "point":
        return lambda z: (z - q).abs()
    if spec.trap == "circle":
        r = spec.trap_radius
        return lambda z: ((z - q).abs() - r).abs()
    if spec.trap == "line":
        s, co = math.sin(spec.trap_angle), math.cos(spec.trap_angle)
        return lambda z: ((z.imag - q.imag) * co - (z.real - q.real) * s).abs()
    return None


def _iterate(start: Tensor, spec: _Spec, budgets: Sequence[int]) -> list[FractalField]:
    """Iterate every pixel of ``start`` (``(H, W)`` complex) and snapshot after each budget.

    Finished pixels are frozen with masks and dropped from the working set every
    ``_COMPACT_EVERY`` steps, so late iterations only touch live orbits.
    """
    shape = start.shape
    real_dtype = start.real.dtype
    z0 = start.reshape(-1)  # (H, W) -> (N,)
    n = z0.numel()
    step = _step_fn(spec, real_dtype)
    trap_fn = _trap_fn(spec)
    if spec.formula == "inverse_power":
        eps = spec.eps
        finished = lambda z: z.abs() < eps  # noqa: E731
    else:
        bailout = spec.bailout
        finished = lambda z: z.abs() > bailout  # noqa: E731
    per_pixel_c = spec.julia is None

    # Full-size state, and the compact working set of live orbits (indices ``idx``).
    z_all = z0.clone()
    done_all = finished(z0)
    count_all = torch.zeros(n, dtype=torch.int64, device=z0.device)
    trap_all = trap_fn(z0) if trap_fn else torch.zeros(n, dtype=real_dtype, device=z0.device)
    idx = torch.arange(n, device=z0.device)
    z, done, count, trap = z_all, done_all.clone(), count_all.clone(), trap_all.clone()
    c: Tensor | complex = z0 if per_pixel_c else spec.julia

    def scatter() -> None:
        z_all[idx] = z
        done_all[idx] = done
        count_all[idx] = count
        trap_all[idx] = trap

    def snapshot(budget: int) -> FractalField:
        counts = torch.where(done_all, count_all, torch.full_like(count_all, budget))
        return FractalField(counts.reshape(shape), done_all.reshape(shape).clone(),  # (N,) -> (H, W)
                            z_all.reshape(shape).clone(), trap_all.reshape(shape).clone())

    wanted = sorted(set(budgets))
    shots: dict[int, FractalField] = {}
    k = 0
    for k in range(1, wanted[-1] + 1):
        new = step(z, c)
        live = ~done
        z = torch.where(live, new, z)
        if trap_fn is not None:
            trap = torch.where(live, torch.minimum(trap, trap_fn(z)), trap)
        hit = live & finished(z)
        count = torch.where(hit, k, count)
        done = done | hit
        if k in wanted or k % _COMPACT_EVERY == 0:
            scatter()
            if k in wanted:
                shots[k] = snapshot(k)
            keep = ~done
            idx, z, done, count, trap = idx[keep], z[keep], done[keep], count[keep], trap[keep]
            if per_pixel_c:
                c = c[keep]
            if idx.numel() == 0:
                break
    for b in wanted:
        if b not in shots:  # every orbit finished before this budget
            shots[b] = snapshot(b)
    return [shots[b] for b in budgets]


def _iterate_fast(start: Tensor, spec: _Spec, budgets: Sequence[int]) -> list[FractalField]:
    """:func:`_iterate` on the fastest path: the Triton kernel for complex64 grids on CUDA
    (``MINART_KERNELS=eager`` keeps this module's loop). Imported here: kernels imports this
    module."""
    from .kernels.dispatch import fractal_snapshots_fast

    return fractal_snapshots_fast(start, spec, list(budgets))


def fractal_field(
    width: int,
    height: int,
    *,
    formula: Formula = "inverse_power",
    power: int = 7,
    coefficient: complex = -1j / math.pi,
    center: tuple[float, float] = (0.0, 0.0),
    span: float = 2.8,
    iterations: int = 64,
    julia: tuple[float, float] | None = None,
    eps: float = 0.75,
    bailout: float = 16.0,
    trap: Trap = "point",
    trap_point: tuple[float, float] = (0.0, 0.0),
    trap_radius: float = 0.5,
    trap_angle: float = 0.0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> FractalField:
    """Iteration counts, last iterates and orbit-trap distances over a grid of ``c`` (or ``z_0``).

    Iterates ``z <- a (1/z)^p + c`` (``"inverse_power"``; the post has ``p = 7``, ``a = -i/pi``)
    or ``z <- z^p + c`` (``"multibrot"``) from ``z_0 = c`` at every pixel centre,
    ``Re c = center[0] + (col + 1/2 - W/2) * span / W`` and
    ``Im c = center[1] - (row + 1/2 - H/2) * span / W`` (imaginary axis up); with ``julia=(re, im)``,
    ``c`` is that constant and ``z_0`` the pixel centre. An orbit stops at the first ``k`` with
    ``|z_k| < eps`` (inverse power: it reached the pole) or ``|z_k| > bailout`` (Multibrot: it
    escaped), or after ``iterations`` steps.

    Args:
        width: image width ``W`` in pixels, 1..16384.
        height: image height ``H`` in pixels, 1..16384.
        formula: ``"inverse_power"`` or ``"multibrot"``.
        power: ``p``, a whole number, ``>= 1`` for inverse power and ``>= 2`` for Multibrot.
        coefficient: ``a`` of the inverse-power map (unused by Multibrot).
        center: ``(re, im)`` of the image centre.
        span: width of the view in the complex plane (> 0); the height is ``span * H / W``.
        iterations: iteration budget, 1..100000.
        julia: ``(re, im)`` of a fixed ``c`` for the Julia form, or ``None``.
        eps: pole radius of the inverse-power map (> 0). The default 0.75 means the next step
            adds ``|a| / 0.75^7 > 2.3`` for the post's map, about the post's bound.
        bailout: escape radius of the Multibrot map (>= 2).
        trap: ``"point"``, ``"circle"`` or ``"line"``: which orbit trap ``trap`` measures.
        trap_point: the trap point, the circle's centre, a point on the line.
        trap_radius: the circle's radius (> 0).
        trap_angle: the line's angle to the real axis, in radians.
        dtype: ``torch.float32`` (complex64 arithmetic) or ``torch.float64`` (complex128, deep zooms).
        device: where to compute (default CPU).

    Returns:
        :class:`FractalField` of ``(H, W)`` tensors ``counts``, ``done``, ``final_z``, ``trap``.

    Raises:
        ParamError: a parameter out of range, or a ``span`` below the resolution of ``dtype``.

    Example:
        >>> f = fractal_field(5, 5, iterations=8, dtype=torch.float64)
        >>> f.counts.shape, f.final_z.dtype
        (torch.Size([5, 5]), torch.complex128)
        >>> int(f.counts[2, 2]), bool(f.done[2, 2])  # the centre pixel is c = 0, the pole itself
        (0, True)
    """
    dtype = _real_dtype(dtype)
    centre = _point("center", center)
    width, height = _check_view(width, height, centre, span, dtype)
    iterations = _whole("iterations", iterations, 1, _MAX_ITERATIONS)
    spec = _spec(formula=formula, power=power, coefficient=coefficient, julia=julia, eps=eps,
                 bailout=bailout, trap=trap, trap_point=trap_point, trap_radius=trap_radius,
                 trap_angle=trap_angle, dtype=dtype)
    with torch.no_grad():
        start = _grid(width, height, centre, span, dtype, torch.device(device or "cpu"))
        return _iterate(start, spec, [iterations])[0]


# --------------------------------------------------------------------------------------------
# colouring

_TRAP_OF = {"trap_point": "point", "trap_circle": "circle", "trap_line": "line"}


def _resolve_coloring(coloring: str, formula: str) -> str:
    check_choice("coloring", coloring, _COLORINGS)
    if coloring == "auto":
        return "pole" if formula == "inverse_power" else "smooth"
    if coloring == "smooth" and formula == "inverse_power":
        raise ParamError("coloring='smooth' needs an escape-time map, but formula='inverse_power' "
                         "sends a large |z| straight back to about c; use 'pole', a trap, "
                         "'modulus' or 'argument'", param="coloring")
    if coloring == "pole" and formula == "multibrot":
        raise ParamError("coloring='pole' is for formula='inverse_power' (z^p + c has no pole); "
                         "use 'smooth' or a trap", param="coloring")
    return coloring


def unused_options(*, formula: Formula, coloring: Coloring) -> dict[str, str]:
    """The options of :func:`fractal` that change nothing with this formula and colouring.

    ``coefficient`` and ``eps`` belong to the inverse-power map, ``bailout`` to Multibrot; the
    trap options to their trap; ``interior`` colours the orbits that never finish, which only
    ``"pole"`` and ``"smooth"`` set apart.

    Args:
        formula: ``"inverse_power"`` or ``"multibrot"``.
        coloring: any colouring ``fractal`` takes (``"auto"`` is resolved first).

    Returns:
        ``{option: why it has no effect}``, the reason worded to follow "has no effect".

    Raises:
        ParamError: an unknown formula or colouring, or a colouring the formula cannot use.

    Example:
        >>> sorted(unused_options(formula="multibrot", coloring="trap_circle"))
        ['coefficient', 'eps', 'interior', 'trap_angle']
        >>> unused_options(formula="inverse_power", coloring="auto")["bailout"]
        "with formula 'inverse_power' (bailout is the Multibrot escape radius)"
    """
    check_choice("formula", formula, _FORMULAS)
    resolved = _resolve_coloring(coloring, formula)
    unused = {}
    if formula == "multibrot":
        unused["coefficient"] = "with formula 'multibrot' (z <- z^p + c has no coefficient)"
        unused["eps"] = "with formula 'multibrot' (eps is the inverse-power map's pole radius)"
    else:
        unused["bailout"] = f"with formula {formula!r} (bailout is the Multibrot escape radius)"
    shown = repr(coloring) if coloring == resolved else f"{coloring!r} ({resolved!r} for {formula!r})"
    if resolved not in _TRAP_OF:
        unused["trap_point"] = f"with coloring {shown}: only the trap colourings use it"
    if resolved != "trap_circle":
        unused["trap_radius"] = f"with coloring {shown}: only 'trap_circle' uses it"
    if resolved != "trap_line":
        unused["trap_angle"] = f"with coloring {shown}: only 'trap_line' uses it"
    if resolved not in ("pole", "smooth"):
        unused["interior"] = (f"with coloring {shown}: only 'pole' and 'smooth' paint the orbits "
                              "that never finish in it")
    return unused


def _values(field: FractalField, coloring: str, spec: _Spec, iterations: int) -> Tensor:
    """Map a field to ``t`` in [0, 1] for the palette (``(H, W)``, real)."""
    if coloring == "pole":
        t = torch.log1p(field.counts.to(field.trap.dtype)) / math.log1p(iterations)
    elif coloring == "smooth":
        z_abs = field.final_z.abs().clamp_min(spec.bailout)  # escaped orbits have |z| > bailout
        mu = field.counts + 1 - torch.log(torch.log(z_abs) / math.log(spec.bailout)) / math.log(spec.power)
        t = torch.sqrt(mu.clamp_min(0) / (iterations + 1))
    elif coloring in _TRAP_OF:
        t = 1 - torch.exp(-4 * field.trap)
    elif coloring == "modulus":
        t = torch.atan(torch.log(field.final_z.abs())) / math.pi + 0.5
    else:
        t = (torch.angle(field.final_z) + math.pi) / (2 * math.pi)
    return t.nan_to_num(0.0).clamp(0.0, 1.0)


def _colorize(field: FractalField, coloring: str, spec: _Spec, iterations: int,
              stops: tuple[Tensor, Tensor], interior: tuple[float, float, float]) -> Tensor:
    rgb = map_palette(_values(field, coloring, spec, iterations), *stops)  # (3, H, W)
    if coloring in ("pole", "smooth"):
        inside = torch.tensor(interior, dtype=rgb.dtype, device=rgb.device)[:, None, None]
        rgb = torch.where(field.done, rgb, inside)
    return rgb


def _prepare(width, height, *, formula, power, coefficient, center, span, iterations, coloring,
             palette, interior, supersample, julia, eps, bailout, trap_point, trap_radius,
             trap_angle, dtype, device):
    dtype = _real_dtype(dtype)
    centre = _point("center", center)
    s = _whole("supersample", supersample, 1, 4)
    width, height = _check_view(width, height, centre, span, dtype, s)
    iterations = _whole("iterations", iterations, 1, _MAX_ITERATIONS)
    check_choice("formula", formula, _FORMULAS)
    coloring = _resolve_coloring(coloring, formula)
    spec = _spec(formula=formula, power=power, coefficient=coefficient, julia=julia, eps=eps,
                 bailout=bailout, trap=_TRAP_OF.get(coloring), trap_point=trap_point,
                 trap_radius=trap_radius, trap_angle=trap_angle, dtype=dtype)
    inside = palette_interior(palette) if interior is None else parse_color(interior, name="interior")
    view = (width * s, height * s, centre, span, dtype, torch.device(device or "cpu"))
    stops = palette_stops(palette, dtype=dtype, device=view[5])  # validated and built once
    return view, spec, coloring, inside, s, iterations, stops


def _bands(view: tuple, s: int, snapshots: int) -> Iterator[Tensor]:
    """The sample grid of ``view`` in bands of whole ``s``-row pixel rows, top to bottom.

    Orbits are independent, so a picture is iterated band by band: the working memory (about
    100 bytes a sample and snapshot) stays near ``_BAND_SAMPLES`` samples whatever the size.
    """
    width, height = view[0], view[1]
    rows = max(s, _BAND_SAMPLES // (width * snapshots) // s * s)
    for r0 in range(0, height, rows):
        yield _grid(*view, rows=(r0, min(height, r0 + rows)))


def _downsample(rgb: Tensor, s: int) -> Tensor:
    if s == 1:
        return rgb
    return F.avg_pool2d(rgb.unsqueeze(0), s)[0]  # (3, sH, sW) -> (1, 3, sH, sW) -> (3, H, W)


def fractal(
    width: int,
    height: int,
    *,
    formula: Formula = "inverse_power",
    power: int = 7,
    coefficient: complex = -1j / math.pi,
    center: tuple[float, float] = (0.0, 0.0),
    span: float = 2.8,
    iterations: int = 64,
    coloring: Coloring = "auto",
    palette: Palette = "sea",
    interior: Color | None = None,
    supersample: int = 1,
    julia: tuple[float, float] | None = None,
    eps: float = 0.75,
    bailout: float = 16.0,
    trap_point: tuple[float, float] = (0.0, 0.0),
    trap_radius: float = 0.5,
    trap_angle: float = 0.0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """Render a fractal seed image: the post's ``z <- -i/(pi z^7) + c`` by default.

    The field of :func:`fractal_field` is mapped to ``t`` in [0, 1] and coloured with the
    palette: ``"pole"`` ``t = log(1 + n) / log(1 + iterations)``; ``"smooth"``
    ``t = sqrt(mu / (iterations + 1))`` with ``mu = n + 1 - log_p(log|z_n| / log bailout)``;
    traps ``t = 1 - exp(-4 d)`` for the orbit's distance ``d`` to the trap; ``"modulus"``
    ``t = atan(log|z_n|) / pi + 1/2``; ``"argument"`` ``t = (arg z_n + pi) / (2 pi)``. With
    ``"pole"`` and ``"smooth"`` the orbits that never reach the pole / never escape (the
    interior) take the ``interior`` colour; traps, modulus and argument colour every pixel.

    Args:
        width: image width ``W``, 1..16384.
        height: image height ``H``, 1..16384.
        formula: ``"inverse_power"`` (``z <- a z^-p + c``) or ``"multibrot"`` (``z <- z^p + c``).
        power: ``p``, whole, ``>= 1`` (inverse power) or ``>= 2`` (Multibrot; 2 is Mandelbrot).
        coefficient: ``a`` of the inverse-power map; the post's ``-i/pi`` by default.
        center: ``(re, im)`` of the image centre.
        span: width of the view in the complex plane (> 0); the height follows the aspect ratio.
        iterations: iteration budget, 1..100000.
        coloring: ``"auto"`` (``"pole"`` for inverse power, ``"smooth"`` for Multibrot),
            ``"pole"``, ``"smooth"``, ``"trap_point"``, ``"trap_circle"``, ``"trap_line"``,
            ``"modulus"`` or ``"argument"``.
        palette: ``"sea"`` (alias ``"ocean"``), ``"fire"``, ``"gray"``, ``"twilight"``, or stops
            ``[(position, "#rrggbb" or (r, g, b)), ...]`` with positions in [0, 1].
        interior: colour of the interior; ``None`` takes the palette's (white for custom stops).
        supersample: ``s`` in 1..4: render ``s W x s H`` samples and average each ``s x s`` block.
        julia: ``(re, im)`` of a fixed ``c`` for the Julia form (``z_0`` = pixel), or ``None``.
        eps: pole radius for ``"pole"`` (> 0).
        bailout: escape radius for Multibrot (>= 2).
        trap_point: the trap point, the trap circle's centre, a point on the trap line.
        trap_radius: the trap circle's radius (> 0).
        trap_angle: the trap line's angle to the real axis, in radians.
        dtype: ``torch.float32`` or ``torch.float64`` (deep zooms); also the output dtype.
        device: where to compute (default CPU).

    Returns:
        ``(3, H, W)`` tensor in [0, 1].

    Raises:
        ParamError: a parameter out of range, an unknown palette or colouring, ``"smooth"`` for
            the inverse-power map or ``"pole"`` for Multibrot.

    Example:
        >>> img = fractal(16, 12, iterations=8)
        >>> img.shape, img.dtype, bool(img.min() >= 0) and bool(img.max() <= 1)
        (torch.Size([3, 12, 16]), torch.float32, True)
    """
    view, spec, coloring, inside, s, iterations, stops = _prepare(
        width, height, formula=formula, power=power, coefficient=coefficient, center=center,
        span=span, iterations=iterations, coloring=coloring, palette=palette, interior=interior,
        supersample=supersample, julia=julia, eps=eps, bailout=bailout, trap_point=trap_point,
        trap_radius=trap_radius, trap_angle=trap_angle, dtype=dtype, device=device)
    with torch.no_grad():
        bands = []
        for start in _bands(view, s, 1):
            field = _iterate_fast(start, spec, [iterations])[0]
            bands.append(_downsample(_colorize(field, coloring, spec, iterations, stops, inside), s))
        return torch.cat(bands, dim=1)  # bands of (3, h, W) -> (3, H, W)


def frame_budgets(iterations: int, frames: int) -> list[int]:
    """The iteration budget of each frame of :func:`fractal_frames`:
    ``ceil(iterations * (t + 1) / frames)`` for frame ``t``, the last being ``iterations``.

    Args:
        iterations: the full budget (>= 1).
        frames: number of frames (>= 1).

    Returns:
        ``frames`` budgets, growing.

    Example:
        >>> frame_budgets(64, 4), frame_budgets(6, 4)
        ([16, 32, 48, 64], [2, 3, 5, 6])
    """
    return [-(-iterations * (t + 1) // frames) for t in range(frames)]


def fractal_frames(
    width: int,
    height: int,
    *,
    frames: int = 16,
    formula: Formula = "inverse_power",
    power: int = 7,
    coefficient: complex = -1j / math.pi,
    center: tuple[float, float] = (0.0, 0.0),
    span: float = 2.8,
    iterations: int = 64,
    coloring: Coloring = "auto",
    palette: Palette = "sea",
    interior: Color | None = None,
    supersample: int = 1,
    julia: tuple[float, float] | None = None,
    eps: float = 0.75,
    bailout: float = 16.0,
    trap_point: tuple[float, float] = (0.0, 0.0),
    trap_radius: float = 0.5,
    trap_angle: float = 0.0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """The fractal growing with its iteration budget, as in the post's video.

    Frame ``t`` (0-based) is :func:`fractal` with the budget ``ceil(iterations * (t + 1) / T)``,
    coloured on the scale of the full ``iterations`` so that a pixel keeps its colour once it has
    one; the last frame equals ``fractal(...)`` with the same arguments. All frames come from one
    pass of the iteration.

    Args:
        width, height, ...: as :func:`fractal`.
        frames: number of frames ``T``, 1..10000.

    Returns:
        ``(T, 3, H, W)`` tensor in [0, 1].

    Raises:
        ParamError: as :func:`fractal`, or ``frames`` out of range.

    Example:
        >>> video = fractal_frames(8, 8, frames=3, iterations=6)
        >>> video.shape
        torch.Size([3, 3, 8, 8])
    """
    frames = _whole("frames", frames, 1, _MAX_FRAMES)
    view, spec, coloring, inside, s, iterations, stops = _prepare(
        width, height, formula=formula, power=power, coefficient=coefficient, center=center,
        span=span, iterations=iterations, coloring=coloring, palette=palette, interior=interior,
        supersample=supersample, julia=julia, eps=eps, bailout=bailout, trap_point=trap_point,
        trap_radius=trap_radius, trap_angle=trap_angle, dtype=dtype, device=device)
    budgets = frame_budgets(iterations, frames)
    with torch.no_grad():
        bands = []
        for start in _bands(view, s, frames):
            fields = _iterate_fast(start, spec, budgets)
            bands.append(torch.stack([
                _downsample(_colorize(f, coloring, spec, iterations, stops, inside), s)
                for f in fields]))  # T x (3, h, W) -> (T, 3, h, W)
        return torch.cat(bands, dim=2)  # bands of (T, 3, h, W) -> (T, 3, H, W)
