"""Launch each strip-kernel candidate of the seed and learned steps a few times, for Nsight Compute.

The timings in ``bench_kernels.py`` say how long each candidate takes; this says why, under
``ncu`` (hardware counters: occupancy, DRAM and L2 throughput, and what the warps wait on)::

    ncu --clock-control none --kernel-name regex:'_seed_(loss|fwd|dk)_(rows|split|pass)_kernel' \\
        --section SpeedOfLight --section Occupancy --section WarpStateStats \\
        --section MemoryWorkloadAnalysis python3 benchmarks/ncu_strips.py

(``bash benchmarks/gpu_check.sh`` runs that when ``NCU=1``.) Every strip candidate that
``"auto"`` times is launched ``--repeat`` times (default 1) at 4096^2 RGB float32, and the order
is printed, so each ncu report can be matched to its candidate (ncu replays each launch for its
counters; Triton compiles on the host before the launch, outside what ncu measures). It needs
CUDA and asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minart.diffusion import laplacian_operator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096, help="image side (default 4096)")
    parser.add_argument("--repeat", type=int, default=1, help="launches per candidate")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("ncu_strips.py needs CUDA", file=sys.stderr)
        return 2
    from minart.kernels import triton_diffusion as td

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, args.size, args.size, generator=gen).cuda()
    x0 = torch.rand(1, 3, args.size, args.size, generator=gen).cuda()
    k = (laplacian_operator(3) + 0.05 * torch.randn(3, 3, 3, 3, generator=gen)).cuda()
    runs = []
    for v, u, *ahead in td._SEED_CANDIDATES:
        if v in ("rows", "split"):
            runs.append((f"seed {v}, unroll {u}, prefetch {ahead[0] if ahead else 0}",
                         lambda v=v, u=u, a=(ahead[0] if ahead else 0): td.seed_forward_triton(
                             x, k, kappa=0.2, dt=0.2, store_g=False, variant=v, unroll=u,
                             prefetch=a)))
    for v, u, ahead, regs in td._LOSS_CANDIDATES:
        runs.append((f"learned {v}, unroll {u}, prefetch {ahead}, registers {regs or 'any'}",
                     lambda v=v, u=u, a=ahead, r=regs: td.seed_loss_triton(
                         x, x0, k, kappa=0.2, dt=0.2, variant=v, unroll=u, prefetch=a,
                         registers=r)))
    for name, fn in runs:
        for n in range(args.repeat):
            fn()
            torch.cuda.synchronize()
            print(f"launched: {name} #{n + 1}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
