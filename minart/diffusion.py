"""Perona-Malik diffusion: the classic 1990 scheme and the seed post's operator form.

Two schemes share one entry point, :func:`perona_malik`:

``"classic"``
    Perona & Malik (1990), "Scale-space and edge detection using anisotropic diffusion", the
    explicit four-neighbour scheme with zero flux at the border, per channel::

        d_N = I[y-1, x] - I   (and S, E, W likewise; 0 across the border)
        I <- I + dt * sum_{N,S,E,W} c(d) * d

    with conduction ``"exp"`` ``c = exp(-(d/kappa)^2)`` (option 1), ``"inverse"``
    ``c = 1 / (1 + (d/kappa)^2)`` (option 2) or ``"tukey"``, Tukey's biweight
    ``c = 1/2 (1 - (d/s)^2)^2`` for ``|d| <= s = kappa*sqrt(2)``, else 0 (option 3). This is the
    scheme of ``medpy.filter.smoothing.anisotropic_diffusion`` applied to each channel.
    Explicit steps are stable for ``dt <= 0.25``.

``"seed"``
    The form used by the "Art with Math" post: a dense ``(C, C, 3, 3)`` operator ``K`` (every
    ``(out, in)`` slice starts as the 5-point Laplacian) applied to the reflect-padded image::

        g = K * reflect_pad(I)
        I <- clamp(I + dt * g * c, 0, 1)

    with ``c = exp(-g^2 / kappa^2)`` (``"exp"``), ``c = 1 / (1 + |grad I| / kappa^2)`` with Scharr
    gradients of the channel sum (``"inverse"``, as the post's demo) or Tukey's biweight of ``g``.
    The clamp keeps every step in [0, 1], so the input must be in [0, 1] too (within 1e-6, the
    float rounding of an earlier op, which is clamped): anything else is refused rather than
    clipped by the first step. This is the step that :func:`minart.minimize.minimize` learns
    ``K`` through.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import as_batch, check_choice, check_finite, check_range, check_unit_range, check_whole
from .errors import ParamError, ShapeError

__all__ = [
    "CLASSIC_DT_MAX",
    "KAPPA_MIN",
    "classic_step",
    "laplacian_operator",
    "perona_malik",
    "perona_malik_step",
    "perona_malik_sweep",
    "scharr_operators",
    "seed_step",
    "sweep_variants",
]

Scheme = Literal["classic", "seed"]
Conduction = Literal["exp", "inverse", "tukey"]

CLASSIC_DT_MAX = 0.25
"""Largest stable explicit time step of the classic four-neighbour scheme in 2-D."""

KAPPA_MIN = 1e-18
"""Smallest ``kappa`` accepted: the seed scheme divides by ``kappa^2``, which must stay a normal
float32 (below about 1e-19 it becomes subnormal, which GPUs flush to zero, then underflows to 0 and
turns flat regions into nan)."""

_SCHEMES = ("classic", "seed")
_CONDUCTIONS = ("exp", "inverse", "tukey")
"""The values of :data:`Conduction`; :mod:`minart.minimize` and :mod:`minart.kernels` import them."""

_LAPLACIAN = ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0))
_SCHARR_X = ((3.0, 0.0, -3.0), (10.0, 0.0, -10.0), (3.0, 0.0, -3.0))
_SCHARR_Y = ((3.0, 10.0, 3.0), (0.0, 0.0, 0.0), (-3.0, -10.0, -3.0))


def _dense(kernel: tuple, channels: int, dtype: torch.dtype | None, device) -> Tensor:
    if channels < 1:
        raise ParamError(f"channels={channels} must be >= 1", param="channels")
    k = torch.tensor(kernel, dtype=dtype or torch.float32, device=device)
    return k.expand(channels, channels, 3, 3).clone()  # (3, 3) -> (C, C, 3, 3)


def laplacian_operator(channels: int = 3, *, dtype: torch.dtype | None = None,
                       device: torch.device | str | None = None) -> Tensor:
    """The seed post's dense operator: every ``(out, in)`` slice is ``[[0,1,0],[1,-4,1],[0,1,0]]``.

    Each output channel is thus the Laplacian of the sum of the input channels.

    Args:
        channels: number of image channels ``C``.
        dtype: floating dtype (default float32).
        device: where to allocate it.

    Returns:
        Tensor ``(C, C, 3, 3)``, a ``conv2d`` weight.

    Raises:
        ParamError: ``channels < 1``.

    Example:
        >>> laplacian_operator(3).shape
        torch.Size([3, 3, 3, 3])
        >>> laplacian_operator(1)[0, 0, 1].tolist()
        [1.0, -4.0, 1.0]
    """
    return _dense(_LAPLACIAN, channels, dtype, device)


def scharr_operators(channels: int = 3, *, dtype: torch.dtype | None = None,
                     device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """Dense Scharr operators ``(K_x, K_y)``, each ``(C, C, 3, 3)``, as in the post's demo.

    Every ``(out, in)`` slice is ``K_x = [[3, 0, -3], [10, 0, -10], [3, 0, -3]]`` or its transpose
    ``K_y``, so each output channel is the Scharr gradient of the sum of the input channels
    (Scharr 2000; used by the ``"inverse"`` conduction of :func:`seed_step`).

    Args:
        channels: number of image channels ``C``.
        dtype: floating dtype (default float32).
        device: where to allocate them.

    Returns:
        ``(K_x, K_y)``, two ``(C, C, 3, 3)`` ``conv2d`` weights.

    Raises:
        ParamError: ``channels < 1``.

    Example:
        >>> kx, ky = scharr_operators(3)
        >>> kx[0, 0, 1].tolist()
        [10.0, 0.0, -10.0]
    """
    return _dense(_SCHARR_X, channels, dtype, device), _dense(_SCHARR_Y, channels, dtype, device)


def _over(d: Tensor, scale: float | Tensor) -> Tensor:
    """``d / scale``, also for a ``scale`` so small that ``1 / scale`` overflows ``d``'s dtype.

    CUDA divides a tensor by a scalar as a multiply by the scalar's reciprocal, which is then
    ``inf``, so ``0 / scale`` came out ``0 * inf = nan`` there (and ``0`` on the CPU). Such a
    ``scale`` multiplies by the dtype's largest value instead: 0 stays 0, and any other
    difference is far past every threshold, as with exact division. A 0-dim tensor ``scale``
    (the compiled CPU step's graph input) selects without a Python branch.
    """
    biggest = torch.finfo(d.dtype).max
    if isinstance(scale, Tensor):
        return torch.where(scale * biggest < 1.0, d * biggest, d / scale)
    if 1.0 / scale > biggest:
        return d * biggest
    return d / scale


def _inverse_kappa(kappa: float) -> float:
    """``1 / kappa`` for the fast classic steps (Triton, compiled CPU), at most float32's largest
    value: a multiply per pixel instead of a division, and for a ``kappa`` so small that the
    reciprocal overflows the conduction is still 0 for a nonzero difference and 1 for a zero one,
    as with ``d / kappa`` (a reciprocal of ``inf`` would give ``0 * inf = nan`` there)."""
    return min(1.0 / float(kappa), torch.finfo(torch.float32).max)


def _conduction(d: Tensor, kappa: float, conduction: str) -> Tensor:
    """Conduction coefficient c(d) of the classic scheme (medpy options 1, 2, 3)."""
    if conduction == "exp":
        return torch.exp(-(_over(d, kappa) ** 2))
    if conduction == "inverse":
        return 1.0 / (1.0 + _over(d, kappa) ** 2)
    s = kappa * math.sqrt(2.0)
    return torch.where(d.abs() <= s, 0.5 * (1.0 - _over(d, s) ** 2) ** 2, torch.zeros_like(d))


def classic_step(image: Tensor, *, kappa: float, dt: float,
                 conduction: Conduction = "exp") -> Tensor:
    """One explicit Perona-Malik (1990) step with zero-flux borders, per channel.

    ``I <- I + dt * (div_y + div_x)`` where ``div`` is the backward difference of the flux
    ``c(d) * d`` of forward differences ``d`` (0 across the border).

    Args:
        image: ``(B, C, H, W)`` floating tensor.
        kappa: edge threshold, in image units (> 0).
        dt: time step; stable for ``dt <= 0.25``.
        conduction: ``"exp"``, ``"inverse"`` or ``"tukey"``.

    Returns:
        Tensor of the same shape.

    Raises:
        ParamError: an unknown ``conduction`` (other inputs are not checked: :func:`perona_malik`
            checks them once per run).

    Example:
        >>> classic_step(torch.full((1, 1, 4, 4), 0.5), kappa=0.1, dt=0.2).unique().tolist()
        [0.5]
    """
    check_choice("conduction", conduction, _CONDUCTIONS)
    dy = F.pad(image[..., 1:, :] - image[..., :-1, :], (0, 0, 0, 1))  # (B, C, H-1, W) -> (B, C, H, W)
    dx = F.pad(image[..., :, 1:] - image[..., :, :-1], (0, 1, 0, 0))  # (B, C, H, W-1) -> (B, C, H, W)
    fy = _conduction(dy, kappa, conduction) * dy
    fx = _conduction(dx, kappa, conduction) * dx
    div_y = fy - F.pad(fy[..., :-1, :], (0, 0, 1, 0))  # flux in minus flux out, zero at the border
    div_x = fx - F.pad(fx[..., :, :-1], (1, 0, 0, 0))
    return image + dt * (div_y + div_x)


def seed_step(image: Tensor, operator: Tensor, *, kappa: float, dt: float,
              conduction: Conduction = "exp") -> tuple[Tensor, Tensor]:
    """One step of the seed post's scheme; differentiable in ``image`` and ``operator``.

    ``g = K * reflect_pad(I)``, ``I <- clamp(I + dt * g * c, 0, 1)``, with ``c = exp(-g^2/kappa^2)``
    for ``"exp"``, ``1 / (1 + |grad I| / kappa^2)`` (Scharr gradients) for ``"inverse"`` and
    Tukey's biweight of ``g`` for ``"tukey"``.

    Args:
        image: ``(B, C, H, W)`` in [0, 1], ``H, W >= 2``.
        operator: ``(C, C, 3, 3)`` conv2d weight ``K``.
        kappa: conduction scale (> 0).
        dt: time step (> 0).
        conduction: ``"exp"``, ``"inverse"`` or ``"tukey"``.

    Returns:
        ``(new_image, g)``: the updated ``(B, C, H, W)`` image and the operator response ``g``
        (the post's ``pm.gradients``), same shape.

    Raises:
        ParamError: an unknown ``conduction`` (other inputs are not checked: :func:`perona_malik`
            checks them once per run).

    Example:
        >>> new, g = seed_step(torch.full((1, 3, 4, 4), 0.5), laplacian_operator(3), kappa=0.2, dt=0.2)
        >>> float(g.abs().max()), float(new.mean())
        (0.0, 0.5)
    """
    check_choice("conduction", conduction, _CONDUCTIONS)
    padded = F.pad(image, (1, 1, 1, 1), mode="reflect")  # (B, C, H, W) -> (B, C, H+2, W+2)
    g = F.conv2d(padded, operator)
    return _seed_update(image, padded, g, kappa, dt, conduction), g


def _seed_update(image: Tensor, padded: Tensor, g: Tensor, kappa: float | Tensor,
                 dt: float | Tensor, conduction: str) -> Tensor:
    """``clamp(I + dt * g * c, 0, 1)``, the seed step once ``g`` is known.

    Shared with the compiled CPU path (:func:`minart.kernels.cpu._seed_core`, which passes
    ``kappa`` and ``dt`` as 0-dim float64 tensors): Inductor traces these same operations, so
    both paths keep one formula. ``padded`` is ``image`` reflect-padded by 1 (for the Scharr
    gradients of ``"inverse"``).
    """
    if conduction == "exp":
        c = torch.exp(-(g * g) / (kappa * kappa))
    elif conduction == "inverse":
        kx, ky = scharr_operators(image.shape[1], dtype=image.dtype, device=image.device)
        magnitude = torch.sqrt(F.conv2d(padded, kx) ** 2 + F.conv2d(padded, ky) ** 2)
        c = 1.0 / (1.0 + magnitude / (kappa * kappa))
    else:
        c = _conduction(g, kappa, "tukey")
    return torch.clamp(image + dt * g * c, 0.0, 1.0)


def _check_operator(operator: Tensor, channels: int, image: Tensor) -> None:
    if not isinstance(operator, Tensor) or operator.shape != (channels, channels, 3, 3):
        shape = tuple(operator.shape) if isinstance(operator, Tensor) else type(operator).__name__
        raise ShapeError(
            f"operator must be ({channels}, {channels}, 3, 3) for a {channels}-channel image, "
            f"got {shape}",
            param="operator",
        )
    if operator.dtype != image.dtype or operator.device != image.device:
        raise ShapeError(
            f"operator is {operator.dtype} on {operator.device} but the image is {image.dtype} on "
            f"{image.device}; convert one of them explicitly",
            param="operator",
        )
    check_finite(operator, name="operator")


def _substeps(dt: float, scheme: str, substep: str, *, at: str = "") -> int:
    if scheme != "classic" or dt <= CLASSIC_DT_MAX:
        return 1
    if substep == "off":
        raise ParamError(
            f"dt{at}={dt} exceeds the stability bound {CLASSIC_DT_MAX} for scheme 'classic'; "
            f"use dt <= {CLASSIC_DT_MAX} or substep: auto",
            param="dt",
        )
    return math.ceil(dt / CLASSIC_DT_MAX)


def perona_malik_step(image: Tensor, *, kappa: float, dt: float, scheme: Scheme = "classic",
                      conduction: Conduction = "exp", operator: Tensor | None = None) -> Tensor:
    """One diffusion step of either scheme on a ``(B, C, H, W)`` image (no substepping).

    :func:`classic_step` for ``"classic"``, :func:`seed_step` (its image) for ``"seed"``; see
    :func:`perona_malik` for the formulas. Only the string options are checked here (no wait for
    the device); :func:`perona_malik` checks the rest once per run.

    Args:
        image: ``(B, C, H, W)`` floating tensor; in [0, 1] for ``"seed"``, ``H, W >= 2``.
        kappa: edge threshold / conduction scale (> 0).
        dt: time step (> 0; ``"classic"`` is stable for ``dt <= 0.25``).
        scheme: ``"classic"`` or ``"seed"``.
        conduction: ``"exp"``, ``"inverse"`` or ``"tukey"``.
        operator: ``(C, C, 3, 3)`` operator for ``"seed"`` (default :func:`laplacian_operator`);
            ignored by ``"classic"``.

    Returns:
        The next image, a tensor of the same shape.

    Raises:
        ParamError: an unknown ``scheme`` or ``conduction``.

    Example:
        >>> x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
        >>> perona_malik_step(x, kappa=0.1, dt=0.2).shape
        torch.Size([1, 3, 8, 8])
    """
    check_choice("scheme", scheme, _SCHEMES)
    check_choice("conduction", conduction, _CONDUCTIONS)
    if scheme == "classic":
        return classic_step(image, kappa=kappa, dt=dt, conduction=conduction)
    if operator is None:
        operator = laplacian_operator(image.shape[1], dtype=image.dtype, device=image.device)
    return seed_step(image, operator, kappa=kappa, dt=dt, conduction=conduction)[0]


def perona_malik(
    image: Tensor,
    *,
    steps: int,
    kappa: float,
    dt: float,
    scheme: Scheme = "classic",
    conduction: Conduction = "exp",
    operator: Tensor | None = None,
    substep: Literal["auto", "off"] = "auto",
    callback: Callable[[int, Tensor], None] | None = None,
    callback_every: int = 1,
) -> Tensor:
    """Edge-preserving Perona-Malik diffusion, the classic 1990 scheme or the seed post's form.

    Classic: ``I <- I + dt * sum_{N,S,E,W} c(d) d`` with zero-flux borders, per channel (equal to
    ``medpy.filter.smoothing.anisotropic_diffusion`` per channel). Seed:
    ``g = K * reflect_pad(I)``, ``I <- clamp(I + dt g exp(-g^2/kappa^2), 0, 1)``. See the module
    docstring for the conduction functions.

    Args:
        image: ``(C, H, W)`` or ``(B, C, H, W)`` floating tensor, ``H, W >= 2``. ``"seed"``
            clamps every step to [0, 1], so its input must lie in [0, 1] (values within 1e-6 of
            it are float rounding and are clamped); ``"classic"`` does not clamp and takes any
            finite range, with ``kappa`` in the same units.
        steps: number of diffusion steps (>= 0).
        kappa: edge threshold (>= KAPPA_MIN, 1e-18): differences well below it diffuse, above
            it are kept.
        dt: time step (> 0). For ``"classic"`` values above 0.25 are unstable: ``substep="auto"``
            splits each step into ``ceil(dt / 0.25)`` equal substeps, ``"off"`` refuses them.
        scheme: ``"classic"`` or ``"seed"``.
        conduction: ``"exp"``, ``"inverse"`` or ``"tukey"``.
        operator: ``(C, C, 3, 3)`` operator for ``"seed"`` (default :func:`laplacian_operator`).
        substep: ``"auto"`` or ``"off"``.
        callback: called as ``callback(step, image)`` (``step`` 1-based) after every
            ``callback_every`` steps and after the last, for progress or frames.
        callback_every: steps between two calls of ``callback`` (>= 1). Between calls the steps
            run back to back, which lets a GPU do two steps per pass over memory.

    Returns:
        Tensor of the same shape, dtype and device as ``image``.

    Raises:
        ShapeError: bad shape or dtype, NaN/Inf input, an input outside [0, 1] for ``"seed"``,
            operator of the wrong shape.
        ParamError: a parameter out of range, or ``dt > 0.25`` with ``substep="off"``.

    Example:
        >>> x = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
        >>> y = perona_malik(x, steps=10, kappa=0.1, dt=0.2)
        >>> y.shape, bool(torch.allclose(y.mean(), x.mean(), atol=1e-6))
        (torch.Size([3, 16, 16]), True)
    """
    batch, single = as_batch(image, min_size=2)
    _check_options(scheme, conduction, substep)
    check_whole("steps", steps, ge=0)
    n = _check_step(kappa, dt, scheme, substep)
    batch = _checked_image(batch, scheme)
    operator = _host_operator(operator, batch, scheme)
    check_whole("callback_every", callback_every, ge=1)
    out = batch
    for done, out in _diffusing(batch, steps=steps, every=steps if callback is None
                                else callback_every, kappa=kappa, dt=dt, substeps=n,
                                scheme=scheme, conduction=conduction, operator=operator):
        if callback is not None:
            callback(done, out)
    return out[0] if single else out


def perona_malik_sweep(
    image: Tensor,
    *,
    steps: int,
    kappa: float | Sequence[float],
    dt: float | Sequence[float],
    scheme: Scheme = "classic",
    conduction: Conduction = "exp",
    operator: Tensor | None = None,
    substep: Literal["auto", "off"] = "auto",
    callback: Callable[[int, Tensor], None] | None = None,
    callback_every: int = 1,
) -> Tensor:
    """Variants of one :func:`perona_malik` run side by side: a value of ``kappa`` and ``dt`` each.

    Variant ``n`` is ``perona_malik(image, steps=steps, kappa=kappa[n], dt=dt[n], ...)``; a
    single value (or a list of one) is used by every variant. On CUDA the seed scheme runs all
    variants of a step in one kernel launch (:func:`minart.kernels.seed_sweep`, within 1e-5 of
    :func:`perona_malik`); elsewhere each variant takes :func:`perona_malik`'s path, and its bits.

    Args:
        image: ``(C, H, W)`` or ``(1, C, H, W)``, as for :func:`perona_malik`.
        steps: number of diffusion steps of every variant (>= 0).
        kappa: one value or a value per variant (each >= KAPPA_MIN).
        dt: one value or a value per variant (each > 0); a classic ``dt`` above 0.25 takes
            substeps as in :func:`perona_malik`.
        scheme: ``"classic"`` or ``"seed"``.
        conduction: ``"exp"``, ``"inverse"`` or ``"tukey"``.
        operator: ``(C, C, 3, 3)`` operator of every variant for ``"seed"`` (default
            :func:`laplacian_operator`).
        substep: ``"auto"`` or ``"off"``.
        callback: called as ``callback(step, images)`` with the ``(N, C, H, W)`` variants after
            every ``callback_every`` steps and after the last.
        callback_every: steps between two calls of ``callback`` (>= 1).

    Returns:
        ``(N, C, H, W)``: the variants in the order of the values.

    Raises:
        ShapeError: as :func:`perona_malik`, or a batch of several images.
        ParamError: as :func:`perona_malik` (naming the variant: ``kappa[2]=0``), or ``kappa``
            and ``dt`` lists of two different lengths.

    Example:
        >>> x = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
        >>> sweep = perona_malik_sweep(x, steps=5, kappa=[0.05, 0.1, 0.2], dt=0.2)
        >>> sweep.shape, bool(torch.equal(sweep[1], perona_malik(x, steps=5, kappa=0.1, dt=0.2)))
        (torch.Size([3, 3, 16, 16]), True)
    """
    batch, _ = as_batch(image, min_size=2)
    if batch.shape[0] != 1:
        raise ShapeError(f"image must be one (C, H, W) image, got shape {tuple(image.shape)}",
                         param="image")
    _check_options(scheme, conduction, substep)
    check_whole("steps", steps, ge=0)
    kappas, dts = sweep_variants(kappa, dt)

    def at(i: int, value: object) -> str:  # "[2]" names a listed value; a single one, none
        return f"[{i}]" if isinstance(value, (list, tuple)) else ""

    substeps = [_check_step(k, d, scheme, substep, at_kappa=at(i, kappa), at_dt=at(i, dt))
                for i, (k, d) in enumerate(zip(kappas, dts, strict=True))]
    batch = _checked_image(batch, scheme)
    operator = _host_operator(operator, batch, scheme)
    check_whole("callback_every", callback_every, ge=1)
    if scheme == "seed" and batch.is_cuda:  # every variant of a step in one launch
        from .kernels.dispatch import seed_sweep

        operators = operator.to(batch.device).expand(len(kappas), -1, -1, -1, -1).contiguous()
        with torch.no_grad():
            return seed_sweep(batch, operators, kappa=kappas, dt=dts, conduction=conduction,
                              steps=steps, callback=callback, callback_every=callback_every)
    every = steps if callback is None else callback_every
    runs = [_diffusing(batch, steps=steps, every=every, kappa=k, dt=d, substeps=n, scheme=scheme,
                       conduction=conduction, operator=operator)
            for k, d, n in zip(kappas, dts, substeps, strict=True)]
    outs = [batch] * len(runs)
    for step in zip(*runs, strict=True):  # the variants in step, each run as perona_malik does
        outs = [out for _, out in step]
        if callback is not None:
            callback(step[0][0], torch.cat(outs))  # N x (1, C, H, W) -> (N, C, H, W)
    return torch.cat(outs)  # N x (1, C, H, W) -> (N, C, H, W)


def sweep_variants(kappa: float | Sequence[float],
                   dt: float | Sequence[float]) -> tuple[list[float], list[float]]:
    """The ``kappa`` and ``dt`` of each variant of :func:`perona_malik_sweep`: two lists of one
    length, a single value (or a list of one) repeated for every variant.

    Args:
        kappa: one value or a list of values.
        dt: one value or a list of values.

    Returns:
        ``(kappas, dts)``, ``N`` values each.

    Raises:
        ParamError: an empty list, or two lists of different lengths (neither of length one).

    Example:
        >>> sweep_variants([0.05, 0.1, 0.2], 0.25)
        ([0.05, 0.1, 0.2], [0.25, 0.25, 0.25])
    """
    lists = {name: list(v) for name, v in (("kappa", kappa), ("dt", dt))
             if isinstance(v, (list, tuple))}
    for name, items in lists.items():
        if not items:
            raise ParamError(f"{name} is an empty list; give at least one value", param=name)
    if len(lists) == 2 and len(lists["kappa"]) > 1 and len(lists["dt"]) > 1 \
            and len(lists["kappa"]) != len(lists["dt"]):
        raise ParamError(f"dt has {len(lists['dt'])} values but kappa has "
                         f"{len(lists['kappa'])}; give dt {len(lists['kappa'])} values or one",
                         param="dt")
    n = max((len(v) for v in lists.values()), default=1)
    kappas = lists.get("kappa", [kappa])
    dts = lists.get("dt", [dt])
    return kappas * (n // len(kappas)), dts * (n // len(dts))


def _check_options(scheme: str, conduction: str, substep: str) -> None:
    check_choice("scheme", scheme, _SCHEMES)
    check_choice("conduction", conduction, _CONDUCTIONS)
    check_choice("substep", substep, ("auto", "off"))


def _check_step(kappa: float, dt: float, scheme: str, substep: str, *, at_kappa: str = "",
                at_dt: str = "") -> int:
    """Check one step's ``kappa`` and ``dt`` (``at_...``: ``"[2]"`` for a sweep's third listed
    value); return how many substeps a step takes."""
    check_range(f"kappa{at_kappa}", kappa, ge=KAPPA_MIN)
    check_range(f"dt{at_dt}", dt, gt=0)
    return _substeps(dt, scheme, substep, at=at_dt)


def _checked_image(batch: Tensor, scheme: str) -> Tensor:
    if scheme == "seed":  # its steps clamp to [0, 1]: refuse what they would clip silently
        return check_unit_range("image", batch, hint="use scheme: classic, which takes any range, "
                                "or normalise the image to [0, 1] first")
    check_finite(batch)
    return batch


def _host_operator(operator: Tensor | None, batch: Tensor, scheme: str) -> Tensor | None:
    """The seed scheme's operator, checked, on the host (default: :func:`laplacian_operator`)."""
    if operator is not None:
        if scheme != "seed":
            raise ParamError("operator is used by scheme 'seed' only; drop it or set scheme: seed",
                             param="operator")
        _check_operator(operator, batch.shape[1], batch)
    if scheme != "seed":
        return None
    # on the host: the Triton kernels take its values as kernel arguments (one read-back of
    # a given GPU operator per call, not one per step); the other paths move it back
    return (laplacian_operator(batch.shape[1], dtype=batch.dtype) if operator is None
            else operator.cpu())


def _diffusing(batch: Tensor, *, steps: int, every: int, kappa: float, dt: float, substeps: int,
               scheme: str, conduction: str, operator: Tensor | None
               ) -> Iterator[tuple[int, Tensor]]:
    """:func:`perona_malik`'s run once checked: ``(steps done, image)`` after every ``every``
    steps and after the last. Between two yields the steps run back to back (a GPU does two a
    pass), on the fastest exact path for the whole run's size."""
    # Same step on the fastest exact path (Triton on CUDA, compiled on CPU for long runs);
    # MINART_KERNELS=eager keeps perona_malik_step. Imported here: kernels.cpu imports this module.
    from .kernels.dispatch import perona_malik_steps_fast

    out = batch
    work = steps * substeps * batch.numel()
    done = 0
    while done < steps:
        run = min(every, steps - done)
        with torch.no_grad():
            out = perona_malik_steps_fast(out, steps=run * substeps, kappa=kappa,
                                          dt=dt / substeps, scheme=scheme,
                                          conduction=conduction, operator=operator, work=work)
        done += run
        yield done, out
