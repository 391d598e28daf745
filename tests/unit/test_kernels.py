"""Fast paths of minart.kernels against the eager references.

Three layers:
- in-process CPU tests of the dispatcher (mode, path choice, errors, eager fallbacks);
- the Triton kernels on CPU through Triton's interpreter, each check in a fresh subprocess with
  ``TRITON_INTERPRET=1`` set before triton is imported (``slow``: seconds to two minutes each,
  run side by side, one per core);
- the same checks on CUDA (``gpu``), plus bit-identical determinism and the dispatcher's choice.

The ``_check_*`` functions hold the comparisons once; the interpreter and GPU tests call them.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from minart.diffusion import classic_step, laplacian_operator, perona_malik, seed_step
from minart.errors import ParamError, ShapeError
from minart.fractal import fractal_field
from minart.kernels import (
    CPU_COMPILE_MIN_WORK,
    classic_step_fast,
    fractal_field_fast,
    kernels_mode,
    perona_malik_step_fast,
    seed_loss_step,
    seed_step_fast,
    seed_sweep,
    step_path,
)
from minart.progress import notes_to

HERE = Path(__file__).resolve()
FWD_TOL = dict(atol=1e-5, rtol=1e-5)


@pytest.fixture(autouse=True)
def _exact_cuda_reference():
    """The eager reference convolves with cuDNN, which rounds to TF32 by default: not here."""
    if not torch.cuda.is_available():
        yield
        return
    previous = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = previous


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def _inputs(device: str, shape=(1, 3, 13, 17), seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=gen)
    c = shape[1]
    k = laplacian_operator(c) + 0.2 * torch.randn(c, c, 3, 3, generator=gen)
    x0 = torch.rand(shape, generator=gen)
    w1 = torch.randn(shape, generator=gen)
    w2 = torch.randn(shape, generator=gen)
    return [t.to(device) for t in (x, k, x0, w1, w2)]


# ------------------------------------------------------------------------------------------------
# checks shared by the interpreter (CPU) and CUDA tests; each raises AssertionError on a mismatch


def _check_forward(device: str, shapes=((1, 3, 13, 17), (2, 1, 2, 5))) -> None:
    from minart.kernels import triton_diffusion as td

    for shape in shapes:
        x, k, *_ = _inputs(device, shape)
        for cond in ("exp", "inverse", "tukey"):
            ref_new, ref_g = seed_step(x, k, kappa=0.3, dt=0.2, conduction=cond)
            new, g = td.seed_forward_triton(x, k, kappa=0.3, dt=0.2, conduction=cond,
                                            block=(4, 8))
            torch.testing.assert_close(new, ref_new, **FWD_TOL)
            torch.testing.assert_close(g, ref_g, **FWD_TOL)
            ref = classic_step(x, kappa=0.1, dt=0.2, conduction=cond)
            torch.testing.assert_close(td.classic_step_triton(x, kappa=0.1, dt=0.2,
                                                              conduction=cond, block=(4, 8)),
                                       ref, **FWD_TOL)
    # kappa so small that 1/kappa overflows float32: flat regions still do not diffuse, the
    # edges do not either (conduction 0), and nothing turns into nan
    x, *_ = _inputs(device)
    x[..., :4, :] = 0.5
    for cond in ("exp", "inverse"):
        out = td.classic_step_triton(x, kappa=1e-40, dt=0.2, conduction=cond, block=(4, 8))
        torch.testing.assert_close(out, classic_step(x, kappa=1e-40, dt=0.2, conduction=cond),
                                   **FWD_TOL)
    # a sweep: one image, three operators and parameter pairs, one launch
    x, k, *_ = _inputs(device)
    ops = torch.stack([k, laplacian_operator(3, device=device), 0.5 * k])
    kap = torch.tensor([0.3, 0.2, 0.5], dtype=torch.float64)
    dts = torch.tensor([0.2, 0.1, 0.25], dtype=torch.float64)
    out, _ = td.seed_forward_triton(x, ops, kappa=kap, dt=dts, store_g=False, block=(4, 8))
    for n in range(3):
        ref, _ = seed_step(x, ops[n], kappa=float(kap[n]), dt=float(dts[n]))
        torch.testing.assert_close(out[n:n + 1], ref, **FWD_TOL)


def _check_backward(device: str, shape=(2, 3, 13, 17)) -> None:
    from minart.kernels import triton_diffusion as td

    x, k, x0, w1, w2 = _inputs(device, shape)
    for cond in ("exp", "tukey"):
        xe, ke = x.clone().requires_grad_(), k.clone().requires_grad_()
        ne, ge = seed_step(xe, ke, kappa=0.3, dt=0.2, conduction=cond)
        ((ne * w1).sum() + (ge * w2).sum()).backward()
        xt, kt = x.clone().requires_grad_(), k.clone().requires_grad_()
        nt, gt = td.SeedStep.apply(xt, kt, 0.3, 0.2, cond)
        ((nt * w1).sum() + (gt * w2).sum()).backward()
        assert _rel(xt.grad, xe.grad) < 1e-4, (cond, _rel(xt.grad, xe.grad))
        assert _rel(kt.grad, ke.grad) < 1e-4, (cond, _rel(kt.grad, ke.grad))
        # the fused learned step: loss and both gradients
        xe, ke = x.clone().requires_grad_(), k.clone().requires_grad_()
        ne, ge = seed_step(xe, ke, kappa=0.3, dt=0.2, conduction=cond)
        le = ((ne - x0) ** 2 + ge.abs() + ne ** 2).sum()
        le.backward()
        xt, kt = x.clone().requires_grad_(), k.clone().requires_grad_()
        nt, lt = td.SeedLossStep.apply(xt, x0, kt, 0.3, 0.2, cond)
        lt.backward()
        torch.testing.assert_close(nt, ne.detach(), **FWD_TOL)
        assert _rel(lt.detach(), le.detach()) < 1e-5
        assert _rel(xt.grad, xe.grad) < 1e-4, (cond, _rel(xt.grad, xe.grad))
        assert _rel(kt.grad, ke.grad) < 1e-4, (cond, _rel(kt.grad, ke.grad))
    # weighted terms and a mean, through the dispatcher's eager composition as the reference
    ke = k.clone().requires_grad_()
    _, le = seed_loss_step(x.cpu(), x0.cpu(), ke.cpu(), kappa=0.3, dt=0.2,
                           weights=(0.5, 2.0, 0.25), reduction="mean")
    le.backward()
    kt = k.clone().requires_grad_()
    lt = td.SeedLossStep.apply(x, x0, kt, 0.3, 0.2, "exp", (0.5, 2.0, 0.25), 1.0 / x.numel())[1]
    lt.backward()
    assert _rel(lt.detach().cpu(), le.detach()) < 1e-5
    assert _rel(kt.grad.cpu(), ke.grad.cpu()) < 1e-4


def _check_persistent(device: str, shapes=((1, 3, 13, 17), (2, 3, 9, 33)),
                      n_programs=(3, None)) -> None:
    """The persistent learned step against eager autograd, the tiles variant and itself."""
    from minart.kernels import triton_diffusion as td

    for shape, conds in zip(shapes, (("exp", "tukey"), ("exp",)), strict=True):
        x, k, x0, *_ = _inputs(device, shape)
        for cond in conds:
            xe, ke = x.clone().requires_grad_(), k.clone().requires_grad_()
            ne, ge = seed_step(xe, ke, kappa=0.3, dt=0.2, conduction=cond)
            le = ((ne - x0) ** 2 + ge.abs() + ne ** 2).sum()
            le.backward()
            tiles_new = td.seed_loss_triton(x, x0, k, kappa=0.3, dt=0.2, conduction=cond)[0]
            for n in n_programs:
                new, loss, dk, di = td.seed_loss_triton(
                    x, x0, k, kappa=0.3, dt=0.2, conduction=cond, need_image_grad=True,
                    variant="persistent", n_programs=n)
                assert torch.equal(new, tiles_new), (shape, cond, n)
                torch.testing.assert_close(new, ne.detach(), **FWD_TOL)
                assert _rel(loss, le.detach()) < 1e-5, (shape, cond, n, _rel(loss, le.detach()))
                assert _rel(dk, ke.grad) < 1e-5, (shape, cond, n, _rel(dk, ke.grad))
                assert _rel(di, xe.grad) < 1e-4, (shape, cond, n, _rel(di, xe.grad))
    # weights and a mean, one program per tile and more programs than tiles; bit-identical reruns
    x, k, x0, *_ = _inputs(device, shapes[0])
    kw = dict(kappa=0.3, dt=0.2, weights=(0.5, 2.0, 0.25), scale=1.0 / x.numel())
    _, ref_loss, ref_dk, _ = td.seed_loss_triton(x, x0, k, **kw)
    runs = [td.seed_loss_triton(x, x0, k, variant="persistent", n_programs=n, **kw)
            for n in (1, 10_000, 1)]
    for _, loss, dk, _ in runs:
        assert _rel(loss, ref_loss) < 1e-5 and _rel(dk, ref_dk) < 1e-5
    assert all(torch.equal(a, b) for a, b in zip(runs[0][:3], runs[2][:3], strict=True))


def _check_rows(device: str, shapes=((1, 3, 13, 17), (2, 1, 2, 5)),
                blocks=(None, (3, 8))) -> None:
    """The row-marching variants: bit-identical to the tile kernels (forward, classic, ``I'`` of
    the learned step) and to eager autograd within the tolerances (loss, dL/dK, dL/dI)."""
    from minart.kernels import triton_diffusion as td

    for shape in shapes:
        x, k, x0, *_ = _inputs(device, shape)
        for cond in ("exp", "inverse", "tukey"):
            tiles = td.seed_forward_triton(x, k, kappa=0.3, dt=0.2, conduction=cond)
            classic = td.classic_step_triton(x, kappa=0.1, dt=0.2, conduction=cond)
            torch.testing.assert_close(classic, classic_step(x, kappa=0.1, dt=0.2,
                                                             conduction=cond), **FWD_TOL)
            for block in blocks:
                new, g = td.seed_forward_triton(x, k, kappa=0.3, dt=0.2, conduction=cond,
                                                variant="rows", block=block)
                assert torch.equal(new, tiles[0]) and torch.equal(g, tiles[1]), (shape, cond, block)
                assert torch.equal(td.classic_step_triton(x, kappa=0.1, dt=0.2, conduction=cond,
                                                          variant="rows", block=block),
                                   classic), (shape, cond, block)
            new, _ = td.seed_forward_triton(x, k, kappa=0.3, dt=0.2, conduction=cond,
                                            variant="rows", block=blocks[-1], unroll=1)
            assert torch.equal(new, tiles[0]), (shape, cond, "unroll 1")
            assert torch.equal(td.classic_step_triton(x, kappa=0.1, dt=0.2, conduction=cond,
                                                      variant="rows", unroll=1), classic)
            if cond == "inverse":
                continue
            xe, ke = x.clone().requires_grad_(), k.clone().requires_grad_()
            ne, ge = seed_step(xe, ke, kappa=0.3, dt=0.2, conduction=cond)
            le = ((ne - x0) ** 2 + ge.abs() + ne ** 2).sum()
            le.backward()
            for block in blocks:
                new, loss, dk, di = td.seed_loss_triton(x, x0, k, kappa=0.3, dt=0.2,
                                                        conduction=cond, need_image_grad=True,
                                                        variant="rows", block=block)
                assert torch.equal(new, tiles[0]) or cond != "exp", (shape, block)
                torch.testing.assert_close(new, ne.detach(), **FWD_TOL)
                assert _rel(loss, le.detach()) < 1e-5, (shape, cond, block)
                assert _rel(dk, ke.grad) < 1e-5, (shape, cond, block, _rel(dk, ke.grad))
                assert _rel(di, xe.grad) < 1e-4, (shape, cond, block, _rel(di, xe.grad))
    # a sweep through the row-marching forward: per-image operators and parameters
    x, k, *_ = _inputs(device)
    ops = torch.stack([k, laplacian_operator(3, device=device), 0.5 * k])
    kap = torch.tensor([0.3, 0.2, 0.5], dtype=torch.float64)
    dts = torch.tensor([0.2, 0.1, 0.25], dtype=torch.float64)
    tiles, _ = td.seed_forward_triton(x, ops, kappa=kap, dt=dts, store_g=False)
    rows, _ = td.seed_forward_triton(x, ops, kappa=kap, dt=dts, store_g=False, variant="rows",
                                     block=(4, 8))
    assert torch.equal(rows, tiles)
    # bit-identical reruns of the learned step
    x, k, x0, *_ = _inputs(device, (1, 3, 29, 37))
    runs = [td.seed_loss_triton(x, x0, k, kappa=0.3, dt=0.2, variant="rows", block=(8, 16))
            for _ in range(2)]
    assert all(torch.equal(a, b) for a, b in zip(runs[0][:3], runs[1][:3], strict=True))
    # the unroll factor that the learned step times changes no bit (image, loss, dL/dK, dL/dI)
    for need in (False, True):
        each = [td.seed_loss_triton(x, x0, k, kappa=0.3, dt=0.2, block=(8, 16), unroll=u,
                                    need_image_grad=need, variant="rows") for u in (1, 3)]
        kept = each[0] if need else each[0][:3]
        assert all(torch.equal(a, b) for a, b in zip(kept, each[1], strict=False))


def _check_split(device: str, shapes=((1, 3, 13, 17), (2, 1, 2, 5)), block=(3, 8)) -> None:
    """The strip kernels with one output channel a program: every output bit-identical to the
    all-channel strip kernels (forward with each conduction, a sweep, the learned step's image,
    loss, dL/dK and dL/dI), so ``"auto"`` may pick either."""
    from minart.kernels import triton_diffusion as td

    for shape in shapes:
        x, k, x0, *_ = _inputs(device, shape)
        for n, cond in enumerate(("exp", "inverse", "tukey")):
            rows = td.seed_forward_triton(x, k, kappa=0.3, dt=0.2, conduction=cond,
                                          variant="rows", block=block)
            split = td.seed_forward_triton(x, k, kappa=0.3, dt=0.2, conduction=cond,
                                           variant="split", block=block, unroll=1 + 2 * (n % 2))
            assert all(torch.equal(a, b) for a, b in zip(rows, split, strict=True)), (shape, cond)
        for cond in ("exp", "tukey"):
            rows = td.seed_loss_triton(x, x0, k, kappa=0.3, dt=0.2, conduction=cond,
                                       need_image_grad=True, variant="rows", block=block)
            for other in ("split", "twopass", "ahead"):
                split = td.seed_loss_triton(x, x0, k, kappa=0.3, dt=0.2, conduction=cond,
                                            need_image_grad=True, variant=other, block=block)
                assert all(torch.equal(a, b) for a, b in zip(rows, split, strict=True)), (
                    shape, cond, other)
    # a sweep: per-image operators and parameters
    x, k, *_ = _inputs(device)
    ops = torch.stack([k, laplacian_operator(3, device=device), 0.5 * k])
    kap = torch.tensor([0.3, 0.2, 0.5], dtype=torch.float64)
    dts = torch.tensor([0.2, 0.1, 0.25], dtype=torch.float64)
    rows, _ = td.seed_forward_triton(x, ops, kappa=kap, dt=dts, store_g=False, variant="rows",
                                     block=(4, 8))
    split, _ = td.seed_forward_triton(x, ops, kappa=kap, dt=dts, store_g=False, variant="split",
                                      block=(4, 8))
    assert torch.equal(rows, split)
    if device == "cuda":  # the strips that prefetch their rows into L2: the same bits
        for cond in ("exp", "inverse", "tukey"):
            rows = td.seed_forward_triton(x, k, kappa=0.3, dt=0.2, conduction=cond,
                                          variant="rows", block=block)
            for strips in ("rows", "split"):
                ahead = td.seed_forward_triton(x, k, kappa=0.3, dt=0.2, conduction=cond,
                                               variant=strips, block=block, unroll=1,
                                               prefetch=td.PREFETCH_ROWS)
                assert all(torch.equal(a, b) for a, b in zip(rows, ahead, strict=True)), cond
    # what the learned step's "auto" times: every candidate, the same bits (those that prefetch
    # their rows into L2 on CUDA only: the interpreter runs no PTX)
    x, k, x0, *_ = _inputs(device, (1, 3, 29, 37))
    each = [td.seed_loss_triton(x, x0, k, kappa=0.3, dt=0.2, block=(8, 16), variant=v, unroll=u,
                                prefetch=ahead, registers=regs)
            for v, u, ahead, regs in td._LOSS_CANDIDATES if device == "cuda" or not ahead]
    assert len(each) == len(td._LOSS_CANDIDATES) or device != "cuda"
    for other in each[1:]:
        assert all(torch.equal(a, b) for a, b in zip(each[0][:3], other[:3], strict=True))


def _check_operator_arguments(device: str) -> None:
    """An operator given on the host reaches the strip kernels as scalar arguments: the same bits
    as one read from device memory (on CUDA: the same operator on the GPU; in the interpreter,
    where every operator is on the host: one operator per image, which the kernels read from
    memory), for one step and for runs of steps, and the launchers accept it with a CUDA image."""
    from minart.kernels import triton_diffusion as td

    for shape in ((1, 3, 13, 17), (2, 1, 6, 9), (1, 4, 11, 35)):
        x, k, *_ = _inputs(device, shape)
        host = k.cpu()
        in_memory = k if device == "cuda" else k.expand(shape[0], *k.shape).contiguous()
        assert td._kernel_weights(host) == tuple(host.reshape(-1).tolist())
        assert td._kernel_weights(in_memory) is None
        for cond in ("exp", "inverse", "tukey"):
            for variant in ("rows", "auto"):
                a = td.seed_forward_triton(x, host, kappa=0.3, dt=0.2, conduction=cond,
                                           variant=variant, block=(4, 8) if variant == "rows"
                                           else None)
                b = td.seed_forward_triton(x, in_memory, kappa=0.3, dt=0.2, conduction=cond,
                                           variant=variant, block=(4, 8) if variant == "rows"
                                           else None)
                assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True)), (shape, cond)
            for variant in ("pairs", "auto"):
                a = td.seed_steps_triton(x, host, steps=3, kappa=0.3, dt=0.2, conduction=cond,
                                         variant=variant)
                b = td.seed_steps_triton(x, in_memory, steps=3, kappa=0.3, dt=0.2,
                                         conduction=cond, variant=variant)
                assert torch.equal(a, b), (shape, cond, variant)
    with pytest.raises(ShapeError, match="on the image's device or on the host"):
        td.seed_forward_triton(x, k.double(), kappa=0.3, dt=0.2)
    if device == "cuda":  # there "auto" itself compares every candidate's bits
        return
    # the candidates "auto" times for a host operator, reading it from memory or taking it as
    # arguments, one step and pairs: the same bits (not unrolled, the unrolled ones are checked
    # above; the L2 prefetch is left out: PTX)
    timed = {}

    def every(key, dev, launch, outputs, candidates=td._CANDIDATES):
        runnable = tuple(c for c in candidates if c[1] == 1 and c[0] != "single"
                         and (key[0] != "seed" or not c[2:3] or not c[2]))
        timed.setdefault(key[0], set()).update(runnable)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a candidate whose bits differ is a failure
            return td._pick(runnable, launch, outputs, lambda fn: (fn(), 1.0)[1], key)

    auto, td._auto = td._auto, every
    try:
        x, k, *_ = _inputs(device, (1, 3, 6, 9))
        host = k.cpu()
        td.seed_forward_triton(x, host, kappa=0.3, dt=0.2)
        td.seed_steps_triton(x, host, steps=2, kappa=0.3, dt=0.2)
    finally:
        td._auto = auto
    assert {("rows", 1, 0, 0), ("rows", 1, 0, 1), ("split", 1, 0, 0)} <= timed["seed"]
    assert timed["seed-steps"] == {("pairs", 1, 0), ("pairs", 1, 1)}


def _check_determinism(device: str, shape=(1, 3, 29, 37)) -> None:
    from minart.kernels import triton_diffusion as td

    x, k, x0, *_ = _inputs(device, shape)
    runs = []
    for deterministic in (False, True):  # minimize runs under use_deterministic_algorithms
        previous = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(deterministic)
        try:
            kt = k.clone().requires_grad_()
            new, loss = td.SeedLossStep.apply(x, x0, kt, 0.3, 0.2, "exp")
            loss.backward()
            fwd, _ = td.seed_forward_triton(new, k, kappa=0.3, dt=0.2)
            runs.append((new, loss.detach(), kt.grad, fwd))
        finally:
            torch.use_deterministic_algorithms(previous)
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a, b)


def _check_fractal(device: str) -> None:
    """Counts agree on >= 99.9 % of pixels, on well-conditioned views.

    ``z <- a z^-p + c`` is chaotic: on long orbits even float32 vs float64 eager runs disagree on
    0.2 % of pixels (p = 7, 320x240, 64 iterations), so every case here is one where float32 and
    float64 agree to 0.02 % (the post's map on a shorter run); ulp-level differences between the
    kernel's and torch's complex arithmetic then stay below the 0.1 % threshold.
    """
    from minart.fractal import _grid
    from minart.kernels import triton_fractal as tf

    big = device != "cpu"  # the interpreter is slow: small views on CPU
    cases = [
        (160, 120, 24, dict(formula="inverse_power", power=7, eps=0.7)),
        (320, 240, 64, dict(formula="inverse_power", power=3, eps=0.6, trap="circle")),
        (320, 240, 64, dict(formula="multibrot", power=2)),
        (320, 240, 64, dict(formula="multibrot", power=3, julia=(-0.4, 0.6), trap="line",
                            trap_angle=0.3)),
    ]
    for width, height, iterations, case in cases:
        if not big:
            width, height, iterations = 48, 40, 40
        ref = fractal_field(width, height, iterations=iterations, span=3.0, **case)
        start = _grid(width, height, 0j, 3.0, torch.float32, torch.device(device))
        julia = case.get("julia")
        counts, done, final_z, trap = tf.fractal_iterate_triton(
            start, iterations=iterations, formula=case["formula"], power=case["power"],
            eps=case.get("eps", 0.75), julia=None if julia is None else complex(*julia),
            trap=case.get("trap", "point"), trap_angle=case.get("trap_angle", 0.0))
        same = (counts.cpu() == ref.counts).float().mean().item()
        assert same >= 0.999, (case, same)
        assert (done.cpu() == ref.done).float().mean().item() >= 0.999, case
        finished = ref.done & done.cpu() & (counts.cpu() == ref.counts)
        dz = (final_z.cpu()[finished] - ref.final_z[finished]).abs()
        dtrap = (trap.cpu()[finished] - ref.trap[finished]).abs()
        if case["formula"] == "multibrot":
            # the escape step squares |z| up to the bailout (256): rounding grows with |z| and with
            # the orbit's length near the set; eager float32 vs float64 differ by a relative
            # 1.7e-3 at the 99th percentile (p = 2, 320x240) and 4e-7 at the median
            rel = dz / ref.final_z[finished].abs().clamp_min(1.0)
            assert float(rel.median()) < 1e-5 and float(rel.quantile(0.99)) < 1e-2, case
            assert float(dtrap.quantile(0.99)) < 1e-4, case
        else:  # z <- a z^-p + c amplifies rounding by p|a||z|^-(p+1): compare typical pixels
            assert float(dz.median()) < 1e-5 and float(dtrap.median()) < 1e-5, case
    # snapshots after several budgets, each launch continuing the last: the same fields as
    # separate runs from scratch (bit for bit), and close to the eager snapshots
    from minart import fractal as fr
    from minart.kernels.dispatch import _fractal_snapshots_triton

    width, height = (160, 120) if big else (24, 20)
    spec = fr._spec(formula="inverse_power", power=5, coefficient=-1j / math.pi, julia=None,
                    eps=0.6, bailout=16.0, trap="point", trap_point=(0.1, 0), trap_radius=0.5,
                    trap_angle=0.0, dtype=torch.float32)
    start = _grid(width, height, 0j, 3.0, torch.float32, torch.device(device))
    budgets = [12, 3, 30, 12]
    shots = _fractal_snapshots_triton(start, spec, budgets)
    eager = fr._iterate(start.cpu(), spec, budgets)
    for budget, shot, ref in zip(budgets, shots, eager, strict=True):
        alone = tf.fractal_iterate_triton(start, iterations=budget, **spec._asdict())
        assert all(torch.equal(a, b) for a, b in zip(shot, alone, strict=True)), budget
        assert (shot.counts.cpu() == ref.counts).float().mean().item() >= 0.999, budget
        assert int(shot.counts.max()) == budget
    # the dispatcher's Triton branch: fractal_field's validation and grid, then the kernel
    from minart.kernels.dispatch import _fractal_field_triton

    field = _fractal_field_triton(40, 30, device=device, iterations=20, power=3, eps=0.6,
                                  trap="circle")
    ref = fractal_field(40, 30, iterations=20, power=3, eps=0.6, trap="circle")
    assert field.counts.dtype == ref.counts.dtype and field.done.dtype == ref.done.dtype
    assert (field.counts.cpu() == ref.counts).float().mean().item() >= 0.999
    with pytest.raises(ParamError):
        _fractal_field_triton(40, 30, device=device, power=0)


def _check_sweep(device: str, shape=(1, 3, 6, 20)) -> None:
    """The sweep's Triton branch, several steps, against eager ``seed_step`` per variant (few
    rows: the interpreter's time grows with the number of programs, one per row and variant)."""
    from minart.kernels.dispatch import _seed_sweep_triton

    x, k, *_ = _inputs(device, shape)
    ops = torch.stack([k, 0.5 * k])
    kaps, dts = [0.3, 0.2], [0.2, 0.1]
    for cond, steps in (("exp", 3), ("inverse", 2), ("tukey", 2)):
        seen = []
        out = _seed_sweep_triton(x, ops, kaps, dts, steps=steps, conduction=cond,
                                 callback=lambda step, images: seen.append((step, images.clone())))  # noqa: B023
        assert out.shape == (2, *shape[1:]) and [s for s, _ in seen] == list(range(1, steps + 1))
        for n in range(2):
            ref = x
            for step in range(steps):
                ref = seed_step(ref, ops[n], kappa=kaps[n], dt=dts[n], conduction=cond)[0]
                torch.testing.assert_close(seen[step][1][n:n + 1], ref, **FWD_TOL)
            torch.testing.assert_close(out[n:n + 1], ref, **FWD_TOL)
    # a callback every 2 steps: runs of steps back to back, the first from the shared image
    seen = []
    out = _seed_sweep_triton(x, ops, kaps, dts, steps=3, callback_every=2,
                             callback=lambda step, images: seen.append((step, images.clone())))
    assert [s for s, _ in seen] == [2, 3] and torch.equal(seen[-1][1], out)
    for n in range(2):
        ref = x
        for step in range(1, 4):
            ref = seed_step(ref, ops[n], kappa=kaps[n], dt=dts[n])[0]
            if step == 2:
                torch.testing.assert_close(seen[0][1][n:n + 1], ref, **FWD_TOL)
        torch.testing.assert_close(out[n:n + 1], ref, **FWD_TOL)
    # one variant: every batch stride is 0
    one = _seed_sweep_triton(x, ops[:1], kaps[:1], dts[:1], steps=2)
    ref = seed_step(seed_step(x, k, kappa=0.3, dt=0.2)[0], k, kappa=0.3, dt=0.2)[0]
    torch.testing.assert_close(one, ref, **FWD_TOL)


def _check_pairs(device: str, shape=(1, 3, 13, 17), block=(4, 8)) -> None:
    """Two steps per pass: bit-identical to single steps (several strips per program, strips
    past the right border, odd counts), for both schemes and every conduction, and a sweep whose
    first pair reads one shared image."""
    from minart.kernels import triton_diffusion as td
    from minart.kernels.dispatch import _seed_sweep_triton

    x, k, *_ = _inputs(device, shape)
    for cond, steps, blk in (("exp", 3, block), ("inverse", 2, block), ("tukey", 2, None)):
        single = td.seed_steps_triton(x, k, steps=steps, kappa=0.3, dt=0.2, conduction=cond,
                                      variant="single")
        pairs = td.seed_steps_triton(x, k, steps=steps, kappa=0.3, dt=0.2, conduction=cond,
                                     variant="pairs", block=blk)
        assert torch.equal(pairs, single), (cond, steps, blk, (pairs - single).abs().max())
        ref = x
        for _ in range(steps):
            ref = seed_step(ref, k, kappa=0.3, dt=0.2, conduction=cond)[0]
        torch.testing.assert_close(pairs, ref, rtol=0, atol=1e-4)  # a few steps of 1e-5
        single = td.classic_steps_triton(x, steps=steps, kappa=0.1, dt=0.2, conduction=cond,
                                         variant="single")
        pairs = td.classic_steps_triton(x, steps=steps, kappa=0.1, dt=0.2, conduction=cond,
                                        variant="pairs", block=blk)
        assert torch.equal(pairs, single), ("classic", cond, steps, blk)
    tiny, kt, *_ = _inputs(device, (2, 1, 2, 5))
    assert torch.equal(td.seed_steps_triton(tiny, kt, steps=2, kappa=0.3, dt=0.2, variant="pairs"),
                       td.seed_steps_triton(tiny, kt, steps=2, kappa=0.3, dt=0.2,
                                            variant="single"))
    ops = torch.stack([k, 0.5 * k])
    one = x[:1].contiguous()
    out = _seed_sweep_triton(one, ops, [0.3, 0.2], [0.2, 0.1], steps=2)  # no callback: "auto"
    params = td._params(torch.tensor([0.3, 0.2], dtype=torch.float64),
                        torch.tensor([0.2, 0.1], dtype=torch.float64)).to(device)
    pairs = td._seed_steps_launch(one, ops, params, td._scalars(0.3, 0.2), 2, steps=2,
                                  per_image=True, conduction="exp", variant="pairs", block=block)
    assert torch.equal(pairs, out)
    assert torch.equal(td.seed_steps_triton(x, k, steps=0, kappa=0.3, dt=0.2), x)


def _interpret(check: str, threads: int | None = None) -> subprocess.CompletedProcess:
    """Run ``check("cpu")`` of this file in a fresh interpreter with ``TRITON_INTERPRET=1``
    (``threads``: torch's and OpenMP's threads there, default theirs)."""
    code = (f"import runpy, sys; ns = runpy.run_path({str(HERE)!r}); ns[{check!r}]('cpu'); "
            "print('ok')")
    env = {**os.environ, "TRITON_INTERPRET": "1", "MINART_KERNELS": "auto"}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    return subprocess.run([sys.executable, "-c", code], env=env, check=False,
                          capture_output=True, text=True, timeout=420, cwd=HERE.parents[2])


# ------------------------------------------------------------------------------------------------
# dispatcher, in process


def test_mode_reads_the_environment_at_each_call(monkeypatch):
    monkeypatch.delenv("MINART_KERNELS", raising=False)
    assert kernels_mode() == "auto"
    monkeypatch.setenv("MINART_KERNELS", "eager")
    assert kernels_mode() == "eager"
    assert step_path(torch.zeros(1, 3, 8, 8, device="meta")) == "eager"
    monkeypatch.setenv("MINART_KERNELS", "fast")
    with pytest.raises(ParamError, match=r"MINART_KERNELS='fast' is not one of 'eager', 'auto'"):
        kernels_mode()


def test_an_unknown_kernel_variant_is_refused_on_every_path(monkeypatch):
    monkeypatch.delenv("MINART_KERNELS", raising=False)
    monkeypatch.setenv("MINART_KERNEL_VARIANT", "zzz")
    message = (r"^MINART_KERNEL_VARIANT='zzz' is not one of 'tiles', 'rows', 'split', 'twopass', "
               r"'ahead', 'pairs'; unset it to let the kernels choose$")
    with pytest.raises(ParamError, match=message):
        step_path(torch.zeros(1, 3, 8, 8))  # a CPU path, where no Triton kernel reads it
    monkeypatch.setenv("MINART_KERNELS", "eager")
    with pytest.raises(ParamError, match=message):
        perona_malik(torch.full((1, 3, 8, 8), 0.5), steps=1, kappa=0.1, dt=0.2)
    for variant in ("tiles", "rows", "split", "twopass", "ahead", "pairs", " "):
        monkeypatch.setenv("MINART_KERNEL_VARIANT", variant)
        assert kernels_mode() == "eager"


def test_the_kernel_variants_checked_are_those_the_kernels_take():
    pytest.importorskip("triton")
    from minart.kernels import dispatch, triton_diffusion

    assert dispatch._KERNEL_VARIANTS == triton_diffusion.FORCIBLE


def test_cpu_paths_are_eager_for_small_runs_and_compiled_for_long_ones(monkeypatch):
    monkeypatch.setenv("MINART_KERNELS", "auto")
    x = torch.zeros(1, 3, 8, 8)
    assert step_path(x, compiled="seed") == "eager"
    assert step_path(x, compiled="seed", work=2 ** 40) == "compiled"
    assert step_path(x, compiled="seed", work=2 ** 40, grad=True) == "eager"
    assert step_path(x.double(), compiled="seed", work=2 ** 40) == "eager"
    monkeypatch.setenv("MINART_KERNELS", "eager")
    assert step_path(x, compiled="seed", work=2 ** 40) == "eager"


def test_a_failed_cpu_compile_falls_back_to_eager_and_is_not_retried(monkeypatch):
    from minart.kernels import cpu

    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(cpu, "classic_step_compiled", broken)
    monkeypatch.setattr(cpu, "_BROKEN", set())
    monkeypatch.setenv("MINART_KERNELS", "auto")
    x, *_ = _inputs("cpu")
    with pytest.warns(RuntimeWarning, match=r"compiled CPU classic step could not be built here "
                      r"\(RuntimeError: no C\+\+ compiler\); this process runs the eager") as seen:
        for _ in range(2):
            out = classic_step_fast(x, kappa=0.1, dt=0.2, work=2 ** 40)
            assert torch.equal(out, classic_step(x, kappa=0.1, dt=0.2))
    assert len([w for w in seen if w.category is RuntimeWarning]) == 1  # said once
    assert calls == [1] and cpu.is_broken("classic")
    assert step_path(x, compiled="classic", work=2 ** 40) == "eager"


def test_fast_steps_fall_back_to_the_references_on_small_cpu_runs():
    x, k, *_ = _inputs("cpu")
    new, g = seed_step_fast(x, k, kappa=0.3, dt=0.2, conduction="tukey")
    ref_new, ref_g = seed_step(x, k, kappa=0.3, dt=0.2, conduction="tukey")
    assert torch.equal(new, ref_new) and torch.equal(g, ref_g)
    assert torch.equal(classic_step_fast(x, kappa=0.1, dt=0.2), classic_step(x, kappa=0.1, dt=0.2))
    lap = perona_malik_step_fast(x, kappa=0.3, dt=0.2, scheme="seed")
    assert torch.equal(lap, seed_step(x, laplacian_operator(3), kappa=0.3, dt=0.2)[0])


def test_perona_malik_gives_the_same_frames_with_kernels_forced_off(monkeypatch):
    x, k, *_ = _inputs("cpu", (1, 3, 16, 16))
    auto = perona_malik(x, steps=4, kappa=0.3, dt=0.2, scheme="seed", operator=k)
    monkeypatch.setenv("MINART_KERNELS", "eager")
    eager = perona_malik(x, steps=4, kappa=0.3, dt=0.2, scheme="seed", operator=k)
    assert torch.equal(auto, eager)


def test_seed_loss_step_eager_path_is_the_post_energy_and_trains_the_operator():
    x, k, x0, *_ = _inputs("cpu")
    k = k.clone().requires_grad_()
    new, loss = seed_loss_step(x, x0, k, kappa=0.3, dt=0.2)
    ref_new, ref_g = seed_step(x, k, kappa=0.3, dt=0.2)
    expected = ((ref_new - x0) ** 2 + ref_g.abs() + ref_new ** 2).sum()
    torch.testing.assert_close(loss, expected)
    assert not new.requires_grad
    loss.backward()
    assert k.grad is not None and float(k.grad.abs().sum()) > 0
    with pytest.raises(ShapeError, match=r"image0 \(1, 3, 4, 4\) must match the image"):
        seed_loss_step(x, torch.zeros(1, 3, 4, 4), k, kappa=0.3, dt=0.2)
    _, mean = seed_loss_step(x, x0, k, kappa=0.3, dt=0.2, weights=(1, 0, 0), reduction="mean")
    torch.testing.assert_close(mean, ((ref_new - x0) ** 2).mean())
    with pytest.raises(ParamError, match="reduction='max' is not one of 'sum', 'mean'"):
        seed_loss_step(x, x0, k, kappa=0.3, dt=0.2, reduction="max")


def test_auto_variant_keeps_the_fastest_kernel_that_writes_the_same_bits(monkeypatch):
    """``"auto"``'s decision: identical outputs only, then the least time (a clock stands in for
    CUDA events here; the real timing runs in the GPU tests)."""
    pytest.importorskip("triton")
    from minart.kernels import triton_diffusion as td

    out = torch.zeros(4)
    writes = {"a": 1.0, "b": 1.0, "c": 2.0, "d": 1.0}  # c is "miscompiled"
    cost = {"a": 3.0, "b": 2.0, "c": 0.5, "d": 2.5}
    ran = []

    def launch(name):
        ran.append(name)
        out.fill_(writes[name])

    notes = []
    with pytest.warns(UserWarning, match=r"the \('c',\) Triton kernel disagrees"), \
            notes_to(notes.append):
        best = td._pick([("a",), ("b",), ("c",), ("d",)], launch, (out,),
                        lambda fn: (fn(), cost[ran[-1]])[1], key=("seed-loss", 3, 0))
    assert best == ("b",)  # c is faster but wrong
    # the step's log says why its first call takes seconds, and what was found
    assert notes[0] == ("choosing the learned step's fastest shape: compiling and timing 4 "
                        "shapes that write the same bits (once per process, shape and device)")
    assert re.fullmatch(r"The learned step uses b \(timed in \d+\.\d s: a 3 ms, b 2 ms, "
                        r"d 2\.5 ms\)", notes[1]), notes[1]
    assert ran.count("c") == 1  # launched once to compare, never timed

    # a later candidate that cannot build here (PTX on another GPU, another Triton) is dropped;
    # the first candidate's error is the caller's
    def fails(name):
        if name == "e":
            raise RuntimeError("PTX inline assembly is not supported here\nmore")
        launch(name)

    with pytest.warns(UserWarning, match=r"the \('e',\) Triton kernel could not run for \(\) "
                                          r"\(RuntimeError: PTX inline assembly is not supported "
                                          r"here\); not using it"):
        assert td._pick([("a",), ("e",), ("b",)], fails, (out,),
                        lambda fn: (fn(), cost[ran[-1]])[1]) == ("b",)
    with pytest.raises(RuntimeError, match="PTX inline assembly"):
        td._pick([("e",), ("a",)], fails, (out,), lambda fn: (fn(), 1.0)[1])
    # forcing a variant, and the CPU answer
    monkeypatch.setenv("MINART_KERNEL_VARIANT", "rows")
    assert td._auto(("k",), torch.device("cpu"), launch, (out,)) == ("rows", td.ROWS_UNROLL)
    # a shape the kernel has is taken as it is; one it lacks means its strips
    monkeypatch.setenv("MINART_KERNEL_VARIANT", "twopass")
    assert td._auto(("k",), torch.device("cpu"), launch, (out,),
                    td._LOSS_CANDIDATES) == ("twopass", td.ROWS_UNROLL)
    assert td._auto(("k",), torch.device("cpu"), launch, (out,)) == ("rows", td.ROWS_UNROLL)
    monkeypatch.setenv("MINART_KERNEL_VARIANT", "split")
    assert td._auto(("k",), torch.device("cpu"), launch, (out,),
                    td._SEED_CANDIDATES) == ("split", td.ROWS_UNROLL)
    monkeypatch.setenv("MINART_KERNEL_VARIANT", "diagonal")
    with pytest.raises(ParamError, match="variant='diagonal' is not a kernel variant here"):
        td._auto(("k",), torch.device("cpu"), launch, (out,))
    monkeypatch.delenv("MINART_KERNEL_VARIANT")
    assert td._auto(("k",), torch.device("cpu"), launch, (out,)) == ("tiles", 1)


def test_fused_learned_step_rejects_an_unknown_variant_or_program_count():
    pytest.importorskip("triton")
    from minart.kernels import triton_diffusion as td

    x, k, x0, *_ = _inputs("cpu")
    with pytest.raises(ParamError, match=r"^variant='diagonal' is not a kernel variant here; use "
                                         r"'auto', 'rows', 'split', 'twopass', 'ahead', 'tiles' or "
                                         r"'persistent'$"):
        td.seed_loss_triton(x, x0, k, kappa=0.3, dt=0.2, variant="diagonal")
    with pytest.raises(ParamError, match=r"^variant='persistent' is not a kernel variant here; "
                                         r"use 'auto', 'tiles', 'rows' or 'split'$"):
        td.seed_forward_triton(x, k, kappa=0.3, dt=0.2, variant="persistent")
    for bad in (0, -2, 2.5, True):
        with pytest.raises(ParamError, match=rf"^n_programs={bad!r} must be an integer >= 1$"):
            td.seed_loss_triton(x, x0, k, kappa=0.3, dt=0.2, variant="persistent",
                                n_programs=bad)
    # prefetching rows into L2 is PTX: refused off CUDA before anything launches
    for call in (lambda **kw: td.seed_loss_triton(x, x0, k, kappa=0.3, dt=0.2, **kw),
                 lambda **kw: td.seed_forward_triton(x, k, kappa=0.3, dt=0.2, **kw)):
        with pytest.raises(ParamError, match=r"^prefetch=8 needs a CUDA image \(Triton's "
                                             r"interpreter cannot run it\); use prefetch=0$"):
            call(variant="rows", prefetch=8)
        for bad in (-1, 1.5, True):
            with pytest.raises(ParamError, match=rf"^prefetch={bad!r} must be a whole number"):
                call(prefetch=bad)
    for bad in (-1, 1.5, True):  # the learned step's register cap
        with pytest.raises(ParamError, match=rf"^registers={bad!r} must be a whole number >= 0$"):
            td.seed_loss_triton(x, x0, k, kappa=0.3, dt=0.2, registers=bad)
    for bad in (1, 31, 256):
        with pytest.raises(ParamError, match=rf"^registers={bad} must be 0 \(no cap\) or from 32 "
                                             r"to 255$"):
            td.seed_loss_triton(x, x0, k, kappa=0.3, dt=0.2, registers=bad)


def test_sweep_matches_one_step_per_variant_and_checks_its_inputs():
    x, k, *_ = _inputs("cpu")
    ops = torch.stack([k, 0.5 * k])
    out = seed_sweep(x[0], ops, kappa=[0.3, 0.2], dt=torch.tensor([0.2, 0.1]))
    assert out.shape == (2, 3, 13, 17)
    assert torch.equal(out[1:], seed_step(x, ops[1], kappa=0.2, dt=0.1)[0])
    assert not torch.equal(out[0], out[1])
    with pytest.raises(ShapeError, match=r"operators must be \(N, 3, 3, 3, 3\), got \(3, 3, 3, 3\)"):
        seed_sweep(x, k, kappa=0.3, dt=0.2)
    with pytest.raises(ShapeError, match="kappa has 3 values for 2 operators"):
        seed_sweep(x, ops, kappa=[0.1, 0.2, 0.3], dt=0.2)
    with pytest.raises(ParamError, match=r"dt=-0.1 must be > 0"):
        seed_sweep(x, ops, kappa=0.3, dt=[0.2, -0.1])
    with pytest.raises(ShapeError, match="image must be one"):
        seed_sweep(torch.rand(2, 3, 4, 4), ops, kappa=0.3, dt=0.2)


def test_sweep_runs_steps_like_a_loop_of_seed_step_per_variant():
    x, k, *_ = _inputs("cpu", (1, 3, 16, 24))
    ops = torch.stack([k, 0.5 * k])
    kaps, dts = [0.3, 0.2], [0.2, 0.1]
    seen = []
    out = seed_sweep(x, ops, kappa=torch.tensor(kaps), dt=dts, steps=3, conduction="tukey",
                     callback=lambda step, images: seen.append((step, images)))
    assert [s for s, _ in seen] == [1, 2, 3] and torch.equal(seen[-1][1], out)
    for n in range(2):
        ref = x
        for step in range(3):
            ref = seed_step(ref, ops[n], kappa=kaps[n], dt=dts[n], conduction="tukey")[0]
            assert torch.equal(seen[step][1][n:n + 1], ref)
        assert torch.equal(out[n:n + 1], ref)
    assert torch.equal(seed_sweep(x[0], ops, kappa=kaps, dt=dts, steps=0), x.expand(2, -1, -1, -1))
    assert seed_sweep(x, ops, kappa=kaps, dt=dts, steps=0).data_ptr() != x.data_ptr()
    sparse = []
    seed_sweep(x, ops, kappa=kaps, dt=dts, steps=5, conduction="tukey", callback_every=2,
               callback=lambda step, images: sparse.append(step))
    assert sparse == [2, 4, 5]
    with pytest.raises(ParamError, match=r"^callback_every=0 must be a whole number >= 1"):
        seed_sweep(x, ops, kappa=kaps, dt=dts, callback_every=0)


def test_sweep_rejects_bad_steps_and_mismatched_operators():
    x, k, *_ = _inputs("cpu")
    ops = torch.stack([k, 0.5 * k])
    for bad in (-1, 2.0, True, None):
        with pytest.raises(ParamError, match=rf"^steps={bad!r} must be a whole number >= 0$") \
                as info:
            seed_sweep(x, ops, kappa=0.3, dt=0.2, steps=bad)
        assert info.value.param == "steps"
    with pytest.raises(ShapeError, match=r"^operators are torch.float64 on cpu but the image is "
                                         r"torch.float32 on cpu; convert one of them explicitly$"):
        seed_sweep(x, ops.double(), kappa=0.3, dt=0.2)
    with pytest.raises(ShapeError, match=r"^image contains NaN or Inf values$"):
        seed_sweep(torch.full_like(x, float("nan")), ops, kappa=0.3, dt=0.2, steps=2)
    with pytest.raises(ParamError, match=r"^conduction='gauss' is not one of"):
        seed_sweep(x, ops, kappa=0.3, dt=0.2, conduction="gauss")


def test_fractal_field_fast_is_the_reference_on_cpu():
    fast = fractal_field_fast(9, 7, iterations=12)
    ref = fractal_field(9, 7, iterations=12)
    assert torch.equal(fast.counts, ref.counts) and torch.equal(fast.done, ref.done)


@pytest.mark.slow
def test_importing_the_package_does_not_import_triton():
    code = "import sys, minart.kernels, minart.diffusion; print('triton' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True,
                          timeout=120, cwd=HERE.parents[2])
    assert proc.stdout.strip() == "False", proc.stderr[-2000:]


