"""Benchmark minart's fast paths against the eager references, the copy time and peer libraries.

One command, one table for the machine it runs on (device, versions, every ratio measured in the
same run)::

    python benchmarks/bench_kernels.py                       # CUDA if present, else CPU
    python benchmarks/bench_kernels.py --device cuda --size 4096
    python benchmarks/bench_kernels.py --device cpu --size 1024 --threads 2

CUDA (CUDA events, median of ``--reps`` timings of 5 back-to-back calls): copy time of one RGB
float32 image (read + write once),
seed step (eager conv2d vs Triton: tiles, strips, and two steps per pass, timed as a pair and
halved), classic step (the same), learned step (forward + loss
+ backward + SGD with momentum 0.9, weight decay 5e-4), fractal iterations (Gpix-iter/s, with the
first call's compile time), and a 16-variant sweep at 512^2 (one eager step per variant vs one
launch; per step of a 20-step run, eager variant by variant vs ``seed_sweep(steps=20)``).
CPU (``time.perf_counter``, every path once per round over ``--reps`` interleaved
rounds, minimum reported with the median in the note): copy, seed and classic steps eager vs compiled
(cold and warm compile times), ``cv2.ximgproc.anisotropicDiffusion`` (uint8) and medpy's
Perona-Malik per channel. Nothing here is a test: it prints numbers, it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minart.diffusion import classic_step, laplacian_operator, seed_step

ROWS: list[dict] = []

GROUPS = ("learned", "seed", "classic", "fractal", "sweep")
"""The GPU table's groups of rows, in order (``--only`` picks some)."""


def _row(group: str, name: str, ms: float | None, *, ref_ms: float | None = None,
         copy_ms: float | None = None, note: str = "", rate: float | None = None,
         first_s: float | None = None) -> None:
    row = dict(group=group, name=name, ms=ms, x_copy=(ms / copy_ms) if (ms and copy_ms) else None,
               speedup=(ref_ms / ms) if (ms and ref_ms) else None, note=note, rate=rate,
               first_s=first_s)
    ROWS.append(row)
    print(f"  {group}: {name}: {_fmt(ms, '.3f')} ms, x copy {_fmt(row['x_copy'], '.2f')}, "
          f"speed-up {_fmt(row['speedup'], '.1f')} {note}", flush=True)  # progress, if cut off


def _cuda_ms(fn: Callable[[], object], reps: int, warmup: int = 3, inner: int = 5) -> float:
    """Median over ``reps`` of the mean time of ``inner`` back-to-back calls between two events.

    Back-to-back calls let the host queue launches ahead, as a real loop of steps does, so the
    host's per-call Python time is hidden whenever a step runs longer on the GPU.
    """
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(inner):
            fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / inner)
    return statistics.median(times)


def _cpu_ms(fn: Callable[[], object], reps: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def _inputs(size: int, device: str, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, size, size, generator=gen).to(device)
    k = (laplacian_operator(3) + 0.05 * torch.randn(3, 3, 3, 3, generator=gen)).to(device)
    return x, k


def _versions() -> dict:
    out = {"python": platform.python_version(), "torch": torch.__version__}
    for mod in ("triton", "cv2", "medpy", "numpy"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - report what is there
            out[mod] = "-"
    return out


_PTX_ONLY = "not run: prefetching is PTX, which Triton's interpreter cannot run"


def _time_safely(fn: Callable[[], float]) -> tuple[float | None, str]:
    try:
        return fn(), ""
    except Exception as exc:  # noqa: BLE001 - a failing path is a row, not a crash
        return None, f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:80]}"


# ------------------------------------------------------------------------------------------------


