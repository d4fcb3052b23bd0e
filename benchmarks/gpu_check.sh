#!/usr/bin/env bash
# The GPU checks of the performance issue, as one script for a lent GPU machine
# whose python3 holds jax (with its CUDA plugin), flax, optax, PyTorch,
# pytest, pytest-xdist and hypothesis; nothing is installed.
#
#   OUT=/some/dir benchmarks/gpu_check.sh
#
# 1. versions: the GPU, its driver and the Python packages;
# 2. the benchmark suite on the GPU: jconvt auto (the dilated reference on
#    GPU), the dilated reference itself, jconvt with the CPU's fast paths
#    forced (phase, col2im), flax, lax.conv_transpose and PyTorch on CUDA;
#    writes $OUT/suite.{md,json,png} and $OUT/suite.log;
# 2b. the suite's programs profiled (PROFILE_S, 0 by default; PROFILE_IMPLS,
#    BENCH_ARGS): each program's kernels against its wall time
#    (benchmarks/profile.py); writes $OUT/profile.{md,json,hlo.txt} and
#    $OUT/profile.log. On an H200 (2026-11-28) it took 70 s at 8x batch;
# 3. the upsample suite (large strides, FCN heads) on the GPU (UPSAMPLE_S,
#    0 by default; UPSAMPLE_IMPLS, by default jconvt's four names and
#    PyTorch); writes
#    $OUT/upsample.{md,json,png} and $OUT/upsample.log;
# 4. the algorithm plans' training steps, suite layers at 8x and their own
#    batch (benchmarks/plans.py: the data behind auto's GPU rule; PLANS_S,
#    0 by default since its H200 run is in benchmarks/results); writes
#    $OUT/plans.{json,md};
# 5. a sweep of plans over a grid of layers (benchmarks/sweep.py; SWEEP_ARGS,
#    by default the few-filters grid: 1-32 filters, auto against the
#    reference and col2im/taps/taps); writes $OUT/sweep.{json,md};
# 6. the correctness tests on the GPU (golden TF fixtures for every
#    algorithm, transforms, the Flax layer, the properties), in full float32
#    (the tests' jax.default_matmul_precision); writes $OUT/tests.log;
# 7. the oneDNN encoding check on this machine's CPU and jaxlib
#    (ONEDNN_S): tests/test_onednn.py with JAX_PLATFORMS=cpu and
#    JCONVT_ONEDNN=1, which forces the custom call where the jaxlib is not
#    in _onednn.VERIFIED_JAXLIB (a GPU machine's jaxlib may be newer than
#    the registry this project's machines see); passing there is what
#    adding that version needs. Writes $OUT/onednn.log.
#
# Each step has its own time limit (BENCH_S, UPSAMPLE_S, PLANS_S, SWEEP_S, TEST_S
# seconds; 0 skips it), so a slow step still leaves the next one its turn,
# and all fit one 10-minute call; a step cut short leaves its log. On an
# H200 (2026-11-26) the suite took about 2 minutes, the plans 3 and the
# tests a little over 2.5; on an H100 the suite with five implementations,
# again at 8x batch with three, the default sweep and 150 s of tests took
# 6.5 minutes together. On an H100 (2026-11-27) the 1978 tests took 3
# minutes (a 200 s limit cut them off without a summary); on 2026-11-28
# 240 s ran 2000 of them, about 95% (the layer-sized property test had
# joined), so TEST_S is 330 by default. That day the suite at 8x with three
# implementations, the upsample suite with four, the tests (240 s) and the
# oneDNN check took 353 s. The device returns at most 8 files from $OUT:
# print what must come back (the tests' tail) to stdout, and copy the files
# wanted from a scratch OUT.
set -u
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/jconvt-gpu}
mkdir -p "$out"
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
  $py - <<'EOF'
import importlib.metadata as md
for name in ("jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda12-plugin", "flax", "optax",
             "numpy", "torch", "hypothesis", "pytest", "pytest-xdist"):
  try:
    print(name, md.version(name))
  except md.PackageNotFoundError:
    pass