# ------------------------------------------------------------------------------------------------
# Triton kernels through the interpreter (CPU tensors)


# slowest first (seconds on two cores, 2026-12): the pool starts the long ones at once
_INTERPRETED = ["_check_rows", "_check_operator_arguments", "_check_split", "_check_persistent",
                "_check_backward", "_check_pairs", "_check_fractal", "_check_determinism",
                "_check_forward", "_check_sweep"]


@pytest.fixture(scope="module")
def interpreted(request):
    """The selected interpreter checks, started together on first use: each is one
    single-threaded Python process (the interpreter runs a kernel's program instances one after
    another), so they share the cores instead of queueing; a test waits for its own."""
    pytest.importorskip("triton")
    wanted = [item.callspec.params["check"] for item in request.session.items
              if getattr(item, "originalname", "") == "test_triton_kernels_in_the_interpreter"]
    if os.environ.get("PYTEST_XDIST_WORKER"):  # pytest-xdist spreads the tests itself
        wanted = []
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    pool = ThreadPoolExecutor(max_workers=max(1, min(4, cores or 1)))
    runs = {check: pool.submit(_interpret, check, 1) for check in _INTERPRETED if check in wanted}
    yield lambda check: runs[check].result() if check in runs else _interpret(check)
    pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.slow
@pytest.mark.parametrize("check", _INTERPRETED)
def test_triton_kernels_in_the_interpreter(check, interpreted):
    proc = interpreted(check)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-4000:]


