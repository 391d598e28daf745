"""Compiled CPU path: the eager diffusion steps through ``torch.compile`` (Inductor, C++/OpenMP).

Inductor compiles the seed step, written with ``g`` as an explicit 27-term stencil, and the
classic step, as two loops (fluxes once, into zero-bordered buffers, then their divergence), into
vectorised C++/OpenMP. Compiled code is cached on disk by Inductor (``TORCHINDUCTOR_CACHE_DIR``,
default under the temp folder), so only the first process on a machine pays the full compile
(about 30 s for the seed step on 2 cores, about 5 s from the warm cache);
:mod:`minart.kernels.dispatch` therefore picks this path only for runs long enough to repay it.
``kappa`` and ``dt`` enter as 0-dim tensors so new values never trigger a recompile.
"""

from __future__ import annotations

import contextlib
import math
import threading
import types
import warnings
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from ..diffusion import _inverse_kappa, _seed_update
from ..progress import note

__all__ = ["classic_step_compiled", "is_broken", "mark_broken", "seed_step_compiled"]

_LOCK = threading.Lock()
_COMPILED: dict[tuple[str, tuple], Callable] = {}
_BROKEN: set[str] = set()


def _seed_core(padded: Tensor, operator: Tensor, kappa: Tensor, dt: Tensor, conduction: str,
               need_g: bool):
    """``seed_step`` on the reflect-padded image, ``g`` as an explicit 27-term stencil.

    Inductor turns the stencil into one vectorised loop with the weights as scalars; it beats the
    oneDNN convolution that ``F.conv2d`` stays (an external call, 3 channels are too few for it).
    The padding is done before, in eager: inside the graph Inductor folds it into every load as
    ``abs()`` index arithmetic, which stops vectorisation. Conduction, update and clamp are the
    reference's own code (:func:`minart.diffusion._seed_update`).
    """
    _b, c, hp, wp = padded.shape
    h, w = hp - 2, wp - 2
    image = padded[:, :, 1:-1, 1:-1]
    rows = []
    for o in range(c):
        acc = None
        for i in range(c):
            for dy in range(3):
                for dx in range(3):
                    term = operator[o, i, dy, dx] * padded[:, i, dy:dy + h, dx:dx + w]
                    acc = term if acc is None else acc + term
        rows.append(acc)
    g = torch.stack(rows, dim=1)  # C x (B, H, W) -> (B, C, H, W)
    new = _seed_update(image, padded, g, kappa, dt, conduction)
    return (new, g) if need_g else new


def _classic_flux(d: Tensor, inv_kappa: Tensor, tukey_s: Tensor, conduction: str) -> Tensor:
    """The flux ``c(d) d`` of a forward difference, as the Triton kernels compute it.

    ``d / kappa`` is ``d * inv_kappa``, the reciprocal capped at float32's largest value
    (:func:`minart.diffusion._inverse_kappa`): a multiply per pixel instead of a
    division, and 0 rather than ``nan`` for a zero difference under a ``kappa`` so small that
    ``1 / kappa`` overflows. Matches :func:`minart.diffusion._conduction` to float32 rounding.
    """
    if conduction == "exp":
        c = torch.exp((d * inv_kappa) * (d * -inv_kappa))
    elif conduction == "inverse":
        q = d * inv_kappa
        c = 1.0 / (q * q + 1.0)
    else:
        q = d / tukey_s
        c = torch.where(d.abs() <= tukey_s, 0.5 * (1.0 - q * q) ** 2, 0.0)
    return c * d