import jax
print("devices:", jax.devices())
EOF
} 2>&1 | tee "$out/versions.txt"

if [ "${BENCH_S:-200}" != 0 ]; then
  timeout "${BENCH_S:-200}" $py -m benchmarks --out "$out/suite" \
    --impls "${IMPLS:-jconvt,jconvt-dilated,jconvt-phase,jconvt-col2im,flax,lax.conv_transpose,torch}" \
    ${BENCH_ARGS:-} 2>&1 | tee "$out/suite.log" | grep -v '^|'
  echo "benchmark exit: ${PIPESTATUS[0]}"
fi

if [ "${PROFILE_S:-0}" != 0 ]; then
  # Each program's kernels (device time) beside its wall time: on a GPU the
  # suite's sub-millisecond forwards are mostly JAX's per-call cost.
  timeout "${PROFILE_S}" $py -m benchmarks.profile --out "$out/profile" \
    --impls "${PROFILE_IMPLS:-jconvt,jconvt-phase,torch}" ${BENCH_ARGS:-} 2>&1 \
    | grep -E " / (forward|step): " > "$out/profile.log"
  echo "profile exit: ${PIPESTATUS[0]}"
fi

if [ "${UPSAMPLE_S:-0}" != 0 ]; then
  timeout "${UPSAMPLE_S}" $py -m benchmarks --suite upsample --out "$out/upsample" \
    --impls "${UPSAMPLE_IMPLS:-jconvt,jconvt-dilated,jconvt-phase,jconvt-col2im,torch}" \
    2>&1 | tee "$out/upsample.log" | grep -v '^|'
  echo "upsample exit: ${PIPESTATUS[0]}"
fi

if [ "${PLANS_S:-0}" != 0 ]; then
  timeout "${PLANS_S}" $py -m benchmarks.plans --batch-scale 8,1 --out "$out/plans" \
    2>&1 | grep -E '^(\[x|machine|wrote)'
  echo "plans exit: ${PIPESTATUS[0]}"
fi

if [ "${SWEEP_S:-0}" != 0 ]; then
  timeout "${SWEEP_S}" $py -m benchmarks.sweep --out "$out/sweep" ${SWEEP_ARGS:-} 2>&1 \
    | grep -vE '^\|'
  echo "sweep exit: ${PIPESTATUS[0]}"
fi

# Twelve test processes share the GPU: none may take 75% of its memory.
# -W default: the ini's "error" turns a newer jax's deprecation warnings into
# failures; here they are shown instead, and counted below.
if [ "${TEST_S:-330}" != 0 ]; then
  XLA_PYTHON_CLIENT_PREALLOCATE=false timeout -s INT "${TEST_S:-330}" \
    $py -m pytest -n "${WORKERS:-12}" -o addopts="-ra --strict-markers" -W default \
    -p no:cacheprovider -q -m "not slow" ${TESTS:-tests/test_golden.py tests/test_transforms.py \
    tests/test_linen.py tests/test_compat_nn.py tests/test_properties.py} > "$out/tests.log" 2>&1
  echo "tests exit: $?"
  tail -c 1500 "$out/tests.log"
  grep -E "^(FAILED|ERROR)" "$out/tests.log" | head -40
  grep -ci "warning" "$out/tests.log" | sed 's/^/lines mentioning warnings: /'
fi

if [ "${ONEDNN_S:-90}" != 0 ]; then
  JAX_PLATFORMS=cpu JCONVT_ONEDNN=1 timeout -s INT "${ONEDNN_S:-90}" \
    $py -m pytest -n 8 -o addopts="-ra --strict-markers" -W default -p no:cacheprovider -q \
    tests/test_onednn.py > "$out/onednn.log" 2>&1
  rc=$?
  echo "oneDNN check (jaxlib $($py -c 'import jaxlib; print(jaxlib.__version__)')) exit: $rc"
  tail -c 1200 "$out/onednn.log"
fi