@pytest.mark.slow
def test_kernels_lower_to_ptx_for_hopper_without_a_gpu():
    """Compile every kernel for sm_90 with Triton's bundled ptxas: catches lowering errors here."""
    triton = pytest.importorskip("triton")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from minart.kernels import triton_diffusion as td
    from minart.kernels import triton_fractal as tf

    p = "*fp32"

    def lower(fn, sig, consts, options=td._EXACT):
        # constexprs with a default (PREFETCH) take it unless named
        consts = {**{q.name: q.default for q in fn.params if q.is_constexpr and q.has_default},
                  **consts}
        full = {a: ("constexpr" if a in consts else sig.get(a, "i32")) for a in fn.arg_names}
        kernel = triton.compile(ASTSource(fn, full, consts), target=GPUTarget("cuda", 90, 32),
                                options=options)
        if options.get("enable_fp_fusion", True) is False:
            # no float add, subtract or multiply that ptxas may contract: every one rounds
            # (".rn"), so the kernel's bits follow from its source (see td._EXACT)
            loose = re.findall(r"\b(?:add|sub|mul)\.f32\b", kernel.asm["ptx"])
            assert not loose, (fn.__name__, consts, loose[:3])
        return kernel

    try:
        lower(td._classic_kernel, dict(x_ptr=p, out_ptr=p, inv_kappa="fp32", tukey_s="fp32",
                                       dt="fp32"), dict(COND=0, BLOCK_H=1, BLOCK_W=512))
    except Exception as exc:  # noqa: BLE001 - no CUDA backend/ptxas in this triton build
        pytest.skip(f"cannot compile for sm_90 here: {exc}")
    ptrs = dict.fromkeys(("x_ptr", "k_ptr", "p_ptr", "new_ptr", "g_ptr", "x0_ptr", "gg_ptr",
                          "di_ptr", "part_ptr", "gn_ptr", "gg_in_ptr"), p)
    ptrs.update(dict.fromkeys(("kappa2", "tukey_s", "dt", "w_fid", "w_edge", "w_energy"), "fp32"))
    for cond in (0, 1, 2):
        ptx = lower(td._seed_fwd_kernel, ptrs, dict(C=3, COND=cond, STORE_G=True, PER_IMAGE=False,
                                                    BLOCK_H=1, BLOCK_W=512)).asm["ptx"]
        # the 27 neighbours are loaded once per pixel (not once per output channel)
        assert ptx.count("ld.global") < 260
    lower(td._seed_fwd_kernel, ptrs, dict(C=3, COND=0, STORE_G=False, PER_IMAGE=True, BLOCK_H=1,
                                          BLOCK_W=512))
    # integer arguments equal to 1 are specialised into constants by the launcher (small images)
    lower(td._seed_bwd_a_kernel, ptrs, dict(C=3, COND=0, HAS_GN=True, HAS_GG=True, BLOCK_H=4,
                                            BLOCK_W=256, n_tw=1, n_tiles=1))
    lower(td._seed_bwd_b_kernel, ptrs, dict(C=3, BLOCK_H=1, BLOCK_W=512, n_tw=1))
    lower(td._seed_loss_kernel, ptrs, dict(C=4, COND=2, NEED_DI=True, BLOCK_H=4, BLOCK_W=256))
    lower(td._seed_loss_kernel, ptrs, dict(C=1, COND=0, NEED_DI=False, BLOCK_H=4, BLOCK_W=256,
                                           n_tw=1, n_tiles=1))
    for consts in (dict(C=3, COND=0, NEED_DI=False, BLOCK_H=1, BLOCK_W=128),
                   dict(C=4, COND=2, NEED_DI=True, BLOCK_H=2, BLOCK_W=64),
                   dict(C=1, COND=0, NEED_DI=False, BLOCK_H=1, BLOCK_W=16, n_tw=1, n_tiles=1,
                        total=1, n_programs=1)):
        lower(td._seed_loss_persistent_kernel, ptrs, consts)
    # the row-marching variants, and the resources ptxas gives them (cuobjdump ships with triton)
    ptrs.update(out_ptr=p, inv_kappa="fp32")
    rows, capped_kernels = {}, {}
    for cond in (0, 1, 2):
        rows[f"fwd{cond}"] = lower(td._seed_fwd_rows_kernel, ptrs, dict(
            C=3, COND=cond, STORE_G=cond == 2, PER_IMAGE=cond == 1, ROWS=64, BLOCK_W=128,
            UNROLL=3))
        rows[f"classic{cond}"] = lower(td._classic_rows_kernel, ptrs,
                                       dict(COND=cond, ROWS=64, BLOCK_W=128, UNROLL=3))
    lower(td._seed_fwd_rows_kernel, ptrs, dict(C=4, COND=0, STORE_G=True, PER_IMAGE=True, ROWS=7,
                                               BLOCK_W=16, UNROLL=1, n_tw=1))
    for cond in (0, 1, 2):  # one output channel a program
        rows[f"fwd-split{cond}"] = lower(td._seed_fwd_split_kernel, ptrs, dict(
            C=3, COND=cond, STORE_G=cond == 2, PER_IMAGE=cond == 1, ROWS=64, BLOCK_W=128,
            UNROLL=3))
    lower(td._seed_fwd_split_kernel, ptrs, dict(C=1, COND=0, STORE_G=False, PER_IMAGE=False,
                                                ROWS=7, BLOCK_W=16, UNROLL=1, n_tw=1))
    for cond in (0, 1, 2):  # two steps per pass
        rows[f"pairs{cond}"] = lower(td._seed_fwd2_rows_kernel, ptrs, dict(
            C=3, COND=cond, PER_IMAGE=cond == 1, ROWS=td.PAIRS_BLOCK[0], STRIPS=4,
            BLOCK_W=td.PAIRS_BLOCK[1], UNROLL=3 if cond == 0 else 1))
        rows[f"classic-pairs{cond}"] = lower(td._classic2_rows_kernel, ptrs, dict(
            COND=cond, ROWS=td.PAIRS_BLOCK[0], STRIPS=4, BLOCK_W=td.PAIRS_BLOCK[1], UNROLL=3))
    lower(td._seed_fwd2_rows_kernel, ptrs, dict(C=4, COND=2, PER_IMAGE=True, ROWS=7, STRIPS=4,
                                                BLOCK_W=16, UNROLL=1, n_tw=1))
    lower(td._seed_fwd2_rows_kernel, ptrs, dict(C=1, COND=0, PER_IMAGE=False, ROWS=3, STRIPS=4,
                                                BLOCK_W=8, UNROLL=1))
    rows["fwd-unroll1"] = lower(td._seed_fwd_rows_kernel, ptrs, dict(
        C=3, COND=0, STORE_G=False, PER_IMAGE=False, ROWS=64, BLOCK_W=128, UNROLL=1))
    rows["loss"] = lower(td._seed_loss_rows_kernel, ptrs, dict(
        C=3, COND=0, NEED_DI=False, ROWS=td.LOSS_ROWS_BLOCK[0], BLOCK_W=td.LOSS_ROWS_BLOCK[1],
        UNROLL=3))
    lower(td._seed_loss_rows_kernel, ptrs, dict(C=4, COND=2, NEED_DI=True, ROWS=3, BLOCK_W=32,
                                                UNROLL=3))
    lower(td._seed_loss_rows_kernel, ptrs, dict(C=1, COND=0, NEED_DI=False, ROWS=1, BLOCK_W=16,
                                                UNROLL=1, n_tw=1, n_tiles=1))
    # held to LOSS_REGISTERS registers: ptxas spills (the weights, reloaded from L1 each row),
    # which only this pair of candidates may
    for name, ahead, rows_ahead in (("loss-capped", False, 0), ("loss-ahead-capped", True, 0),
                                    ("loss-ahead-prefetch-capped", True, td.PREFETCH_ROWS)):
        capped = lower(td._seed_loss_rows_kernel, ptrs, dict(
            C=3, COND=0, NEED_DI=False, ROWS=td.LOSS_ROWS_BLOCK[0],
            BLOCK_W=td.LOSS_ROWS_BLOCK[1], UNROLL=1, X0_AHEAD=ahead, PREFETCH=rows_ahead),
            dict(td._EXACT, maxnreg=td.LOSS_REGISTERS))
        assert re.search(rf"\.maxnreg {td.LOSS_REGISTERS}\b", capped.asm["ptx"]), name
        capped_kernels[name] = capped
    # I_0 loaded a row before its use ("ahead"): the candidate, and other shapes
    rows["loss-ahead"] = lower(td._seed_loss_rows_kernel, ptrs, dict(
        C=3, COND=0, NEED_DI=False, ROWS=td.LOSS_ROWS_BLOCK[0], BLOCK_W=td.LOSS_ROWS_BLOCK[1],
        UNROLL=1, X0_AHEAD=True))
    lower(td._seed_loss_rows_kernel, ptrs, dict(C=4, COND=2, NEED_DI=True, ROWS=3, BLOCK_W=32,
                                                UNROLL=3, X0_AHEAD=True, PREFETCH=2))
    lower(td._seed_loss_rows_kernel, ptrs, dict(C=1, COND=0, NEED_DI=False, ROWS=1, BLOCK_W=16,
                                                UNROLL=1, n_tw=1, n_tiles=1, X0_AHEAD=True))
    for factor in (1, 3):  # one output channel a program
        rows[f"loss-split{factor}"] = lower(td._seed_loss_split_kernel, ptrs, dict(
            C=3, COND=0, NEED_DI=False, ROWS=td.LOSS_ROWS_BLOCK[0],
            BLOCK_W=td.LOSS_ROWS_BLOCK[1], UNROLL=factor))
    lower(td._seed_loss_split_kernel, ptrs, dict(C=4, COND=2, NEED_DI=True, ROWS=3, BLOCK_W=32,
                                                 UNROLL=3))
    lower(td._seed_loss_split_kernel, ptrs, dict(C=1, COND=0, NEED_DI=False, ROWS=1, BLOCK_W=16,
                                                 UNROLL=1, n_tw=1, n_tiles=1))
    # the operator's values as kernel arguments: no register holds a weight
    kv = dict(ptrs, kv=("fp32",) * 81)
    rows["fwd-args"] = lower(td._seed_fwd_rows_kernel, kv, dict(
        C=3, COND=0, STORE_G=False, PER_IMAGE=False, ROWS=64, BLOCK_W=128, UNROLL=1, KV=True))
    rows["pairs-args"] = lower(td._seed_fwd2_rows_kernel, kv, dict(
        C=3, COND=1, PER_IMAGE=False, ROWS=td.PAIRS_BLOCK[0], STRIPS=4,
        BLOCK_W=td.PAIRS_BLOCK[1], UNROLL=3, KV=True))
    lower(td._seed_fwd_rows_kernel, dict(ptrs, kv=("fp32",) * 144), dict(
        C=4, COND=2, STORE_G=True, PER_IMAGE=True, ROWS=7, BLOCK_W=16, UNROLL=1, KV=True,
        PREFETCH=2, n_tw=1))
    # two passes: I', the loss and dL/dg, then dL/dK from dL/dg
    rows["loss-pass"] = lower(td._seed_loss_pass_kernel, ptrs, dict(
        C=3, COND=0, NEED_DI=False, ROWS=td.LOSS_ROWS_BLOCK[0], BLOCK_W=td.LOSS_ROWS_BLOCK[1],
        UNROLL=1))
    rows["dk-pass"] = lower(td._seed_dk_pass_kernel, ptrs, dict(
        C=3, ROWS=td.LOSS_ROWS_BLOCK[0], BLOCK_W=td.LOSS_ROWS_BLOCK[1], UNROLL=1))
    lower(td._seed_loss_pass_kernel, ptrs, dict(C=4, COND=2, NEED_DI=True, ROWS=3, BLOCK_W=32,
                                                UNROLL=3))
    lower(td._seed_dk_pass_kernel, ptrs, dict(C=4, ROWS=3, BLOCK_W=32, UNROLL=3))
    lower(td._seed_dk_pass_kernel, ptrs, dict(C=1, ROWS=1, BLOCK_W=16, UNROLL=1, n_tw=1,
                                              n_tiles=1))
    # the candidates that prefetch their rows into L2 (CUDA only: never run by the interpreter)
    strips = dict(ROWS=64, BLOCK_W=128, UNROLL=1, PREFETCH=td.PREFETCH_ROWS)
    fwd = dict(C=3, COND=0, STORE_G=False, PER_IMAGE=False, **strips)
    loss = dict(C=3, COND=0, NEED_DI=False, **strips)
    for name, fn, consts in (("fwd-prefetch", td._seed_fwd_rows_kernel, fwd),
                             ("fwd-split-prefetch", td._seed_fwd_split_kernel, fwd),
                             ("loss-prefetch", td._seed_loss_rows_kernel,
                              {**loss, "ROWS": td.LOSS_ROWS_BLOCK[0]}),
                             ("loss-split-prefetch", td._seed_loss_split_kernel,
                              {**loss, "ROWS": td.LOSS_ROWS_BLOCK[0]}),
                             ("loss-ahead-prefetch", td._seed_loss_rows_kernel,
                              {**loss, "ROWS": td.LOSS_ROWS_BLOCK[0], "X0_AHEAD": True}),
                             ("loss-pass-prefetch", td._seed_loss_pass_kernel,
                              {**loss, "ROWS": td.LOSS_ROWS_BLOCK[0]}),
                             ("dk-pass-prefetch", td._seed_dk_pass_kernel,
                              dict(C=3, **{**strips, "ROWS": td.LOSS_ROWS_BLOCK[0]}))):
        rows[name] = lower(fn, ptrs, consts)
        # one prefetch per plane and row: the image's C planes, and I_0's (its C planes in the
        # all-channel kernel, the program's own in the split one): in the prologue and the loop
        assert "prefetch.global.L2" in rows[name].asm["ptx"], name
    lower(td._seed_loss_rows_kernel, ptrs, dict(C=1, COND=2, NEED_DI=True, ROWS=3, BLOCK_W=16,
                                                UNROLL=3, PREFETCH=2, n_tw=1, n_tiles=1))
    assert "prefetch" not in rows["loss"].asm["ptx"]  # PREFETCH = 0 leaves no trace
    cuobjdump = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    if cuobjdump.exists():
        for name, kernel in {**rows, **capped_kernels}.items():
            cubin = Path(os.environ.get("TMPDIR", "/tmp")) / f"minart-{os.getpid()}-{name}.cubin"
            cubin.write_bytes(kernel.asm["cubin"])
            try:
                usage = subprocess.run([str(cuobjdump), "-res-usage", str(cubin)],
                                       capture_output=True, text=True, check=True).stdout
            finally:
                cubin.unlink()
            stack = int(usage.split("STACK:")[1].split()[0])
            if name in capped_kernels:  # three programs an SM, the spills staying in L1
                assert int(usage.split("REG:")[1].split()[0]) <= td.LOSS_REGISTERS, (name, usage)
                assert stack <= 512, (name, usage)
            else:  # spills would cost a local-memory round trip per pixel: the window must fit
                assert stack <= 16, (name, usage)
    fsig = dict(c_ptr=p, count_ptr="*i32", done_ptr="*i8", z_ptr=p, trap_ptr=p, k0="i32",
                **dict.fromkeys(("ar", "ai", "jr", "ji", "eps2", "bail2", "qr", "qi", "radius",
                                 "sin_a", "cos_a"), "fp32"))
    for consts in (dict(FORMULA=0, P=7, LOW=0, JULIA=False, TRAP=1),
                   dict(FORMULA=1, P=2, LOW=1, JULIA=True, TRAP=3)):
        lower(tf._fractal_kernel, fsig, dict(consts, UNROLL=4, BLOCK=128), tf._FUSED)
        lower(tf._fractal_kernel, fsig, dict(consts, UNROLL=1, BLOCK=128, n=1), tf._FUSED)


