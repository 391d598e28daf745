"""Pick the fastest exact path for a step: Triton on CUDA, compiled on CPU, else the eager reference.

The rules, applied per call (cheap: an environment read and a few attribute checks):

- ``MINART_KERNELS=eager`` (read at each call, not at import) always runs the eager reference;
  ``auto`` (the default) lets the rules below choose. ``MINART_KERNEL_VARIANT=tiles|rows|split|
  twopass|ahead|pairs`` forces one shape of the Triton diffusion kernels (benchmarks); both are checked
  at each call.
- CUDA float32 tensors with at most 4 channels, when :mod:`triton` imports: the Triton kernels of
  :mod:`minart.kernels.triton_diffusion` / :mod:`minart.kernels.triton_fractal`.
- CPU float32 tensors without autograd, when the run is long enough to repay the one-off
  ``torch.compile`` start-up (``work = steps * numel >= CPU_COMPILE_MIN_WORK``):
  :mod:`minart.kernels.cpu`. Only the run's own size decides, never what the process compiled
  before: the compiled step matches the eager one to 1e-5, not bit for bit, so a choice that
  depended on history would let the same step render different bits (concurrent steps, a step
  re-rendered alone after a cache clear).
- Anything else (float64, autograd on CPU, conductions without a kernel backward, small runs):
  the eager functions of :mod:`minart.diffusion` / :mod:`minart.fractal`.

Every fast path matches the eager reference to 1e-5 (forward) and 1e-4 relative (gradients).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from .._checks import as_batch, check_choice, check_finite, check_range, check_whole
from ..diffusion import _CONDUCTIONS
from ..errors import ParamError, ShapeError

__all__ = [
    "CPU_COMPILE_MIN_WORK",
    "Path",
    "classic_step_fast",
    "fractal_field_fast",
    "fractal_snapshots_fast",
    "kernels_mode",
    "perona_malik_step_fast",
    "perona_malik_steps_fast",
    "seed_loss_step",
    "seed_step_fast",
    "seed_sweep",
    "step_path",
    "triton_available",
]

Path = Literal["triton", "compiled", "eager"]

CPU_COMPILE_MIN_WORK = 2 ** 28
"""Elements x steps from which a CPU run uses the compiled path (about 85 steps of a 1024^2 RGB
image: the eager seed step costs ~60-110 ms there, a cold compile ~30 s, a warm one ~5 s)."""

_MAX_TRITON_CHANNELS = 4
_KERNEL_VARIANTS = ("tiles", "rows", "split", "twopass", "ahead", "pairs")
"""Values of ``MINART_KERNEL_VARIANT`` (``minart.kernels.triton_diffusion._auto`` reads it)."""


def kernels_mode() -> Literal["eager", "auto"]:
    """The ``MINART_KERNELS`` setting: ``"eager"`` forces the references, ``"auto"`` (default) chooses.

    ``MINART_KERNEL_VARIANT`` is checked here too, so a misspelt one is refused on every path,
    not only where a Triton kernel would read it.

    Raises:
        ParamError: any other value, or a ``MINART_KERNEL_VARIANT`` other than ``tiles``,
            ``rows``, ``split``, ``twopass``, ``ahead`` or ``pairs`` (unset or empty: the
            kernels choose).

    Example:
        >>> kernels_mode() in ("eager", "auto")
        True
    """
    mode = os.environ.get("MINART_KERNELS", "auto").strip().lower() or "auto"
    if mode not in ("eager", "auto"):
        raise ParamError(f"MINART_KERNELS={mode!r} is not one of 'eager', 'auto'",
                         param="MINART_KERNELS")
    variant = os.environ.get("MINART_KERNEL_VARIANT", "").strip()
    if variant and variant not in _KERNEL_VARIANTS:
        raise ParamError(f"MINART_KERNEL_VARIANT={variant!r} is not one of "
                         f"{', '.join(map(repr, _KERNEL_VARIANTS))}; unset it to let the kernels "
                         "choose", param="MINART_KERNEL_VARIANT")
    return mode  # type: ignore[return-value]


@functools.lru_cache(maxsize=1)
def triton_available() -> bool:
    """Whether :mod:`triton` imports here (checked once, on first use, never at import time).

    Example:
        >>> isinstance(triton_available(), bool)
        True
    """
    try:
        import triton
        import triton.language  # noqa: F401
    except Exception:  # noqa: BLE001 - any failure to import means "no Triton"
        return False
    return True


def step_path(image: Tensor, *, channels_ok: bool = True, grad: bool = False,
              grad_ok: bool = True, work: int | None = None, compiled: str = "") -> Path:
    """Which path a step on ``image`` takes: ``"triton"``, ``"compiled"`` or ``"eager"``.

    Args:
        image: the step's input tensor (its device and dtype decide).
        channels_ok: the kernel supports this channel count.
        grad: gradients are needed through the step.
        grad_ok: the Triton kernels have a backward for this configuration.
        work: ``steps * numel`` of the whole run, to decide if compiling pays; ``None``: unknown
            (treated as small).
        compiled: name of the compiled CPU step (``"seed"``/``"classic"``), ``""`` for none.

    Returns:
        The path name.

    Example:
        >>> step_path(torch.zeros(1, 3, 8, 8))
        'eager'
    """
    if kernels_mode() == "eager" or image.dtype != torch.float32:
        return "eager"
    if image.is_cuda:
        if channels_ok and (grad_ok or not grad) and triton_available():
            return "triton"
        return "eager"
    if (image.device.type == "cpu" and compiled and not grad and work is not None
            and work >= CPU_COMPILE_MIN_WORK):
        from . import cpu

        if not cpu.is_broken(compiled):
            return "compiled"
    return "eager"


def _seed_kernel_fits(image: Tensor) -> bool:
    """The seed kernels take 4-D images of at most 4 channels and 65535 images (grid axis 1)."""
    return image.ndim == 4 and image.shape[1] <= _MAX_TRITON_CHANNELS and image.shape[0] < 65536


def _classic_kernel_fits(image: Tensor) -> bool:
    """The classic kernels take 4-D images of fewer than 65536 planes (grid axis 1)."""
    return image.ndim == 4 and image.shape[0] * image.shape[1] < 65536


def _needs_grad(*tensors: Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def seed_step_fast(image: Tensor, operator: Tensor, *, kappa: float, dt: float,
                   conduction: str = "exp", need_g: bool = True,
                   work: int | None = None) -> tuple[Tensor, Tensor | None]:
    """:func:`minart.diffusion.seed_step` on the fastest exact path; differentiable like it.

    ``g = K * reflect_pad(I)``, ``I' = clamp(I + dt g c(g), 0, 1)``.

    Args:
        image: ``(B, C, H, W)`` in [0, 1], ``H, W >= 2``.
        operator: ``(C, C, 3, 3)``, on the image's device or on the host (CPU): the Triton
            kernels then take its values as kernel arguments (fewer registers, nothing copied
            per step; :func:`minart.kernels.triton_diffusion._kernel_weights`), the other paths
            move it to the image's device.
        kappa: conduction scale (> 0).
        dt: time step (> 0).
        conduction: ``"exp"``, ``"inverse"`` or ``"tukey"`` (Triton gradients: exp, tukey).
        need_g: return ``g`` too (``False`` lets the fast paths skip writing it; ``None`` then).
        work: ``steps * numel`` of the whole run, for the CPU compile decision.

    Returns:
        ``(new_image, g or None)``.

    Example:
        >>> from minart.diffusion import laplacian_operator
        >>> new, g = seed_step_fast(torch.full((1, 3, 4, 4), 0.5), laplacian_operator(3),
        ...                         kappa=0.2, dt=0.2)
        >>> float(new.mean()), float(g.abs().max())
        (0.5, 0.0)
    """
    from ..diffusion import seed_step

    grad = _needs_grad(image, operator)
    path = step_path(image, channels_ok=_seed_kernel_fits(image), grad=grad,
                     grad_ok=conduction in ("exp", "tukey"), work=work, compiled="seed")
    if path == "triton":
        from . import triton_diffusion as td

        if grad:
            return td.SeedStep.apply(image.contiguous(), operator.to(image.device), float(kappa),
                                     float(dt), conduction)
        return td.seed_forward_triton(image.contiguous(), operator, kappa=kappa, dt=dt,
                                      conduction=conduction, store_g=need_g)
    operator = operator.to(image.device)  # (a host operator given for the Triton kernels)
    if path == "compiled":
        from . import cpu

        try:
            return cpu.seed_step_compiled(image, operator, kappa=kappa, dt=dt,
                                          conduction=conduction, need_g=need_g)
        except RuntimeError as exc:  # Inductor could not build here (no C++ compiler, ...)
            cpu.mark_broken("seed", exc)  # warns once; eager from now on
    return seed_step(image, operator, kappa=kappa, dt=dt, conduction=conduction)


def classic_step_fast(image: Tensor, *, kappa: float, dt: float, conduction: str = "exp",
                      work: int | None = None) -> Tensor:
    """:func:`minart.diffusion.classic_step` on the fastest exact path.

    ``I' = I + dt * sum_{N,S,E,W} c(d) d`` with zero-flux borders, per channel. Without autograd
    on the fast paths (the classic scheme has no learned parameters); with it, eager.

    Args:
        image: ``(B, C, H, W)`` floating tensor, ``H, W >= 2``.
        kappa: edge threshold (> 0).
        dt: time step.
        conduction: ``"exp"``, ``"inverse"`` or ``"tukey"``.
        work: ``steps * numel`` of the whole run, for the CPU compile decision.

    Returns:
        Tensor of the same shape.

    Example:
        >>> classic_step_fast(torch.full((1, 1, 4, 4), 0.5), kappa=0.1, dt=0.2).unique().tolist()
        [0.5]
    """
    from ..diffusion import classic_step

    path = step_path(image, channels_ok=_classic_kernel_fits(image),
                     grad=_needs_grad(image), grad_ok=False, work=work, compiled="classic")
    if path == "triton":
        from . import triton_diffusion as td

        return td.classic_step_triton(image.contiguous(), kappa=kappa, dt=dt,
                                      conduction=conduction)
    if path == "compiled":
        from . import cpu

        try:
            return cpu.classic_step_compiled(image, kappa=kappa, dt=dt, conduction=conduction)
        except RuntimeError as exc:  # Inductor could not build here (no C++ compiler, ...)
            cpu.mark_broken("classic", exc)  # warns once; eager from now on
    return classic_step(image, kappa=kappa, dt=dt, conduction=conduction)


def perona_malik_step_fast(image: Tensor, *, kappa: float, dt: float, scheme: str = "classic",
                           conduction: str = "exp", operator: Tensor | None = None,
                           work: int | None = None) -> Tensor:
    """:func:`minart.diffusion.perona_malik_step` on the fastest exact path (no autograd needed).

    Args:
        image: ``(B, C, H, W)``.
        kappa: edge threshold / conduction scale (> 0).
        dt: time step.
        scheme: ``"classic"`` or ``"seed"``.
        conduction: ``"exp"``, ``"inverse"`` or ``"tukey"``.
        operator: ``(C, C, 3, 3)`` for ``"seed"`` (default the Laplacian operator).
        work: ``steps * numel`` of the whole run, for the CPU compile decision.

    Returns:
        The next image, same shape.

    Example:
        >>> x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
        >>> perona_malik_step_fast(x, kappa=0.1, dt=0.2).shape
        torch.Size([1, 3, 8, 8])
    """
    if scheme == "classic":
        return classic_step_fast(image, kappa=kappa, dt=dt, conduction=conduction, work=work)
    if operator is None:
        from ..diffusion import laplacian_operator

        # on the host, as seed_step_fast takes it for the Triton kernels
        operator = laplacian_operator(image.shape[1], dtype=image.dtype)
    return seed_step_fast(image, operator, kappa=kappa, dt=dt, conduction=conduction,
                          need_g=False, work=work)[0]


def perona_malik_steps_fast(image: Tensor, *, steps: int, kappa: float, dt: float,
                            scheme: str = "classic", conduction: str = "exp",
                            operator: Tensor | None = None, work: int | None = None) -> Tensor:
    """``steps`` calls of :func:`perona_malik_step_fast`, two steps per pass over memory on CUDA
    where that is faster (bit-identical: the same arithmetic per pixel).

    Args:
        image: ``(B, C, H, W)``.
        steps: number of steps (>= 0).
        kappa, dt, scheme, conduction, operator, work: as for :func:`perona_malik_step_fast`.

    Returns:
        The image after ``steps`` steps, same shape.

    Example:
        >>> x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
        >>> one = perona_malik_step_fast(perona_malik_step_fast(x, kappa=0.1, dt=0.2), kappa=0.1,
        ...                              dt=0.2)
        >>> torch.equal(perona_malik_steps_fast(x, steps=2, kappa=0.1, dt=0.2), one)
        True
    """
    if scheme == "seed" and operator is None:  # on the host: see seed_step_fast
        from ..diffusion import laplacian_operator

        operator = laplacian_operator(image.shape[1], dtype=image.dtype)
    if steps >= 2:
        if scheme == "classic":
            path = step_path(image, channels_ok=_classic_kernel_fits(image),
                             grad=_needs_grad(image), grad_ok=False)
        else:
            path = step_path(image, channels_ok=_seed_kernel_fits(image),
                             grad=_needs_grad(image, operator), grad_ok=False)
        if path == "triton":
            from . import triton_diffusion as td

            if scheme == "classic":
                return td.classic_steps_triton(image.contiguous(), steps=steps, kappa=kappa,
                                               dt=dt, conduction=conduction)
            return td.seed_steps_triton(image.contiguous(), operator, steps=steps, kappa=kappa,
                                        dt=dt, conduction=conduction)
    for _ in range(steps):
        image = perona_malik_step_fast(image, kappa=kappa, dt=dt, scheme=scheme,
                                       conduction=conduction, operator=operator, work=work)
    return image


def seed_loss_step(image: Tensor, image0: Tensor, operator: Tensor, *, kappa: float, dt: float,
                   conduction: str = "exp", weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
                   reduction: Literal["sum", "mean"] = "sum") -> tuple[Tensor, Tensor]:
    """One learned step of :mod:`minart.minimize`: the next image and the loss, fused on CUDA.

    ``g = K * reflect_pad(I)``, ``I' = clamp(I + dt g c(g), 0, 1)``,
    ``loss = reduce(w_f (I' - I_0)^2 + w_e |g| + w_i I'^2)``, by default
    ``sum((I' - I_0)^2 + |g| + I'^2)``, the "Art with Math" energy. ``loss`` is
    differentiable in ``operator`` (and ``image`` if it requires grad) through the usual
    ``loss.backward()``; ``I'`` is returned detached, ready to be the next step's input. On CUDA
    (conduction ``exp``/``tukey``) forward, loss and ``dL/dK`` are one Triton pass and
    ``backward`` only scales the stored gradient; elsewhere it is the eager composition.

    Args:
        image: ``I_{t-1}``, ``(B, C, H, W)`` in [0, 1].
        image0: ``I_0``, same shape.
        operator: ``(C, C, 3, 3)``, usually a leaf with ``requires_grad=True``.
        kappa: conduction scale (> 0).
        dt: time step (> 0).
        conduction: ``"exp"``, ``"inverse"`` or ``"tukey"``.
        weights: ``(w_f, w_e, w_i)``: weights of the fidelity, edge and energy terms.
        reduction: ``"sum"`` or ``"mean"`` over all elements.

    Returns:
        ``(next_image, loss)``: ``(B, C, H, W)`` detached and a 0-dim tensor.

    Raises:
        ShapeError: ``image0`` of another shape than ``image``.
        ParamError: an unknown ``reduction`` or a non-finite weight.

    Example:
        >>> from minart.diffusion import laplacian_operator
        >>> k = laplacian_operator(3).requires_grad_()
        >>> x = torch.full((1, 3, 4, 4), 0.5)
        >>> new, loss = seed_loss_step(x, x, k, kappa=0.2, dt=0.2)
        >>> float(loss.detach()), loss.requires_grad
        (12.0, True)
    """
    from ..diffusion import seed_step

    if image0.shape != image.shape:
        raise ShapeError(f"image0 {tuple(image0.shape)} must match the image "
                         f"{tuple(image.shape)}", param="image0")
    check_choice("reduction", reduction, ("sum", "mean"))
    if len(weights) != 3:
        raise ParamError(f"weights must be three numbers (w_f, w_e, w_i), got {len(weights)}",
                         param="weights")
    for name, w in zip(("w_f", "w_e", "w_i"), weights, strict=True):
        check_range(f"weights {name}", w)
    w_f, w_e, w_i = (float(w) for w in weights)
    path = step_path(image, channels_ok=_seed_kernel_fits(image),
                     grad_ok=conduction in ("exp", "tukey"), grad=True)
    if path == "triton" and image0.dtype == torch.float32 and operator.dtype == torch.float32:
        from . import triton_diffusion as td

        scale = 1.0 / image.numel() if reduction == "mean" else 1.0
        return td.SeedLossStep.apply(image.contiguous(), image0.contiguous(), operator,
                                     float(kappa), float(dt), conduction, (w_f, w_e, w_i), scale)
    new, g = seed_step(image, operator, kappa=kappa, dt=dt, conduction=conduction)
    terms = w_f * (new - image0) ** 2 + w_e * g.abs() + w_i * new ** 2
    return new.detach(), (terms.sum() if reduction == "sum" else terms.mean())


def seed_sweep(image: Tensor, operators: Tensor, *, kappa: float | Tensor | list[float],
               dt: float | Tensor | list[float], conduction: str = "exp", steps: int = 1,
               callback: Callable[[int, Tensor], None] | None = None,
               callback_every: int = 1) -> Tensor:
    """``N`` variants of a seed-scheme run (operators and/or parameters) from one image, batched.

    Variant ``n`` is ``steps`` calls of ``I <- seed_step(I, operators[n], kappa=kappa[n],
    dt=dt[n])[0]`` from ``I = image``. On CUDA each step of all ``N`` variants is one Triton launch
    (the first reads the shared image, not ``N`` copies of it), or one launch per two steps
    between two calls of ``callback`` where that is faster, and the launches are queued without
    waiting for the GPU: the inputs are checked once per call, the per-variant parameters copied
    to the device once. Elsewhere it is one eager step per variant per step.

    Args:
        image: ``(C, H, W)`` or ``(1, C, H, W)`` in [0, 1], ``H, W >= 2``.
        operators: ``(N, C, C, 3, 3)``, same dtype and device as ``image``.
        kappa: one value or ``N`` values (> 0).
        dt: one value or ``N`` values (> 0).
        conduction: ``"exp"``, ``"inverse"`` or ``"tukey"``.
        steps: number of steps (>= 0); ``0`` returns ``N`` copies of the image.
        callback: called as ``callback(step, images)`` (``step`` 1-based) with the
            ``(N, C, H, W)`` images after every ``callback_every`` steps and after the last, for
            progress or frames.
        callback_every: steps between two calls of ``callback`` (>= 1).

    Returns:
        ``(N, C, H, W)``.

    Raises:
        ShapeError: bad shapes or lengths, operators of another dtype or device, NaN/Inf input.
        ParamError: a non-positive or non-finite ``kappa`` or ``dt``, a bad ``steps`` or
            ``conduction``.

    Example:
        >>> from minart.diffusion import laplacian_operator, seed_step
        >>> ops = torch.stack([laplacian_operator(3), 0.5 * laplacian_operator(3)])
        >>> seed_sweep(torch.full((3, 4, 4), 0.5), ops, kappa=[0.1, 0.2], dt=0.2).shape
        torch.Size([2, 3, 4, 4])
        >>> x = torch.rand(3, 6, 6, generator=torch.Generator().manual_seed(0))
        >>> seen = []
        >>> out = seed_sweep(x, ops, kappa=0.2, dt=[0.2, 0.1], steps=3,
        ...                  callback=lambda step, images: seen.append(step))
        >>> one = x[None]
        >>> for _ in range(3):
        ...     one = seed_step(one, ops[1], kappa=0.2, dt=0.1)[0]
        >>> seen, bool(torch.equal(out[1:], one))
        ([1, 2, 3], True)
    """
    from ..diffusion import seed_step

    batch, _ = as_batch(image, min_size=2)
    if batch.shape[0] != 1:
        raise ShapeError(f"image must be one (C, H, W) image, got shape {tuple(image.shape)}",
                         param="image")
    check_choice("conduction", conduction, _CONDUCTIONS)
    check_whole("steps", steps, ge=0)
    check_whole("callback_every", callback_every, ge=1)
    c = batch.shape[1]
    if not isinstance(operators, Tensor) or operators.ndim != 5 \
            or operators.shape[1:] != (c, c, 3, 3):
        shape = tuple(operators.shape) if isinstance(operators, Tensor) else type(operators).__name__
        raise ShapeError(f"operators must be (N, {c}, {c}, 3, 3), got {shape}", param="operators")
    if operators.dtype != batch.dtype or operators.device != batch.device:
        raise ShapeError(f"operators are {operators.dtype} on {operators.device} but the image is "
                         f"{batch.dtype} on {batch.device}; convert one of them explicitly",
                         param="operators")
    n = operators.shape[0]
    kaps = _per_variant("kappa", kappa, n)
    dts = _per_variant("dt", dt, n)
    check_finite(batch)  # the call's one wait for the device
    if steps == 0:
        return batch.expand(n, -1, -1, -1).clone()  # (1, C, H, W) -> (N, C, H, W)
    path = step_path(batch, channels_ok=c <= _MAX_TRITON_CHANNELS and n < 65536,
                     grad=_needs_grad(batch, operators), grad_ok=False)
    if path == "triton":
        return _seed_sweep_triton(batch, operators, kaps, dts, steps=steps, conduction=conduction,
                                  callback=callback, callback_every=callback_every)
    images = [batch] * n
    for step in range(1, steps + 1):
        images = [seed_step(images[i], operators[i], kappa=kaps[i], dt=dts[i],
                            conduction=conduction)[0] for i in range(n)]
        if callback is not None and (step % callback_every == 0 or step == steps):
            callback(step, torch.cat(images))  # N x (1, C, H, W) -> (N, C, H, W)
    return torch.cat(images)  # N x (1, C, H, W) -> (N, C, H, W)


def _per_variant(name: str, value, n: int) -> list[float]:
    if isinstance(value, Tensor):
        value = value.detach().reshape(-1).tolist()  # (N,) or () -> list
    values = [value] * n if isinstance(value, (int, float)) else list(value)
    if len(values) != n:
        raise ShapeError(f"{name} has {len(values)} values for {n} operators", param=name)
    for v in values:
        check_range(name, v, gt=0)
    return [float(v) for v in values]


def _seed_sweep_triton(batch: Tensor, operators: Tensor, kappa: list[float], dt: list[float], *,
                       steps: int, conduction: str = "exp",
                       callback: Callable[[int, Tensor], None] | None = None,
                       callback_every: int = 1) -> Tensor:
    """The Triton branch of :func:`seed_sweep`: ``steps`` launches, none waiting for the device.

    The steps between two calls of ``callback`` are
    :func:`~minart.kernels.triton_diffusion.seed_steps_triton`'s launches (two steps per pass
    where ``"auto"`` finds that faster, else the tile or strip kernel a step) with per-image
    operators and ``(kappa^2, kappa*sqrt(2), dt)`` rows, but the rows are built once per call and
    handed to the device without a wait: ``seed_forward_triton`` copies host parameters at every
    call, and reads device ones back to the host. Inputs as checked by :func:`seed_sweep`; CPU
    tensors need ``TRITON_INTERPRET=1``.
    """
    from . import triton_diffusion as td

    n = operators.shape[0]
    rows = td._params(torch.tensor(kappa, dtype=torch.float64),
                      torch.tensor(dt, dtype=torch.float64))  # (N, 3) float32, on the host
    # from pageable memory the driver stages the copy at once: no wait for the device
    params = rows.to(batch.device, non_blocking=True)
    operators = operators.contiguous()
    scalars = td._scalars(kappa[0], dt[0])  # unread with per-image rows
    images = batch.contiguous()  # (1, C, H, W), shared by the first step; then (N, C, H, W)
    every = steps if callback is None else callback_every
    done = 0
    while done < steps:  # back to back between two callbacks
        run = min(every, steps - done)
        images = td._seed_steps_launch(images, operators, params, scalars, n, steps=run,
                                       per_image=True, conduction=conduction, variant="auto")
        done += run
        if callback is not None:
            callback(done, images)
    return images


def fractal_field_fast(width: int, height: int, **options):
    """:func:`minart.fractal.fractal_field` with the Triton kernel on CUDA (float32), else eager.

    Same arguments and result (:class:`minart.fractal.FractalField`); the kernel iterates each
    pixel in registers with per-pixel early exit. Counts match the eager ones on >= 99.9 % of
    pixels (float rounding at basin boundaries may differ).

    Args:
        width: image width in pixels.
        height: image height in pixels.
        **options: the keyword arguments of :func:`minart.fractal.fractal_field`.

    Returns:
        :class:`minart.fractal.FractalField`.

    Example:
        >>> fractal_field_fast(5, 5, iterations=8).counts.shape
        torch.Size([5, 5])
    """
    from .. import fractal as fr

    device = torch.device(options.get("device") or "cpu")
    dtype = options.get("dtype", torch.float32)
    if kernels_mode() == "eager" or device.type != "cuda" or dtype != torch.float32 \
            or not triton_available():
        return fr.fractal_field(width, height, **options)
    return _fractal_field_triton(width, height, **options)


def _fractal_field_triton(width: int, height: int, **options):
    """The Triton branch of :func:`fractal_field_fast`, with the same arguments (CPU tensors
    need TRITON_INTERPRET=1)."""
    from .. import fractal as fr

    device = torch.device(options.pop("device", None) or "cpu")

    # validate and normalise exactly as the reference does, then iterate with the kernel
    opts = {**_fractal_defaults(), **options}
    centre = fr._point("center", opts["center"])
    width, height = fr._check_view(width, height, centre, opts["span"], torch.float32)
    iterations = fr._whole("iterations", opts["iterations"], 1, fr._MAX_ITERATIONS)
    spec = fr._spec(formula=opts["formula"], power=opts["power"],
                    coefficient=opts["coefficient"], julia=opts["julia"], eps=opts["eps"],
                    bailout=opts["bailout"], trap=opts["trap"], trap_point=opts["trap_point"],
                    trap_radius=opts["trap_radius"], trap_angle=opts["trap_angle"],
                    dtype=torch.float32)
    start = fr._grid(width, height, centre, opts["span"], torch.float32, device)
    return _fractal_snapshots_triton(start, spec, [iterations])[0]


def fractal_snapshots_fast(start: Tensor, spec, budgets: list[int]) -> list:
    """``minart.fractal._iterate`` (the fields after each budget) on the fastest path: one Triton
    launch per budget on CUDA (complex64 grids), each continuing the orbits of the previous one;
    else the eager loop.

    Counts match the eager ones on >= 99.9 % of pixels (float rounding at basin boundaries may
    differ, as for :func:`fractal_field_fast`).

    Args:
        start: ``(H, W)`` complex grid of pixel centres, as ``minart.fractal._grid`` makes it.
        spec: the validated ``minart.fractal._Spec``.
        budgets: iteration budgets (>= 1).

    Returns:
        One :class:`minart.fractal.FractalField` per budget, in the order of ``budgets``.

    Example:
        >>> from minart import fractal as fr
        >>> spec = fr._spec(formula="multibrot", power=2, coefficient=1, julia=None, eps=0.75,
        ...                 bailout=16.0, trap=None, trap_point=(0, 0), trap_radius=0.5,
        ...                 trap_angle=0.0, dtype=torch.float32)
        >>> start = fr._grid(8, 8, 0j, 3.0, torch.float32, torch.device("cpu"))
        >>> [int(f.counts.max()) for f in fractal_snapshots_fast(start, spec, [4, 16])]
        [4, 16]
    """
    from .. import fractal as fr

    if kernels_mode() == "eager" or not start.is_cuda or start.dtype != torch.complex64 \
            or not triton_available():
        return fr._iterate(start, spec, budgets)
    return _fractal_snapshots_triton(start, spec, budgets)


def _fractal_snapshots_triton(start: Tensor, spec, budgets: list[int]) -> list:
    """The Triton branch of :func:`fractal_snapshots_fast` (CPU tensors need TRITON_INTERPRET=1)."""
    from .. import fractal as fr
    from . import triton_fractal as tf

    fields = tf.fractal_snapshots_triton(start, budgets=budgets, **spec._asdict())
    return [fr.FractalField(*field) for field in fields]


@functools.lru_cache(maxsize=1)
def _fractal_defaults() -> dict:
    import inspect

    from ..fractal import fractal_field

    return {name: p.default for name, p in inspect.signature(fractal_field).parameters.items()
            if p.default is not inspect.Parameter.empty}