def _classic_core(image: Tensor, fy: Tensor, fx: Tensor, row_ok: Tensor, inv_kappa: Tensor,
                  tukey_s: Tensor, dt: Tensor, conduction: str) -> Tensor:
    """``I + dt * (div_y + div_x)``, each flux ``c(d) d`` computed once, into zero-bordered buffers.

    ``fy`` (``(B, C, H+1, W)``) and ``fx`` (``(B, C, H*W+1)``) hold the fluxes with a zero on
    each side, and only their inside is written here, so the borders stay zero from one call to
    the next: the divergence (flux in minus flux out) is then two plain shifted reads with no
    border test, and every loop vectorises. The horizontal fluxes are taken along the flattened
    rows, where ``row_ok`` (``(H*W-1,)``, 0 at each row's last pixel) zeroes the flux that would
    cross from one row's end to the next row's start: the zero-flux border. (Padding inside the
    graph instead made Inductor test every element's column, 1.5x slower.)
    """
    b, c, h, w = image.shape
    dy = image[..., 1:, :] - image[..., :-1, :]  # (B, C, H-1, W)
    fy[:, :, 1:h] = _classic_flux(dy, inv_kappa, tukey_s, conduction)
    flat = image.reshape(b, c, h * w)  # (B, C, H, W) -> (B, C, H*W)
    dx = flat[..., 1:] - flat[..., :-1]  # (B, C, H*W-1)
    fx[..., 1:h * w] = _classic_flux(dx, inv_kappa, tukey_s, conduction) * row_ok
    div_x = (fx[..., 1:] - fx[..., :-1]).reshape(b, c, h, w)  # (B, C, H*W) -> (B, C, H, W)
    return image + dt * ((fy[..., 1:, :] - fy[..., :-1, :]) + div_x)


_IDLE: list[tuple[torch.Size, Tensor, Tensor, Tensor]] = []
"""The last flux buffers a classic step gave back, ``[(shape, fy, fx, row_ok)]`` or ``[]``."""


@contextlib.contextmanager
def _flux_buffers(shape: torch.Size) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """Zero-bordered flux buffers and the row-end mask for an image of ``shape``, for one step.

    The steps of a run reuse one set: a step takes the idle set when it has this shape (else
    allocates one) and gives it back when done, and one set at most is kept idle, so a long
    process holds two images of scratch at rest whatever its threads did. Steps running at the
    same time in other threads (Prefect runs tasks in threads) each have their own. Only the
    inside is ever written, so the borders stay zero, even after a step that failed part-way.
    """
    with _LOCK:
        found = _IDLE.pop() if _IDLE and _IDLE[0][0] == shape else None
    if found is None:
        b, c, h, w = shape
        row_ok = (torch.arange(1, h * w) % w != 0).float()  # (H*W-1,): 0 where x + 1 == W
        found = (shape, torch.zeros(b, c, h + 1, w), torch.zeros(b, c, h * w + 1), row_ok)
    try:
        yield found[1:]
    finally:
        with _LOCK:
            _IDLE[:] = [found]


def _signature(args: tuple) -> tuple:
    """What Dynamo would guard on in ``args``: each tensor's shape and dtype, every other value."""
    return tuple((tuple(a.shape), a.dtype) if isinstance(a, Tensor) else a for a in args)


def _compiled(name: str, fn: Callable, signature: tuple) -> Callable:
    """``fn`` compiled for one ``signature`` of its arguments, under a code object of its own.

    Dynamo keeps its compilations per code object and turns a function off after 8 of them
    (image shapes x conductions). Sharing one would make a process that has rendered many sizes
    fall back to the eager step, and so a step's bits depend on what the process ran before
    it. With a code object per signature, each compiles once and never hits that limit (the
    compiled code still comes from Inductor's on-disk cache when its graph was seen before).
    """
    with _LOCK:
        key = (name, signature)
        compiled = _COMPILED.get(key)
        if compiled is None:
            code = fn.__code__.replace(co_name=f"{fn.__name__}_{len(_COMPILED)}")
            fresh = types.FunctionType(code, fn.__globals__, code.co_name, fn.__defaults__,
                                       fn.__closure__)
            compiled = _COMPILED[key] = torch.compile(fresh, dynamic=False, fullgraph=True)
            new = True
        else:
            new = False
    if new:  # torch.compile is lazy: the call that follows compiles
        note(f"compiling the CPU {name} step for this image size (once per process and size: "
             "seconds, fewer when Inductor's disk cache has it)")
    return compiled


def _call(name: str, fn: Callable, *args):
    """``fn`` compiled under ``name`` for these ``args``' signature, called on them.

    Raises:
        RuntimeError: Inductor could not build (no C++ compiler, ...), or Dynamo refused to
            compile again: the dispatcher then stays eager.
    """
    from torch._dynamo.exc import FailOnRecompileLimitHit

    try:
        return _compiled(name, fn, _signature(args))(*args)
    except FailOnRecompileLimitHit as exc:
        raise RuntimeError(f"the compiled {name} step has been recompiled too often") from exc