def bench_cuda(size: int, reps: int, quick: bool, device: str = "cuda",
               groups: tuple[str, ...] = GROUPS) -> None:
    """The GPU table for ``groups`` (all by default); ``device="cpu"`` (with TRITON_INTERPRET=1)
    only checks that it runs."""
    global _cuda_ms
    if device == "cpu":
        _cuda_ms = lambda fn, reps, warmup=1, inner=1: _cpu_ms(fn, reps, warmup)  # noqa: E731
        torch.cuda.synchronize = lambda: None
    from minart.kernels import dispatch
    from minart.kernels import triton_diffusion as td
    from minart.kernels import triton_fractal as tf

    x, k = _inputs(size, device)
    dst = torch.empty_like(x)
    copy = _cuda_ms(lambda: dst.copy_(x), reps)
    _row("memory", f"copy {size}^2 RGB f32 (read+write)", copy, copy_ms=copy)
    kappa, dt = 0.2, 0.2

    # learned step (first: its target is still unmet, so a short lease measures it) ----------
    if "learned" in groups:
        x0 = x.clone()

        def learned(step_fn):
            kp = k.clone().requires_grad_()
            opt = torch.optim.SGD([kp], lr=1e-6, momentum=0.9, weight_decay=5e-4, dampening=0)

            def run():
                opt.zero_grad(set_to_none=True)
                loss = step_fn(kp)
                loss.backward()
                opt.step()
            return run

        def eager_loss(kp):
            new, g = seed_step(x, kp, kappa=kappa, dt=dt)
            return ((new - x0) ** 2 + g.abs() + new ** 2).sum()

        def general_loss(kp):
            new, g = td.SeedStep.apply(x, kp, kappa, dt, "exp")
            return ((new - x0) ** 2 + g.abs() + new ** 2).sum()

        eager_l = _cuda_ms(learned(eager_loss), reps)
        _row("learned step", "eager (forward + loss + backward + SGD)", eager_l, ref_ms=eager_l,
             copy_ms=copy)
        if not quick:  # (H200: 40.9x the copy; "auto" never runs it)
            ms, note = _time_safely(lambda: _cuda_ms(learned(general_loss), reps))
            _row("learned step", "triton SeedStep + torch loss + backward", ms, ref_ms=eager_l,
                 copy_ms=copy, note=note)
        ms, note = _time_safely(lambda: _cuda_ms(learned(
            lambda kp: td.SeedLossStep.apply(x, x0, kp, kappa, dt, "exp")[1]), reps))
        rows, bw = td.LOSS_ROWS_BLOCK
        _row("learned step", f"triton fused, default (SeedLossStep: rows {rows}x{bw}, 4 warps; "
             f"chose {_chosen(td, 'seed-loss')})", ms, ref_ms=eager_l, copy_ms=copy, note=note)
        for v, u, ahead, regs in td._LOSS_CANDIDATES:  # what "auto" chooses from: same bits
            def fused_unroll(kp, v=v, u=u, ahead=ahead, regs=regs):
                return _fused_custom(td, x, x0, kp, kappa, dt, None, 4, variant=v, unroll=u,
                                     prefetch=ahead, registers=regs)

            ms, note = ((None, _PTX_ONLY) if ahead and device != "cuda"
                        else _time_safely(lambda: _cuda_ms(learned(fused_unroll), reps)))
            kind = "two-pass" if v == "twopass" else "fused"
            _row("learned step", f"triton {kind} loss step, {v} {rows}x{bw}, 4 warps, unroll {u}"
                 + (f", prefetch {ahead} rows into L2" if ahead else "")
                 + (" (I_0 loaded a row ahead)" if v == "ahead" else "")
                 + (f", at most {regs} registers (3 programs an SM)" if regs else ""),
                 ms, ref_ms=eager_l, copy_ms=copy, note=note)
        # the same kernel without autograd and the optimizer around it: what the launches cost
        ms, note = _time_safely(lambda: _cuda_ms(lambda: td.seed_loss_triton(
            x, x0, k, kappa=kappa, dt=dt), reps))
        _row("learned step", "kernel alone, not a step: seed_loss_triton, default (no autograd, "
             "no SGD)", ms, ref_ms=eager_l, copy_ms=copy, note=note)
        # (--quick leaves out what "auto" never runs: measured on an H200 at 23-38x the copy)
        for bh, bw, nw in ([] if quick else [(2, 256, 4), (4, 256, 4), (4, 256, 8),
                                                         (8, 128, 4), (8, 256, 8)]):
            def fused(kp, bh=bh, bw=bw, nw=nw):
                return _fused_custom(td, x, x0, kp, kappa, dt, (bh, bw), nw)

            ms, note = _time_safely(lambda: _cuda_ms(learned(fused), reps))
            _row("learned step", f"triton fused loss step, tiles {bh}x{bw}, {nw} warps", ms,
                 ref_ms=eager_l, copy_ms=copy, note=note)
        # other strip heights and widths (other partial sums: other bits, not chosen at run time)
        for v, rows, bw, nw in ([] if quick else [
                ("rows", 16, 128, 4), ("rows", 32, 128, 4), ("rows", 64, 128, 4),
                ("rows", 256, 128, 4), ("rows", 64, 256, 4), ("rows", 64, 64, 2),
                ("split", 32, 128, 4), ("split", 64, 128, 4), ("split", 256, 128, 4),
                ("split", 128, 64, 2), ("split", 128, 256, 8)]):
            def fused_rows(kp, v=v, rows=rows, bw=bw, nw=nw):
                return _fused_custom(td, x, x0, kp, kappa, dt, (rows, bw), nw, variant=v)

            ms, note = _time_safely(lambda: _cuda_ms(learned(fused_rows), reps))
            _row("learned step", f"triton fused loss step, {v} {rows}x{bw}, {nw} warps", ms,
                 ref_ms=eager_l, copy_ms=copy, note=note)
        # the persistent variant: a fixed number of programs, one block reduction per sum per program
        sms = torch.cuda.get_device_properties(device).multi_processor_count if device == "cuda" else 1
        pb = td.PERSISTENT_BLOCK
        per_sm_default = td.PERSISTENT_PROGRAMS_PER_SM
        for bh, bw, nw, per_sm in ([] if quick else
                                   [(*pb, 4, 2), (*pb, 4, 4), (*pb, 4, 8), (2, 64, 4, 2)]):
            def persistent(kp, bh=bh, bw=bw, nw=nw, per_sm=per_sm):
                return _fused_custom(td, x, x0, kp, kappa, dt, (bh, bw), nw, variant="persistent",
                                     n_programs=per_sm * sms if device == "cuda" else None)

            ms, note = _time_safely(lambda: _cuda_ms(learned(persistent), reps))
            default = " (variant default)" if ((bh, bw) == pb and nw == 4
                                               and per_sm == per_sm_default) else ""
            _row("learned step", f"triton fused persistent {bh}x{bw}, {nw} warps, {per_sm} "
                 f"programs/SM{default}", ms, ref_ms=eager_l, copy_ms=copy, note=note)

    # seed step -------------------------------------------------------------------------------
    if "seed" in groups:
        eager = _cuda_ms(lambda: seed_step(x, k, kappa=kappa, dt=dt), reps)
        _row("seed step", "eager (reflect pad + conv2d + exp + clamp)", eager, ref_ms=eager,
             copy_ms=copy, note=f"torch defaults: cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}")
        configs = [(1, 512, 4)] if quick else [(1, 256, 4), (1, 512, 4), (1, 1024, 4), (1, 1024, 8),
                                               (2, 256, 4), (2, 512, 8), (4, 128, 4), (8, 128, 4)]
        for bh, bw, nw in configs:
            ms, note = _time_safely(lambda: _cuda_ms(lambda: td.seed_forward_triton(
                x, k, kappa=kappa, dt=dt, store_g=False, block=(bh, bw), num_warps=nw,
                variant="tiles"), reps))
            _row("seed step", f"triton {bh}x{bw} tile, {nw} warps", ms, ref_ms=eager,
                 copy_ms=copy, note=note)
        for rows, bw, nw, u in _rows_configs(td, quick):
            ms, note = _time_safely(lambda: _cuda_ms(lambda: td.seed_forward_triton(
                x, k, kappa=kappa, dt=dt, store_g=False, block=(rows, bw), num_warps=nw,
                variant="rows", unroll=u), reps))
            _row("seed step", f"triton rows {rows}x{bw}, {nw} warps, unroll {u}", ms, ref_ms=eager,
                 copy_ms=copy, note=note)
        # what "auto" chooses from besides the above: the same bits
        rows, bw = td.ROWS_BLOCK
        for v, u, *ahead in td._SEED_CANDIDATES:
            ahead = ahead[0] if ahead else 0
            if v == "tiles" or (v == "rows" and u == td.ROWS_UNROLL and not ahead):
                continue
            ms, note = (None, _PTX_ONLY) if ahead and device != "cuda" else _time_safely(
                lambda v=v, u=u, ahead=ahead: _cuda_ms(lambda: td.seed_forward_triton(
                    x, k, kappa=kappa, dt=dt, store_g=False, variant=v, unroll=u,
                    prefetch=ahead), reps))
            _row("seed step", f"triton {v} {rows}x{bw}, 4 warps, unroll {u}"
                 + (f", prefetch {ahead} rows into L2" if ahead else ""), ms, ref_ms=eager,
                 copy_ms=copy, note=note)
        ms, note = _time_safely(lambda: _cuda_ms(lambda: td.seed_forward_triton(
            x, k, kappa=kappa, dt=dt, store_g=False), reps))
        _row("seed step", f"triton auto (default; chose {_chosen(td, 'seed')})", ms, ref_ms=eager,
             copy_ms=copy, note=note)
        ms, note = _time_safely(lambda: _cuda_ms(lambda: td.seed_forward_triton(
            x, k, kappa=kappa, dt=dt, store_g=True), reps))
        _row("seed step", f"triton auto, also writing g (chose {_chosen(td, 'seed')})", ms,
             ref_ms=eager, copy_ms=copy, note=note)
        # the operator on the host, as perona_malik passes it: its values are kernel arguments
        # (the all-channel strip kernels hold no weights in registers); the same bits
        host = k.cpu()
        for u, ahead in ((1, 0), (td.ROWS_UNROLL, 0), (1, td.PREFETCH_ROWS)):
            ms, note = (None, _PTX_ONLY) if ahead and device != "cuda" else _time_safely(
                lambda u=u, ahead=ahead: _cuda_ms(lambda: td.seed_forward_triton(
                    x, host, kappa=kappa, dt=dt, store_g=False, variant="rows", unroll=u,
                    prefetch=ahead), reps))
            _row("seed step", f"triton rows {rows}x{bw}, 4 warps, unroll {u}"
                 + (f", prefetch {ahead} rows into L2" if ahead else "")
                 + ", operator as kernel arguments", ms, ref_ms=eager, copy_ms=copy, note=note)
        ms, note = _time_safely(lambda: _cuda_ms(lambda: td.seed_forward_triton(
            x, host, kappa=kappa, dt=dt, store_g=False), reps))
        _row("seed step", "triton auto, operator on the host (as perona_malik passes it; chose "
             f"{_chosen(td, 'seed')})", ms, ref_ms=eager, copy_ms=copy, note=note)
        # two steps per pass: the time of a pair, halved (runs of steps: perona_malik, sweeps)
        for rows, bw, nw, u in _pairs_configs(td, quick):
            ms, note = _time_safely(lambda: _cuda_ms(lambda: td.seed_steps_triton(
                x, k, steps=2, kappa=kappa, dt=dt, block=(rows, bw), num_warps=nw, variant="pairs",
                unroll=u), reps) / 2)
            _row("seed step", f"triton two per pass, rows {rows}x{nw}x{bw}, unroll {u}, per step",
                 ms, ref_ms=eager, copy_ms=copy, note=note)
        ms, note = _time_safely(lambda: _cuda_ms(lambda: td.seed_steps_triton(
            x, k, steps=2, kappa=kappa, dt=dt), reps) / 2)
        _row("seed step", f"triton runs auto (default; chose {_chosen(td, 'seed-steps')}), per step",
             ms, ref_ms=eager, copy_ms=copy, note=note)
        ms, note = _time_safely(lambda: _cuda_ms(lambda: td.seed_steps_triton(
            x, host, steps=2, kappa=kappa, dt=dt), reps) / 2)
        _row("seed step", "triton runs auto, operator on the host (as perona_malik passes it; "
             f"chose {_chosen(td, 'seed-steps')}), per step", ms, ref_ms=eager, copy_ms=copy,
             note=note)

    # classic step ----------------------------------------------------------------------------
    if "classic" in groups:
        eager_c = _cuda_ms(lambda: classic_step(x, kappa=0.1, dt=dt), reps)
        _row("classic step", "eager", eager_c, ref_ms=eager_c, copy_ms=copy)
        for bh, bw, nw in ([(1, 512, 4)] if quick else [(1, 512, 4), (1, 1024, 4), (4, 256, 4),
                                                         (8, 128, 4)]):
            ms, note = _time_safely(lambda: _cuda_ms(lambda: td.classic_step_triton(
                x, kappa=0.1, dt=dt, block=(bh, bw), num_warps=nw, variant="tiles"), reps))
            _row("classic step", f"triton {bh}x{bw} tile, {nw} warps", ms, ref_ms=eager_c,
                 copy_ms=copy, note=note)
        for rows, bw, nw, u in _rows_configs(td, quick):
            ms, note = _time_safely(lambda: _cuda_ms(lambda: td.classic_step_triton(
                x, kappa=0.1, dt=dt, block=(rows, bw), num_warps=nw, variant="rows", unroll=u),
                reps))
            _row("classic step", f"triton rows {rows}x{bw}, {nw} warps, unroll {u}", ms,
                 ref_ms=eager_c, copy_ms=copy, note=note)
        ms, note = _time_safely(lambda: _cuda_ms(lambda: td.classic_step_triton(
            x, kappa=0.1, dt=dt), reps))
        _row("classic step", f"triton auto (default; chose {_chosen(td, 'classic')})", ms,
             ref_ms=eager_c, copy_ms=copy, note=note)
        for rows, bw, nw, u in _pairs_configs(td, quick):
            ms, note = _time_safely(lambda: _cuda_ms(lambda: td.classic_steps_triton(
                x, steps=2, kappa=0.1, dt=dt, block=(rows, bw), num_warps=nw, variant="pairs",
                unroll=u), reps) / 2)
            _row("classic step", f"triton two per pass, rows {rows}x{nw}x{bw}, unroll {u}, per step",
                 ms, ref_ms=eager_c, copy_ms=copy, note=note)
        ms, note = _time_safely(lambda: _cuda_ms(lambda: td.classic_steps_triton(
            x, steps=2, kappa=0.1, dt=dt), reps) / 2)
        _row("classic step", f"triton runs auto (default; chose {_chosen(td, 'classic-steps')}), "
             "per step", ms, ref_ms=eager_c, copy_ms=copy, note=note)

    # fractal -----------------------------------------------------------------------------------
    if "fractal" in groups:
        from minart.fractal import fractal_field

        its = 64 if device == "cuda" else 4
        pix_it = size * size * its / 1e9
        eager_f = _cuda_ms(lambda: fractal_field(size, size, iterations=its, device=device),
                           max(3, reps // 4), warmup=1, inner=1)
        rate = f"{pix_it / eager_f * 1e3:.1f}"
        _row("fractal", f"eager fractal_field, {its} iterations (Gpix-iter/s = {rate})",
             eager_f, ref_ms=eager_f)
        t = time.perf_counter()
        dispatch.fractal_field_fast(64, 64, iterations=its, device=device)
        torch.cuda.synchronize()
        warm = time.perf_counter() - t
        fast_f, note = _time_safely(lambda: _cuda_ms(
            lambda: dispatch.fractal_field_fast(size, size, iterations=its, device=device), reps))
        rate = f"{pix_it / fast_f * 1e3:.1f}" if fast_f else "-"
        _row("fractal", f"triton fractal_field_fast (Gpix-iter/s = {rate}; first call {warm:.1f} s)",
             fast_f, ref_ms=eager_f, note=note, rate=pix_it / fast_f * 1e3 if fast_f else None,
             first_s=warm)
        from minart.fractal import _grid, fractal

        whole, note = _time_safely(lambda: _cuda_ms(
            lambda: fractal(size, size, iterations=its, device=device), reps, inner=1))
        rate = f"{pix_it / whole * 1e3:.1f}" if whole else "-"
        _row("fractal", f"fractal(), the stage's function: orbits, colouring, palette "
             f"(Gpix-iter/s = {rate})", whole, ref_ms=eager_f, note=note)
        start = _grid(size, size, 0j, 2.8, torch.float32, torch.device(device))
        for blk, nw, unroll in ([(128, 1, 4)] if quick else [(128, 1, 4), (128, 1, 8), (256, 2, 4),
                                                              (256, 4, 4), (64, 1, 4)]):
            kern, note = _time_safely(lambda: _cuda_ms(lambda: tf.fractal_iterate_triton(
                start, iterations=its, trap=None, block=blk, num_warps=nw, unroll=unroll), reps))
            rate = f"{pix_it / kern * 1e3:.1f}" if kern else "-"
            _row("fractal", f"triton kernel only, no trap, block {blk}, {nw} warps, unroll {unroll} "
                 f"(Gpix-iter/s = {rate})", kern, ref_ms=eager_f, note=note,
                 rate=pix_it / kern * 1e3 if kern else None)

    # sweep ---------------------------------------------------------------------------------------
    if "sweep" in groups:
        xs, _ = _inputs(512 if device == "cuda" else size, device, seed=1)
        gen = torch.Generator().manual_seed(2)
        ops = (laplacian_operator(3) + 0.1 * torch.randn(16, 3, 3, 3, 3, generator=gen)).to(device)
        kaps = [0.1 + 0.02 * i for i in range(16)]

        def one_at_a_time():
            for i in range(16):
                seed_step(xs, ops[i], kappa=kaps[i], dt=dt)

        eager_s = _cuda_ms(one_at_a_time, reps)
        _row("sweep 16 x 512^2", "eager, one variant at a time", eager_s, ref_ms=eager_s)
        ms, note = _time_safely(lambda: _cuda_ms(
            lambda: dispatch.seed_sweep(xs, ops, kappa=kaps, dt=dt), reps))
        _row("sweep 16 x 512^2", "seed_sweep (one launch)", ms, ref_ms=eager_s, note=note)
        # a run of S steps: seed_sweep checks its input once (one wait for the GPU) and queues the
        # S launches back to back; eager runs S steps of each variant in turn. Times per step.
        n_steps = 20 if device == "cuda" else 2

        def one_at_a_time_steps():
            for i in range(16):
                img = xs
                for _ in range(n_steps):
                    img = seed_step(img, ops[i], kappa=kaps[i], dt=dt)[0]

        eager_r = _cuda_ms(one_at_a_time_steps, reps, warmup=1, inner=1) / n_steps
        _row("sweep 16 x 512^2", f"eager, one variant at a time, {n_steps} steps, per step", eager_r,
             ref_ms=eager_r)
        ms, note = _time_safely(lambda: _cuda_ms(
            lambda: dispatch.seed_sweep(xs, ops, kappa=kaps, dt=dt, steps=n_steps), reps,
            inner=1) / n_steps)
        _row("sweep 16 x 512^2", f"seed_sweep(steps={n_steps}), per step", ms, ref_ms=eager_r,
             note=note)


def _rows_configs(td, quick: bool) -> list[tuple[int, int, int, int]]:
    """``(rows, BLOCK_W, warps, unroll)`` of the row-marching variants to time."""
    rows, bw = td.ROWS_BLOCK
    u = td.ROWS_UNROLL
    if quick:
        return [(rows, bw, 4, u)]
    return [(rows, bw, 4, u), (rows, bw, 4, 1), (16, 128, 4, u), (32, 128, 4, u),
            (128, 128, 4, u), (64, 256, 4, u), (64, 256, 8, 1), (64, 64, 2, u)]


def _pairs_configs(td, quick: bool) -> list[tuple[int, int, int, int]]:
    """``(rows, BLOCK_W, strips = warps, unroll)`` of the two-step kernels to time."""
    rows, bw = td.PAIRS_BLOCK
    u = td.ROWS_UNROLL
    if quick:
        return [(rows, bw, 4, u)]
    return [(rows, bw, 4, u), (rows, bw, 4, 1), (32, bw, 4, u), (128, bw, 4, u), (rows, bw, 8, u),
            (rows, bw, 2, u), (rows, 64, 4, u)]


def _chosen(td, kind: str) -> str:
    """The variant ``"auto"`` last chose for a ``kind`` of step (after the row is timed)."""
    picks = [v for k, v in td._AUTO.items() if k[0] == kind]
    if not picks:
        return "the first candidate (off CUDA)"
    variant, unroll, *more = picks[-1]
    if variant in ("tiles", "single"):
        return variant
    ahead, regs = (*more, 0, 0)[:2]
    return (f"{variant}, unroll {unroll}" + (f", prefetch {ahead}" if ahead else "")
            + (f", {regs} registers" if regs else ""))


def _fused_custom(td, x, x0, kp, kappa, dt, block, nw, variant="tiles", n_programs=None,
                  unroll=None, prefetch=None, registers=None):
    """The fused learned step with another tile shape or variant (same maths as SeedLossStep)."""

    class _Custom(torch.autograd.Function):
        @staticmethod
        def forward(ctx, kk):
            _, loss, dk, _ = td.seed_loss_triton(x, x0, kk, kappa=kappa, dt=dt, block=block,
                                                 num_warps=nw, variant=variant,
                                                 n_programs=n_programs, unroll=unroll,
                                                 prefetch=prefetch, registers=registers)
            ctx.save_for_backward(dk)
            return loss

        @staticmethod
        def backward(ctx, grad):
            (dk,) = ctx.saved_tensors
            return dk * grad

    return _Custom.apply(kp)


# ------------------------------------------------------------------------------------------------


def _interleaved_ms(paths: dict[str, Callable[[], object]], rounds: int,
                    per_call: dict[str, int]) -> dict[str, tuple[float, float]]:
    """``(min, median)`` ms per path, timing every path once per round, rounds interleaved.

    On a shared machine other processes come and go: interleaving exposes every path to the same
    load, and the minimum over rounds estimates the unloaded time (the median is reported too).
    """
    times: dict[str, list[float]] = {name: [] for name in paths}
    for fn in paths.values():
        fn()  # warm-up
    for _ in range(rounds):
        for name, fn in paths.items():
            t = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t) * 1e3 / per_call.get(name, 1))
    return {name: (min(v), statistics.median(v)) for name, v in times.items()}


