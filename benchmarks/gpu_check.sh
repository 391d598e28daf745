#!/usr/bin/env bash
# GPU check for minart's kernels, for a fresh, bare GPU machine (the device tool's run), <= 10 min.
#
#   run from the repository root:   bash benchmarks/gpu_check.sh
#   device tool:                    command "bash benchmarks/gpu_check.sh", carry [".whl"],
#                                   timeout_s 600 (QUICK_ONLY=1 skips step 5: about 5 min)
#
# NCU=1 adds Nsight Compute on the strip kernels' candidates (benchmarks/ncu_strips.py).
# A short recheck, when little device time is left: QUICK_ONLY=1, BENCH_ONLY=fractal,sweep
# (bench_kernels.py --only), PYTEST_K="fractal or dispatcher" (pytest -k), PYTEST_TIMEOUT and
# BENCH_TIMEOUT (seconds; 300 and 240 by default), TESTS_FIRST=1 (the tests before the
# benchmark).
#
# 1. prints the GPU, driver, torch and triton versions;
# 2. installs minart's pure-Python import needs that the machine lacks (pydantic & co), and
#    pytest-xdist, from the carried wheels in .whl/ (see /work/.library/device/README.md), never
#    from a registry;
# 3. runs the benchmark at 4096^2 RGB float32 with the defaults, every candidate "auto" times
#    and one strip shape per kernel (benchmarks/bench_kernels.py --quick): the numbers the issue
#    asks for, first, since they are what a short lease is for, and the learned step's group
#    first of all, its target being the one still unmet ("auto" compares every candidate's bits
#    with the first's as it times them, and warns on a difference);
# 4. runs the GPU tests: pytest -m gpu tests/unit/test_kernels.py (exactness vs eager on CUDA,
#    bit-identical determinism, the dispatcher's choice);
# 5. runs the full sweep of tile and strip shapes (as much as fits in what is left of 570 s);
# 6. prints a short summary last. Logs and the benchmark's JSON go to $OUT (or a temp folder).
# Each part has its own timeout, so a hang in one still leaves the others' output.

set -uo pipefail
OUT="${OUT:-$(mktemp -d /tmp/minart-gpu-check.XXXXXX)}"
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu_check.log") 2>&1
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
PY="${PYTHON:-python3}"
T0=$(date +%s)
echo "minart gpu_check: logs in $OUT"
set -x

date -u
timeout 30 nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || true
timeout 60 "$PY" -c "import sys, torch, triton; print(sys.version.split()[0], 'torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())" || true

# minart imports pydantic (and friends) at import time; the GPU image has none of them.
if ! "$PY" -c "import pydantic, platformdirs" 2>/dev/null; then
    # (typing_extensions too: pydantic may need a newer one than the image's)
    wheels=$(ls .whl/pydantic-*.whl .whl/pydantic_core-*.whl .whl/annotated_types-*.whl \
                .whl/typing_inspection-*.whl .whl/platformdirs-*.whl \
                .whl/typing_extensions-*.whl 2>/dev/null)
    if [ -n "$wheels" ]; then
        timeout 120 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
            --target /tmp/minart-site $wheels && export PYTHONPATH="/tmp/minart-site:${PYTHONPATH:-}"
    else
        echo "WARNING: pydantic missing and no wheels in .whl/ (carry .whl); minart will not import"
    fi
fi
# pytest-xdist runs the GPU tests in parallel processes: most of their time is Triton compiling
if ! "$PY" -c "import xdist" 2>/dev/null && ls .whl/pytest_xdist-*.whl >/dev/null 2>&1; then
    timeout 120 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --target /tmp/minart-xdist .whl/pytest_xdist-*.whl .whl/execnet-*.whl \
        && export PYTHONPATH="/tmp/minart-xdist:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}"
XDIST=""
# (grep without -q reads all of the help: with -q, pytest's SIGPIPE would fail the pipefail)
if timeout 60 "$PY" -m pytest --help 2>/dev/null | grep -- "--numprocesses" >/dev/null; then
    XDIST="-n 8"
