"""Triton kernels for the Perona-Malik steps of :mod:`minart.diffusion`, one pass over memory each.

Every kernel is an exact replacement of the eager reference (same formula, same border rule,
same clamp; only the order of float additions differs, within 1e-5):

``seed`` forward
    ``g = K * reflect_pad(I)`` with the dense ``(C, C, 3, 3)`` operator, conduction, update and
    clamp in one pass: each program loads the ``C x 9`` reflected neighbours of a
    ``BLOCK_H x BLOCK_W`` tile once, keeps the ``C^2 x 9`` weights as scalars, and writes the new
    image (and ``g`` when asked). A leading batch axis may carry one operator and one
    ``(kappa, dt)`` per image: that is the batched sweep.
``seed`` backward
    Kernel A recomputes ``c(g)`` and the clamp mask from the saved ``g`` and writes
    ``dL/dg = grad_g + grad_new * [0 <= u <= 1] * dt * (c + g c'(g))`` and the identity part of
    ``dL/dI``, and the per-tile partial sums of ``dL/dK[o, i, t] = sum gg_o * I_i(shifted by t)``;
    kernel B adds the adjoint of the reflect-padded convolution (reflections folded back onto
    rows/columns 1 and H-2 / W-2) to ``dL/dI``.
``seed`` learned step
    The loss of :mod:`minart.minimize`, ``sum((I' - I_0)^2 + |g| + I'^2)``, its gradient in ``g``
    and the ``dL/dK`` partial sums are fused into the forward pass, so a whole learned step
    (forward, loss, backward in ``K``) reads ``I`` and ``I_0`` and writes ``I'`` once. A
    ``persistent`` variant runs a fixed number of programs that each loop over their tiles,
    adding the ``C*C*9 + 1`` sums per pixel in registers and reducing them once per program.
``classic``
    The zero-flux four-neighbour scheme, one plane per program row.
two steps per pass (``seed_steps_triton``, ``classic_steps_triton``)
    Strip kernels that keep the first step's rows in registers and apply the second step to them,
    so a run of steps reads and writes the image once per two steps (temporal blocking), with the
    same bits as one step per pass.

Reductions are deterministic: partial sums per tile (or per persistent program, whose tiles come
in a fixed order) go to a buffer that ``torch.sum`` reduces in a fixed order; no float atomics.
This module imports :mod:`triton`: import it lazily (the
dispatcher does), and set ``TRITON_INTERPRET=1`` before the first import to run it on CPU tensors.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from typing import Literal

import torch
import triton
import triton.language as tl
from torch import Tensor

from .._checks import check_whole
from ..diffusion import _inverse_kappa
from ..errors import ParamError, ShapeError
from ..progress import note

__all__ = [
    "COND_CODES",
    "SeedLossStep",
    "SeedStep",
    "classic_step_triton",
    "classic_steps_triton",
    "seed_backward_triton",
    "seed_forward_triton",
    "seed_loss_triton",
    "seed_steps_triton",
]

COND_CODES = {"exp": 0, "inverse": 1, "tukey": 2}
"""Conduction names to the kernels' constexpr codes."""

MAX_CHANNELS = 4
_SQRT2 = math.sqrt(2.0)
# No implicit contraction: every fused multiply-add is written out (``tl.fma``), and the compiler
# may not fuse anything else (``enable_fp_fusion=False`` keeps LLVM from contracting and passes
# ``--fmad=false`` to ptxas). A kernel's bits then follow from its source alone: the tile, strip
# and two-step kernels, which perform the same operations in the same order, write the same bits
# on a GPU as they do in Triton's interpreter (whose ``fma`` also rounds once), whatever
# registers and schedules each one gets. With contraction left to ptxas, whether a ``mul`` and
# an ``add`` fuse depends on each kernel's code, so "bit-identical" held only by luck on CUDA.
_EXACT = {"enable_fp_fusion": False}


# ----------------------------------------------------------------------------------------------
# jit helpers
# ----------------------------------------------------------------------------------------------