@pytest.mark.slow
def test_compiled_cpu_steps_match_the_references(tmp_path, monkeypatch):
    from minart.kernels import cpu

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(cpu, "_COMPILED", {})
    x, k, *_ = _inputs("cpu", (1, 3, 16, 20))
    notes = []
    for cond in ("exp", "inverse", "tukey", "exp"):
        with notes_to(notes.append):
            new, g = cpu.seed_step_compiled(x, k, kappa=0.3, dt=0.2, conduction=cond)
        ref_new, ref_g = seed_step(x, k, kappa=0.3, dt=0.2, conduction=cond)
        torch.testing.assert_close(new, ref_new, **FWD_TOL)
        torch.testing.assert_close(g, ref_g, **FWD_TOL)
    # each signature compiles once, and says so in the step's log
    assert notes == ["compiling the CPU seed step for this image size (once per process and "
                     "size: seconds, fewer when Inductor's disk cache has it)"] * 3
    for kappa in (0.1, 0.05):  # a new kappa must not need a recompile to be right
        torch.testing.assert_close(cpu.classic_step_compiled(x, kappa=kappa, dt=0.2),
                                   classic_step(x, kappa=kappa, dt=0.2), **FWD_TOL)
    # a kappa whose reciprocal overflows float32: flat regions stay flat, nothing turns nan
    flat = x.clone()
    flat[..., :4, :] = 0.5
    for cond in ("exp", "inverse", "tukey"):
        tiny = cpu.classic_step_compiled(flat, kappa=1e-40, dt=0.2, conduction=cond)
        assert not tiny.isnan().any(), cond
        torch.testing.assert_close(tiny, classic_step(flat, kappa=1e-40, dt=0.2, conduction=cond),
                                   **FWD_TOL)
    # only the run's own size decides: a short run of a shape this process has compiled stays
    # eager, so the same step renders the same bits whatever ran before it
    monkeypatch.setenv("MINART_KERNELS", "auto")
    assert step_path(x, compiled="seed") == "eager"
    assert step_path(x, compiled="seed", work=CPU_COMPILE_MIN_WORK - 1) == "eager"
    assert step_path(x, compiled="seed", work=CPU_COMPILE_MIN_WORK) == "compiled"


