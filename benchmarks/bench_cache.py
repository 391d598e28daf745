"""Benchmark of the tensor cache: first render vs unchanged second render, with and without Prefect.

    python benchmarks/bench_cache.py [--size 512] [--steps 1000] [--prefect/--no-prefect]

Renders a recipe (two fractal branches, a long Perona-Malik diffusion, a blend and a PNG output)
into a fresh cache, then renders it again unchanged, and prints the times and their ratio. The
target is a second run under 15 % of the first. Prefect start-up (the temporary server, 7-20 s
without PREFECT_API_URL) is excluded: a warm-up flow runs first, then both renders are timed as
flow calls in the same process. Set PREFECT_API_URL to measure against a running server.
Prefect 3.9 adds about 1 s to every flow run, cached or not (the flow-run heartbeat thread is
joined at the end); the benchmark prints that fixed cost too. Diffusion runs the eager
reference (``MINART_KERNELS=eager`` unless set), so a one-off ``torch.compile`` of the CPU fast
path does not land in whichever run comes first.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

RECIPE = """\
name: bench
seed: 1
size: [{size}, {size}]
device: cpu
steps:
  base:  {{stage: fractal, params: {{iterations: 128, supersample: 2}}}}
  soft:  {{stage: perona_malik, input: base, params: {{steps: {steps}, kappa: 0.08, dt: 0.2}}}}
  other: {{stage: fractal, params: {{iterations: 64, power: 5}}}}
  mix:   {{stage: blend, inputs: [soft, other], params: {{opacity: 0.5}}}}
outputs:
  still: {{step: mix, path: "{{name}}.png"}}
"""

TARGET = 0.15


def _timed(fn) -> tuple[float, dict]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--prefect", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    os.environ.setdefault("MINART_KERNELS", "eager")

    from minart import engine
    from minart.cache import TensorCache

    scratch = tempfile.TemporaryDirectory(prefix="minart-bench-")
    folder = Path(scratch.name)
    recipe = folder / "bench.yaml"
    recipe.write_text(RECIPE.format(size=args.size, steps=args.steps))
    rows = []

    cache = TensorCache(folder / "cache-engine")
    plan = engine.load_plan(recipe, output_dir=folder / "out-engine")
    first, r1 = _timed(lambda: engine.render(plan, cache=cache).to_dict())
    second, r2 = _timed(lambda: engine.render(plan, cache=cache).to_dict())
    rows.append(("engine (no Prefect)", first, second, r1, r2))

    if args.prefect:
        for key, value in (("PREFECT_SERVER_ANALYTICS_ENABLED", "false"), ("DO_NOT_TRACK", "1"),
                           ("PREFECT_LOGGING_LEVEL", "WARNING")):
            os.environ.setdefault(key, value)
        from minart.flows.render import render
        from prefect import flow

        @flow
        def warm_up() -> None:
            """Starts Prefect (the temporary server when PREFECT_API_URL is unset)."""

        start = time.perf_counter()
        warm_up()
        startup = time.perf_counter() - start
        empty, _ = _timed(warm_up)  # Prefect's fixed cost per flow run (heartbeat thread join)
        location = str(folder / "cache-flow")
        out = str(folder / "out-flow")
        first, r1 = _timed(lambda: render(str(recipe), cache=location, output_dir=out))
        second, r2 = _timed(lambda: render(str(recipe), cache=location, output_dir=out))
        rows.append((f"Prefect flow (start-up {startup:.1f} s excluded)", first, second, r1, r2))
        rows.append(("  of which an empty Prefect flow run costs", empty, empty, None, None))

    print(f"recipe {args.size}x{args.size}, Perona-Malik {args.steps} steps")
    print(f"{'path':<42} {'first s':>8} {'second s':>9} {'ratio':>7} {'computed':>9}  target")
    for name, first, second, r1, r2 in rows:
        if r1 is None:
            print(f"{name:<42} {first:8.2f} {second:9.2f}")
            continue
        ratio = second / first
        verdict = "ok" if ratio < TARGET and not r2["computed"] else "MISSED"
        print(f"{name:<42} {first:8.2f} {second:9.2f} {ratio:7.1%} "
              f"{len(r1['computed']):>4}->{len(r2['computed']):<4}  < {TARGET:.0%} {verdict}")
    scratch.cleanup()


if __name__ == "__main__":
    main()
