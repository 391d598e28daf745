"""Triton kernel for the fractal iteration of :mod:`minart.fractal`, with per-pixel early exit.

One program iterates a block of pixels in registers until every orbit in it has finished (pole
reached, ``|z| < eps``, for ``z <- a (1/z)^p + c``; escape, ``|z| > bailout``, for
``z <- z^p + c``) or the budget is spent, then writes the count, the flag, the last iterate and
the orbit-trap distance once. Memory traffic is one read of ``c`` and one write per pixel whatever
the budget, so the kernel is bound by arithmetic, not bandwidth.

Same formula as :func:`minart.fractal.fractal_field`: ``z_0 = c`` (or the pixel, Julia form),
``z^p`` by binary exponentiation in the same multiplication order, an overflowed inverse-power
iterate replaced by ``finfo.max`` (the point at infinity, mapped to ``c`` next), counts ``n`` of the
first finishing ``k`` (0 if ``z_0`` already finished), the budget for orbits that never finish.
``1/z`` is ``conj(z) / |z|^2`` and the radius tests compare ``|z|^2``: float rounding can differ
from the eager code on pixels at a basin boundary, so tests compare counts on >= 99.9 % of pixels.

A run resumed from a snapshot is bit-identical to one run from scratch, on a GPU too, by
construction: a new run and a resumed one are the same compiled kernel (the budget and the start
are runtime arguments, never specialised), and iteration ``k`` always runs in the same copy of the
unrolled loop body (copy ``(k - 1) % UNROLL``: a resumed launch starts at the copy where the last
one stopped, the copies before it masked). Unlike the diffusion kernels, this one lets the
compiler contract multiplies and adds (``_FUSED``): on Triton 3.6 a unary minus is a subtraction
from zero, which a fused multiply-add cannot absorb without contraction, and the post's map would
issue about 8 % more instructions per iteration (``benchmarks/kernel_sass.py``). Contraction is
decided once per compiled kernel and copy, so it cannot make a resumed run differ.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import triton
import triton.language as tl
from torch import Tensor

from ..errors import ShapeError
from .triton_diffusion import _empty

__all__ = ["fractal_iterate_triton", "fractal_snapshots_triton"]

_FORMULAS = {"inverse_power": 0, "multibrot": 1}
_TRAPS = {None: 0, "point": 1, "circle": 2, "line": 3}
_FAR = 3.4028234663852886e38  # torch.finfo(torch.float32).max
_FUSED = {"enable_fp_fusion": True}  # named: Triton 3.10 turns its default off (see the docstring)


@triton.jit
def _cmul(ar, ai, br, bi):
    """``(ar + i ai)(br + i bi)``, two FMAs and two products."""
    return tl.fma(ar, br, -(ai * bi)), tl.fma(ar, bi, ai * br)


@triton.jit
def _cpow(zr, zi, P: tl.constexpr, LOW: tl.constexpr):
    """``z^P`` for ``1 <= P < 32`` by binary exponentiation (``minart.fractal._ipow``'s order).

    ``LOW`` is the index of ``P``'s lowest set bit: the product starts from that power of ``z``.
    """
    br = zr
    bi = zi
    for _ in tl.static_range(LOW):
        br, bi = _cmul(br, bi, br, bi)
    rr = br
    ri = bi
    for bit in tl.static_range(LOW + 1, 5):
        br, bi = _cmul(br, bi, br, bi)
        if (P >> bit) & 1:
            rr, ri = _cmul(rr, ri, br, bi)
    return rr, ri


@triton.jit
def _trap_dist(zr, zi, qr, qi, radius, sin_a, cos_a, TRAP: tl.constexpr):
    """The orbit trap's measure of ``z``: for the point trap the *squared* distance (the root of
    the orbit's minimum is taken once, after the kernel: the root is monotonic, and a square
    root per iteration would be a quarter-rate instruction), else the distance."""
    dr = zr - qr
    di = zi - qi
    if TRAP == 1:
        d = tl.fma(dr, dr, di * di)
    elif TRAP == 2:
        d = tl.abs(tl.sqrt(tl.fma(dr, dr, di * di)) - radius)
    else:
        d = tl.abs(tl.fma(di, cos_a, -(dr * sin_a)))
    return d


@triton.jit(do_not_specialize=["k0", "iterations"])
def _fractal_kernel(c_ptr, count_ptr, done_ptr, z_ptr, trap_ptr, n, k0, iterations,
                    ar, ai, jr, ji, eps2, bail2, qr, qi, radius, sin_a, cos_a,
                    FORMULA: tl.constexpr, P: tl.constexpr, LOW: tl.constexpr, JULIA: tl.constexpr,
                    TRAP: tl.constexpr, UNROLL: tl.constexpr, BLOCK: tl.constexpr):
    """Iterations ``k0 + 1 .. iterations`` of every pixel: from ``z_0`` when ``k0 == 0``, else
    continuing from the state the outputs hold after iteration ``k0``."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    pr = tl.load(c_ptr + 2 * offs, mask=mask, other=0.0)
    pi = tl.load(c_ptr + 2 * offs + 1, mask=mask, other=0.0)
    if JULIA:
        cr = pr * 0.0 + jr
        ci = pi * 0.0 + ji
    else:
        cr = pr
        ci = pi
    if k0 > 0:  # a runtime branch: new and resumed runs are one compiled kernel
        zr = tl.load(z_ptr + 2 * offs, mask=mask, other=0.0)
        zi = tl.load(z_ptr + 2 * offs + 1, mask=mask, other=0.0)
        done = tl.load(done_ptr + offs, mask=mask, other=1) != 0
        count = tl.load(count_ptr + offs, mask=mask, other=0)
        trap = tl.load(trap_ptr + offs, mask=mask, other=0.0)
    else:
        zr = pr
        zi = pi
        m2 = tl.fma(zr, zr, zi * zi)
        if FORMULA == 0:
            done = m2 < eps2
        else:
            done = m2 > bail2
        count = tl.zeros((BLOCK,), dtype=tl.int32)
        trap = tl.zeros((BLOCK,), dtype=tl.float32)
        if TRAP != 0:
            trap = _trap_dist(zr, zi, qr, qi, radius, sin_a, cos_a, TRAP)
    done = done | (offs >= n)
    # iteration k runs in copy (k - 1) % UNROLL of the unrolled body, in every launch: a resumed
    # launch starts at the copy where the last one stopped, the iterations before k0 + 1 masked
    k = tl.program_id(0) * 0 + (k0 - k0 % UNROLL) + 1  # an i32 tensor
    live_any = tl.sum((~done).to(tl.int32), axis=0) > 0
    # UNROLL masked iterations between two "is any orbit of this block still live?" tests: the
    # test is a reduction over the block, the iterations are per-pixel arithmetic.
    while (k <= iterations) & live_any:
        for u in tl.static_range(UNROLL):
            live = (~done) & (k + u > k0) & (k + u <= iterations)
            if FORMULA == 0:
                inv = 1.0 / tl.fma(zr, zr, zi * zi)
                wr, wi = _cpow(zr * inv, -zi * inv, P, LOW)
                nr = tl.fma(ar, wr, tl.fma(-ai, wi, cr))
                ni = tl.fma(ar, wi, tl.fma(ai, wr, ci))
                finite = (tl.abs(nr) <= 3.4028234663852886e38) & \
                    (tl.abs(ni) <= 3.4028234663852886e38)
                ni = tl.where(finite, ni, 0.0)
                nr = tl.where(finite, nr, 3.4028234663852886e38)
            else:
                wr, wi = _cpow(zr, zi, P, LOW)
                nr = wr + cr
                ni = wi + ci
            zr = tl.where(live, nr, zr)
            zi = tl.where(live, ni, zi)
            if TRAP != 0:
                trap = tl.where(live, tl.minimum(
                    trap, _trap_dist(zr, zi, qr, qi, radius, sin_a, cos_a, TRAP)), trap)
            m2 = tl.fma(zr, zr, zi * zi)
            if FORMULA == 0:
                hit = m2 < eps2
            else:
                hit = m2 > bail2
            hit = hit & live
            count = tl.where(hit, k + u, count)
            done = done | hit
        k += UNROLL
        live_any = tl.sum((~done).to(tl.int32), axis=0) > 0
    finished = done & mask
    tl.store(count_ptr + offs, tl.where(finished, count, iterations), mask=mask)
    tl.store(done_ptr + offs, finished.to(tl.int8), mask=mask)
    tl.store(z_ptr + 2 * offs, zr, mask=mask)
    tl.store(z_ptr + 2 * offs + 1, zi, mask=mask)
    tl.store(trap_ptr + offs, trap, mask=mask)