@pytest.mark.slow
def test_the_compiled_classic_step_keeps_its_flux_borders_zero_across_calls(tmp_path, monkeypatch):
    """The compiled classic step writes its fluxes into buffers that one step gives to the next,
    whose zero borders are the zero-flux boundary: they must stay zero over runs of steps,
    shapes that alternate (several images, several channels), and threads stepping at once,
    each with a set of its own (one set is kept idle, of the last shape). Ten shapes in
    one process: more than Dynamo's 8 compilations per function, which the compiled path avoids
    (a code object per signature), so none of them falls back to eager."""
    from concurrent.futures import ThreadPoolExecutor

    from minart.kernels import cpu

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(cpu, "_BROKEN", set())
    gen = torch.Generator().manual_seed(3)
    shapes = [(1, 3, 9, 12), (2, 1, 7, 5), (1, 3, 9, 12), (1, 1, 4, 4), (1, 2, 5, 6),
              (1, 3, 6, 7), (1, 4, 5, 5), (3, 1, 4, 9), (1, 3, 8, 3), (1, 3, 9, 12)]
    for shape in shapes:
        x = torch.rand(shape, generator=gen)
        ref = x
        for _ in range(3):  # a run: each step reads the buffers the previous one wrote
            x = cpu.classic_step_compiled(x, kappa=0.2, dt=0.2)
            ref = classic_step(ref, kappa=0.2, dt=0.2)
            torch.testing.assert_close(x, ref, **FWD_TOL)
        # a flat image stays flat, to the bit: no flux leaks in across a border or row end
        flat = torch.full(shape, 0.25)
        assert torch.equal(cpu.classic_step_compiled(flat, kappa=0.2, dt=0.2), flat)

    images = [torch.rand(1, 3, 96, 128, generator=gen) for _ in range(8)]

    def run(image):
        out = image
        for _ in range(6):
            out = cpu.classic_step_compiled(out, kappa=0.1, dt=0.25)
        return out

    def eager(image):
        for _ in range(6):
            image = classic_step(image, kappa=0.1, dt=0.25)
        return image

    with ThreadPoolExecutor(4) as pool:
        for image, out in zip(images, pool.map(run, images), strict=True):
            torch.testing.assert_close(out, eager(image), **FWD_TOL)
    assert not cpu.is_broken("classic")
    assert len(cpu._IDLE) == 1 and cpu._IDLE[0][0] == (1, 3, 96, 128)  # scratch kept at rest