fi
timeout 60 "$PY" -c "import minart.kernels, minart.diffusion; print('minart imports')" || true

run_tests() {
    timeout "${PYTEST_TIMEOUT:-300}" "$PY" -m pytest tests/unit/test_kernels.py -m gpu -q \
        -p no:cacheprovider -rA $XDIST ${PYTEST_K:+-k "$PYTEST_K"} 2>&1 | tee "$OUT/pytest_gpu.log"
    PYTEST_RC=${PIPESTATUS[0]}
}
run_bench() {
    timeout "${BENCH_TIMEOUT:-240}" "$PY" benchmarks/bench_kernels.py --device cuda --size 4096 \
        --quick ${BENCH_ONLY:+--only "$BENCH_ONLY"} --json "$OUT/bench_gpu.json" 2>&1 \
        | tee "$OUT/bench_gpu.txt"
    BENCH_RC=${PIPESTATUS[0]}
}
# A test run stopped by its timeout can leave its xdist workers running kernels on the GPU (stop
# 22: every later timing 1.2-1.6x slower): stop whatever still computes there before timing.
stop_gpu_leftovers() {
    local pids
    pids=$(timeout 20 nvidia-smi --query-compute-apps=pid --format=csv,noheader 2>/dev/null \
           | tr -d ' ' | grep -v "^$$\$" || true)
    if [ -n "$pids" ]; then
        echo "stopping processes left on the GPU: $pids"
        kill -9 $pids 2>/dev/null || true
        sleep 3
    fi
}
if [ -n "${TESTS_FIRST:-}" ]; then run_tests; stop_gpu_leftovers; run_bench; else run_bench; run_tests; fi

# NCU=1: Nsight Compute on every strip candidate of the seed and learned steps (occupancy, DRAM
# and L2 throughput, warp stalls), before the full sweep; NCU_TIMEOUT seconds (default 150)
if [ -n "${NCU:-}" ]; then
    if command -v ncu >/dev/null; then
        timeout "${NCU_TIMEOUT:-150}" ncu --clock-control none \
            --kernel-name regex:'_seed_(loss|fwd|dk)_(rows|split|pass)_kernel' \
            --section SpeedOfLight --section Occupancy --section WarpStateStats \
            --section MemoryWorkloadAnalysis "$PY" benchmarks/ncu_strips.py 2>&1 \
            | tee "$OUT/ncu_strips.txt" | grep -E "launched:|_kernel|Throughput|Occupancy|Registers|Stall|==PROF==|==ERROR==" \
            || true
    else
        echo "NCU=1 but no ncu on this machine"
    fi
fi

# the full sweep gets what is left of 570 s (the device tool's 600 s, less a margin)
LEFT=$(( 570 - ($(date +%s) - T0) ))
if [ -z "${QUICK_ONLY:-}" ] && [ "$LEFT" -gt 30 ]; then
    timeout "$LEFT" "$PY" benchmarks/bench_kernels.py --device cuda --size 4096 --reps 10 \
        --json "$OUT/bench_gpu_full.json" 2>&1 | tee "$OUT/bench_gpu_full.txt" || true
fi

set +x
echo
echo "==================== minart gpu_check summary ($(( $(date +%s) - T0 )) s) ===================="
echo "pytest -m gpu: exit $PYTEST_RC (124 = timed out)"
grep -E "passed|failed|error|skipped" "$OUT/pytest_gpu.log" | tail -n 1
echo "benchmark: exit $BENCH_RC (124 = timed out)"
sed -n '/^## minart kernels benchmark/,$p' "$OUT/bench_gpu.txt"
if [ -f "$OUT/bench_gpu_full.txt" ]; then
    echo "full sweep (rows so far; the table if it finished):"
    grep -E "^  (seed|classic|learned) step: triton" "$OUT/bench_gpu_full.txt" | cut -c1-110
fi
exit $(( PYTEST_RC != 0 || BENCH_RC != 0 ))