@triton.jit
def _tile(H, W, n_tw, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    """Row/column indices ``(BLOCK_H, 1)``, ``(1, BLOCK_W)`` of this program's tile and its mask."""
    return _tile_at(tl.program_id(0), H, W, n_tw, BLOCK_H, BLOCK_W)


@triton.jit
def _tile_at(tile, H, W, n_tw, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    """Row/column indices and mask of tile number ``tile`` (row-major over the tile grid)."""
    th = tile // n_tw
    tw = tile % n_tw
    y = (th * BLOCK_H + tl.arange(0, BLOCK_H))[:, None]
    x = (tw * BLOCK_W + tl.arange(0, BLOCK_W))[None, :]
    mask = (y < H) & (x < W)
    return y, x, mask


@triton.jit
def _reflect_offsets(y, x, H, W):
    """Flat offsets of the 9 reflect-padded neighbours, row-major ``(dy, dx)``."""
    ym = tl.where(y == 0, 1, y - 1) * W
    yc = y * W
    yp = tl.where(y == H - 1, H - 2, y + 1) * W
    xm = tl.where(x == 0, 1, x - 1)
    xp = tl.where(x == W - 1, W - 2, x + 1)
    return (ym + xm, ym + x, ym + xp, yc + xm, yc + x, yc + xp, yp + xm, yp + x, yp + xp)


@triton.jit
def _taps(xb, offs, mask):
    """The 9 reflected neighbours of one channel, row-major ``(dy, dx)``."""
    return (tl.load(xb + offs[0], mask=mask, other=0.0), tl.load(xb + offs[1], mask=mask, other=0.0),
            tl.load(xb + offs[2], mask=mask, other=0.0), tl.load(xb + offs[3], mask=mask, other=0.0),
            tl.load(xb + offs[4], mask=mask, other=0.0), tl.load(xb + offs[5], mask=mask, other=0.0),
            tl.load(xb + offs[6], mask=mask, other=0.0), tl.load(xb + offs[7], mask=mask, other=0.0),
            tl.load(xb + offs[8], mask=mask, other=0.0))


@triton.jit
def _dot9(acc, kb, v):
    """``acc + sum_t K[t] * v[t]`` for one ``(o, i)`` slice of the operator: nine FMAs, ``t = 0``
    first."""
    for t in tl.static_range(9):
        acc = tl.fma(tl.load(kb + t), v[t], acc)
    return acc


@triton.jit
def _conv_all(x_ptr, k_ptr, HW, C: tl.constexpr, offs, mask,
              BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    """``g_o = sum_i sum_t K[o, i, t] * I_i[offs[t]]`` for ``o < C <= 4`` (unused ones are 0).

    Each input channel's 9 neighbours are loaded once and feed every output channel.
    """
    g0 = tl.zeros((BLOCK_H, BLOCK_W), dtype=tl.float32)
    g1 = tl.zeros((BLOCK_H, BLOCK_W), dtype=tl.float32)
    g2 = tl.zeros((BLOCK_H, BLOCK_W), dtype=tl.float32)
    g3 = tl.zeros((BLOCK_H, BLOCK_W), dtype=tl.float32)
    for i in tl.static_range(C):
        v = _taps(x_ptr + i * HW, offs, mask)
        g0 = _dot9(g0, k_ptr + i * 9, v)
        if C > 1:
            g1 = _dot9(g1, k_ptr + (C + i) * 9, v)
        if C > 2:
            g2 = _dot9(g2, k_ptr + (2 * C + i) * 9, v)
        if C > 3:
            g3 = _dot9(g3, k_ptr + (3 * C + i) * 9, v)
    return g0, g1, g2, g3


@triton.jit
def _scharr_magnitude(x_ptr, HW, C: tl.constexpr, offs, mask,
                      BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    """``sqrt(Sx^2 + Sy^2)`` with the dense Scharr pair of the eager ``inverse`` (channel sums)."""
    sx = tl.zeros((BLOCK_H, BLOCK_W), dtype=tl.float32)
    sy = tl.zeros((BLOCK_H, BLOCK_W), dtype=tl.float32)
    for i in tl.static_range(C):
        sx, sy = _scharr_acc(sx, sy, _taps(x_ptr + i * HW, offs, mask))
    return tl.sqrt(tl.fma(sx, sx, sy * sy))


@triton.jit
def _scharr_acc(sx, sy, v):
    """``(Sx, Sy)`` plus one channel's Scharr responses, from its 9 neighbours ``v``."""
    sx = tl.fma(3.0, v[0], sx)
    sx = tl.fma(-3.0, v[2], sx)
    sx = tl.fma(10.0, v[3], sx)
    sx = tl.fma(-10.0, v[5], sx)
    sx = tl.fma(3.0, v[6], sx)
    sx = tl.fma(-3.0, v[8], sx)
    sy = tl.fma(3.0, v[0], sy)
    sy = tl.fma(10.0, v[1], sy)
    sy = tl.fma(3.0, v[2], sy)
    sy = tl.fma(-3.0, v[6], sy)
    sy = tl.fma(-10.0, v[7], sy)
    sy = tl.fma(-3.0, v[8], sy)
    return sx, sy


@triton.jit
def _seed_conduction(g, kappa2, tukey_s, COND: tl.constexpr):
    """``(c, c + g c'(g))`` of the seed scheme's ``exp`` (0) or Tukey (2) conduction."""
    if COND == 0:
        r = (g * g) / (0.0 - kappa2)  # -g^2/kappa^2 (negating the scalar, not every pixel)
        c = tl.exp(r)
        dc = c * tl.fma(2.0, r, 1.0)
    else:
        q = g / tukey_s
        inside = tl.abs(g) <= tukey_s
        one = 1.0 - q * q
        half = 0.5 * one * one
        c = tl.where(inside, half, 0.0)
        dc = tl.where(inside, tl.fma(-2.0 * q * q, one, half), 0.0)
    return c, dc


@triton.jit
def _load_params(p_ptr, b, p_bstride):
    """Per-image ``(kappa^2, tukey_s, dt)`` of a sweep, rows of ``p_bstride`` floats."""
    pb = p_ptr + b * p_bstride
    return tl.load(pb + 0), tl.load(pb + 1), tl.load(pb + 2)


@triton.jit
def _dk_partials(gs, x_ptr, HW, C: tl.constexpr, offs, mask, part_ptr):
    """Store ``sum_tile gg_o * I_i[offs[t]]`` at ``part[(o*C + i)*9 + t]`` for every o, i, t.

    The tile's rows live in each thread's registers: summing them first (axis 0) leaves one
    cross-thread reduction per value instead of one per row.
    """
    for i in tl.static_range(C):
        v = _taps(x_ptr + i * HW, offs, mask)
        for o in tl.static_range(C):
            pb = part_ptr + (o * C + i) * 9
            for t in tl.static_range(9):
                tl.store(pb + t, tl.sum(tl.sum(gs[o] * v[t], axis=0), axis=0))


@triton.jit
def _dk_zeros(C: tl.constexpr, NO: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    """``C * NO * 9`` zero tiles: the elementwise ``dL/dK`` accumulators of a program that
    computes ``NO`` output channels (``C``, or 1 for a ``split`` kernel)."""
    acc = ()
    for _ in tl.static_range(C * NO * 9):
        acc = acc + (tl.zeros((BLOCK_H, BLOCK_W), dtype=tl.float32),)
    return acc


@triton.jit
def _dk_accumulate(acc, gs, x_ptr, HW, C: tl.constexpr, offs, mask):
    """``acc[(i*C + o)*9 + t] += gg_o * I_i[offs[t]]`` elementwise, no reduction (input-major).

    Each input channel's 9 neighbours are loaded once and feed every output channel.
    """
    out = ()
    for i in tl.static_range(C):
        v = _taps(x_ptr + i * HW, offs, mask)
        for o in tl.static_range(C):
            for t in tl.static_range(9):
                out = out + (tl.fma(gs[o], v[t], acc[(i * C + o) * 9 + t]),)
    return out


@triton.jit
def _dk_store_sums(acc, C: tl.constexpr, NO: tl.constexpr, part_ptr):
    """Reduce each accumulator of :func:`_dk_accumulate` once, stored at ``part[(o*C + i)*9 + t]``
    for the ``NO`` output channels held (a ``split`` kernel: 1, ``part`` offset to its own)."""
    for i in tl.static_range(C):
        for o in tl.static_range(NO):
            for t in tl.static_range(9):
                tl.store(part_ptr + (o * C + i) * 9 + t,
                         tl.sum(tl.sum(acc[(i * NO + o) * 9 + t], axis=0), axis=0))


@triton.jit
def _store_losses(part_ptr, losses, C: tl.constexpr):
    """Reduce each channel's elementwise loss terms once, stored at ``part[o]``: one sum per
    output channel, so that a program that computes only channel ``o`` (the ``split`` kernel)
    writes the same sums as one that computes them all."""
    for o in tl.static_range(C):
        tl.store(part_ptr + o, tl.sum(tl.sum(losses[o], axis=0), axis=0))


# ----------------------------------------------------------------------------------------------
# seed scheme: forward (and batched sweep)
# ----------------------------------------------------------------------------------------------


@triton.jit
def _seed_out(x_ptr, new_ptr, g_ptr, g, HW, o: tl.constexpr, mask, center, kappa2, tukey_s, dt,
              cinv, COND: tl.constexpr, STORE_G: tl.constexpr):
    """Conduction, update and clamp of output channel ``o`` from its operator response ``g``."""
    xo = tl.load(x_ptr + o * HW + center, mask=mask, other=0.0)
    _seed_update(xo, new_ptr, g_ptr, g, o * HW + center, mask, kappa2, tukey_s, dt, cinv, COND,
                 STORE_G)


@triton.jit
def _seed_value(xo, g, kappa2, tukey_s, dt, cinv, COND: tl.constexpr):
    """``clamp(I + dt g c(g), 0, 1)`` of one channel from its value ``xo`` and response ``g``
    (``cinv``: the ``inverse`` conduction, computed from the whole window)."""
    if COND == 1:
        c = cinv
    else:
        c, _dc = _seed_conduction(g, kappa2, tukey_s, COND)
    return tl.minimum(tl.maximum(_seed_u(xo, g, c, dt), 0.0), 1.0)


@triton.jit
def _seed_u(xo, g, c, dt):
    """``I + dt g c``, before the clamp (one FMA: the same bits in every kernel)."""
    return tl.fma(dt * g, c, xo)


@triton.jit
def _seed_update(xo, new_ptr, g_ptr, g, at, mask, kappa2, tukey_s, dt, cinv, COND: tl.constexpr,
                 STORE_G: tl.constexpr):
    """``I' = clamp(I + dt g c(g), 0, 1)`` of one channel at offsets ``at`` from its value ``xo``."""
    tl.store(new_ptr + at, _seed_value(xo, g, kappa2, tukey_s, dt, cinv, COND), mask=mask)
    if STORE_G:
        tl.store(g_ptr + at, g, mask=mask)


@triton.jit
def _seed_fwd_kernel(x_ptr, k_ptr, p_ptr, new_ptr, g_ptr, H, W, n_tw, x_bstride, k_bstride,
                     kappa2, tukey_s, dt, C: tl.constexpr, COND: tl.constexpr,
                     STORE_G: tl.constexpr, PER_IMAGE: tl.constexpr,
                     BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    b = tl.program_id(1).to(tl.int64)
    y, x, mask = _tile(H, W, n_tw, BLOCK_H, BLOCK_W)
    HW = H * W
    offs = _reflect_offsets(y, x, H, W)
    center = y * W + x
    base = b * C * HW
    xb = x_ptr + b * x_bstride
    if PER_IMAGE:  # a sweep: one (kappa^2, s, dt) row per image
        kappa2, tukey_s, dt = _load_params(p_ptr, b, 3)
    gs = _conv_all(xb, k_ptr + b * k_bstride, HW, C, offs, mask, BLOCK_H, BLOCK_W)
    cinv = tl.zeros((BLOCK_H, BLOCK_W), dtype=tl.float32)
    if COND == 1:
        mag = _scharr_magnitude(xb, HW, C, offs, mask, BLOCK_H, BLOCK_W)
        cinv = 1.0 / (1.0 + mag / kappa2)
    for o in tl.static_range(C):
        _seed_out(xb, new_ptr + base, g_ptr + base, gs[o], HW, o, mask, center, kappa2, tukey_s,
                  dt, cinv, COND, STORE_G)


# ----------------------------------------------------------------------------------------------
# seed scheme: backward
# ----------------------------------------------------------------------------------------------


@triton.jit
def _seed_bwd_a_out(x_ptr, g_ptr, gn_ptr, gg_in_ptr, gg_ptr, di_ptr, HW, o: tl.constexpr, mask,
                    center, kappa2, tukey_s, dt, COND: tl.constexpr, HAS_GN: tl.constexpr,
                    HAS_GG: tl.constexpr):
    """Total ``dL/dg`` of channel ``o`` (stored and returned) and the identity part of ``dL/dI``."""
    at = o * HW + center
    g = tl.load(g_ptr + at, mask=mask, other=0.0)
    c, dc = _seed_conduction(g, kappa2, tukey_s, COND)
    gg = g * 0.0
    if HAS_GG:
        gg = tl.load(gg_in_ptr + at, mask=mask, other=0.0)
    gu = g * 0.0
    if HAS_GN:
        u = _seed_u(tl.load(x_ptr + at, mask=mask, other=0.0), g, c, dt)
        gu = tl.where((u >= 0.0) & (u <= 1.0), tl.load(gn_ptr + at, mask=mask, other=0.0), 0.0)
        gg = tl.fma(gu * dt, dc, gg)
    tl.store(gg_ptr + at, gg, mask=mask)
    tl.store(di_ptr + at, gu, mask=mask)
    return gg


@triton.jit
def _seed_bwd_a_kernel(x_ptr, g_ptr, gn_ptr, gg_in_ptr, gg_ptr, di_ptr, part_ptr,
                       H, W, n_tw, n_tiles, kappa2, tukey_s, dt, C: tl.constexpr,
                       COND: tl.constexpr,
                       HAS_GN: tl.constexpr, HAS_GG: tl.constexpr,
                       BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    b = tl.program_id(1).to(tl.int64)
    y, x, mask = _tile(H, W, n_tw, BLOCK_H, BLOCK_W)
    HW = H * W
    offs = _reflect_offsets(y, x, H, W)
    center = y * W + x
    base = b * C * HW
    part = part_ptr + (b * n_tiles + tl.program_id(0)) * (C * C * 9)
    xb = x_ptr + base
    gg0 = _seed_bwd_a_out(xb, g_ptr + base, gn_ptr + base, gg_in_ptr + base, gg_ptr + base,
                          di_ptr + base, HW, 0, mask, center, kappa2, tukey_s, dt, COND, HAS_GN,
                          HAS_GG)
    gg1 = gg0
    gg2 = gg0
    gg3 = gg0
    if C > 1:
        gg1 = _seed_bwd_a_out(xb, g_ptr + base, gn_ptr + base, gg_in_ptr + base, gg_ptr + base,
                              di_ptr + base, HW, 1, mask, center, kappa2, tukey_s, dt, COND,
                              HAS_GN, HAS_GG)
    if C > 2:
        gg2 = _seed_bwd_a_out(xb, g_ptr + base, gn_ptr + base, gg_in_ptr + base, gg_ptr + base,
                              di_ptr + base, HW, 2, mask, center, kappa2, tukey_s, dt, COND,
                              HAS_GN, HAS_GG)
    if C > 3:
        gg3 = _seed_bwd_a_out(xb, g_ptr + base, gn_ptr + base, gg_in_ptr + base, gg_ptr + base,
                              di_ptr + base, HW, 3, mask, center, kappa2, tukey_s, dt, COND,
                              HAS_GN, HAS_GG)
    _dk_partials((gg0, gg1, gg2, gg3), xb, HW, C, offs, mask, part)


@triton.jit
def _fold_row(gg_ptr, row, rm, W, x, xm_ok, xp_ok, fx1, fxw):
    """One source row's ``(x-1, x, x+1)`` values with the reflect fold of the columns."""
    a = tl.load(gg_ptr + row + x - 1, mask=rm & xm_ok, other=0.0)
    m = tl.load(gg_ptr + row + x, mask=rm, other=0.0)
    c = tl.load(gg_ptr + row + x + 1, mask=rm & xp_ok, other=0.0)
    # column offset dx=2 pairs with x-1 (+ x+1 when x == W-2), dx=0 with x+1 (+ x-1 when x == 1)
    return tl.fma(fx1, a, c), m, tl.fma(fxw, c, a)


@triton.jit
def _adjoint_taps(gb, y, x, H, W, mask):
    """``dL/dg`` of one channel around ``(y, x)``, folded through the reflect padding.

    Returned in the operator's tap order ``(dy, dx)``: tap ``dy = 0`` pairs with source row
    ``y + 1`` (plus ``y - 1`` when ``y == 1``, its reflection), ``dy = 2`` with ``y - 1`` (plus
    ``y + 1`` when ``y == H - 2``); columns likewise.
    """
    ym_ok = mask & (y >= 1)
    yp_ok = mask & (y + 1 < H)
    xm_ok = x >= 1
    xp_ok = x + 1 < W
    fy1 = tl.where(y == 1, 1.0, 0.0)
    fyh = tl.where(y == H - 2, 1.0, 0.0)
    fx1 = tl.where(x == 1, 1.0, 0.0)
    fxw = tl.where(x == W - 2, 1.0, 0.0)
    u0, u1, u2 = _fold_row(gb, (y - 1) * W, ym_ok, W, x, xm_ok, xp_ok, fx1, fxw)
    c0, c1, c2 = _fold_row(gb, y * W, mask, W, x, xm_ok, xp_ok, fx1, fxw)
    d0, d1, d2 = _fold_row(gb, (y + 1) * W, yp_ok, W, x, xm_ok, xp_ok, fx1, fxw)
    return (tl.fma(fy1, u0, d0), tl.fma(fy1, u1, d1), tl.fma(fy1, u2, d2), c0, c1, c2,
            tl.fma(fyh, d0, u0), tl.fma(fyh, d1, u1), tl.fma(fyh, d2, u2))


@triton.jit
def _seed_bwd_b_kernel(gg_ptr, k_ptr, di_ptr, H, W, n_tw, C: tl.constexpr,
                       BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    b = tl.program_id(1).to(tl.int64)
    y, x, mask = _tile(H, W, n_tw, BLOCK_H, BLOCK_W)
    HW = H * W
    base = b * C * HW
    db = di_ptr + base + y * W + x
    acc0 = tl.load(db, mask=mask, other=0.0)
    acc1 = acc0
    acc2 = acc0
    acc3 = acc0
    if C > 1:
        acc1 = tl.load(db + HW, mask=mask, other=0.0)
    if C > 2:
        acc2 = tl.load(db + 2 * HW, mask=mask, other=0.0)
    if C > 3:
        acc3 = tl.load(db + 3 * HW, mask=mask, other=0.0)
    for o in tl.static_range(C):
        r = _adjoint_taps(gg_ptr + base + o * HW, y, x, H, W, mask)
        acc0 = _dot9(acc0, k_ptr + (o * C) * 9, r)
        if C > 1:
            acc1 = _dot9(acc1, k_ptr + (o * C + 1) * 9, r)
        if C > 2:
            acc2 = _dot9(acc2, k_ptr + (o * C + 2) * 9, r)
        if C > 3:
            acc3 = _dot9(acc3, k_ptr + (o * C + 3) * 9, r)
    tl.store(db, acc0, mask=mask)
    if C > 1:
        tl.store(db + HW, acc1, mask=mask)
    if C > 2:
        tl.store(db + 2 * HW, acc2, mask=mask)
    if C > 3:
        tl.store(db + 3 * HW, acc3, mask=mask)


# ----------------------------------------------------------------------------------------------
# seed scheme: fused learned step (forward + loss + dL/dg + dL/dK partials)
# ----------------------------------------------------------------------------------------------


@triton.jit
def _seed_loss_out(x_ptr, x0_ptr, new_ptr, gg_ptr, di_ptr, g, HW, o: tl.constexpr, mask, center,
                   kappa2, tukey_s, dt, w_fid, w_edge, w_energy, COND: tl.constexpr,
                   NEED_DI: tl.constexpr):
    """Update of channel ``o``, its loss terms summed over the tile, and its ``dL/dg``."""
    gg, term = _seed_loss_terms(x_ptr, x0_ptr, new_ptr, gg_ptr, di_ptr, g, HW, o, mask, center,
                                kappa2, tukey_s, dt, w_fid, w_edge, w_energy, COND, NEED_DI)
    return gg, tl.sum(tl.sum(term, axis=0), axis=0)


@triton.jit
def _seed_loss_terms(x_ptr, x0_ptr, new_ptr, gg_ptr, di_ptr, g, HW, o: tl.constexpr, mask, center,
                     kappa2, tukey_s, dt, w_fid, w_edge, w_energy, COND: tl.constexpr,
                     NEED_DI: tl.constexpr):
    """Update of channel ``o`` (stored), its ``dL/dg`` and its loss terms, per pixel (0 off-mask)."""
    at = o * HW + center
    xo = tl.load(x_ptr + at, mask=mask, other=0.0)
    return _seed_loss_terms_at(xo, x0_ptr, new_ptr, gg_ptr, di_ptr, g, at, mask, kappa2, tukey_s,
                               dt, w_fid, w_edge, w_energy, COND, NEED_DI)


@triton.jit
def _seed_loss_terms_at(xo, x0_ptr, new_ptr, gg_ptr, di_ptr, g, at, mask, kappa2, tukey_s, dt,
                        w_fid, w_edge, w_energy, COND: tl.constexpr, NEED_DI: tl.constexpr):
    """:func:`_seed_loss_terms` at offsets ``at`` from the channel's value ``xo``."""
    c, dc = _seed_conduction(g, kappa2, tukey_s, COND)
    x0 = tl.load(x0_ptr + at, mask=mask, other=0.0)
    return _seed_loss_finish(xo, x0, c, dc, new_ptr, gg_ptr, di_ptr, g, at, mask, dt, w_fid,
                             w_edge, w_energy, NEED_DI)


@triton.jit
def _seed_loss_terms_x0(xo, x0, new_ptr, gg_ptr, di_ptr, g, at, mask, kappa2, tukey_s, dt,
                        w_fid, w_edge, w_energy, COND: tl.constexpr, NEED_DI: tl.constexpr):
    """:func:`_seed_loss_terms_at` with ``I_0``'s value ``x0`` loaded beforehand (a row ahead)."""
    c, dc = _seed_conduction(g, kappa2, tukey_s, COND)
    return _seed_loss_finish(xo, x0, c, dc, new_ptr, gg_ptr, di_ptr, g, at, mask, dt, w_fid,
                             w_edge, w_energy, NEED_DI)


@triton.jit
def _seed_loss_finish(xo, x0, c, dc, new_ptr, gg_ptr, di_ptr, g, at, mask, dt, w_fid, w_edge,
                      w_energy, NEED_DI: tl.constexpr):
    """The update (stored), loss terms and ``dL/dg`` of one channel from its conduction ``c``
    and derivative ``dc``."""
    u = _seed_u(xo, g, c, dt)
    new = tl.minimum(tl.maximum(u, 0.0), 1.0)
    tl.store(new_ptr + at, new, mask=mask)
    diff = new - x0
    term = tl.where(mask, tl.fma(w_fid, diff * diff, tl.fma(w_edge, tl.abs(g),
                                                             w_energy * (new * new))), 0.0)
    gu = tl.where((u >= 0.0) & (u <= 1.0), tl.fma(2.0 * w_fid, diff, 2.0 * w_energy * new), 0.0)
    sign = tl.where(g > 0.0, w_edge, tl.where(g < 0.0, -w_edge, 0.0))
    gg = tl.where(mask, tl.fma(gu * dt, dc, sign), 0.0)
    if NEED_DI:
        tl.store(gg_ptr + at, gg, mask=mask)
        tl.store(di_ptr + at, gu, mask=mask)
    return gg, term


@triton.jit
def _seed_loss_kernel(x_ptr, x0_ptr, k_ptr, new_ptr, gg_ptr, di_ptr, part_ptr,
                      H, W, n_tw, n_tiles, kappa2, tukey_s, dt, w_fid, w_edge, w_energy,
                      C: tl.constexpr, COND: tl.constexpr,
                      NEED_DI: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    b = tl.program_id(1).to(tl.int64)
    y, x, mask = _tile(H, W, n_tw, BLOCK_H, BLOCK_W)
    HW = H * W
    offs = _reflect_offsets(y, x, H, W)
    center = y * W + x
    base = b * C * HW
    part = part_ptr + (b * n_tiles + tl.program_id(0)) * (C + C * C * 9)
    xb = x_ptr + base
    gs = _conv_all(xb, k_ptr, HW, C, offs, mask, BLOCK_H, BLOCK_W)
    gg0, l0 = _seed_loss_out(xb, x0_ptr + base, new_ptr + base, gg_ptr + base, di_ptr + base,
                             gs[0], HW, 0, mask, center, kappa2, tukey_s, dt, w_fid, w_edge,
                             w_energy, COND, NEED_DI)
    tl.store(part, l0)
    gg1 = gg0
    gg2 = gg0
    gg3 = gg0
    if C > 1:
        gg1, l1 = _seed_loss_out(xb, x0_ptr + base, new_ptr + base, gg_ptr + base,
                                 di_ptr + base, gs[1], HW, 1, mask, center, kappa2, tukey_s, dt,
                                 w_fid, w_edge, w_energy, COND, NEED_DI)
        tl.store(part + 1, l1)
    if C > 2:
        gg2, l2 = _seed_loss_out(xb, x0_ptr + base, new_ptr + base, gg_ptr + base,
                                 di_ptr + base, gs[2], HW, 2, mask, center, kappa2, tukey_s, dt,
                                 w_fid, w_edge, w_energy, COND, NEED_DI)
        tl.store(part + 2, l2)
    if C > 3:
        gg3, l3 = _seed_loss_out(xb, x0_ptr + base, new_ptr + base, gg_ptr + base,
                                 di_ptr + base, gs[3], HW, 3, mask, center, kappa2, tukey_s, dt,
                                 w_fid, w_edge, w_energy, COND, NEED_DI)
        tl.store(part + 3, l3)
    _dk_partials((gg0, gg1, gg2, gg3), xb, HW, C, offs, mask, part + C)


@triton.jit
def _seed_loss_persistent_kernel(x_ptr, x0_ptr, k_ptr, new_ptr, gg_ptr, di_ptr, part_ptr,
                                 H, W, n_tw, n_tiles, total, n_programs, kappa2, tukey_s, dt,
                                 w_fid, w_edge, w_energy, C: tl.constexpr, COND: tl.constexpr,
                                 NEED_DI: tl.constexpr, BLOCK_H: tl.constexpr,
                                 BLOCK_W: tl.constexpr):
    """The learned step of :func:`_seed_loss_kernel` with a fixed number of programs.

    Program ``pid`` visits tiles ``pid, pid + n_programs, ...`` (over every image of the batch) in
    that fixed order, adds the loss terms and the ``C*C*9`` ``dL/dK`` products elementwise into
    register tiles, and reduces each one once at the end into its row of ``part``. (A ``while``
    loop: Triton 3.6's interpreter cannot take ``range`` bounds from kernel arguments.)
    """
    pid = tl.program_id(0)
    HW = H * W
    part = part_ptr + pid.to(tl.int64) * (C + C * C * 9)
    acc = _dk_zeros(C, C, BLOCK_H, BLOCK_W)
    loss0 = tl.zeros((BLOCK_H, BLOCK_W), dtype=tl.float32)
    loss1 = loss0
    loss2 = loss0
    loss3 = loss0
    tile = pid
    while tile < total:
        b = (tile // n_tiles).to(tl.int64)
        y, x, mask = _tile_at(tile % n_tiles, H, W, n_tw, BLOCK_H, BLOCK_W)
        offs = _reflect_offsets(y, x, H, W)
        center = y * W + x
        base = b * C * HW
        xb = x_ptr + base
        gs = _conv_all(xb, k_ptr, HW, C, offs, mask, BLOCK_H, BLOCK_W)
        gg0, term = _seed_loss_terms(xb, x0_ptr + base, new_ptr + base, gg_ptr + base,
                                     di_ptr + base, gs[0], HW, 0, mask, center, kappa2, tukey_s,
                                     dt, w_fid, w_edge, w_energy, COND, NEED_DI)
        loss0 += term
        gg1 = gg0
        gg2 = gg0
        gg3 = gg0
        if C > 1:
            gg1, term = _seed_loss_terms(xb, x0_ptr + base, new_ptr + base, gg_ptr + base,
                                         di_ptr + base, gs[1], HW, 1, mask, center, kappa2,
                                         tukey_s, dt, w_fid, w_edge, w_energy, COND, NEED_DI)
            loss1 += term
        if C > 2:
            gg2, term = _seed_loss_terms(xb, x0_ptr + base, new_ptr + base, gg_ptr + base,
                                         di_ptr + base, gs[2], HW, 2, mask, center, kappa2,
                                         tukey_s, dt, w_fid, w_edge, w_energy, COND, NEED_DI)
            loss2 += term
        if C > 3:
            gg3, term = _seed_loss_terms(xb, x0_ptr + base, new_ptr + base, gg_ptr + base,
                                         di_ptr + base, gs[3], HW, 3, mask, center, kappa2,
                                         tukey_s, dt, w_fid, w_edge, w_energy, COND, NEED_DI)
            loss3 += term
        acc = _dk_accumulate(acc, (gg0, gg1, gg2, gg3), xb, HW, C, offs, mask)
        tile += n_programs
    _dk_store_sums(acc, C, C, part + C)
    _store_losses(part, (loss0, loss1, loss2, loss3), C)


# ----------------------------------------------------------------------------------------------
# classic scheme
# ----------------------------------------------------------------------------------------------


@triton.jit
def _classic_flux(d, inv_kappa, tukey_s, COND: tl.constexpr):
    """``c(d) * d`` for medpy's options: exp (0), inverse (1), Tukey (2); ``inv_kappa`` is
    ``1 / kappa`` (:func:`minart.diffusion._inverse_kappa`)."""
    if COND == 0:
        # exp(-(d/kappa)^2) as exp(q * -q): the scalar is negated, not every pixel (on Triton 3.6 a
        # unary minus is a subtraction from zero, one more instruction)
        c = tl.exp((d * inv_kappa) * (d * (0.0 - inv_kappa)))
    elif COND == 1:
        q = d * inv_kappa
        c = 1.0 / tl.fma(q, q, 1.0)
    else:
        q = d / tukey_s
        one = 1.0 - q * q
        c = tl.where(tl.abs(d) <= tukey_s, 0.5 * one * one, 0.0)
    return c * d


@triton.jit
def _classic_value(up, v, down, left, right, x, y, H, W, inv_kappa, tukey_s, dt,
                   COND: tl.constexpr):
    """:func:`_classic_kernel`'s update of ``v`` at column ``x``, row ``y`` from its four
    neighbours (forward differences, 0 across the border: zero flux)."""
    ds = tl.where(y + 1 < H, down - v, 0.0)
    dn = tl.where(y >= 1, v - up, 0.0)
    de = tl.where(x + 1 < W, right - v, 0.0)
    dw = tl.where(x >= 1, v - left, 0.0)
    div_y = (_classic_flux(ds, inv_kappa, tukey_s, COND)
             - _classic_flux(dn, inv_kappa, tukey_s, COND))
    div_x = (_classic_flux(de, inv_kappa, tukey_s, COND)
             - _classic_flux(dw, inv_kappa, tukey_s, COND))
    return tl.fma(dt, div_y + div_x, v)


@triton.jit
def _classic_kernel(x_ptr, out_ptr, H, W, n_tw, inv_kappa, tukey_s, dt, COND: tl.constexpr,
                    BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    plane = tl.program_id(1).to(tl.int64) * H * W
    y, x, mask = _tile(H, W, n_tw, BLOCK_H, BLOCK_W)
    at = plane + y * W + x
    v = tl.load(x_ptr + at, mask=mask, other=0.0)
    up = tl.load(x_ptr + at - W, mask=mask & (y >= 1), other=0.0)
    down = tl.load(x_ptr + at + W, mask=mask & (y + 1 < H), other=0.0)
    left = tl.load(x_ptr + at - 1, mask=mask & (x >= 1), other=0.0)
    right = tl.load(x_ptr + at + 1, mask=mask & (x + 1 < W), other=0.0)
    tl.store(out_ptr + at,
             _classic_value(up, v, down, left, right, x, y, H, W, inv_kappa, tukey_s, dt, COND),
             mask=mask)


# ----------------------------------------------------------------------------------------------
# row-marching variants: each program walks down a strip of columns with a 3-row window
# ----------------------------------------------------------------------------------------------
#
# A program covers ``ROWS x BLOCK_W`` pixels of one image: it loads the reflected rows above and
# below its first row once, then for each row loads only the row two below (one row ahead of its
# use, so those loads are in flight while the current row computes), keeping the ``C x 3``
# horizontal neighbours of the three rows it needs in registers. Per pixel that is ``3 C`` loads
# instead of ``9 C``, with one pixel per thread (each load a plain coalesced row segment; the
# three of a row share one pointer, the border columns fixed by a select), and the operator's
# weights loaded once per program. Every pixel's arithmetic is the tile kernels' in the same
# order: the results are bit-identical. ``UNROLL = 3`` unrolls the row loop so that the window
# rotates by renaming registers instead of moving them (C = 3 seed step, Triton 3.6, sm_90: 181
# instead of 210 SASS instructions per pixel, both at 154 registers); ``"auto"`` times both.
# ``benchmarks/kernel_sass.py`` prints these figures.


@triton.jit
def _strip(H, W, n_tw, ROWS: tl.constexpr, BLOCK_W: tl.constexpr):
    """Columns ``(1, BLOCK_W)`` of this program (clamped into the image), the mask of the
    columns inside the image, and the program's first row."""
    return _strip_at(tl.program_id(0), H, W, n_tw, ROWS, BLOCK_W)


@triton.jit
def _strip_at(pid, H, W, n_tw, ROWS: tl.constexpr, BLOCK_W: tl.constexpr):
    """:func:`_strip` of strip number ``pid`` (row-major over the strip grid)."""
    tw = pid % n_tw
    y0 = (pid // n_tw) * ROWS
    x = (tw * BLOCK_W + tl.arange(0, BLOCK_W))[None, :]
    # columns past the image are clamped to W - 1: they load valid memory and are never stored
    return tl.minimum(x, W - 1), x < W, y0


@triton.jit
def _reflect_row(r, H):
    """Row ``r`` of the reflect-padded image (``-1 -> 1``, ``H -> H - 2``), clamped into the image
    past that (rows there are loaded but never stored)."""
    return tl.where(r < 0, 1, tl.where(r < H, r, tl.maximum(2 * H - 2 - r, 0)))


@triton.jit
def _row_values(xb, HW, row, W, x, C: tl.constexpr):
    """``(I_i[row, x-1], I_i[row, x], I_i[row, x+1])`` for every channel ``i``, flattened, the
    columns reflected at the borders.

    The three loads share one address (``p - 1``, ``p``, ``p + 1`` become immediate offsets of a
    single pointer); the border columns are fixed afterwards with a select (reflect ``-1`` is
    ``x + 1`` at ``x = 0``, reflect ``W`` is ``x - 1`` at ``x = W - 1``). On sm_90 this saves 40
    registers and 9 instructions per pixel against loading through reflected column indices.
    """
    return _row_values_masked(xb, HW, row, W, x, (x >= 1, None, x + 1 < W), C)


@triton.jit
def _row_values_masked(xb, HW, row, W, x, ok, C: tl.constexpr):
    """:func:`_row_values` with the masks ``ok = (left, centre, right)`` of the three loads
    (``None``: unmasked), for columns that may lie outside the image (never stored)."""
    out = ()
    first = x == 0
    last = x == W - 1
    for i in tl.static_range(C):
        p = xb + i * HW + row * W + x
        left = tl.load(p - 1, mask=ok[0])
        right = tl.load(p + 1, mask=ok[2])
        out = out + (tl.where(first, right, left), tl.load(p, mask=ok[1]),
                     tl.where(last, left, right))
    return out


@triton.jit
def _window_rows(xb, HW, H, W, x, y0, C: tl.constexpr):
    """The rows ``y0 - 1``, ``y0``, ``y0 + 1`` (reflected) that start a strip's window."""
    return (_row_values(xb, HW, _reflect_row(y0 - 1, H), W, x, C),
            _row_values(xb, HW, y0, W, x, C),
            _row_values(xb, HW, _reflect_row(y0 + 1, H), W, x, C))


@triton.jit
def _next_row(xb, HW, H, W, x, cmask, y, C: tl.constexpr):
    """For row ``y``: the row two below (loaded a row ahead of its use), the store mask and the
    flat offsets of the row's pixels."""
    ahead = _row_values(xb, HW, _reflect_row(y + 2, H), W, x, C)
    mask = cmask & (x * 0 + y < H)  # a tensor: the interpreter takes no scalar masks
    return ahead, mask, y * W + x


@triton.jit
def _plane_row(pb, H, W, x, cmask, y):
    """Row ``y`` of the plane at ``pb`` (0 past the image: the masked load of the row after a
    strip's last), for a value loaded a row before its use."""
    return tl.load(pb + y * W + x, mask=cmask & (x * 0 + y < H), other=0.0)


@triton.jit
def _prefetch_l2(p, mask):
    """Ask L2 for the lines at ``p`` where ``mask`` holds (PTX ``prefetch.global.L2``, one
    ``CCTL.E.PF2`` in SASS): a hint with no value and no effect on any result, so a kernel that
    prefetches writes the same bits as one that does not. CUDA only (the interpreter runs no
    PTX): the kernels call it under a ``PREFETCH > 0`` constexpr, which the launchers set on
    CUDA only."""
    tl.inline_asm_elementwise("@$2 prefetch.global.L2 [$1]; mov.u32 $0, 0;", "=r,l,b",
                              [p, mask], dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def _prefetch_rows(pb, HW, W, x, row, end, C: tl.constexpr):
    """Prefetch row ``row`` of the ``C`` planes at ``pb`` into L2, if ``row < end`` (the strip's
    last row needed plus one, at most ``H``): a strip kernel asks for the rows it reads
    ``PREFETCH`` rows before it loads them, so those loads wait for L2 instead of DRAM without
    holding a register for the value."""
    ok = row < end
    for i in tl.static_range(C):
        _prefetch_l2(pb + i * HW + row * W + x, ok)


@triton.jit
def _prefetch_start(xb, HW, H, W, x, y0, ROWS: tl.constexpr, PREFETCH: tl.constexpr,
                    C: tl.constexpr):
    """The prefetches of a strip's first ``PREFETCH`` rows that its row loop will load (rows
    ``y0 + 2 ...``: the loop asks for ``PREFETCH`` rows past each row it loads). Returns the end
    of the strip's rows for :func:`_prefetch_rows`."""
    end = tl.minimum(y0 + ROWS + 1, H)
    for d in tl.static_range(PREFETCH):
        _prefetch_rows(xb, HW, W, x, y0 + 2 + d, end, C)
    return end


@triton.jit
def _window(up, mid, down, i: tl.constexpr):
    """Channel ``i``'s 9 neighbours in the operator's tap order ``(dy, dx)``."""
    return (up[3 * i], up[3 * i + 1], up[3 * i + 2], mid[3 * i], mid[3 * i + 1], mid[3 * i + 2],
            down[3 * i], down[3 * i + 1], down[3 * i + 2])


@triton.jit
def _weights(k_ptr, C: tl.constexpr):
    """The ``C * C * 9`` operator weights as scalars."""
    kw = ()
    for n in tl.static_range(C * C * 9):
        kw = kw + (tl.load(k_ptr + n),)
    return kw


@triton.jit
def _dot9w(acc, kw, n: tl.constexpr, v):
    """``acc + sum_t kw[n + t] * v[t]``: :func:`_dot9` with preloaded weights, same order."""
    for t in tl.static_range(9):
        acc = tl.fma(kw[n + t], v[t], acc)
    return acc


@triton.jit
def _conv_window(kw, up, mid, down, C: tl.constexpr, BLOCK_H: tl.constexpr,
                 BLOCK_W: tl.constexpr):
    """:func:`_conv_all` on the register window of ``(BLOCK_H, BLOCK_W)`` rows (same order of
    operations)."""
    g0 = tl.zeros((BLOCK_H, BLOCK_W), dtype=tl.float32)
    g1 = tl.zeros((BLOCK_H, BLOCK_W), dtype=tl.float32)
    g2 = tl.zeros((BLOCK_H, BLOCK_W), dtype=tl.float32)
    g3 = tl.zeros((BLOCK_H, BLOCK_W), dtype=tl.float32)
    for i in tl.static_range(C):
        v = _window(up, mid, down, i)
        g0 = _dot9w(g0, kw, i * 9, v)
        if C > 1:
            g1 = _dot9w(g1, kw, (C + i) * 9, v)
        if C > 2:
            g2 = _dot9w(g2, kw, (2 * C + i) * 9, v)
        if C > 3:
            g3 = _dot9w(g3, kw, (3 * C + i) * 9, v)
    return g0, g1, g2, g3


@triton.jit
def _scharr_window(up, mid, down, C: tl.constexpr, BLOCK_H: tl.constexpr,
                   BLOCK_W: tl.constexpr):
    """:func:`_scharr_magnitude` on the register window."""
    sx = tl.zeros((BLOCK_H, BLOCK_W), dtype=tl.float32)
    sy = tl.zeros((BLOCK_H, BLOCK_W), dtype=tl.float32)
    for i in tl.static_range(C):
        sx, sy = _scharr_acc(sx, sy, _window(up, mid, down, i))
    return tl.sqrt(tl.fma(sx, sx, sy * sy))


@triton.jit
def _dk_accumulate_window(acc, gs, up, mid, down, C: tl.constexpr, NO: tl.constexpr):
    """:func:`_dk_accumulate` with the neighbours taken from the register window, for the ``NO``
    output channels ``gs`` held (``acc[(i*NO + o)*9 + t]``)."""
    out = ()
    for i in tl.static_range(C):
        v = _window(up, mid, down, i)
        for o in tl.static_range(NO):
            for t in tl.static_range(9):
                out = out + (tl.fma(gs[o], v[t], acc[(i * NO + o) * 9 + t]),)
    return out


@triton.jit
def _seed_fwd_rows_kernel(x_ptr, k_ptr, p_ptr, new_ptr, g_ptr, H, W, n_tw, x_bstride, k_bstride,
                          kappa2, tukey_s, dt, C: tl.constexpr, COND: tl.constexpr,
                          STORE_G: tl.constexpr, PER_IMAGE: tl.constexpr, ROWS: tl.constexpr,
                          BLOCK_W: tl.constexpr, UNROLL: tl.constexpr,
                          PREFETCH: tl.constexpr = 0, kv=None, KV: tl.constexpr = False):
    """:func:`_seed_fwd_kernel`, row-marching (``ROWS`` rows of ``BLOCK_W`` pixels a program);
    ``PREFETCH > 0`` asks L2 for each row that many rows before loading it (CUDA only). With
    ``KV`` the operator's ``C * C * 9`` values come as the scalar arguments ``kv`` (see
    :func:`_kernel_weights`) instead of from ``k_ptr``."""
    b = tl.program_id(1).to(tl.int64)
    x, cmask, y0 = _strip(H, W, n_tw, ROWS, BLOCK_W)
    HW = H * W
    base = b * C * HW
    xb = x_ptr + b * x_bstride
    if PER_IMAGE:
        kappa2, tukey_s, dt = _load_params(p_ptr, b, 3)
    if KV:
        kw = kv
    else:
        kw = _weights(k_ptr + b * k_bstride, C)
    if PREFETCH > 0:
        end = _prefetch_start(xb, HW, H, W, x, y0, ROWS, PREFETCH, C)
    up, mid, down = _window_rows(xb, HW, H, W, x, y0, C)
    for r in tl.range(ROWS, loop_unroll_factor=UNROLL):  # 3: the window rotates in place
        if PREFETCH > 0:
            _prefetch_rows(xb, HW, W, x, y0 + r + 2 + PREFETCH, end, C)
        ahead, mask, at = _next_row(xb, HW, H, W, x, cmask, y0 + r, C)
        gs = _conv_window(kw, up, mid, down, C, 1, BLOCK_W)
        cinv = tl.zeros((1, BLOCK_W), dtype=tl.float32)
        if COND == 1:
            cinv = 1.0 / (1.0 + _scharr_window(up, mid, down, C, 1, BLOCK_W) / kappa2)
        for o in tl.static_range(C):
            _seed_update(mid[3 * o + 1], new_ptr + base, g_ptr + base, gs[o], o * HW + at, mask,
                         kappa2, tukey_s, dt, cinv, COND, STORE_G)
        up = mid
        mid = down
        down = ahead


@triton.jit
def _seed_fwd_split_kernel(x_ptr, k_ptr, p_ptr, new_ptr, g_ptr, H, W, n_tw, x_bstride,
                           k_bstride, kappa2, tukey_s, dt, C: tl.constexpr, COND: tl.constexpr,
                           STORE_G: tl.constexpr, PER_IMAGE: tl.constexpr, ROWS: tl.constexpr,
                           BLOCK_W: tl.constexpr, UNROLL: tl.constexpr,
                           PREFETCH: tl.constexpr = 0):
    """:func:`_seed_fwd_rows_kernel` for one output channel ``o`` a program (program
    ``strip * C + o``; see :func:`_seed_loss_split_kernel`): ``C * 9`` weights in registers
    instead of ``C * C * 9``, the same operations in the same order, the same bits."""
    b = tl.program_id(1).to(tl.int64)
    pid = tl.program_id(0)
    o = pid % C
    x, cmask, y0 = _strip_at(pid // C, H, W, n_tw, ROWS, BLOCK_W)
    HW = H * W
    base = b * C * HW
    xb = x_ptr + b * x_bstride
    if PER_IMAGE:
        kappa2, tukey_s, dt = _load_params(p_ptr, b, 3)
    kw = _weights_of(k_ptr + b * k_bstride, o, C)
    if PREFETCH > 0:
        end = _prefetch_start(xb, HW, H, W, x, y0, ROWS, PREFETCH, C)
    up, mid, down = _window_rows(xb, HW, H, W, x, y0, C)
    for r in tl.range(ROWS, loop_unroll_factor=UNROLL):  # 3: the window rotates in place
        if PREFETCH > 0:
            _prefetch_rows(xb, HW, W, x, y0 + r + 2 + PREFETCH, end, C)
        ahead, mask, at = _next_row(xb, HW, H, W, x, cmask, y0 + r, C)
        g = _conv_window_of(kw, up, mid, down, C, BLOCK_W)
        cinv = tl.zeros((1, BLOCK_W), dtype=tl.float32)
        if COND == 1:
            cinv = 1.0 / (1.0 + _scharr_window(up, mid, down, C, 1, BLOCK_W) / kappa2)
        _seed_update(_pick_channel(mid, o, 1, C), new_ptr + base, g_ptr + base, g, o * HW + at,
                     mask, kappa2, tukey_s, dt, cinv, COND, STORE_G)
        up = mid
        mid = down
        down = ahead


@triton.jit
def _weights_of(k_ptr, o, C: tl.constexpr):
    """Output channel ``o``'s ``C * 9`` operator weights ``K[o]`` as scalars."""
    kw = ()
    for n in tl.static_range(C * 9):
        kw = kw + (tl.load(k_ptr + o * C * 9 + n),)
    return kw


@triton.jit
def _conv_window_of(kw, up, mid, down, C: tl.constexpr, BLOCK_W: tl.constexpr):
    """One output channel's response ``sum_i sum_t K[o, i, t] I_i[t]`` from its weights ``kw``
    (:func:`_weights_of`): the order of :func:`_conv_window`."""
    g = tl.zeros((1, BLOCK_W), dtype=tl.float32)
    for i in tl.static_range(C):
        g = _dot9w(g, kw, i * 9, _window(up, mid, down, i))
    return g


@triton.jit
def _pick_channel(vals, o, i: tl.constexpr, C: tl.constexpr):
    """``vals[3 * o + i]`` for a runtime channel ``o < C`` (a chain of selects)."""
    out = vals[i]
    for j in tl.static_range(1, C):
        out = tl.where(o == j, vals[3 * j + i], out)
    return out


@triton.jit
def _seed_loss_terms_of(xo, x0r, o: tl.constexpr, x0_ptr, new_ptr, gg_ptr, di_ptr, g, at, mask,
                        kappa2, tukey_s, dt, w_fid, w_edge, w_energy, COND: tl.constexpr,
                        NEED_DI: tl.constexpr, X0_AHEAD: tl.constexpr):
    """:func:`_seed_loss_terms_x0` with channel ``o``'s ``I_0`` from the row ``x0r`` loaded a
    row ahead (``X0_AHEAD``), else :func:`_seed_loss_terms_at` (loaded here, at ``at``)."""
    if X0_AHEAD:
        return _seed_loss_terms_x0(xo, x0r[o], new_ptr, gg_ptr, di_ptr, g, at, mask, kappa2,
                                   tukey_s, dt, w_fid, w_edge, w_energy, COND, NEED_DI)
    else:
        return _seed_loss_terms_at(xo, x0_ptr, new_ptr, gg_ptr, di_ptr, g, at, mask, kappa2,
                                   tukey_s, dt, w_fid, w_edge, w_energy, COND, NEED_DI)


@triton.jit
def _seed_loss_rows_kernel(x_ptr, x0_ptr, k_ptr, new_ptr, gg_ptr, di_ptr, part_ptr,
                           H, W, n_tw, n_tiles, kappa2, tukey_s, dt, w_fid, w_edge, w_energy,
                           C: tl.constexpr, COND: tl.constexpr, NEED_DI: tl.constexpr,
                           ROWS: tl.constexpr, BLOCK_W: tl.constexpr, UNROLL: tl.constexpr,
                           PREFETCH: tl.constexpr = 0, X0_AHEAD: tl.constexpr = False):
    """:func:`_seed_loss_kernel`, row-marching: the loss and the ``C*C*9`` ``dL/dK`` products
    accumulate per pixel in registers down the strip and are reduced once per program.
    ``PREFETCH > 0`` asks L2 for the image's and ``I_0``'s rows that many rows before they are
    loaded (CUDA only): ``I_0`` is loaded in the row that uses it, so without it each row waits
    for a DRAM round trip. ``X0_AHEAD`` loads ``I_0`` a row before its use instead, as the
    window is (``"ahead"``: at 255 registers, a few values spill: sm_90, Triton 3.6, C = 3, not
    unrolled, 8 bytes: one store and one load). The same values either way: the same bits."""
    b = tl.program_id(1).to(tl.int64)
    x, cmask, y0 = _strip(H, W, n_tw, ROWS, BLOCK_W)
    HW = H * W
    base = b * C * HW
    xb = x_ptr + base
    part = part_ptr + (b * n_tiles + tl.program_id(0)) * (C + C * C * 9)
    kw = _weights(k_ptr, C)
    acc = _dk_zeros(C, C, 1, BLOCK_W)
    loss0 = tl.zeros((1, BLOCK_W), dtype=tl.float32)
    loss1 = loss0
    loss2 = loss0
    loss3 = loss0
    if PREFETCH > 0:
        end = _prefetch_start(xb, HW, H, W, x, y0, ROWS, PREFETCH, C)
        end0 = tl.minimum(y0 + ROWS, H)
        for d in tl.static_range(PREFETCH):
            _prefetch_rows(x0_ptr + base, HW, W, x, y0 + d, end0, C)
    up, mid, down = _window_rows(xb, HW, H, W, x, y0, C)
    x0_next = _plane_rows(x0_ptr + base, HW, H, W, x, cmask, y0, C) if X0_AHEAD else ()
    for r in tl.range(ROWS, loop_unroll_factor=UNROLL):  # 3: the window rotates in place
        if PREFETCH > 0:
            _prefetch_rows(xb, HW, W, x, y0 + r + 2 + PREFETCH, end, C)
            _prefetch_rows(x0_ptr + base, HW, W, x, y0 + r + PREFETCH, end0, C)
        ahead, mask, at = _next_row(xb, HW, H, W, x, cmask, y0 + r, C)
        if X0_AHEAD:  # this row's I_0, loaded a row ago; the next row's now
            x0r = x0_next
            x0_next = _plane_rows(x0_ptr + base, HW, H, W, x, cmask, y0 + r + 1, C)
        else:  # (each channel's I_0 is loaded where it is used)
            x0r = ()
        gs = _conv_window(kw, up, mid, down, C, 1, BLOCK_W)
        gg0, term = _seed_loss_terms_of(mid[1], x0r, 0, x0_ptr + base, new_ptr + base,
                                        gg_ptr + base, di_ptr + base, gs[0], at, mask, kappa2,
                                        tukey_s, dt, w_fid, w_edge, w_energy, COND, NEED_DI,
                                        X0_AHEAD)
        loss0 += term
        gg1 = gg0
        gg2 = gg0
        gg3 = gg0
        if C > 1:
            gg1, term = _seed_loss_terms_of(mid[4], x0r, 1, x0_ptr + base, new_ptr + base,
                                            gg_ptr + base, di_ptr + base, gs[1], HW + at, mask,
                                            kappa2, tukey_s, dt, w_fid, w_edge, w_energy, COND,
                                            NEED_DI, X0_AHEAD)
            loss1 += term
        if C > 2:
            gg2, term = _seed_loss_terms_of(mid[7], x0r, 2, x0_ptr + base, new_ptr + base,
                                            gg_ptr + base, di_ptr + base, gs[2], 2 * HW + at,
                                            mask, kappa2, tukey_s, dt, w_fid, w_edge, w_energy,
                                            COND, NEED_DI, X0_AHEAD)
            loss2 += term
        if C > 3:
            gg3, term = _seed_loss_terms_of(mid[10], x0r, 3, x0_ptr + base, new_ptr + base,
                                            gg_ptr + base, di_ptr + base, gs[3], 3 * HW + at,
                                            mask, kappa2, tukey_s, dt, w_fid, w_edge, w_energy,
                                            COND, NEED_DI, X0_AHEAD)
            loss3 += term
        acc = _dk_accumulate_window(acc, (gg0, gg1, gg2, gg3), up, mid, down, C, C)
        up = mid
        mid = down
        down = ahead
    _dk_store_sums(acc, C, C, part + C)
    _store_losses(part, (loss0, loss1, loss2, loss3), C)


@triton.jit
def _seed_loss_split_kernel(x_ptr, x0_ptr, k_ptr, new_ptr, gg_ptr, di_ptr, part_ptr,
                            H, W, n_tw, n_tiles, kappa2, tukey_s, dt, w_fid, w_edge, w_energy,
                            C: tl.constexpr, COND: tl.constexpr, NEED_DI: tl.constexpr,
                            ROWS: tl.constexpr, BLOCK_W: tl.constexpr, UNROLL: tl.constexpr,
                            PREFETCH: tl.constexpr = 0):
    """:func:`_seed_loss_rows_kernel` for one output channel ``o`` a program.

    Program ``strip * C + o`` walks the strip's rows with the whole ``C``-channel window (the
    ``C`` programs of a strip run side by side, so the window's rows come from L2 after the
    first), but keeps only ``o``'s ``C * 9`` weights and ``C * 9`` ``dL/dK[o]`` accumulators in
    registers: a third of the registers of the all-channel kernel at ``C = 3``, hence more programs
    per SM, for ``C`` times the window's loads. ``I_0`` is loaded a row before its use, as the
    window is (the all-channel kernel, at 255 registers, loads it in the row). Every value is
    computed with the same operations in the same order as there, and every sum lands in the
    same slot of ``part``: the same bits.
    """
    b = tl.program_id(1).to(tl.int64)
    pid = tl.program_id(0)
    o = pid % C
    strip = pid // C
    x, cmask, y0 = _strip_at(strip, H, W, n_tw, ROWS, BLOCK_W)
    HW = H * W
    base = b * C * HW
    xb = x_ptr + base
    part = part_ptr + (b * n_tiles + strip) * (C + C * C * 9)
    kw = _weights_of(k_ptr, o, C)
    acc = _dk_zeros(C, 1, 1, BLOCK_W)
    loss = tl.zeros((1, BLOCK_W), dtype=tl.float32)
    x0o = x0_ptr + base + o * HW
    if PREFETCH > 0:
        end = _prefetch_start(xb, HW, H, W, x, y0, ROWS, PREFETCH, C)
        end0 = tl.minimum(y0 + ROWS, H)
        for d in tl.static_range(PREFETCH):
            _prefetch_rows(x0o, HW, W, x, y0 + 1 + d, end0, 1)
    up, mid, down = _window_rows(xb, HW, H, W, x, y0, C)
    x0_next = _plane_row(x0o, H, W, x, cmask, y0)
    for r in tl.range(ROWS, loop_unroll_factor=UNROLL):  # 3: the window rotates in place
        if PREFETCH > 0:
            _prefetch_rows(xb, HW, W, x, y0 + r + 2 + PREFETCH, end, C)
            _prefetch_rows(x0o, HW, W, x, y0 + r + 1 + PREFETCH, end0, 1)
        ahead, mask, at = _next_row(xb, HW, H, W, x, cmask, y0 + r, C)
        x0r = x0_next  # I_0 of this row, loaded a row ahead like the window
        x0_next = _plane_row(x0o, H, W, x, cmask, y0 + r + 1)
        g = _conv_window_of(kw, up, mid, down, C, BLOCK_W)
        gg, term = _seed_loss_terms_x0(_pick_channel(mid, o, 1, C), x0r,
                                       new_ptr + base, gg_ptr + base, di_ptr + base, g,
                                       o * HW + at, mask, kappa2, tukey_s, dt, w_fid, w_edge,
                                       w_energy, COND, NEED_DI)
        loss += term
        acc = _dk_accumulate_window(acc, (gg,), up, mid, down, C, 1)
        up = mid
        mid = down
        down = ahead
    _dk_store_sums(acc, C, 1, part + C + o * C * 9)
    tl.store(part + o, tl.sum(tl.sum(loss, axis=0), axis=0))


@triton.jit
def _plane_rows(pb, HW, H, W, x, cmask, y, C: tl.constexpr):
    """:func:`_plane_row` of each of the ``C`` planes at ``pb``."""
    out = ()
    for i in tl.static_range(C):
        out = out + (_plane_row(pb + i * HW, H, W, x, cmask, y),)
    return out


@triton.jit
def _seed_loss_pass_kernel(x_ptr, x0_ptr, k_ptr, new_ptr, gg_ptr, di_ptr, part_ptr,
                           H, W, n_tw, n_tiles, kappa2, tukey_s, dt, w_fid, w_edge, w_energy,
                           C: tl.constexpr, COND: tl.constexpr, NEED_DI: tl.constexpr,
                           ROWS: tl.constexpr, BLOCK_W: tl.constexpr, UNROLL: tl.constexpr,
                           PREFETCH: tl.constexpr = 0):
    """First pass of the two-pass learned step (``"twopass"``): :func:`_seed_loss_rows_kernel`
    without ``dL/dK``. It stores ``I'``, each channel's ``dL/dg`` (into ``gg``) and the loss
    sums; :func:`_seed_dk_pass_kernel` then forms ``dL/dK`` from ``gg`` and the image.

    Without the ``C * C * 9`` accumulators the kernel has the registers to load ``I_0`` a row
    before its use, as it loads the image's window. Every value is computed with the same
    operations in the same order as in the one-pass kernel, and the loss sums land in the same
    slots of ``part``: the same bits.
    """
    b = tl.program_id(1).to(tl.int64)
    x, cmask, y0 = _strip(H, W, n_tw, ROWS, BLOCK_W)
    HW = H * W
    base = b * C * HW
    xb = x_ptr + base
    x0b = x0_ptr + base
    part = part_ptr + (b * n_tiles + tl.program_id(0)) * (C + C * C * 9)
    kw = _weights(k_ptr, C)
    losses = ()
    for _ in tl.static_range(C):
        losses = losses + (tl.zeros((1, BLOCK_W), dtype=tl.float32),)
    if PREFETCH > 0:
        end = _prefetch_start(xb, HW, H, W, x, y0, ROWS, PREFETCH, C)
        end0 = tl.minimum(y0 + ROWS, H)
        for d in tl.static_range(PREFETCH):
            _prefetch_rows(x0b, HW, W, x, y0 + 1 + d, end0, C)
    up, mid, down = _window_rows(xb, HW, H, W, x, y0, C)
    x0_next = _plane_rows(x0b, HW, H, W, x, cmask, y0, C)
    for r in tl.range(ROWS, loop_unroll_factor=UNROLL):  # 3: the window rotates in place
        if PREFETCH > 0:
            _prefetch_rows(xb, HW, W, x, y0 + r + 2 + PREFETCH, end, C)
            _prefetch_rows(x0b, HW, W, x, y0 + r + 1 + PREFETCH, end0, C)
        ahead, mask, at = _next_row(xb, HW, H, W, x, cmask, y0 + r, C)
        x0r = x0_next  # I_0 of this row, loaded a row ahead like the window
        x0_next = _plane_rows(x0b, HW, H, W, x, cmask, y0 + r + 1, C)
        gs = _conv_window(kw, up, mid, down, C, 1, BLOCK_W)
        summed = ()
        for o in tl.static_range(C):
            gg, term = _seed_loss_terms_x0(mid[3 * o + 1], x0r[o], new_ptr + base, gg_ptr + base,
                                           di_ptr + base, gs[o], o * HW + at, mask, kappa2,
                                           tukey_s, dt, w_fid, w_edge, w_energy, COND, NEED_DI)
            if not NEED_DI:  # (with it, _seed_loss_finish has stored it)
                tl.store(gg_ptr + base + o * HW + at, gg, mask=mask)
            summed = summed + (losses[o] + term,)
        losses = summed
        up = mid
        mid = down
        down = ahead
    _store_losses(part, losses, C)


@triton.jit
def _seed_dk_pass_kernel(x_ptr, gg_ptr, part_ptr, H, W, n_tw, n_tiles, C: tl.constexpr,
                         ROWS: tl.constexpr, BLOCK_W: tl.constexpr, UNROLL: tl.constexpr,
                         PREFETCH: tl.constexpr = 0):
    """Second pass of the two-pass learned step: ``dL/dK[o, i, t] = sum gg_o * I_i[t]`` over the
    strips of :func:`_seed_loss_pass_kernel`, from the ``dL/dg`` it stored, one input channel
    ``i`` a program (program ``strip * C + i``).

    A program holds ``C * 9`` accumulators (``dL/dK[:, i]``), channel ``i``'s window and every
    channel's ``dL/dg`` (loaded a row ahead), and no weights. Each reads one plane of the image,
    so the image is read once; the ``C`` programs of a strip read ``dL/dg``'s rows from L2
    after the first. The products, their order down the strip, the reduction once per program
    and the slots of ``part`` are those of the one-pass kernel: the same bits. (An all-channel
    pass 2 needs 155 registers on sm_90, three programs an SM; this one 64, eight.)
    """
    b = tl.program_id(1).to(tl.int64)
    pid = tl.program_id(0)
    i = pid % C
    strip = pid // C
    x, cmask, y0 = _strip_at(strip, H, W, n_tw, ROWS, BLOCK_W)
    HW = H * W
    base = b * C * HW
    xi = x_ptr + base + i * HW
    ggb = gg_ptr + base
    part = part_ptr + (b * n_tiles + strip) * (C + C * C * 9) + C + i * 9
    acc = _dk_zeros(1, C, 1, BLOCK_W)
    if PREFETCH > 0:  # each program asks for its own plane of the image and of dL/dg
        end = _prefetch_start(xi, HW, H, W, x, y0, ROWS, PREFETCH, 1)
        end0 = tl.minimum(y0 + ROWS, H)
        for d in tl.static_range(PREFETCH):
            _prefetch_rows(ggb + i * HW, HW, W, x, y0 + 1 + d, end0, 1)
    up, mid, down = _window_rows(xi, HW, H, W, x, y0, 1)
    gg_next = _plane_rows(ggb, HW, H, W, x, cmask, y0, C)
    for r in tl.range(ROWS, loop_unroll_factor=UNROLL):  # 3: the window rotates in place
        if PREFETCH > 0:
            _prefetch_rows(xi, HW, W, x, y0 + r + 2 + PREFETCH, end, 1)
            _prefetch_rows(ggb + i * HW, HW, W, x, y0 + r + 1 + PREFETCH, end0, 1)
        ahead = _row_values(xi, HW, _reflect_row(y0 + r + 2, H), W, x, 1)
        ggr = gg_next
        gg_next = _plane_rows(ggb, HW, H, W, x, cmask, y0 + r + 1, C)
        acc = _dk_accumulate_window(acc, ggr, up, mid, down, 1, C)
        up = mid
        mid = down
        down = ahead
    for o in tl.static_range(C):  # dL/dK[o, i, t] at part[C + (o*C + i)*9 + t]
        for t in tl.static_range(9):
            tl.store(part + o * C * 9 + t, tl.sum(tl.sum(acc[o * 9 + t], axis=0), axis=0))


@triton.jit
def _classic_rows_kernel(x_ptr, out_ptr, H, W, n_tw, inv_kappa, tukey_s, dt, COND: tl.constexpr,
                         ROWS: tl.constexpr, BLOCK_W: tl.constexpr, UNROLL: tl.constexpr):
    """:func:`_classic_kernel`, row-marching: the rows above and below stay in registers, each
    row loads its left/right neighbours and the row two below."""
    plane = tl.program_id(1).to(tl.int64) * H * W
    x, cmask, y0 = _strip(H, W, n_tw, ROWS, BLOCK_W)
    xb = x_ptr + plane
    up = tl.load(xb + _reflect_row(y0 - 1, H) * W + x)
    v = tl.load(xb + y0 * W + x)
    down = tl.load(xb + _reflect_row(y0 + 1, H) * W + x)
    for r in tl.range(ROWS, loop_unroll_factor=UNROLL):
        y = y0 + r
        ahead = tl.load(xb + _reflect_row(y + 2, H) * W + x)
        mask = cmask & (x * 0 + y < H)  # a tensor: the interpreter takes no scalar masks
        at = y * W + x
        row = xb + _reflect_row(y, H) * W + x  # rows past the image load one inside (not stored)
        left = tl.load(row - 1, mask=x >= 1)  # undefined at the border, where the flux is 0
        right = tl.load(row + 1, mask=x + 1 < W)
        tl.store(out_ptr + plane + at,
                 _classic_value(up, v, down, left, right, x, y, H, W, inv_kappa, tukey_s, dt,
                                COND),
                 mask=mask)
        up = v
        v = down
        down = ahead


# ----------------------------------------------------------------------------------------------
# two steps per pass (temporal blocking): the strip kernels with a second window
# ----------------------------------------------------------------------------------------------
#
# A program walks ``STRIPS`` strips side by side, one per warp: an ``(STRIPS, BLOCK_W)`` block
# whose row ``s`` covers columns ``x_s - 1 .. x_s + BLOCK_W - 2`` and stores the ``BLOCK_W - 2``
# inner ones. Walking down, it keeps two 3-row windows in registers: the input rows, as in the
# one-step strip kernels, and the rows of the first step's result, whose left and right
# neighbours are the neighbouring lanes of the same warp (``tl.gather`` along the strip, a warp
# shuffle: with ``BLOCK_W = 32`` lanes to a warp nothing is replicated across warps). Each row
# computes the first step one row ahead and the second step on the row above it, so the image is
# read and written once for two steps. The first step's rows at ``y0 - 1`` and ``y0`` start the
# window, each from its own three input rows. The first step's border rows and columns are
# reflected (seed) or cut off by the zero flux (classic) as the second step needs them. Every
# pixel's arithmetic is the one-step kernels', in the same order: bit-identical to two launches.


@triton.jit
def _strip2(H, W, n_tw, ROWS: tl.constexpr, STRIPS: tl.constexpr, BLOCK_W: tl.constexpr):
    """A two-step program's lanes: the column of each lane (from ``-1``; the lanes outside the
    image load nothing and compute values that are never used), the masks of its loads, the
    store mask, the lane index and the program's first row."""
    pid = tl.program_id(0)
    tw = pid % n_tw
    y0 = (pid // n_tw) * ROWS
    lane = tl.broadcast_to(tl.arange(0, BLOCK_W)[None, :], (STRIPS, BLOCK_W))  # gather indices
    strip = tw * STRIPS + tl.arange(0, STRIPS)[:, None]
    x = strip * (BLOCK_W - 2) - 1 + lane
    store = (lane >= 1) & (lane < BLOCK_W - 1) & (x < W)
    # the masks of a row's left, centre and right loads: inside the image
    ok = ((x >= 1) & (x <= W), (x >= 0) & (x < W), (x >= -1) & (x + 1 < W))
    return x, ok, store, lane, y0


@triton.jit
def _lane_window(vals, x, lane, W, C: tl.constexpr, BLOCK_W: tl.constexpr):
    """``(v[x - 1], v[x], v[x + 1])`` per channel of a row of per-lane values, reflected at the
    image's borders: the window format of :func:`_row_values` (the outer lanes' outer
    neighbours are never used)."""
    first = x == 0
    last = x == W - 1
    to_left = tl.maximum(lane - 1, 0)
    to_right = tl.minimum(lane + 1, BLOCK_W - 1)
    out = ()
    for i in tl.static_range(C):
        left = tl.gather(vals[i], to_left, axis=1)
        right = tl.gather(vals[i], to_right, axis=1)
        out = out + (tl.where(first, right, left), vals[i], tl.where(last, left, right))
    return out


@triton.jit
def _seed_window_step(kw, up, mid, down, kappa2, tukey_s, dt, C: tl.constexpr,
                      COND: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    """The seed step of a window's middle row: its ``C`` new values (the arithmetic of
    :func:`_seed_fwd_rows_kernel`)."""
    gs = _conv_window(kw, up, mid, down, C, BLOCK_H, BLOCK_W)
    cinv = tl.zeros((BLOCK_H, BLOCK_W), dtype=tl.float32)
    if COND == 1:
        cinv = 1.0 / (1.0 + _scharr_window(up, mid, down, C, BLOCK_H, BLOCK_W) / kappa2)
    out = ()
    for o in tl.static_range(C):
        out = out + (_seed_value(mid[3 * o + 1], gs[o], kappa2, tukey_s, dt, cinv, COND),)
    return out


@triton.jit
def _seed_row_at(kw, xb, HW, H, W, x, ok, lane, row, kappa2, tukey_s, dt, C: tl.constexpr,
                 COND: tl.constexpr, STRIPS: tl.constexpr, BLOCK_W: tl.constexpr):
    """The first step's row ``row`` (inside the image) in window format, from its three input rows."""
    up = _row_values_masked(xb, HW, _reflect_row(row - 1, H), W, x, ok, C)
    mid = _row_values_masked(xb, HW, row, W, x, ok, C)
    down = _row_values_masked(xb, HW, _reflect_row(row + 1, H), W, x, ok, C)
    vals = _seed_window_step(kw, up, mid, down, kappa2, tukey_s, dt, C, COND, STRIPS, BLOCK_W)
    return _lane_window(vals, x, lane, W, C, BLOCK_W)


@triton.jit
def _seed_fwd2_rows_kernel(x_ptr, k_ptr, p_ptr, new_ptr, H, W, n_tw, x_bstride, k_bstride,
                           kappa2, tukey_s, dt, C: tl.constexpr, COND: tl.constexpr,
                           PER_IMAGE: tl.constexpr, ROWS: tl.constexpr, STRIPS: tl.constexpr,
                           BLOCK_W: tl.constexpr, UNROLL: tl.constexpr, kv=None,
                           KV: tl.constexpr = False):
    """Two seed steps in one pass (see the section comment); batch, parameters and operator
    (``kv``) as :func:`_seed_fwd_rows_kernel`, without ``g``."""
    b = tl.program_id(1).to(tl.int64)
    x, ok, store, lane, y0 = _strip2(H, W, n_tw, ROWS, STRIPS, BLOCK_W)
    HW = H * W
    xb = x_ptr + b * x_bstride
    out_ptr = new_ptr + b * C * HW
    if PER_IMAGE:
        kappa2, tukey_s, dt = _load_params(p_ptr, b, 3)
    if KV:
        kw = kv
    else:
        kw = _weights(k_ptr + b * k_bstride, C)
    s_up = _seed_row_at(kw, xb, HW, H, W, x, ok, lane, _reflect_row(y0 - 1, H), kappa2, tukey_s,
                        dt, C, COND, STRIPS, BLOCK_W)
    s_mid = _seed_row_at(kw, xb, HW, H, W, x, ok, lane, y0, kappa2, tukey_s, dt, C, COND, STRIPS,
                         BLOCK_W)
    up = _row_values_masked(xb, HW, y0, W, x, ok, C)
    mid = _row_values_masked(xb, HW, _reflect_row(y0 + 1, H), W, x, ok, C)
    for r in tl.range(ROWS, loop_unroll_factor=UNROLL):
        y = y0 + r
        down = _row_values_masked(xb, HW, _reflect_row(y + 2, H), W, x, ok, C)
        first = _seed_window_step(kw, up, mid, down, kappa2, tukey_s, dt, C, COND, STRIPS,
                                  BLOCK_W)
        s_new = _lane_window(first, x, lane, W, C, BLOCK_W)
        # the first step's row y + 1, reflected to y - 1 below the last row
        s_down = ()
        for i in tl.static_range(3 * C):
            s_down = s_down + (tl.where(y + 1 < H, s_new[i], s_up[i]),)
        second = _seed_window_step(kw, s_up, s_mid, s_down, kappa2, tukey_s, dt, C, COND, STRIPS,
                                   BLOCK_W)
        mask = store & (x * 0 + y < H)  # a tensor: the interpreter takes no scalar masks
        for o in tl.static_range(C):
            tl.store(out_ptr + o * HW + y * W + x, second[o], mask=mask)
        s_up = s_mid
        s_mid = s_down
        up = mid
        mid = down


@triton.jit
def _classic_row_at(xb, H, W, x, ok, row, inv_kappa, tukey_s, dt, COND: tl.constexpr):
    """The first classic step's row ``row`` (inside the image) from its input neighbours."""
    at = xb + row * W + x
    up = tl.load(xb + _reflect_row(row - 1, H) * W + x, mask=ok[1])
    down = tl.load(xb + _reflect_row(row + 1, H) * W + x, mask=ok[1])
    left = tl.load(at - 1, mask=ok[0])  # undefined at the border, where the flux is 0
    right = tl.load(at + 1, mask=ok[2])
    return _classic_value(up, tl.load(at, mask=ok[1]), down, left, right, x, row, H, W,
                          inv_kappa, tukey_s, dt, COND)


@triton.jit
def _classic2_rows_kernel(x_ptr, out_ptr, H, W, n_tw, inv_kappa, tukey_s, dt, COND: tl.constexpr,
                          ROWS: tl.constexpr, STRIPS: tl.constexpr, BLOCK_W: tl.constexpr,
                          UNROLL: tl.constexpr):
    """Two classic steps in one pass (see the section comment), one plane per program row."""
    plane = tl.program_id(1).to(tl.int64) * H * W
    x, ok, store, lane, y0 = _strip2(H, W, n_tw, ROWS, STRIPS, BLOCK_W)
    xb = x_ptr + plane
    left_lane = tl.maximum(lane - 1, 0)
    right_lane = tl.minimum(lane + 1, BLOCK_W - 1)
    # the first step's rows y0 - 1 (never used at y0 = 0: zero flux) and y0
    s_up = _classic_row_at(xb, H, W, x, ok, _reflect_row(y0 - 1, H), inv_kappa, tukey_s, dt,
                           COND)
    s_mid = _classic_row_at(xb, H, W, x, ok, y0, inv_kappa, tukey_s, dt, COND)
    up = tl.load(xb + y0 * W + x, mask=ok[1])
    mid = tl.load(xb + _reflect_row(y0 + 1, H) * W + x, mask=ok[1])
    for r in tl.range(ROWS, loop_unroll_factor=UNROLL):
        y = y0 + r
        down = tl.load(xb + _reflect_row(y + 2, H) * W + x, mask=ok[1])
        row = xb + _reflect_row(y + 1, H) * W + x  # past the last row: computed, never used
        left = tl.load(row - 1, mask=ok[0])
        right = tl.load(row + 1, mask=ok[2])
        s_down = _classic_value(up, mid, down, left, right, x, y + 1, H, W, inv_kappa, tukey_s,
                                dt, COND)
        second = _classic_value(s_up, s_mid, s_down, tl.gather(s_mid, left_lane, axis=1),
                                tl.gather(s_mid, right_lane, axis=1), x, y, H, W, inv_kappa,
                                tukey_s, dt, COND)
        mask = store & (x * 0 + y < H)  # a tensor: the interpreter takes no scalar masks
        tl.store(out_ptr + plane + y * W + x, second, mask=mask)
        s_up = s_mid
        s_mid = s_down
        up = mid
        mid = down


# ----------------------------------------------------------------------------------------------
# launchers
# ----------------------------------------------------------------------------------------------

DEFAULT_BLOCK = (1, 512)
"""Tile ``(BLOCK_H, BLOCK_W)`` of the one-pass kernels (a row of 512 pixels)."""

CLASSIC_BLOCK = (8, 128)
"""Tile of the classic step's one-pass kernel: 8 rows of 128 pixels. On an H200 at 4096^2 it ran
at 1.44x the copy time against 1.54x for :data:`DEFAULT_BLOCK` (docs/benchmarks.md)."""

LOSS_BLOCK = (4, 256)
"""Tile of the kernels that reduce per tile (fewer, larger tiles: a smaller partial-sum buffer)."""

LOSS_ROWS_BLOCK = (128, 128)
"""``(rows, BLOCK_W)`` of the fused learned step's strip kernels (``"rows"`` and ``"split"``, from
which the default ``"auto"`` picks): one partial sum of ``dL/dK`` per 128-row strip. On an H200
at 4096^2 the ``"rows"`` kernel ran at 7.7x the copy time against 10.7x for 64 rows. The strip
height fixes the order in which ``dL/dK`` is added, so it is
part of what a CUDA render's bits depend on (the ``minimize`` stage's version)."""

ROWS_BLOCK = (64, 128)
"""``(rows, BLOCK_W)`` of the row-marching kernels (``variant="rows"``): a program walks 64 rows
of a 128-pixel strip, one pixel per thread of 4 warps."""

ROWS_UNROLL = 3
"""Row-loop unroll factor of the row-marching kernels when the variant is named explicitly."""

VARIANTS = ("tiles", "rows")
"""Kernel variants of the one-pass steps (see :data:`ROWS_BLOCK`); ``"auto"`` picks one."""

FORCIBLE = (*VARIANTS, "split", "twopass", "ahead", "pairs")
"""Values of ``MINART_KERNEL_VARIANT`` (see :func:`_auto`)."""

_AUTO: dict[tuple, tuple[str, int]] = {}
"""The variant ``"auto"`` chose, per kernel, device, shape and constants (see :func:`_auto`)."""


PREFETCH_ROWS = 8
"""How many rows ahead the strip kernels' prefetching candidates ask L2 for the rows they will
load (:func:`_prefetch_rows`)."""

_CANDIDATES = (("tiles", 1), ("rows", 1), ("rows", 3))
"""``(variant, unroll)`` pairs that ``"auto"`` times: all write the same bits."""

_SEED_CANDIDATES = (*_CANDIDATES, ("split", 1), ("split", 3), ("rows", 1, PREFETCH_ROWS),
                    ("split", 1, PREFETCH_ROWS))
"""The seed step's: also the one-output-channel-a-program strips (:func:`_seed_fwd_split_kernel`),
and strips that prefetch their rows into L2 (``(variant, unroll, prefetch)``)."""


def _with_arguments(candidates: tuple[tuple, ...], width: int) -> tuple[tuple, ...]:
    """For an operator given on the host (:func:`_kernel_weights`): each of ``candidates``
    (padded with zeros to ``width`` items: ``(variant, unroll, prefetch)`` for one step,
    ``(variant, unroll)`` for pairs) reading the operator from memory (one more item, ``0``),
    and each all-channel strip candidate also taking its values as kernel arguments (``1``).
    The values are the same float32 numbers, so the bits are the same; which is faster depends
    on the GPU (H100, stop 22: one seed step 1.53x the copy time reading them from memory with
    the L2 prefetch, 2.15x as arguments; 1.91x and 2.03x without the prefetch)."""
    padded = [(*c, *(0,) * (width - len(c))) for c in candidates]
    return (*((*c, 0) for c in padded), *((*c, 1) for c in padded if c[0] in ("rows", "pairs")))


def _cuda_ms(fn) -> float:
    """Best of 3 timings of ``fn()`` between CUDA events, in ms."""
    times = []
    for _ in range(3):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return min(times)


_KERNEL_NAMES = {"seed": "the seed-scheme step", "seed-steps": "the seed-scheme steps",
                 "seed-loss": "the learned step", "classic": "the classic step",
                 "classic-steps": "the classic steps"}
"""What :func:`_pick`'s notes call a kernel, by the first item of its key."""


def _pick(candidates, launch, outputs: tuple[Tensor, ...], timer, key=()) -> tuple:
    """The fastest candidate whose output equals the first candidate's, bit for bit.

    Each candidate is launched once (compiling it), its ``outputs`` compared with the first
    candidate's, then timed with ``timer(lambda: launch(*candidate))``. A later candidate that
    cannot compile or launch here (another Triton, another GPU) is dropped with a warning; the
    first one's error is raised. What it does (seconds a candidate: each compiles) and what it
    found go to the running step's log (:func:`~minart.progress.note`).
    """
    name = _KERNEL_NAMES.get(key[0] if key else None, "a kernel")
    note(f"choosing {name}'s fastest shape: compiling and timing {len(candidates)} shapes that "
         "write the same bits (once per process, shape and device)")
    started = time.perf_counter()
    best = {}
    reference = None
    for candidate in candidates:
        try:
            launch(*candidate)  # compile and warm up
        except Exception as exc:  # a later candidate that cannot build here is skipped
            if reference is None:
                raise
            warnings.warn(f"minart: the {candidate} Triton kernel could not run for {key} "
                          f"({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); not using "
                          "it", stacklevel=4)
            continue
        if reference is None:
            reference = [t.clone() for t in outputs]
        elif not all(torch.equal(a, b) for a, b in zip(reference, outputs, strict=True)):
            warnings.warn(f"minart: the {candidate} Triton kernel disagrees with the "
                          f"{candidates[0]} one for {key}; not using it", stacklevel=4)
            continue
        best[candidate] = timer(lambda candidate=candidate: launch(*candidate))
    chosen = min(best, key=best.get)
    timings = ", ".join(f"{'/'.join(map(str, c))} {t:.3g} ms" for c, t in best.items())
    note(f"{name[0].upper()}{name[1:]} uses {'/'.join(map(str, chosen))} (timed in "
         f"{time.perf_counter() - started:.1f} s: {timings})")
    return chosen


def _auto(key: tuple, device: torch.device, launch, outputs: tuple[Tensor, ...],
          candidates: tuple[tuple[str, int], ...] = _CANDIDATES) -> tuple[str, int]:
    """The fastest of the bit-identical kernel shapes for this call, timed once: ``(variant,
    unroll)``.

    ``launch(variant, unroll)`` runs the kernel into ``outputs``. On CUDA the first call with a
    new ``key`` times each of the ``candidates`` (default :data:`_CANDIDATES`; one warm-up, which
    also compiles it, then the best of 3 runs between CUDA events) and remembers the winner for
    the process. All are meant to write the same bits, and each one's warm-up output is compared
    with the first's: one that differs (a miscompilation) is dropped with a warning, so the choice
    changes speed only, never pixels. ``MINART_KERNEL_VARIANT`` (:data:`FORCIBLE`) forces
    one (benchmarks; ``pairs``, two steps per pass, and ``split``, ``twopass`` or ``ahead``
    where a kernel has no such shape, mean ``rows`` for a single step, and ``tiles`` or
    ``rows`` mean one step per pass for several); off CUDA (Triton's interpreter) the answer is
    the first candidate.
    """
    forced = os.environ.get("MINART_KERNEL_VARIANT", "").strip()
    if forced:
        _check_variant(forced, FORCIBLE)
        if forced not in {variant for variant, *_ in candidates}:
            # one step: the two-step, split and two-pass kernels are strip kernels; several:
            # tiles or rows step by step
            forced = "rows" if forced in ("pairs", "split", "twopass", "ahead") else "single"
        return forced, ROWS_UNROLL
    if device.type != "cuda":
        return candidates[0][0], 1
    if torch.version.hip:  # plain candidates only: the L2 prefetch is PTX, the register cap
        # ptxas's, and the operator as arguments was only ever timed on NVIDIA
        candidates = tuple(c for c in candidates if not any(c[2:4]))
    key = (*key, device.index)
    if key not in _AUTO:
        _AUTO[key] = _pick(candidates, launch, outputs, _cuda_ms, key)
    return _AUTO[key]


LOSS_REGISTERS = 168
"""Registers a thread of the learned step's capped candidates may use (Triton's ``maxnreg``):
three 4-warp programs an SM (65536 / (168 x 128)) instead of two at 255. ptxas keeps the rest,
mostly the operator's weights, in local memory, which stays in L1 (sm_90, Triton 3.6, C = 3:
336 bytes a thread, 129 KB an SM), and reloads them every row: 479 instructions a pixel-step
instead of 366, for half as many warps again to hide memory latency with."""

_LOSS_CANDIDATES = (("rows", ROWS_UNROLL, 0, 0), ("rows", 1, 0, 0), ("split", 1, 0, 0),
                    ("split", ROWS_UNROLL, 0, 0), ("rows", 1, PREFETCH_ROWS, 0),
                    ("split", 1, PREFETCH_ROWS, 0), ("twopass", 1, 0, 0),
                    ("twopass", 1, PREFETCH_ROWS, 0), ("ahead", 1, 0, 0),
                    ("ahead", 1, PREFETCH_ROWS, 0), ("rows", 1, 0, LOSS_REGISTERS),
                    ("ahead", 1, 0, LOSS_REGISTERS), ("ahead", 1, PREFETCH_ROWS, LOSS_REGISTERS))
"""``(variant, unroll, prefetch, registers)`` of the fused learned step that ``"auto"`` times:
the all-channel, the one-channel-a-program and the two-pass strip kernels, the first two with
and without unrolling their row loop, and not unrolled with their rows prefetched into L2
:data:`PREFETCH_ROWS` rows ahead; the all-channel strips loading ``I_0`` a row before its use
(``"ahead"``; not unrolled: unrolled, 32 bytes spill), with its rows prefetched into L2 or
not (then ``I_0``'s row comes from L2 a row before its use, where ``"rows"`` waits for it in
the row that uses it); and the all-channel strips, with ``I_0`` a row ahead or not, held to
:data:`LOSS_REGISTERS` registers (``0``: as many as ptxas likes, up to 255). All add the same
numbers in the same order into the same slots: the same bits (registers and spills only hold
values)."""


PERSISTENT_BLOCK = (1, 128)
"""Tile of the persistent learned step: one pixel per thread of 4 warps, so each of the
``C*C*9 + 1`` register accumulators costs one register per thread."""

PERSISTENT_PROGRAMS_PER_SM = 2
"""Programs of the persistent learned step per streaming multiprocessor (CUDA): ptxas (Triton
3.6, sm_90) gives the ``C = 3`` kernel 196 registers per thread at 4 warps, so two programs of
128 threads fit an SM at once and every program runs in the first wave. Unmeasured."""

PERSISTENT_PROGRAMS_CPU = 4
"""Programs of the persistent learned step off CUDA (Triton's interpreter)."""


def _persistent_programs(device: torch.device) -> int:
    """Default program count: a few per SM of the tensor's GPU, a handful elsewhere."""
    if device.type == "cuda":
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        return PERSISTENT_PROGRAMS_PER_SM * sms
    return PERSISTENT_PROGRAMS_CPU


def _grid(h: int, w: int, batch: int, block: tuple[int, int]) -> tuple[int, int, int, int]:
    bh, bw = block
    n_tw = triton.cdiv(w, bw)
    n_tiles = triton.cdiv(h, bh) * n_tw
    return n_tiles, batch, n_tw, n_tiles


def _block_for(w: int, block: tuple[int, int] | None, default: tuple[int, int]) -> tuple[int, int]:
    if block is not None:
        return block
    bh, bw = default
    narrow = max(16, triton.next_power_of_2(w))
    return (bh, min(bw, narrow))


def _empty(shape, *, like: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """``torch.empty`` for a kernel output that the kernel writes in full.

    Under ``torch.use_deterministic_algorithms(True)`` (as :func:`minart.minimize.minimize` runs
    on CUDA) torch fills every new tensor with NaN first, a wasted write pass over memory here:
    every element of these outputs is stored by the kernel (masked stores cover the whole tensor).
    """
    det = torch.utils.deterministic
    if det.fill_uninitialized_memory and torch.are_deterministic_algorithms_enabled():
        det.fill_uninitialized_memory = False
        try:
            return torch.empty(shape, dtype=dtype or like.dtype, device=like.device)
        finally:
            det.fill_uninitialized_memory = True
    return torch.empty(shape, dtype=dtype or like.dtype, device=like.device)


def _check_variant(variant: str, choices: tuple[str, ...]) -> None:
    if variant not in choices:
        names = ", ".join(repr(v) for v in choices[:-1]) + f" or {choices[-1]!r}"
        raise ParamError(f"variant={variant!r} is not a kernel variant here; use {names}",
                         param="variant")


def _check_prefetch(prefetch: int | None, image: Tensor) -> None:
    """``prefetch`` is ``None`` (the launcher's choice) or a whole number of rows, above 0 on
    CUDA only (the interpreter cannot run the PTX prefetch)."""
    if prefetch is None:
        return
    check_whole("prefetch", prefetch, ge=0)
    if prefetch and not image.is_cuda:
        raise ParamError(f"prefetch={prefetch} needs a CUDA image (Triton's interpreter cannot "
                         "run it); use prefetch=0", param="prefetch")
    if prefetch and torch.version.hip:
        raise ParamError(f"prefetch={prefetch} is PTX, for NVIDIA GPUs only; use prefetch=0",
                         param="prefetch")


def _chosen(candidates: tuple[tuple, ...], default: str, variant: str, unroll: int | None,
            prefetch: int | None, registers: int | None = None) -> tuple[tuple, ...]:
    """The ``(variant, unroll, prefetch[, registers])`` candidates that fit an explicit
    ``variant`` (or ``"auto"``), ``unroll``, ``prefetch`` and ``registers`` (``None``: any; a
    candidate without a fourth item takes no cap, ``0``); the one asked for when no candidate
    is it (``default`` for ``"auto"``)."""
    fit = tuple(cand for cand in candidates
                if variant in ("auto", cand[0]) and unroll in (None, cand[1])
                and prefetch in (None, cand[2]) and registers in (None, (*cand, 0)[3]))
    if fit:
        return fit
    asked = (default if variant == "auto" else variant, 1 if unroll is None else unroll,
             prefetch or 0)
    return ((*asked, registers or 0) if len(candidates[0]) > 3 else asked,)


def _check_image(image: Tensor, name: str = "image") -> None:
    if image.ndim != 4 or image.dtype != torch.float32 or not image.is_contiguous():
        raise ShapeError(
            f"{name} must be a contiguous float32 (B, C, H, W) tensor for the Triton kernels, got "
            f"{image.dtype} of shape {tuple(image.shape)}"
        )
    if image.shape[1] > MAX_CHANNELS and name == "image":
        raise ShapeError(f"the seed kernels take at most {MAX_CHANNELS} channels, got {image.shape[1]}")
    if image.shape[-1] < 2 or image.shape[-2] < 2:
        raise ShapeError(f"{name} must be at least 2x2 pixels, got {image.shape[-1]}x{image.shape[-2]}")


def _params(kappa: Tensor, dt: Tensor) -> Tensor:
    """``(N, 3)`` float32 rows ``(kappa^2, kappa*sqrt(2), dt)``, from float64 like the eager code."""
    k = kappa.to(torch.float64)
    return torch.stack([k * k, k * _SQRT2, dt.to(torch.float64)], dim=-1).to(torch.float32)


def _scalars(kappa: float, dt: float) -> tuple[float, float, float]:
    """``(kappa^2, kappa*sqrt(2), dt)`` formed in float64 as the eager code does (Triton then
    passes them as float32 kernel arguments: no tensor, no host-to-device copy per step)."""
    kappa = float(kappa)
    return kappa * kappa, kappa * _SQRT2, float(dt)


def seed_forward_triton(image: Tensor, operator: Tensor, *, kappa: float | Tensor,
                        dt: float | Tensor, conduction: str = "exp", store_g: bool = True,
                        block: tuple[int, int] | None = None, num_warps: int = 4,
                        variant: Literal["auto", "tiles", "rows", "split"] = "auto",
                        unroll: int = ROWS_UNROLL, prefetch: int = 0
                        ) -> tuple[Tensor, Tensor | None]:
    """Seed-scheme step in one Triton pass; per-image operators and parameters for sweeps.

    Same formula as :func:`minart.diffusion.seed_step`:
    ``g = K * reflect_pad(I)``, ``I' = clamp(I + dt g c, 0, 1)``.

    Args:
        image: ``(B, C, H, W)`` contiguous float32, ``C <= 4``, ``H, W >= 2``; a batch of 1 is
            shared by every variant of a sweep.
        operator: ``(C, C, 3, 3)`` shared, or ``(N, C, C, 3, 3)`` one per variant, float32, on
            the image's device or on the host (CPU). A shared operator on the host can reach the
            all-channel strip kernels as scalar kernel arguments (:func:`_kernel_weights`:
            fewer registers, the same bits), which ``"auto"`` times against reading it from
            memory (:func:`_with_arguments`); an explicit ``"rows"`` takes the arguments.
        kappa: float, or ``(N,)`` tensor of one value per variant (> 0).
        dt: float, or ``(N,)`` tensor.
        conduction: ``"exp"``, ``"inverse"`` or ``"tukey"``.
        store_g: also return ``g`` (else ``None``; saves a write pass).
        block: tile ``(BLOCK_H, BLOCK_W)``, powers of two (default :data:`DEFAULT_BLOCK`); for
            ``variant="rows"`` or ``"split"`` the rows a program walks and its strip width
            (default :data:`ROWS_BLOCK`).
        num_warps: warps per program.
        variant: ``"tiles"`` (one tile per program), ``"rows"`` (row-marching), ``"split"``
            (row-marching, one output channel a program) or ``"auto"`` (the fastest on this GPU
            and shape, timed on first use: :func:`_auto`; with an explicit ``block``,
            ``"tiles"``); all give the same result, bit for bit.
        unroll: row-loop unroll factor of the strip variants (see :data:`ROWS_UNROLL`).
        prefetch: rows ahead that the strip variants ask L2 for (``0``: none; CUDA only;
            ``"auto"`` times it among its candidates). The same bits either way.

    Returns:
        ``(new_image, g)``, each ``(max(B, N), C, H, W)``.

    Raises:
        ParamError: an unknown ``variant``; ``prefetch`` not a whole number, or above 0 off CUDA.
        ShapeError: tensors of the wrong shape, dtype or device, or batches that differ.

    Example:
        >>> from minart.diffusion import laplacian_operator  # CUDA (or TRITON_INTERPRET=1)
        >>> x = torch.rand(1, 3, 64, 64, device="cuda")  # doctest: +SKIP
        >>> k = laplacian_operator(3, device="cuda")  # doctest: +SKIP
        >>> new, g = seed_forward_triton(x, k, kappa=0.2, dt=0.2)  # doctest: +SKIP
        >>> sweep, _ = seed_forward_triton(x, torch.stack([k, 0.5 * k]), kappa=torch.tensor([0.2, 0.1]),
        ...                                dt=0.2, store_g=False)  # doctest: +SKIP
        >>> sweep.shape  # doctest: +SKIP
        torch.Size([2, 3, 64, 64])
    """
    _check_variant(variant, ("auto", *VARIANTS, "split"))
    _check_prefetch(prefetch, image)
    operator, params, scalars, b, per_image, kv = _seed_inputs(image, operator, kappa, dt)
    return _seed_forward_launch(image, operator, params, scalars, b, per_image=per_image, kv=kv,
                                conduction=conduction, store_g=store_g, block=block,
                                num_warps=num_warps, variant=variant, unroll=unroll,
                                prefetch=prefetch)


def _kernel_weights(operator: Tensor) -> tuple[float, ...] | None:
    """A single ``(C, C, 3, 3)`` operator's values as scalar kernel arguments, when it is on the
    host (CPU); else ``None`` (one operator per image, or one on the GPU: reading it back would
    wait for the device).

    The strip kernels can then take the weights from the kernel's parameter space, which the
    multiply-adds read directly, instead of holding them in registers (sm_90, Triton 3.6, C = 3:
    the one-step strip kernel needs 56 registers instead of 128, for about 9 % more instructions,
    uniform loads of the arguments). The values are the operator's float32 numbers, passed as
    float32: the same bits. On an H100 that was slower than reading the operator from memory
    (stop 22), so ``"auto"`` times both (:func:`_with_arguments`).
    """
    if operator.ndim == 4 and operator.device.type == "cpu":
        return tuple(operator.reshape(-1).tolist())
    return None


def _seed_inputs(image: Tensor, operator: Tensor, kappa: float | Tensor, dt: float | Tensor
                 ) -> tuple[Tensor, Tensor, tuple[float, float, float], int, bool,
                            tuple[float, ...] | None]:
    """Checks the seed kernels' inputs: ``(operator, params, scalars, b, per_image, kv)`` for
    :func:`_seed_forward_launch` (``b`` outputs; ``params`` the per-image rows on the device when
    ``per_image``, else unused; the operator on the image's device, and ``kv`` its values as
    kernel arguments when it was given on the host: :func:`_kernel_weights`)."""
    _check_image(image)
    nb_img, c, _h, _w = image.shape
    if operator.dtype != torch.float32 or operator.device not in (image.device,
                                                                  torch.device("cpu")):
        raise ShapeError("operator must be float32, on the image's device or on the host (CPU)")
    if operator.shape == (c, c, 3, 3):
        nb_op = 1
    elif operator.ndim == 5 and operator.shape[1:] == (c, c, 3, 3):
        nb_op = operator.shape[0]
    else:
        raise ShapeError(f"operator must be ({c}, {c}, 3, 3) or (N, {c}, {c}, 3, 3), got "
                         f"{tuple(operator.shape)}")
    per_image = isinstance(kappa, Tensor) or isinstance(dt, Tensor)
    params = image  # unused unless per_image
    b = max(nb_img, nb_op)
    if per_image:  # a sweep: one (kappa, dt) per variant, read by the kernel from a small tensor
        kap = torch.as_tensor(kappa, dtype=torch.float64).reshape(-1)  # () -> (1,) or (N,)
        dts = torch.as_tensor(dt, dtype=torch.float64).reshape(-1)  # () -> (1,) or (N,)
        b = max(b, kap.numel(), dts.numel())
        for name, n in (("kappa", kap.numel()), ("dt", dts.numel())):
            if n not in (1, b):
                raise ShapeError(f"{name} has {n} entries; every batched input must have 1 or {b}")
        params = _params(kap.expand(b), dts.expand(b)).to(image.device).contiguous()
        kappa, dt = float(kap[0]), float(dts[0])
    for name, n in (("image batch", nb_img), ("operator batch", nb_op)):
        if n not in (1, b):
            raise ShapeError(f"{name} has {n} entries; every batched input must have 1 or {b}")
    kv = _kernel_weights(operator)
    return (operator.to(image.device).contiguous(), params, _scalars(kappa, dt), b, per_image,
            kv)


def _seed_forward_launch(image: Tensor, operator: Tensor, params: Tensor,
                         scalars: tuple[float, float, float], b: int, *, per_image: bool,
                         conduction: str, store_g: bool, block: tuple[int, int] | None,
                         num_warps: int, variant: str, unroll: int, out: Tensor | None = None,
                         prefetch: int = 0, kv: tuple[float, ...] | None = None
                         ) -> tuple[Tensor, Tensor | None]:
    """The launch behind :func:`seed_forward_triton`, for inputs :func:`_seed_inputs` has
    checked: ``b`` outputs from a batch of 1 or ``b`` images and of 1 or ``b`` operators; ``params``
    the ``(b, 3)`` device rows of :func:`_params` when ``per_image``; the new image goes to ``out``
    when given; ``kv``, the operator's values as arguments of the all-channel strip kernel. Queues
    the kernel without waiting for the device (except the first ``"auto"`` call of a shape, which
    times the candidates)."""
    nb_img, c, h, w = image.shape
    nb_op = operator.shape[0] if operator.ndim == 5 else 1
    new = _empty((b, c, h, w), like=image) if out is None else out
    g = _empty((b, c, h, w), like=image) if store_g else new

    def launch(variant: str, unroll: int = ROWS_UNROLL, ahead: int = 0,
               args: int | None = None) -> None:
        # args: the operator's values as kernel arguments (1) or read from memory (0); None, as
        # kv says (an explicit variant)
        strips = variant in ("rows", "split")
        blk = _block_for(w, block, ROWS_BLOCK if strips else DEFAULT_BLOCK)
        n_tiles, nb, n_tw, _ = _grid(h, w, b, blk)
        kernel, shape = ((_seed_fwd_kernel, dict(BLOCK_H=blk[0], BLOCK_W=blk[1])) if not strips
                         else (_seed_fwd_split_kernel if variant == "split"
                               else _seed_fwd_rows_kernel,
                               dict(ROWS=blk[0], BLOCK_W=blk[1], UNROLL=unroll,
                                    PREFETCH=ahead)))
        if variant == "rows" and kv is not None and args != 0:
            shape.update(kv=kv, KV=True)
        kernel[(n_tiles * c if variant == "split" else n_tiles, nb)](
            image, operator, params, new, g, h, w, n_tw, c * h * w if nb_img > 1 else 0,
            c * c * 9 if nb_op > 1 else 0, *scalars,
            C=c, COND=COND_CODES[conduction], STORE_G=store_g, PER_IMAGE=per_image,
            num_warps=num_warps, **shape, **_EXACT,
        )

    choice = (variant, unroll, prefetch)
    if variant == "auto":  # an explicit block is a tile shape
        choice = ("tiles", 1) if block is not None else _auto(
            ("seed", b, nb_img, nb_op, c, h, w, conduction, store_g, per_image, num_warps,
             kv is not None),
            image.device, launch, (new, g) if store_g else (new,),
            _SEED_CANDIDATES if kv is None else _with_arguments(_SEED_CANDIDATES, 3))
    launch(*choice)
    return new, (g if store_g else None)


STEP_VARIANTS = ("single", "pairs")
"""How :func:`seed_steps_triton` and :func:`classic_steps_triton` run several steps: one pass per
step (``"single"``, each the one-step ``"auto"`` choice) or two steps per pass (``"pairs"``, the
two-step strip kernels, then one single step when the count is odd)."""

_STEP_CANDIDATES = (("single", 1), ("pairs", 1), ("pairs", 3))
"""``(variant, unroll)`` pairs that ``"auto"`` times for two steps: all write the same bits."""


PAIRS_BLOCK = (32, 32)
"""``(rows, BLOCK_W)`` of the two-step kernels: a program walks 32 rows of ``num_warps`` strips
of 32 lanes side by side, one strip per warp, each storing its 30 inner columns. On an H200 at
4096^2 the seed scheme's pair ran at 1.69x the copy time per step against 2.11x with 64 rows."""


def _steps_block(w: int, block: tuple[int, int] | None, num_warps: int
                 ) -> tuple[int, int, int, int]:
    """``(rows, BLOCK_W, strips, n_tw)`` of a two-step kernel: ``strips`` strips of ``BLOCK_W``
    lanes per program (one per warp; fewer for a narrow image), each storing ``BLOCK_W - 2``
    columns, and ``n_tw`` programs across the image."""
    rows, bw = _block_for(w + 2, block, PAIRS_BLOCK)
    if bw < 4:
        raise ParamError(f"block={block!r}: a two-step strip needs at least 4 columns",
                         param="block")
    strips = min(num_warps, triton.next_power_of_2(triton.cdiv(w, bw - 2)))
    return rows, bw, strips, triton.cdiv(w, strips * (bw - 2))


def _run_steps(state: dict, steps: int, single, pair_kernel, *, variant: str, unroll: int,
               key: tuple, shape: tuple[int, ...], like: Tensor,
               candidates: tuple[tuple, ...] = _STEP_CANDIDATES) -> Tensor:
    """``steps`` steps from ``state["x"]``: pairs, then one ``single()`` step when ``steps`` is odd.

    ``single(out=None)`` advances ``state["x"]`` one step (into ``out`` if given);
    ``pair_kernel(x, out, unroll[, args])`` launches the two-step kernel (``args``: a fourth
    item of the ``candidates``, :func:`_with_arguments`). With ``variant="auto"`` the first pair
    is timed every way by :func:`_auto` under ``key`` (from the same input, into a scratch
    output) before the run starts.
    """

    def pair(variant: str, unroll: int, args: int | None = None,
             out: Tensor | None = None) -> None:
        if variant == "single":
            single()
            single(out)
            return
        new = _empty(shape, like=like) if out is None else out
        pair_kernel(state["x"], new, unroll, *(() if args is None else (args,)))
        state["x"] = new

    choice = (variant, unroll)
    if variant == "auto" and steps >= 2:
        start = state["x"]
        scratch = _empty(shape, like=like)

        def trial(variant: str, unroll: int, args: int | None = None) -> None:
            state["x"] = start
            pair(variant, unroll, args, scratch)

        choice = _auto(key, like.device, trial, (scratch,), candidates)
        state["x"] = start
    for _ in range(steps // 2):
        pair(*choice)
    if steps % 2:
        single()
    return state["x"]


def seed_steps_triton(image: Tensor, operator: Tensor, *, steps: int, kappa: float | Tensor,
                      dt: float | Tensor, conduction: str = "exp",
                      variant: Literal["auto", "single", "pairs"] = "auto",
                      block: tuple[int, int] | None = None, num_warps: int = 4,
                      unroll: int = ROWS_UNROLL) -> Tensor:
    """``steps`` seed-scheme steps, two per pass over memory where that is faster (temporal
    blocking); bit-identical to ``steps`` calls of :func:`seed_forward_triton`.

    Args:
        image: as :func:`seed_forward_triton` (a batch of 1 is shared by every variant).
        operator: ``(C, C, 3, 3)`` or ``(N, C, C, 3, 3)``, as for :func:`seed_forward_triton`
            (on the host, a shared one may reach the strip kernels as arguments).
        steps: number of steps (>= 0).
        kappa: float or ``(N,)`` tensor (> 0).
        dt: float or ``(N,)`` tensor.
        conduction: ``"exp"``, ``"inverse"`` or ``"tukey"``.
        variant: ``"single"``, ``"pairs"`` (see :data:`STEP_VARIANTS`) or ``"auto"`` (the
            faster of the two on this GPU and shape, timed on the first pair: :func:`_auto`;
            ``"single"`` off CUDA).
        block: ``(rows, BLOCK_W)`` of the two-step kernels (default :data:`PAIRS_BLOCK`).
        num_warps: warps per program (two-step kernels: strips per program).
        unroll: row-loop unroll factor of ``variant="pairs"``.

    Returns:
        The image after ``steps`` steps, ``(max(B, N), C, H, W)``.

    Raises:
        ShapeError: as :func:`seed_forward_triton`.
        ParamError: an unknown ``variant``, a bad ``steps`` or ``block``.

    Example:
        >>> from minart.diffusion import laplacian_operator  # CUDA (or TRITON_INTERPRET=1)
        >>> x = torch.rand(1, 3, 64, 64, device="cuda")  # doctest: +SKIP
        >>> k = laplacian_operator(3, device="cuda")  # doctest: +SKIP
        >>> a = seed_steps_triton(x, k, steps=4, kappa=0.2, dt=0.2, variant="pairs")  # doctest: +SKIP
        >>> b = seed_steps_triton(x, k, steps=4, kappa=0.2, dt=0.2, variant="single")  # doctest: +SKIP
        >>> torch.equal(a, b)  # doctest: +SKIP
        True
    """
    _check_variant(variant, ("auto", *STEP_VARIANTS))
    check_whole("steps", steps, ge=0)
    operator, params, scalars, b, per_image, kv = _seed_inputs(image, operator, kappa, dt)
    return _seed_steps_launch(image, operator, params, scalars, b, steps=steps,
                              per_image=per_image, conduction=conduction, variant=variant,
                              block=block, num_warps=num_warps, unroll=unroll, kv=kv)


def _seed_steps_launch(image: Tensor, operator: Tensor, params: Tensor,
                       scalars: tuple[float, float, float], b: int, *, steps: int,
                       per_image: bool, conduction: str, variant: str,
                       block: tuple[int, int] | None = None, num_warps: int = 4,
                       unroll: int = ROWS_UNROLL, kv: tuple[float, ...] | None = None) -> Tensor:
    """The launches behind :func:`seed_steps_triton` (inputs as :func:`_seed_forward_launch`
    takes them), queued without waiting for the device."""
    _, c, h, w = image.shape
    rows, bw, strips, n_tw = _steps_block(w, block, num_warps)
    nb_op = operator.shape[0] if operator.ndim == 5 else 1
    state = {"x": image if steps else image.expand(b, -1, -1, -1).clone()}

    def single(out: Tensor | None = None) -> None:
        state["x"], _ = _seed_forward_launch(
            state["x"], operator, params, scalars, b, per_image=per_image, conduction=conduction,
            store_g=False, block=None, num_warps=num_warps, variant="auto", unroll=ROWS_UNROLL,
            out=out, kv=kv)

    def pair_kernel(x: Tensor, new: Tensor, unroll: int, args: int | None = None) -> None:
        values = kv is not None and args != 0  # None: as kv says (an explicit variant)
        _seed_fwd2_rows_kernel[(triton.cdiv(h, rows) * n_tw, b)](
            x, operator, params, new, h, w, n_tw, c * h * w if x.shape[0] > 1 else 0,
            c * c * 9 if nb_op > 1 else 0, *scalars, C=c, COND=COND_CODES[conduction],
            PER_IMAGE=per_image, ROWS=rows, STRIPS=strips, BLOCK_W=bw, UNROLL=unroll,
            num_warps=strips, **(dict(kv=kv, KV=True) if values else {}), **_EXACT)

    key = ("seed-steps", b, image.shape[0], nb_op, c, h, w, conduction, per_image, num_warps,
           kv is not None)
    return _run_steps(state, steps, single, pair_kernel, variant=variant, unroll=unroll, key=key,
                      shape=(b, c, h, w), like=image,
                      candidates=_STEP_CANDIDATES if kv is None
                      else _with_arguments(_STEP_CANDIDATES, 2))


def seed_backward_triton(image: Tensor, operator: Tensor, g: Tensor, grad_new: Tensor | None,
                         grad_g: Tensor | None, *, kappa: float, dt: float,
                         conduction: str = "exp", need_image_grad: bool = True,
                         block: tuple[int, int] | None = None,
                         num_warps: int = 4) -> tuple[Tensor | None, Tensor]:
    """Gradients ``(dL/dI, dL/dK)`` of the seed step from the upstream ``dL/dI'`` and ``dL/dg``.

    ``dL/dg_total = grad_g + grad_new [0 <= u <= 1] dt (c + g c'(g))`` with ``u = I + dt g c``;
    ``dL/dK[o,i,dy,dx] = sum_{b,y,x} dL/dg_o * reflect_pad(I)_i[y+dy, x+dx]`` (per-tile partial
    sums, then one fixed-order ``torch.sum``); ``dL/dI = grad_new [0<=u<=1] + K^T * dL/dg`` with
    the reflect padding's adjoint.

    Args:
        image: the step's input ``(B, C, H, W)``.
        operator: ``(C, C, 3, 3)``.
        g: the forward's ``g``.
        grad_new: ``dL/dI'`` or ``None``.
        grad_g: ``dL/dg`` or ``None``.
        kappa: conduction scale.
        dt: time step.
        conduction: ``"exp"`` or ``"tukey"`` (``"inverse"`` has no kernel backward).
        need_image_grad: compute ``dL/dI`` (else ``None``, one pass fewer).
        block: tile of kernel A.
        num_warps: warps per program.

    Returns:
        ``(dL/dI or None, dL/dK)``.

    Raises:
        ParamError: ``conduction="inverse"``.

    Example:
        >>> from minart.diffusion import laplacian_operator  # CUDA (or TRITON_INTERPRET=1)
        >>> x = torch.rand(1, 3, 64, 64, device="cuda")  # doctest: +SKIP
        >>> k = laplacian_operator(3, device="cuda")  # doctest: +SKIP
        >>> new, g = seed_forward_triton(x, k, kappa=0.2, dt=0.2)  # doctest: +SKIP
        >>> di, dk = seed_backward_triton(x, k, g, torch.ones_like(new), None, kappa=0.2,
        ...                               dt=0.2)  # doctest: +SKIP
        >>> dk.shape  # doctest: +SKIP
        torch.Size([3, 3, 3, 3])
    """
    if conduction not in ("exp", "tukey"):
        raise ParamError(f"conduction={conduction!r} has no Triton backward; use 'exp' or 'tukey'",
                         param="conduction")
    _check_image(image)
    b, c, h, w = image.shape
    block = _block_for(w, block, LOSS_BLOCK)
    n_tiles, nb, n_tw, _ = _grid(h, w, b, block)
    gg = _empty(image.shape, like=image)
    di = _empty(image.shape, like=image)
    part = _empty((b * n_tiles, c * c * 9), like=image)
    gn = grad_new.contiguous() if grad_new is not None else image
    ggi = grad_g.contiguous() if grad_g is not None else image
    _seed_bwd_a_kernel[(n_tiles, nb)](
        image, g, gn, ggi, gg, di, part, h, w, n_tw, n_tiles, *_scalars(kappa, dt), C=c,
        COND=COND_CODES[conduction], HAS_GN=grad_new is not None, HAS_GG=grad_g is not None,
        BLOCK_H=block[0], BLOCK_W=block[1], num_warps=num_warps, **_EXACT,
    )
    dk = part.sum(dim=0).reshape(c, c, 3, 3)  # (C*C*9,) -> (C, C, 3, 3)
    if not need_image_grad:
        return None, dk
    _apply_adjoint(gg, operator, di, num_warps=num_warps)
    return di, dk


def _apply_adjoint(gg: Tensor, operator: Tensor, di: Tensor, *, num_warps: int = 4) -> None:
    """``di += conv_transpose(gg, K)`` folded through the reflect padding, in place."""
    b, c, h, w = gg.shape
    block = _block_for(w, None, DEFAULT_BLOCK)
    n_tiles, nb, n_tw, _ = _grid(h, w, b, block)
    _seed_bwd_b_kernel[(n_tiles, nb)](gg, operator.contiguous(), di, h, w, n_tw, C=c,
                                      BLOCK_H=block[0], BLOCK_W=block[1], num_warps=num_warps,
                                      **_EXACT)


def seed_loss_triton(image: Tensor, image0: Tensor, operator: Tensor, *, kappa: float, dt: float,
                     conduction: str = "exp", weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
                     scale: float = 1.0, need_image_grad: bool = False,
                     block: tuple[int, int] | None = None, num_warps: int = 4,
                     variant: Literal["auto", "rows", "split", "twopass", "ahead", "tiles",
                                      "persistent"] = "auto",
                     n_programs: int | None = None, unroll: int | None = None,
                     prefetch: int | None = None, registers: int | None = None
                     ) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """Fused learned step: ``I'``, the loss ``L``, ``dL/dK`` and ``dL/dI``.

    ``L = scale * sum(w_f (I' - I_0)^2 + w_e |g| + w_i I'^2)`` with ``(w_f, w_e, w_i) = weights``
    (the post's energy: all 1, ``scale`` 1 for a sum, ``1/numel`` for a mean).

    The variants compute the same ``I'`` (bit for bit) and the same sums (up to the order of
    float additions); each is deterministic. ``"rows"``: each program walks a strip of
    :data:`LOSS_ROWS_BLOCK` with a 3-row register window and adds the sums per pixel into
    registers, reducing them once per program (sm_90, Triton 3.6, C = 3: 255 registers; unrolled
    3 times it spills 16 bytes, not unrolled none). ``"split"``: the same strips with one output
    channel a program (``C`` programs a strip, each with ``C * 9`` weights and accumulators
    instead of ``C * C * 9``; fewer registers, more programs per SM, ``C`` times the window's
    loads), adding the same numbers in the same order into the same slots: the same bits as
    ``"rows"``. ``"twopass"``: the same strips in two kernels, the first storing ``I'``, the loss
    sums and ``dL/dg`` (one more image written), the second, one input channel a program,
    reading ``dL/dg`` back with the image to form ``dL/dK`` (two more images read); neither
    holds both the weights and the accumulators (sm_90, C = 3: 167 and 64 registers), again the
    same bits. ``"ahead"``: ``"rows"`` loading ``I_0`` a row before its use, as it loads the
    image's window, so no row waits for ``I_0`` from DRAM (a few values spill: 8 bytes not
    unrolled), the same bits. ``"auto"``
    (default): the fastest of these, with its row loop unrolled :data:`ROWS_UNROLL` times or
    not, prefetching its rows into L2 or not, and ``"rows"`` and ``"ahead"`` held to
    :data:`LOSS_REGISTERS` registers or not, timed on the first CUDA call of a shape
    (:data:`_LOSS_CANDIDATES`; the outputs of each are compared bit for bit when timed, as for
    the forward step); ``"rows"`` off CUDA. ``"tiles"``: one program per tile
    (:data:`LOSS_BLOCK`), each reducing its sums across the block (sm_90, Triton 3.6: 255
    registers and 1112 bytes of spills for ``C = 3``; measured 34.7x the copy time on an H200).
    ``"persistent"``: ``n_programs`` programs, program ``p`` taking tiles ``p, p + n_programs,
    ...`` (:data:`PERSISTENT_BLOCK`) into per-pixel register accumulators. Only ``"auto"``,
    ``"rows"``, ``"split"``, ``"twopass"`` and ``"ahead"`` may be chosen between at run time: the
    others sum in other orders,
    and the same recipe must render the same bits on every run.

    Args:
        image: ``I_{t-1}``, ``(B, C, H, W)``.
        image0: ``I_0``, same shape.
        operator: ``(C, C, 3, 3)``.
        kappa: conduction scale.
        dt: time step.
        conduction: ``"exp"`` or ``"tukey"``.
        weights: ``(w_f, w_e, w_i)``, the weights of the fidelity, edge and energy terms.
        scale: factor on the whole loss (``1/numel`` for a mean).
        need_image_grad: also return ``dL/dI`` (one more pass).
        block: tile.
        num_warps: warps per program.
        variant: ``"auto"``, ``"rows"``, ``"split"``, ``"twopass"``, ``"ahead"``, ``"tiles"``
            or ``"persistent"``.
        n_programs: programs of the persistent variant (default
            :data:`PERSISTENT_PROGRAMS_PER_SM` per SM on CUDA, :data:`PERSISTENT_PROGRAMS_CPU`
            elsewhere; never more than there are tiles).
        unroll: row-loop unroll factor of the strip kernels (default: the faster of 1 and
            :data:`ROWS_UNROLL`, timed on the first CUDA call of a shape; the same bits).
        prefetch: rows ahead that the strip kernels ask L2 for (``0``: none; default: timed
            on the first CUDA call of a shape, none off CUDA; the same bits). CUDA only.
        registers: most registers a thread of the strip kernels may use (ptxas spills the rest
            to local memory), 32 to 255, or ``0`` for no cap (default: timed on the first CUDA
            call of a shape, no cap off CUDA; the same bits). NVIDIA only; Triton's
            interpreter ignores it.

    Returns:
        ``(new_image, loss (0-dim), dL/dK (C, C, 3, 3), dL/dI or None)``.

    Raises:
        ParamError: ``conduction="inverse"``, an unknown ``variant``, ``n_programs < 1``,
            ``prefetch`` not a whole number, or above 0 off CUDA, ``registers`` not 0 or a
            whole number from 32 to 255.
        ShapeError: bad shapes.

    Example:
        >>> from minart.diffusion import laplacian_operator  # CUDA (or TRITON_INTERPRET=1)
        >>> x = torch.rand(1, 3, 64, 64, device="cuda")  # doctest: +SKIP
        >>> k = laplacian_operator(3, device="cuda")  # doctest: +SKIP
        >>> new, loss, dk, _ = seed_loss_triton(x, x, k, kappa=0.2, dt=0.2)  # doctest: +SKIP
        >>> loss.shape, dk.shape  # doctest: +SKIP
        (torch.Size([]), torch.Size([3, 3, 3, 3]))
        >>> _, loss_p, dk_p, _ = seed_loss_triton(x, x, k, kappa=0.2, dt=0.2,
        ...                                       variant="persistent")  # doctest: +SKIP
        >>> torch.allclose(dk_p, dk, rtol=1e-5, atol=1e-6)  # doctest: +SKIP
        True
    """
    if conduction not in ("exp", "tukey"):
        raise ParamError(f"conduction={conduction!r} has no Triton backward; use 'exp' or 'tukey'",
                         param="conduction")
    _check_variant(variant, ("auto", "rows", "split", "twopass", "ahead", "tiles", "persistent"))
    if n_programs is not None and (isinstance(n_programs, bool) or int(n_programs) != n_programs
                                   or n_programs < 1):
        raise ParamError(f"n_programs={n_programs!r} must be an integer >= 1", param="n_programs")
    _check_prefetch(prefetch, image)
    if registers is not None:
        check_whole("registers", registers, ge=0)
        if not (registers == 0 or 32 <= registers <= 255):
            raise ParamError(f"registers={registers} must be 0 (no cap) or from 32 to 255",
                             param="registers")
    _check_image(image)
    _check_image(image0, "image0")
    if image0.shape != image.shape:
        raise ShapeError(f"image0 {tuple(image0.shape)} must match the image {tuple(image.shape)}")
    b, c, h, w = image.shape
    w_f, w_e, w_i = (float(v) * float(scale) for v in weights)
    persistent = variant == "persistent"
    default = {"tiles": LOSS_BLOCK, "persistent": PERSISTENT_BLOCK}.get(variant, LOSS_ROWS_BLOCK)
    block = _block_for(w, block, default)
    n_tiles, nb, n_tw, _ = _grid(h, w, b, block)
    new = _empty(image.shape, like=image)
    gg = _empty(image.shape, like=image) if need_image_grad else new
    di = _empty(image.shape, like=image) if need_image_grad else new
    args = (image, image0, operator.contiguous(), new, gg, di)
    consts = dict(C=c, COND=COND_CODES[conduction], NEED_DI=need_image_grad, BLOCK_H=block[0],
                  BLOCK_W=block[1], num_warps=num_warps, **_EXACT)
    if persistent:
        total = b * n_tiles
        programs = min(int(n_programs or _persistent_programs(image.device)), total)
        part = _empty((programs, c + c * c * 9), like=image)
        _seed_loss_persistent_kernel[(programs,)](
            *args, part, h, w, n_tw, n_tiles, total, programs, *_scalars(kappa, dt), w_f, w_e,
            w_i, **consts,
        )
    elif variant in ("auto", "rows", "split", "twopass", "ahead"):
        part = _empty((b * n_tiles, c + c * c * 9), like=image)
        consts.update(ROWS=consts.pop("BLOCK_H"))

        def launch(strips: str, factor: int, ahead: int = 0, regs: int = 0) -> None:
            cap = {"maxnreg": regs} if regs else {}
            if strips == "twopass":  # dL/dg through memory: its own buffer unless dL/dI's
                dg = gg if need_image_grad else _empty(image.shape, like=image)
                _seed_loss_pass_kernel[(n_tiles, nb)](
                    image, image0, args[2], new, dg, di, part, h, w, n_tw, n_tiles,
                    *_scalars(kappa, dt), w_f, w_e, w_i, UNROLL=factor, PREFETCH=ahead, **consts,
                    **cap,
                )
                _seed_dk_pass_kernel[(n_tiles * c, nb)](
                    image, dg, part, h, w, n_tw, n_tiles, C=c, ROWS=consts["ROWS"],
                    BLOCK_W=consts["BLOCK_W"], UNROLL=factor, PREFETCH=ahead,
                    num_warps=num_warps, **_EXACT, **cap,
                )
                return
            if strips == "split":
                _seed_loss_split_kernel[(n_tiles * c, nb)](
                    *args, part, h, w, n_tw, n_tiles, *_scalars(kappa, dt), w_f, w_e, w_i,
                    UNROLL=factor, PREFETCH=ahead, **consts, **cap,
                )
                return
            _seed_loss_rows_kernel[(n_tiles, nb)](
                *args, part, h, w, n_tw, n_tiles, *_scalars(kappa, dt), w_f, w_e, w_i,
                UNROLL=factor, PREFETCH=ahead, X0_AHEAD=strips == "ahead", **consts, **cap,
            )

        candidates = _chosen(_LOSS_CANDIDATES, "rows", variant, unroll, prefetch, registers)
        choice = candidates[0]
        if len(candidates) > 1:
            key = ("seed-loss", variant, unroll, prefetch, registers, tuple(image.shape),
                   conduction, need_image_grad, block, num_warps)
            outputs = (new, part, gg, di) if need_image_grad else (new, part)
            choice = _auto(key, image.device, launch, outputs, candidates)
        launch(*choice)
    else:
        part = _empty((b * n_tiles, c + c * c * 9), like=image)
        _seed_loss_kernel[(n_tiles, nb)](
            *args, part, h, w, n_tw, n_tiles, *_scalars(kappa, dt), w_f, w_e, w_i, **consts,
        )
    sums = part.sum(dim=0)
    loss = sums[:c].sum()  # the output channels' sums, added in order
    dk = sums[c:].reshape(c, c, 3, 3)  # (C*C*9,) -> (C, C, 3, 3)
    if not need_image_grad:
        return new, loss, dk, None
    _apply_adjoint(gg, operator, di, num_warps=num_warps)
    return new, loss, dk, di


def classic_step_triton(image: Tensor, *, kappa: float, dt: float, conduction: str = "exp",
                        block: tuple[int, int] | None = None, num_warps: int = 4,
                        variant: Literal["auto", "tiles", "rows"] = "auto",
                        unroll: int = ROWS_UNROLL) -> Tensor:
    """Classic Perona-Malik step (zero-flux borders, per channel) in one Triton pass.

    Same formula as :func:`minart.diffusion.classic_step`:
    ``I' = I + dt * sum_{N,S,E,W} c(d) d``.

    Args:
        image: ``(B, C, H, W)`` contiguous float32, ``H, W >= 2``.
        kappa: edge threshold (> 0).
        dt: time step.
        conduction: ``"exp"``, ``"inverse"`` or ``"tukey"``.
        block: tile ``(BLOCK_H, BLOCK_W)`` (``variant="rows"``: rows per program, strip width).
        num_warps: warps per program.
        variant: ``"tiles"``, ``"rows"`` (row-marching) or ``"auto"`` (timed on first use, as in
            :func:`seed_forward_triton`); same result, bit for bit.
        unroll: row-loop unroll factor of ``variant="rows"``.

    Returns:
        ``(B, C, H, W)``.

    Raises:
        ShapeError: not a contiguous float32 4-D tensor.

    Example:
        >>> x = torch.full((1, 3, 8, 8), 0.5, device="cuda")  # CUDA (or TRITON_INTERPRET=1)  # doctest: +SKIP
        >>> classic_step_triton(x, kappa=0.1, dt=0.2).unique().tolist()  # doctest: +SKIP
        [0.5]
    """
    _check_variant(variant, ("auto", *VARIANTS))
    _check_image(image, "classic image")
    return _classic_launch(image, kappa=kappa, dt=dt, conduction=conduction, block=block,
                           num_warps=num_warps, variant=variant, unroll=unroll)


def _classic_launch(image: Tensor, *, kappa: float, dt: float, conduction: str,
                    block: tuple[int, int] | None, num_warps: int, variant: str, unroll: int,
                    out: Tensor | None = None) -> Tensor:
    """The launch behind :func:`classic_step_triton` for a checked image, into ``out`` if given."""
    b, c, h, w = image.shape
    out = _empty(image.shape, like=image) if out is None else out

    def launch(variant: str, unroll: int = ROWS_UNROLL) -> None:
        rows = variant == "rows"
        blk = _block_for(w, block, ROWS_BLOCK if rows else CLASSIC_BLOCK)
        n_tiles, _, n_tw, _ = _grid(h, w, b * c, blk)
        kernel, shape = ((_classic_rows_kernel, dict(ROWS=blk[0], BLOCK_W=blk[1],
                                                     UNROLL=unroll)) if rows else
                         (_classic_kernel, dict(BLOCK_H=blk[0], BLOCK_W=blk[1])))
        kernel[(n_tiles, b * c)](image, out, h, w, n_tw, _inverse_kappa(kappa),
                                 float(kappa) * _SQRT2, float(dt), COND=COND_CODES[conduction],
                                 num_warps=num_warps, **shape, **_EXACT)

    choice = (variant, unroll)
    if variant == "auto":  # an explicit block is a tile shape
        choice = ("tiles", 1) if block is not None else _auto(
            ("classic", b, c, h, w, conduction, num_warps), image.device, launch, (out,))
    launch(*choice)
    return out


def classic_steps_triton(image: Tensor, *, steps: int, kappa: float, dt: float,
                         conduction: str = "exp",
                         variant: Literal["auto", "single", "pairs"] = "auto",
                         block: tuple[int, int] | None = None, num_warps: int = 4,
                         unroll: int = ROWS_UNROLL) -> Tensor:
    """``steps`` classic steps, two per pass over memory where that is faster (temporal
    blocking); bit-identical to ``steps`` calls of :func:`classic_step_triton`.

    Args:
        image: ``(B, C, H, W)`` contiguous float32, ``H, W >= 2``.
        steps: number of steps (>= 0).
        kappa: edge threshold (> 0).
        dt: time step.
        conduction: ``"exp"``, ``"inverse"`` or ``"tukey"``.
        variant: ``"single"``, ``"pairs"`` (see :data:`STEP_VARIANTS`) or ``"auto"`` (timed on
            the first pair, as in :func:`seed_steps_triton`).
        block: ``(rows, BLOCK_W)`` of the two-step kernel (default :data:`PAIRS_BLOCK`).
        num_warps: warps per program (two-step kernel: strips per program).
        unroll: row-loop unroll factor of ``variant="pairs"``.

    Returns:
        ``(B, C, H, W)``.

    Raises:
        ShapeError: not a contiguous float32 4-D tensor.
        ParamError: an unknown ``variant``, a bad ``steps`` or ``block``.

    Example:
        >>> x = torch.rand(1, 3, 64, 64, device="cuda")  # CUDA (or TRITON_INTERPRET=1)  # doctest: +SKIP
        >>> a = classic_steps_triton(x, steps=3, kappa=0.1, dt=0.2, variant="pairs")  # doctest: +SKIP
        >>> torch.equal(a, classic_steps_triton(x, steps=3, kappa=0.1, dt=0.2,
        ...                                     variant="single"))  # doctest: +SKIP
        True
    """
    _check_variant(variant, ("auto", *STEP_VARIANTS))
    check_whole("steps", steps, ge=0)
    _check_image(image, "classic image")
    b, c, h, w = image.shape
    rows, bw, strips, n_tw = _steps_block(w, block, num_warps)
    state = {"x": image if steps else image.clone()}
    one = dict(kappa=kappa, dt=dt, conduction=conduction, block=None, num_warps=num_warps,
               variant="auto", unroll=ROWS_UNROLL)

    def single(out: Tensor | None = None) -> None:
        state["x"] = _classic_launch(state["x"], out=out, **one)

    def pair_kernel(x: Tensor, new: Tensor, unroll: int) -> None:
        _classic2_rows_kernel[(triton.cdiv(h, rows) * n_tw, b * c)](
            x, new, h, w, n_tw, _inverse_kappa(kappa), float(kappa) * _SQRT2, float(dt),
            COND=COND_CODES[conduction], ROWS=rows, STRIPS=strips, BLOCK_W=bw, UNROLL=unroll,
            num_warps=strips, **_EXACT)

    return _run_steps(state, steps, single, pair_kernel, variant=variant, unroll=unroll,
                      key=("classic-steps", b, c, h, w, conduction, num_warps),
                      shape=image.shape, like=image)


# ----------------------------------------------------------------------------------------------
# autograd
# ----------------------------------------------------------------------------------------------


class SeedStep(torch.autograd.Function):
    """``(new, g) = seed_step(image, operator)`` with Triton forward and backward kernels.

    ``SeedStep.apply(image, operator, kappa, dt, conduction)``; gradients flow to ``image`` and
    ``operator`` like the eager :func:`minart.diffusion.seed_step` (conduction ``exp``/``tukey``).
    """

    @staticmethod
    def forward(ctx, image, operator, kappa, dt, conduction):
        new, g = seed_forward_triton(image, operator, kappa=kappa, dt=dt, conduction=conduction)
        ctx.save_for_backward(image, operator, g)
        ctx.params = (kappa, dt, conduction)
        ctx.set_materialize_grads(False)
        return new, g

    @staticmethod
    def backward(ctx, grad_new, grad_g):
        image, operator, g = ctx.saved_tensors
        kappa, dt, conduction = ctx.params
        if grad_new is None and grad_g is None:
            return None, None, None, None, None
        di, dk = seed_backward_triton(image, operator, g, grad_new, grad_g, kappa=kappa, dt=dt,
                                      conduction=conduction,
                                      need_image_grad=ctx.needs_input_grad[0])
        return di, (dk if ctx.needs_input_grad[1] else None), None, None, None


class SeedLossStep(torch.autograd.Function):
    """Fused learned step: ``(new, loss) = apply(image, image0, operator, kappa, dt, conduction,
    weights=(1, 1, 1), scale=1)``.

    ``loss = scale * sum(w_f (new - image0)^2 + w_e |g| + w_i new^2)`` with
    ``g = K * reflect_pad(image)``. The
    forward already computes ``dL/dK`` (and ``dL/dI`` when ``image`` needs it), so the backward
    only scales them by the upstream gradient of ``loss``. ``new`` is returned without a gradient
    path (``minimize`` detaches it for the next step anyway); use :class:`SeedStep` when it needs one.
    """

    @staticmethod
    def forward(ctx, image, image0, operator, kappa, dt, conduction, weights=(1.0, 1.0, 1.0),
                scale=1.0):
        new, loss, dk, di = seed_loss_triton(image, image0, operator, kappa=kappa, dt=dt,
                                             conduction=conduction, weights=weights, scale=scale,
                                             need_image_grad=ctx.needs_input_grad[0])
        ctx.save_for_backward(dk, di if di is not None else dk)
        ctx.has_di = di is not None
        ctx.mark_non_differentiable(new)
        return new, loss

    @staticmethod
    def backward(ctx, grad_new, grad_loss):
        dk, di = ctx.saved_tensors
        di_out = di * grad_loss if ctx.has_di else None
        return di_out, None, dk * grad_loss, None, None, None, None, None