def test_the_recompile_limit_turns_the_compiled_path_off(monkeypatch):
    from torch._dynamo.exc import FailOnRecompileLimitHit

    from minart.kernels import cpu

    def too_many(*args):
        raise FailOnRecompileLimitHit("recompile limit reached")

    monkeypatch.setattr(cpu, "_compiled", lambda name, fn, signature: too_many)
    monkeypatch.setattr(cpu, "_BROKEN", set())
    monkeypatch.setenv("MINART_KERNELS", "auto")
    x, k, *_ = _inputs("cpu")
    with pytest.raises(RuntimeError, match="the compiled seed step has been recompiled too often"):
        cpu.seed_step_compiled(x, k, kappa=0.3, dt=0.2)
    with pytest.warns(RuntimeWarning, match="seed step has been recompiled too often"):
        new, _ = seed_step_fast(x, k, kappa=0.3, dt=0.2, work=2 ** 40)  # falls back to eager
    assert torch.equal(new, seed_step(x, k, kappa=0.3, dt=0.2)[0]) and cpu.is_broken("seed")


def test_the_compiled_seed_step_shares_the_reference_update(monkeypatch):
    # _seed_core (what Inductor compiles) must run diffusion's own conduction/update/clamp code,
    # not a copy of it; called eagerly here, so no compile
    import torch.nn.functional as F

    from minart import diffusion
    from minart.kernels import cpu

    calls = []
    monkeypatch.setattr(cpu, "_seed_update", lambda *args: calls.append(args[-1]) or
                        diffusion._seed_update(*args))
    x, k, *_ = _inputs("cpu")
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")  # (B, C, H, W) -> (B, C, H+2, W+2)
    for cond in ("exp", "inverse", "tukey"):
        new, g = cpu._seed_core(padded, k, torch.tensor(0.3, dtype=torch.float64),
                                torch.tensor(0.2, dtype=torch.float64), cond, True)
        ref_new, ref_g = seed_step(x, k, kappa=0.3, dt=0.2, conduction=cond)
        torch.testing.assert_close(new, ref_new, **FWD_TOL)
        torch.testing.assert_close(g, ref_g, **FWD_TOL)
    assert calls == ["exp", "inverse", "tukey"]