def is_broken(name: str) -> bool:
    """Whether compiling ``name`` failed in this process (no C++ compiler, say): use eager then.

    Args:
        name: ``"seed"`` or ``"classic"``.

    Example:
        >>> is_broken("no-such-step")
        False
    """
    return name in _BROKEN


def mark_broken(name: str, error: BaseException | None = None) -> None:
    """Record that compiling ``name`` failed, so the dispatcher stops trying in this process.

    With ``error``, warns once (a :class:`RuntimeWarning`) that the run goes on eager and why: the
    result is the same, only slower, and a nightly job's operator should see why it was slow.

    Args:
        name: ``"seed"`` or ``"classic"``.
        error: what the compile raised.

    Example:
        >>> mark_broken("example-step"); is_broken("example-step")
        True
    """
    if error is not None and name not in _BROKEN:
        lines = str(error).strip().splitlines() or [""]
        warnings.warn(f"minart: the compiled CPU {name} step could not be built here "
                      f"({type(error).__name__}: {lines[0][:160]}); this process runs the eager "
                      f"{name} step from now on (the same result, slower); "
                      "MINART_KERNELS=eager skips the attempt", RuntimeWarning, stacklevel=3)
    _BROKEN.add(name)


def _scalar(value: float) -> Tensor:
    # A 0-dim float64 tensor, as the eager code's Python float: ``kappa * kappa`` is formed in
    # float64, then used against float32 tensors without promoting them.
    return torch.tensor(float(value), dtype=torch.float64)


def seed_step_compiled(image: Tensor, operator: Tensor, *, kappa: float, dt: float,
                       conduction: str = "exp", need_g: bool = True
                       ) -> tuple[Tensor, Tensor | None]:
    """:func:`minart.diffusion.seed_step` compiled by Inductor for CPU tensors.

    Same formula and results (within 1e-5): ``g = K * reflect_pad(I)``,
    ``I' = clamp(I + dt g c, 0, 1)``. The first call per process compiles (seconds).

    Args:
        image: ``(B, C, H, W)`` float32 CPU tensor in [0, 1], ``H, W >= 2``.
        operator: ``(C, C, 3, 3)``.
        kappa: conduction scale (> 0).
        dt: time step.
        conduction: ``"exp"``, ``"inverse"`` or ``"tukey"``.
        need_g: also return ``g`` (else ``None``, one write fewer).

    Returns:
        ``(new_image, g or None)``.

    Example:
        >>> from minart.diffusion import laplacian_operator  # compiling takes seconds
        >>> x = torch.rand(1, 3, 32, 32)  # doctest: +SKIP
        >>> new, g = seed_step_compiled(x, laplacian_operator(3), kappa=0.2, dt=0.2)  # doctest: +SKIP
        >>> new.shape  # doctest: +SKIP
        torch.Size([1, 3, 32, 32])
    """
    # detached: a requires_grad flag is one more guard, hence one more compilation
    padded = F.pad(image.detach(), (1, 1, 1, 1), mode="reflect")  # (B, C, H, W) -> (B, C, H+2, W+2)
    out = _call("seed", _seed_core, padded, operator.detach(), _scalar(kappa),
                _scalar(dt), conduction, need_g)
    return out if need_g else (out, None)


def classic_step_compiled(image: Tensor, *, kappa: float, dt: float,
                          conduction: str = "exp") -> Tensor:
    """:func:`minart.diffusion.classic_step` compiled by Inductor (fluxes once, then divergence).

    ``I' = I + dt * sum_{N,S,E,W} c(d) d`` with zero-flux borders, per channel.

    Args:
        image: ``(B, C, H, W)`` float32 CPU tensor.
        kappa: edge threshold (> 0).
        dt: time step.
        conduction: ``"exp"``, ``"inverse"`` or ``"tukey"``.

    Returns:
        Tensor of the same shape.

    Example:
        >>> classic_step_compiled(torch.full((1, 1, 8, 8), 0.5), kappa=0.1, dt=0.2).unique().tolist()  # doctest: +SKIP
        [0.5]
    """
    image = image.detach().contiguous()
    with _flux_buffers(image.shape) as (fy, fx, row_ok):
        return _call("classic", _classic_core, image, fy, fx, row_ok,
                     torch.tensor(_inverse_kappa(kappa)), _scalar(float(kappa) * math.sqrt(2.0)),
                     _scalar(dt), conduction)
