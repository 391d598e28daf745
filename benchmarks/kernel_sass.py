"""Static profile of minart's Triton kernels for sm_90 (H100/H200), without a GPU.

Compiles each kernel the way the launcher specialises it (pointers and sizes divisible by 16, as
for a 4096^2 image), disassembles the cubin with the ``cuobjdump`` that ships with Triton, and
prints per kernel: registers and stack (spills) per thread, and the SASS instructions and global
loads each pixel costs per step (for the row-marching and persistent kernels: the loop body, whose
prologue is amortised over the strip; the two-step kernels' body is divided by the two steps and
by the 30 of 32 lanes that store). It predicts nothing about time on its own; it shows what
a timing on a GPU (``bench_kernels.py``) has to explain: register pressure, spills, and how many
instructions each pixel issues (an H200 issues about 1.05e12 warp instructions per second:
``n`` instructions per pixel cost ``n / 32 / 1.05e12 * 4096^2`` s, 0.5 us per instruction
at 4096^2, against a copy time of about 99 us).

    python benchmarks/kernel_sass.py            # the table (about a minute on two cores)
    python benchmarks/kernel_sass.py --dump DIR # also write each kernel's SASS to DIR
    python benchmarks/kernel_sass.py --only seed  # only the kernels whose label says "seed"
"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from minart.kernels import triton_diffusion as td  # noqa: E402
from minart.kernels import triton_fractal as tf  # noqa: E402

BIN = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
_INSTR = re.compile(r"^\s+/\*([0-9a-f]{4,})\*/\s+(.*?);")
_OP = re.compile(r"^(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)")
_BRA = re.compile(r"BRA\s+(?:!?U?P\w+,\s*)?(?:`\(\.L_x_\d+\)\s*)?0x([0-9a-f]+)")


_POINTERS = {"count_ptr": "*i32", "done_ptr": "*i8"}
_INTS = {"H", "W", "n_tw", "n_tiles", "x_bstride", "k_bstride", "total", "n_programs", "n", "k0",
         "iterations"}


def compile_sm90(fn, consts: dict, num_warps: int = 4):
    """The kernel as the launcher builds it for a 4096^2 float32 image on sm_90 (``maxnreg`` in
    ``consts`` is the launch option, not a constexpr)."""
    sig = {}
    attrs = {}
    consts = dict(consts)
    cap = {"maxnreg": consts.pop("maxnreg")} if "maxnreg" in consts else {}
    # constexprs with a default (PREFETCH) take it unless the case names them
    consts = {**{p.name: p.default for p in fn.params if p.is_constexpr and p.has_default},
              **consts}
    for i, name in enumerate(fn.arg_names):
        if name in consts:
            sig[name] = "constexpr"
        elif name == "kv":  # the operator's values as arguments (KV), else nothing
            sig[name] = ("fp32",) * (consts["C"] ** 2 * 9) if consts.get("KV") else "constexpr"
            if not consts.get("KV"):
                consts[name] = None
        elif name.endswith("_ptr"):
            sig[name] = _POINTERS.get(name, "*fp32")
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif name in _INTS:
            sig[name] = "i32"
            if name in ("H", "W", "n_tw", "n_tiles", "x_bstride", "total", "n"):
                attrs[(i,)] = [["tt.divisibility", 16]]
        else:
            sig[name] = "fp32"
    # the launchers' options: no implicit contraction in the diffusion kernels (td._EXACT), the
    # fractal's contracted (tf._FUSED)
    fusion = tf._FUSED if fn is tf._fractal_kernel else td._EXACT
    return triton.compile(ASTSource(fn, sig, consts, attrs), target=GPUTarget("cuda", 90, 32),
                          options=dict(num_warps=num_warps, **fusion, **cap))


def profile(kernel) -> dict:
    """Registers, stack, instruction histogram, and the largest loop's body of a compiled kernel."""
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp) / "k.cubin"
        cubin.write_bytes(kernel.asm["cubin"])
        sass = subprocess.run([str(BIN / "cuobjdump"), "-sass", str(cubin)], capture_output=True,
                              text=True, check=True).stdout
        usage = subprocess.run([str(BIN / "cuobjdump"), "-res-usage", str(cubin)],
                               capture_output=True, text=True, check=True).stdout
    instrs = []
    for line in sass.splitlines():
        m = _INSTR.match(line)
        if m:
            op = _OP.match(m.group(2))
            instrs.append((int(m.group(1), 16), op.group(1) if op else "?", m.group(2)))
    loop = []
    for addr, op, text in instrs:
        m = _BRA.search(text) if op == "BRA" else None
        if m and int(m.group(1), 16) < addr:
            body = [i for i in instrs if int(m.group(1), 16) <= i[0] <= addr]
            if len(body) > len(loop):
                loop = body
    return {
        "regs": int(re.search(r"REG:(\d+)", usage).group(1)),
        "stack": int(re.search(r"STACK:(\d+)", usage).group(1)),
        "all": collections.Counter(op for _, op, _ in instrs),
        "loop": collections.Counter(op for _, op, _ in loop),
        "sass": sass,
    }