def test_conductions_are_defined_once_for_the_dispatcher():
    from minart import diffusion
    from minart.kernels import dispatch

    assert dispatch._CONDUCTIONS is diffusion._CONDUCTIONS


# ------------------------------------------------------------------------------------------------
# CUDA


@pytest.mark.gpu
@pytest.mark.parametrize("check", ["_check_forward", "_check_backward", "_check_determinism",
                                   "_check_persistent", "_check_rows", "_check_split",
                                   "_check_fractal", "_check_sweep", "_check_pairs",
                                   "_check_operator_arguments"])
def test_triton_kernels_on_cuda(check):
    globals()[check]("cuda")


@pytest.mark.gpu
def test_triton_kernels_on_cuda_at_a_larger_odd_size():
    _check_forward("cuda", shapes=((2, 3, 131, 257), (1, 4, 67, 515)))
    _check_backward("cuda", shape=(2, 3, 131, 257))
    _check_determinism("cuda", shape=(1, 3, 257, 1031))
    _check_persistent("cuda", shapes=((2, 3, 131, 257), (1, 4, 67, 515)), n_programs=(7, None))
    _check_rows("cuda", shapes=((2, 3, 131, 257), (1, 4, 67, 515)), blocks=(None, (7, 64)))
    _check_split("cuda", shapes=((2, 3, 131, 257), (1, 4, 67, 515)), block=(7, 64))
    _check_pairs("cuda", shape=(2, 3, 131, 257), block=(7, 16))
    _check_pairs("cuda", shape=(1, 4, 67, 515), block=None)