def bench_cpu(size: int, reps: int) -> None:
    """CPU table: ratios of minimum times over interleaved rounds (see :func:`_interleaved_ms`)."""
    import numpy as np

    from minart.kernels import cpu

    x, k = _inputs(size, "cpu")
    dst = torch.empty_like(x)
    kappa, dt = 0.2, 0.2
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="minart-bench-inductor-")
    t = time.perf_counter()
    cpu.seed_step_compiled(x, k, kappa=kappa, dt=dt, need_g=False)
    cold = time.perf_counter() - t
    warm = _warm_compile_seconds(size, torch.get_num_threads())
    t = time.perf_counter()
    cpu.classic_step_compiled(x, kappa=0.1, dt=dt)
    cold_c = time.perf_counter() - t
    niter = 10
    img8 = (x[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)  # (3, H, W) -> (H, W, 3)
    planes = [x[0, c].numpy() for c in range(3)]
    paths: dict[str, Callable[[], object]] = {
        "copy": lambda: dst.copy_(x),
        "seed eager": lambda: seed_step(x, k, kappa=kappa, dt=dt),
        "seed compiled": lambda: cpu.seed_step_compiled(x, k, kappa=kappa, dt=dt, need_g=False),
        "classic eager": lambda: classic_step(x, kappa=0.1, dt=dt),
        "classic compiled": lambda: cpu.classic_step_compiled(x, kappa=0.1, dt=dt),
    }
    notes = {}
    try:
        import cv2

        paths["cv2"] = lambda: cv2.ximgproc.anisotropicDiffusion(img8, 0.2, 25.0, niter)
        notes["cv2"] = f"uint8 HxWx3, {cv2.getNumThreads()} OpenCV threads, per step of {niter}"
    except Exception as exc:  # noqa: BLE001
        notes["cv2"] = f"unavailable: {exc}"
    try:
        from medpy.filter.smoothing import anisotropic_diffusion

        paths["medpy"] = lambda: [anisotropic_diffusion(p, niter=niter, kappa=0.1, gamma=dt,
                                                        option=1) for p in planes]
        notes["medpy"] = f"float64 per channel, per step of {niter}"
    except Exception as exc:  # noqa: BLE001
        notes["medpy"] = f"unavailable: {exc}"
    res = _interleaved_ms(paths, reps, {"cv2": niter, "medpy": niter})
    ms = {name: v[0] for name, v in res.items()}
    med = {name: f"median {v[1]:.1f} ms" for name, v in res.items()}
    copy = ms["copy"]
    _row("memory", f"copy {size}^2 RGB f32 (read+write)", copy, copy_ms=copy, note=med["copy"])
    _row("seed step", "eager (reflect pad + conv2d + exp + clamp)", ms["seed eager"],
         ref_ms=ms["seed eager"], copy_ms=copy, note=med["seed eager"])
    _row("seed step", "compiled (torch.compile, Inductor)", ms["seed compiled"],
         ref_ms=ms["seed eager"], copy_ms=copy,
         note=f"{med['seed compiled']}; first call: cold cache {cold:.1f} s, "
              f"new process on the warm cache {warm}")
    _row("classic step", "eager", ms["classic eager"], ref_ms=ms["classic eager"], copy_ms=copy,
         note=med["classic eager"])
    _row("classic step", "compiled (torch.compile, Inductor)", ms["classic compiled"],
         ref_ms=ms["classic eager"], copy_ms=copy,
         note=f"{med['classic compiled']}; first call {cold_c:.1f} s")
    _row("classic step", "anchor: cv2.ximgproc.anisotropicDiffusion, per step", ms.get("cv2"),
         ref_ms=ms["classic eager"], copy_ms=copy,
         note=notes["cv2"] + (f"; {med['cv2']}" if "cv2" in med else ""))
    _row("classic step", "anchor: medpy anisotropic_diffusion per channel, per step",
         ms.get("medpy"), ref_ms=ms["classic eager"], copy_ms=copy,
         note=notes["medpy"] + (f"; {med['medpy']}" if "medpy" in med else ""))


def _warm_compile_seconds(size: int, threads: int) -> str:
    """First compiled seed step of a fresh process that finds Inductor's on-disk cache warm."""
    import subprocess

    code = (f"import time, torch; torch.set_num_threads({threads}); from minart.kernels import cpu; "
            "from minart.diffusion import laplacian_operator as L; "
            f"x = torch.rand(1, 3, {size}, {size}); "
            "t = time.perf_counter(); cpu.seed_step_compiled(x, L(3), kappa=0.2, dt=0.2, "
            "need_g=False); print(time.perf_counter() - t)")
    try:
        out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True,
                             timeout=300, env={**os.environ},
                             cwd=Path(__file__).resolve().parents[1])
        return f"{float(out.stdout.strip().splitlines()[-1]):.1f} s"
    except Exception as exc:  # noqa: BLE001
        return f"unmeasured ({type(exc).__name__})"