def fractal_iterate_triton(start: Tensor, *, iterations: int, **options
                           ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Iterate every pixel of ``start`` in one launch; the fields of ``minart.fractal.FractalField``.

    ``z <- a (1/z)^p + c`` (``"inverse_power"``, finished when ``|z| < eps``) or
    ``z <- z^p + c`` (``"multibrot"``, finished when ``|z| > bailout``), ``z_0 = start``;
    ``c = start`` or the ``julia`` constant.

    Args:
        start: ``(H, W)`` complex64 grid of pixel centres (CUDA, or CPU with TRITON_INTERPRET=1).
        iterations: budget (>= 1).
        **options: as :func:`fractal_snapshots_triton`.

    Returns:
        ``(counts int64, done bool, final_z complex64, trap float32)``, each ``(H, W)``.

    Raises:
        ShapeError: ``start`` is not a 2-D complex64 tensor.

    Example:
        >>> from minart.fractal import _grid  # CUDA (or TRITON_INTERPRET=1)
        >>> start = _grid(64, 48, 0j, 2.8, torch.float32, torch.device("cuda"))  # doctest: +SKIP
        >>> counts, done, final_z, trap = fractal_iterate_triton(start, iterations=64)  # doctest: +SKIP
        >>> counts.shape, counts.dtype  # doctest: +SKIP
        (torch.Size([48, 64]), torch.int64)
    """
    return fractal_snapshots_triton(start, budgets=[iterations], **options)[0]


def fractal_snapshots_triton(start: Tensor, *, budgets: Sequence[int],
                             formula: str = "inverse_power", power: int = 7,
                             coefficient: complex = -1j / math.pi, julia: complex | None = None,
                             eps: float = 0.75, bailout: float = 16.0,
                             trap: str | None = "point", trap_point: complex = 0j,
                             trap_radius: float = 0.5, trap_angle: float = 0.0,
                             block: int = 128, num_warps: int = 1, unroll: int = 4
                             ) -> list[tuple[Tensor, Tensor, Tensor, Tensor]]:
    """The fields after each of several budgets, in one pass over the orbits.

    The budgets are run in increasing order, each launch continuing every orbit from where the
    previous budget left it (the same iterates as one long run), and the fields are copied out
    after each: the frames of :func:`minart.fractal.fractal_frames`.

    Args:
        start: ``(H, W)`` complex64 grid of pixel centres (CUDA, or CPU with TRITON_INTERPRET=1).
        budgets: iteration budgets (each >= 1), in any order, repeats allowed.
        formula: ``"inverse_power"`` or ``"multibrot"``.
        power: ``p``, 1..24 (parameters are validated by :func:`minart.fractal.fractal_field`).
        coefficient: ``a`` of the inverse-power map.
        julia: fixed ``c`` of the Julia form, or ``None``.
        eps: pole radius.
        bailout: escape radius.
        trap: ``"point"``, ``"circle"``, ``"line"`` or ``None`` (then the trap field is 0).
        trap_point: trap point / circle centre / point on the line.
        trap_radius: circle radius.
        trap_angle: line angle in radians.
        block: pixels per program.
        num_warps: warps per program (1: the early-exit test is a warp vote, no barrier).
        unroll: iterations between two early-exit tests.

    Returns:
        One ``(counts int64, done bool, final_z complex64, trap float32)`` per budget, in the
        order of ``budgets``, each tensor ``(H, W)``.

    Raises:
        ShapeError: ``start`` is not a 2-D complex64 tensor.

    Example:
        >>> from minart.fractal import _grid  # CUDA (or TRITON_INTERPRET=1)
        >>> start = _grid(64, 48, 0j, 2.8, torch.float32, torch.device("cuda"))  # doctest: +SKIP
        >>> early, late = fractal_snapshots_triton(start, budgets=[8, 64])  # doctest: +SKIP
        >>> bool((early[0] <= late[0]).all())  # doctest: +SKIP
        True
    """
    if start.ndim != 2 or start.dtype != torch.complex64:
        raise ShapeError(f"start must be an (H, W) complex64 tensor, got {start.dtype} of shape "
                         f"{tuple(start.shape)}")
    h, w = start.shape
    c = torch.view_as_real(start.contiguous()).contiguous()  # (H, W) complex -> (H, W, 2)
    n = h * w
    counts = _empty((h, w), like=c, dtype=torch.int32)
    done = _empty((h, w), like=c, dtype=torch.int8)
    final = _empty((h, w, 2), like=c)
    trap_d = _empty((h, w), like=c)
    a = complex(coefficient)
    j = complex(julia) if julia is not None else 0j
    q = complex(trap_point)
    f32 = lambda v: float(torch.tensor(v, dtype=torch.float32))  # noqa: E731
    wanted = sorted(set(int(b) for b in budgets))
    shots = {}
    k0 = 0
    for budget in wanted:
        _fractal_kernel[(triton.cdiv(n, block),)](
            c, counts, done, final, trap_d, n, k0, budget, f32(a.real), f32(a.imag),
            f32(j.real), f32(j.imag), f32(eps) ** 2, f32(bailout) ** 2, f32(q.real), f32(q.imag),
            f32(trap_radius), math.sin(trap_angle), math.cos(trap_angle),
            FORMULA=_FORMULAS[formula], P=int(power), LOW=(power & -power).bit_length() - 1,
            JULIA=julia is not None, TRAP=_TRAPS[trap], UNROLL=unroll, BLOCK=block,
            num_warps=num_warps, **_FUSED,
        )
        last = budget == wanted[-1]  # the buffers are not needed again: no copies
        # the point trap's buffer holds squared distances (see _trap_dist): its root is a copy
        trap_out = torch.sqrt(trap_d) if trap == "point" else (trap_d if last else trap_d.clone())
        shots[budget] = (counts.to(torch.int64), done.bool(),
                         torch.view_as_complex(final if last else final.clone()), trap_out)
        k0 = budget
    return [shots[int(b)] for b in budgets]