@pytest.mark.gpu
def test_a_seed_sweep_on_cuda_matches_perona_malik_variant_by_variant():
    """``perona_malik_sweep`` on CUDA steps every variant in one launch (``seed_sweep``, runs of
    steps back to back between progress callbacks); each variant is ``perona_malik``'s run,
    on CUDA and as the eager CPU step computes it."""
    from minart.diffusion import perona_malik, perona_malik_sweep

    image = torch.rand(3, 67, 131, generator=torch.Generator().manual_seed(5))
    kappas, dts = [0.05, 0.2, 0.5], [0.2, 0.1, 0.3]
    for conduction in ("exp", "inverse"):
        seen = []
        ours = perona_malik_sweep(image.cuda(), steps=9, kappa=kappas, dt=dts, scheme="seed",
                                  conduction=conduction, callback_every=4,
                                  callback=lambda step, images: seen.append(step))  # noqa: B023
        assert seen == [4, 8, 9]
        for n, (kappa, dt) in enumerate(zip(kappas, dts, strict=True)):
            ref = perona_malik(image.cuda(), steps=9, kappa=kappa, dt=dt, scheme="seed",
                               conduction=conduction)
            torch.testing.assert_close(ours[n], ref, atol=1e-5, rtol=0)
            eager = perona_malik(image, steps=9, kappa=kappa, dt=dt, scheme="seed",
                                 conduction=conduction)
            torch.testing.assert_close(ours[n].cpu(), eager, atol=1e-4, rtol=0)


@pytest.mark.gpu
def test_auto_variant_on_cuda_times_every_kernel_and_keeps_the_bits():
    from minart.kernels import triton_diffusion as td

    x, k, *_ = _inputs("cuda", (1, 3, 300, 515))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no candidate may disagree with the tile kernel
        auto = td.seed_forward_triton(x, k, kappa=0.3, dt=0.2)
        classic = td.classic_step_triton(x, kappa=0.1, dt=0.2)
    assert torch.equal(auto[0], td.seed_forward_triton(x, k, kappa=0.3, dt=0.2,
                                                       variant="tiles")[0])
    assert torch.equal(classic, td.classic_step_triton(x, kappa=0.1, dt=0.2, variant="tiles"))
    picks = {key[0]: pick for key, pick in td._AUTO.items() if 515 in key}
    assert set(picks) == {"seed", "classic"}
    assert picks["seed"] in td._SEED_CANDIDATES and picks["classic"] in td._CANDIDATES
    # the learned step times its row loop's unroll factor: the same bits as either one
    x0 = torch.rand_like(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        auto = td.seed_loss_triton(x, x0, k, kappa=0.3, dt=0.2)
    for unroll in (1, td.ROWS_UNROLL):
        fixed = td.seed_loss_triton(x, x0, k, kappa=0.3, dt=0.2, unroll=unroll)
        assert all(torch.equal(a, b) for a, b in zip(auto[:3], fixed[:3], strict=True)), unroll
    assert [p for key, p in td._AUTO.items() if key[0] == "seed-loss"][-1] in td._LOSS_CANDIDATES


@pytest.mark.gpu
def test_dispatcher_picks_triton_on_cuda_and_matches_eager(monkeypatch):
    monkeypatch.setenv("MINART_KERNELS", "auto")
    x, k, _x0, *_ = _inputs("cuda", (1, 3, 64, 96))
    assert step_path(x) == "triton"
    fast = perona_malik(x, steps=5, kappa=0.3, dt=0.2, scheme="seed", operator=k)
    classic = perona_malik(x, steps=5, kappa=0.1, dt=0.2)
    # with a callback after every step there are no runs of steps to pair: the same bits
    each = perona_malik(x, steps=5, kappa=0.3, dt=0.2, scheme="seed", operator=k,
                        callback=lambda step, image: None)
    assert torch.equal(each, fast)
    assert torch.equal(perona_malik(x, steps=5, kappa=0.1, dt=0.2,
                                    callback=lambda step, image: None), classic)
    monkeypatch.setenv("MINART_KERNELS", "eager")
    torch.testing.assert_close(fast, perona_malik(x, steps=5, kappa=0.3, dt=0.2, scheme="seed",
                                                  operator=k), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(classic, perona_malik(x, steps=5, kappa=0.1, dt=0.2),
                               atol=1e-5, rtol=1e-5)
    monkeypatch.setenv("MINART_KERNELS", "auto")
    ops = torch.stack([k, 0.5 * k, laplacian_operator(3, device="cuda")])
    sweep = seed_sweep(x, ops, kappa=[0.3, 0.2, 0.1], dt=0.2)
    for n, kap in enumerate((0.3, 0.2, 0.1)):
        torch.testing.assert_close(sweep[n:n + 1], seed_step(x, ops[n], kappa=kap, dt=0.2)[0],
                                   **FWD_TOL)
    run = dict(kappa=[0.3, 0.2, 0.1], dt=[0.2, 0.1, 0.25], steps=3)
    fast = seed_sweep(x, ops, **run)
    monkeypatch.setenv("MINART_KERNELS", "eager")
    torch.testing.assert_close(fast, seed_sweep(x, ops, **run), **FWD_TOL)
    monkeypatch.setenv("MINART_KERNELS", "auto")
    f = fractal_field_fast(300, 200, iterations=64, power=3, eps=0.6, device="cuda")
    ref = fractal_field(300, 200, iterations=64, power=3, eps=0.6)
    assert (f.counts.cpu() == ref.counts).float().mean().item() >= 0.999


@pytest.mark.gpu
def test_auto_steps_on_cuda_time_pairs_and_keep_the_bits():
    from minart.kernels import triton_diffusion as td

    x, k, *_ = _inputs("cuda", (1, 3, 300, 515))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no candidate may disagree with single steps
        seed = td.seed_steps_triton(x, k, steps=5, kappa=0.3, dt=0.2)
        classic = td.classic_steps_triton(x, steps=5, kappa=0.1, dt=0.2)
    assert torch.equal(seed, td.seed_steps_triton(x, k, steps=5, kappa=0.3, dt=0.2,
                                                  variant="single"))
    assert torch.equal(classic, td.classic_steps_triton(x, steps=5, kappa=0.1, dt=0.2,
                                                        variant="single"))
    picks = {key[0]: pick for key, pick in td._AUTO.items() if 515 in key}
    assert {"seed-steps", "classic-steps"} <= set(picks)
    assert picks["seed-steps"] in td._STEP_CANDIDATES


@pytest.mark.gpu
def test_fractal_and_its_frames_take_the_kernel_on_cuda(monkeypatch):
    from minart.fractal import fractal, fractal_frames
    from minart.kernels import dispatch

    calls = []
    real = dispatch._fractal_snapshots_triton
    monkeypatch.setattr(dispatch, "_fractal_snapshots_triton",
                        lambda *args: calls.append(args[2]) or real(*args))
    monkeypatch.setenv("MINART_KERNELS", "auto")
    fast = fractal(96, 64, iterations=40, device="cuda")
    frames = fractal_frames(96, 64, frames=4, iterations=40, device="cuda")
    assert calls == [[40], [10, 20, 30, 40]]
    assert torch.equal(frames[-1], fast)  # the last frame is the still
    monkeypatch.setenv("MINART_KERNELS", "eager")
    eager = fractal(96, 64, iterations=40, device="cuda")
    assert len(calls) == 2
    differ = (fast - eager).abs().amax(dim=0) > 1e-3  # basin-boundary pixels may round apart
    assert differ.float().mean().item() < 0.005