# ------------------------------------------------------------------------------------------------


def _targets(device: str) -> list[tuple[str, str, bool | None]]:
    """Issue 4's targets against this run's rows: ``(target, measured, met)``."""

    def pick(group: str, prefix: str, key: str, best=min):
        vals = [(r[key], r["name"]) for r in ROWS if r["group"] == group
                and r["name"].startswith(prefix) and r[key] is not None]
        return best(vals) if vals else (None, "-")

    out = []
    if device == "cuda":
        for group, prefix, limit, label in (
                ("seed step", "triton", 2.0, "seed step <= 2x copy (aim 1.5x)"),
                ("learned step", "triton", 5.0, "learned step <= 5x copy"),
                ("classic step", "triton", 1.5, "classic step <= 1.5x copy")):
            v, name = pick(group, prefix, "x_copy")
            out.append((label, "-" if v is None else f"{v:.2f}x copy ({name})",
                        None if v is None else v <= limit))
        v, name = pick("fractal", "triton", "rate", best=max)
        out.append(("fractal >= 500 Gpix-iter/s", "-" if v is None else f"{v:.0f} ({name})",
                    None if v is None else v >= 500))
        first = [r["first_s"] for r in ROWS if r.get("first_s") is not None]
        out.append(("fractal compile/warm-up < 10 s", f"{first[0]:.1f} s" if first else "-",
                    (first[0] < 10) if first else None))
        v, name = pick("sweep 16 x 512^2", "seed_sweep", "speedup", best=max)
        out.append(("16-variant sweep >= 8x eager", "-" if v is None else f"{v:.1f}x ({name})",
                    None if v is None else v >= 8))
    else:
        v, _ = pick("seed step", "compiled", "speedup", best=max)
        out.append(("seed step >= 3x eager", "-" if v is None else f"{v:.1f}x",
                    None if v is None else v >= 3))
        ours, _ = pick("classic step", "compiled", "ms")
        cv, _ = pick("classic step", "anchor: cv2", "ms")
        out.append(("classic step <= OpenCV per step",
                    "-" if None in (ours, cv) else f"{ours:.2f} ms vs {cv:.2f} ms",
                    None if None in (ours, cv) else ours <= cv))
    return out