def cases() -> list[tuple[str, object, dict, int, float]]:
    """``(label, kernel, constexprs, warps, pixel-steps per thread per pass of the measured
    code)``."""
    fwd = dict(C=3, COND=0, STORE_G=False, PER_IMAGE=False)
    loss = dict(C=3, COND=0, NEED_DI=False)
    rows, bw = td.ROWS_BLOCK
    lrows, lbw = td.LOSS_ROWS_BLOCK  # the fused learned step's strips
    unroll = td.ROWS_UNROLL  # one loop body is this many rows
    prows, pbw = td.PAIRS_BLOCK  # four strips of pbw lanes, one per warp
    pairs = {"ROWS": prows, "STRIPS": 4, "BLOCK_W": pbw, "UNROLL": unroll}
    two = unroll * 2 * (pbw - 2) / pbw  # pixel-steps per thread per loop body
    ahead = td.PREFETCH_ROWS  # rows the prefetching candidates ask L2 for ahead of their loads
    return [
        ("seed step, tiles 1x512", td._seed_fwd_kernel, {**fwd, "BLOCK_H": 1, "BLOCK_W": 512}, 4,
         4),
        (f"seed step, rows {rows}x{bw}", td._seed_fwd_rows_kernel,
         {**fwd, "ROWS": rows, "BLOCK_W": bw, "UNROLL": unroll}, 4, unroll * bw / 128),
        (f"seed step, rows {rows}x{bw}, unroll 1", td._seed_fwd_rows_kernel,
         {**fwd, "ROWS": rows, "BLOCK_W": bw, "UNROLL": 1}, 4, bw / 128),
        (f"seed step, split {rows}x{bw}", td._seed_fwd_split_kernel,
         {**fwd, "ROWS": rows, "BLOCK_W": bw, "UNROLL": unroll}, 4, unroll * bw / 128 / 3),
        (f"seed step, split {rows}x{bw}, unroll 1", td._seed_fwd_split_kernel,
         {**fwd, "ROWS": rows, "BLOCK_W": bw, "UNROLL": 1}, 4, bw / 128 / 3),
        (f"seed step, rows {rows}x{bw}, unroll 1, prefetch {ahead}", td._seed_fwd_rows_kernel,
         {**fwd, "ROWS": rows, "BLOCK_W": bw, "UNROLL": 1, "PREFETCH": ahead}, 4, bw / 128),
        (f"seed step, split {rows}x{bw}, unroll 1, prefetch {ahead}", td._seed_fwd_split_kernel,
         {**fwd, "ROWS": rows, "BLOCK_W": bw, "UNROLL": 1, "PREFETCH": ahead}, 4, bw / 128 / 3),
        (f"seed step, rows {rows}x{bw}, unroll 1, operator as arguments",
         td._seed_fwd_rows_kernel,
         {**fwd, "ROWS": rows, "BLOCK_W": bw, "UNROLL": 1, "KV": True}, 4, bw / 128),
        (f"seed step, rows {rows}x{bw}, operator as arguments", td._seed_fwd_rows_kernel,
         {**fwd, "ROWS": rows, "BLOCK_W": bw, "UNROLL": unroll, "KV": True}, 4,
         unroll * bw / 128),
        (f"seed step, rows {rows}x{bw}, unroll 1, prefetch {ahead}, operator as arguments",
         td._seed_fwd_rows_kernel,
         {**fwd, "ROWS": rows, "BLOCK_W": bw, "UNROLL": 1, "PREFETCH": ahead, "KV": True}, 4,
         bw / 128),
        (f"seed step, rows {rows}x256", td._seed_fwd_rows_kernel,
         {**fwd, "ROWS": rows, "BLOCK_W": 256, "UNROLL": unroll}, 4, unroll * 256 / 128),
        ("classic step, tiles 1x512", td._classic_kernel,
         dict(COND=0, BLOCK_H=1, BLOCK_W=512), 4, 4),
        (f"classic step, rows {rows}x{bw}", td._classic_rows_kernel,
         dict(COND=0, ROWS=rows, BLOCK_W=bw, UNROLL=unroll), 4, unroll * bw / 128),
        ("learned step, tiles 4x256", td._seed_loss_kernel,
         {**loss, "BLOCK_H": 4, "BLOCK_W": 256}, 4, 8),
        ("learned step, persistent 1x128", td._seed_loss_persistent_kernel,
         {**loss, "BLOCK_H": 1, "BLOCK_W": 128}, 4, 1),
        (f"seed step, two per pass, rows {prows}x{4 * pbw}", td._seed_fwd2_rows_kernel,
         {**pairs, "C": 3, "COND": 0, "PER_IMAGE": False}, 4, two),
        (f"seed step, two per pass, rows {prows}x{4 * pbw}, operator as arguments",
         td._seed_fwd2_rows_kernel,
         {**pairs, "C": 3, "COND": 0, "PER_IMAGE": False, "KV": True}, 4, two),
        (f"seed step, two per pass, rows {prows}x{4 * pbw}, unroll 1, operator as arguments",
         td._seed_fwd2_rows_kernel,
         {**pairs, "UNROLL": 1, "C": 3, "COND": 0, "PER_IMAGE": False, "KV": True}, 4, two / unroll),
        (f"classic step, two per pass, rows {prows}x{4 * pbw}", td._classic2_rows_kernel,
         {**pairs, "COND": 0}, 4, two),
        (f"learned step, rows {lrows}x{lbw}", td._seed_loss_rows_kernel,
         {**loss, "ROWS": lrows, "BLOCK_W": lbw, "UNROLL": unroll}, 4, unroll * lbw / 128),
        (f"learned step, rows {lrows}x{lbw}, unroll 1", td._seed_loss_rows_kernel,
         {**loss, "ROWS": lrows, "BLOCK_W": lbw, "UNROLL": 1}, 4, lbw / 128),
        (f"learned step, rows {lrows}x{lbw}, unroll 1, I_0 a row ahead",
         td._seed_loss_rows_kernel,
         {**loss, "ROWS": lrows, "BLOCK_W": lbw, "UNROLL": 1, "X0_AHEAD": True}, 4, lbw / 128),
        (f"learned step, rows {lrows}x{lbw}, I_0 a row ahead", td._seed_loss_rows_kernel,
         {**loss, "ROWS": lrows, "BLOCK_W": lbw, "UNROLL": unroll, "X0_AHEAD": True}, 4,
         unroll * lbw / 128),
        # held to td.LOSS_REGISTERS registers (Triton's maxnreg): three programs an SM
        (f"learned step, rows {lrows}x{lbw}, unroll 1, {td.LOSS_REGISTERS} registers",
         td._seed_loss_rows_kernel, {**loss, "ROWS": lrows, "BLOCK_W": lbw, "UNROLL": 1,
                                     "maxnreg": td.LOSS_REGISTERS}, 4, lbw / 128),
        (f"learned step, rows {lrows}x{lbw}, unroll 1, I_0 a row ahead, "
         f"{td.LOSS_REGISTERS} registers", td._seed_loss_rows_kernel,
         {**loss, "ROWS": lrows, "BLOCK_W": lbw, "UNROLL": 1, "X0_AHEAD": True,
          "maxnreg": td.LOSS_REGISTERS}, 4, lbw / 128),
        (f"learned step, rows {lrows}x{lbw}, unroll 1, I_0 a row ahead, prefetch {ahead}",
         td._seed_loss_rows_kernel, {**loss, "ROWS": lrows, "BLOCK_W": lbw, "UNROLL": 1,
                                     "X0_AHEAD": True, "PREFETCH": ahead}, 4, lbw / 128),
        (f"learned step, rows {lrows}x{lbw}, unroll 1, I_0 a row ahead, prefetch {ahead}, "
         f"{td.LOSS_REGISTERS} registers", td._seed_loss_rows_kernel,
         {**loss, "ROWS": lrows, "BLOCK_W": lbw, "UNROLL": 1, "X0_AHEAD": True,
          "PREFETCH": ahead, "maxnreg": td.LOSS_REGISTERS}, 4, lbw / 128),
        # one output channel a program: a pixel-step is C = 3 programs' loop bodies
        (f"learned step, split {lrows}x{lbw}", td._seed_loss_split_kernel,
         {**loss, "ROWS": lrows, "BLOCK_W": lbw, "UNROLL": unroll}, 4, unroll * lbw / 128 / 3),
        (f"learned step, split {lrows}x{lbw}, unroll 1", td._seed_loss_split_kernel,
         {**loss, "ROWS": lrows, "BLOCK_W": lbw, "UNROLL": 1}, 4, lbw / 128 / 3),
        (f"learned step, rows {lrows}x{lbw}, unroll 1, prefetch {ahead}",
         td._seed_loss_rows_kernel,
         {**loss, "ROWS": lrows, "BLOCK_W": lbw, "UNROLL": 1, "PREFETCH": ahead}, 4, lbw / 128),
        (f"learned step, split {lrows}x{lbw}, unroll 1, prefetch {ahead}",
         td._seed_loss_split_kernel,
         {**loss, "ROWS": lrows, "BLOCK_W": lbw, "UNROLL": 1, "PREFETCH": ahead}, 4,
         lbw / 128 / 3),
        # two passes: I', the loss and dL/dg; then dL/dK from dL/dg and the image
        (f"learned step, two-pass: pass 1 {lrows}x{lbw}, unroll 1", td._seed_loss_pass_kernel,
         {**loss, "ROWS": lrows, "BLOCK_W": lbw, "UNROLL": 1}, 4, lbw / 128),
        (f"learned step, two-pass: pass 1 {lrows}x{lbw}, unroll 1, prefetch {ahead}",
         td._seed_loss_pass_kernel,
         {**loss, "ROWS": lrows, "BLOCK_W": lbw, "UNROLL": 1, "PREFETCH": ahead}, 4, lbw / 128),
        (f"learned step, two-pass: pass 2 (one input channel a program) {lrows}x{lbw}, unroll 1",
         td._seed_dk_pass_kernel,
         {"C": 3, "ROWS": lrows, "BLOCK_W": lbw, "UNROLL": 1}, 4, lbw / 128 / 3),
        (f"learned step, two-pass: pass 2 (one input channel a program) {lrows}x{lbw}, "
         f"unroll {unroll}",
         td._seed_dk_pass_kernel,
         {"C": 3, "ROWS": lrows, "BLOCK_W": lbw, "UNROLL": unroll}, 4, unroll * lbw / 128 / 3),
        (f"learned step, two-pass: pass 2 (one input channel a program) {lrows}x{lbw}, "
         f"unroll 1, prefetch {ahead}",
         td._seed_dk_pass_kernel,
         {"C": 3, "ROWS": lrows, "BLOCK_W": lbw, "UNROLL": 1, "PREFETCH": ahead}, 4,
         lbw / 128 / 3),
        (f"learned step, two-pass: pass 1 {lrows}x{lbw}, unroll {unroll}",
         td._seed_loss_pass_kernel,
         {**loss, "ROWS": lrows, "BLOCK_W": lbw, "UNROLL": unroll}, 4, unroll * lbw / 128),
        # the fractal: a "step" is one iteration of the post's z <- -i/(pi z^7) + c, point trap;
        # the launcher's default 128 pixels on 1 warp (4 a thread), 4 iterations a loop body
        ("fractal iteration, p = 7, block 128, unroll 4", tf._fractal_kernel,
         dict(FORMULA=0, P=7, LOW=0, JULIA=False, TRAP=1, UNROLL=4, BLOCK=128), 1,
         128 / 32 * 4),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dump", type=Path, default=None, help="write each kernel's SASS here")
    parser.add_argument("--only", default="", metavar="TEXT",
                        help="profile only the kernels whose label contains TEXT (e.g. 'seed')")
    args = parser.parse_args(argv)
    if not (BIN / "cuobjdump").exists():
        print(f"no cuobjdump in {BIN}: this triton build cannot disassemble for sm_90",
              file=sys.stderr)
        return 2
    print(f"triton {triton.__version__}, sm_90, C = 3, exp conduction, 4096^2 specialisation\n")
    print("| kernel | registers | stack (B) | SASS / pixel / step | loads / pixel / step | "
          "L2 prefetches / pixel / step | loop body, top ops |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for label, fn, consts, warps, px in cases():
        if args.only not in label:
            continue
        prof = profile(compile_sm90(fn, consts, warps))
        counts = prof["loop"] or prof["all"]
        n = sum(counts.values())
        top = ", ".join(f"{op} {c}" for op, c in counts.most_common(5))
        print(f"| {label} | {prof['regs']} | {prof['stack']} | {n / px:.0f} | "
              f"{counts['LDG'] / px:.1f} | {counts['CCTL'] / px:.1f} | "
              f"{'loop' if prof['loop'] else 'whole kernel'}: {top} |",
              flush=True)
        if args.dump:
            args.dump.mkdir(parents=True, exist_ok=True)
            (args.dump / (re.sub(r"\W+", "_", label) + ".sass")).write_text(prof["sass"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