def _fmt(v, spec):
    return "-" if v is None else format(v, spec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    parser.add_argument("--size", type=int, default=None,
                        help="image side (default 4096 on CUDA, 1024 on CPU)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch and OpenCV)")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions (median)")
    parser.add_argument("--quick", action="store_true", help="default tile shapes only")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument("--only", default=",".join(GROUPS), metavar="GROUP[,GROUP...]",
                        help=f"GPU table: only these groups of rows, of {', '.join(GROUPS)} "
                             "(the copy time is always measured)")
    parser.add_argument("--check", action="store_true",
                        help="run the GPU code path on CPU through Triton's interpreter at 32^2 "
                             "(checks the script, times nothing meaningful)")
    args = parser.parse_args(argv)
    groups = tuple(g.strip() for g in args.only.split(",") if g.strip())
    unknown = sorted(set(groups) - set(GROUPS))
    if unknown or not groups:
        parser.error(f"--only {args.only!r}: groups are {', '.join(GROUPS)}")
    device = args.device
    if args.check:
        os.environ["TRITON_INTERPRET"] = "1"
        bench_cuda(args.size or 32, 1, True, device="cpu", groups=groups)
        for label, measured, met in _targets("cuda"):
            print(label, measured, met)
        return 0
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    size = args.size or (4096 if device == "cuda" else 1024)
    torch.manual_seed(0)
    if device == "cuda":
        name = torch.cuda.get_device_name()
        bench_cuda(size, args.reps or 20, args.quick, groups=groups)
    else:
        torch.set_num_threads(args.threads)
        try:
            import cv2

            cv2.setNumThreads(args.threads)
        except Exception:  # noqa: BLE001
            pass
        name = f"{platform.processor() or platform.machine()} CPU, {args.threads} threads"
        bench_cpu(size, args.reps or 7)
    versions = _versions()
    if device == "cpu" and hasattr(os, "getloadavg"):  # other processes skew shared-CPU timings
        load = os.getloadavg()
        versions["load average (1/5/15 min)"] = "/".join(f"{v:.2f}" for v in load)
    print(f"\n## minart kernels benchmark: {name}, {size}x{size} RGB float32")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    print("\n| group | path | ms | x copy | speed-up vs eager | note |")
    print("| --- | --- | ---: | ---: | ---: | --- |")
    for r in ROWS:
        print(f"| {r['group']} | {r['name']} | {_fmt(r['ms'], '.3f')} | {_fmt(r['x_copy'], '.2f')} "
              f"| {_fmt(r['speedup'], '.1f')} | {r['note']} |")
    targets = _targets(device)
    print("\n| target (issue 4) | this run | met |")
    print("| --- | --- | --- |")
    for label, measured, met in targets:
        print(f"| {label} | {measured} | {'-' if met is None else ('yes' if met else 'NO')} |")
    if args.json:
        args.json.write_text(json.dumps(dict(device=name, size=size, versions=versions,
                                             rows=ROWS, targets=targets), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
