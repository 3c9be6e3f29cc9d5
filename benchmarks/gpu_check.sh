#!/usr/bin/env bash
# The GPU checks, for a machine with CUDA (the `device` tool's, when one is lent):
#   1. the CUDA tests (tests/test_cuda.py, the CNF prior's CUDA test);
#   2. the speed benchmark on the GPU (seconds per step and peak memory at PhysioNet shapes);
#   3. a torchrun smoke test with NCCL on 2 GPUs (1 GPU: a 1-process NCCL run of the same worker).
# Results land in $OUT (or benchmarks/results). Run from the repository root:
#   bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/results}"
mkdir -p "$OUT"
PY="${PYTHON:-python}"
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name(0), torch.cuda.device_count(), 'GPU(s)')"
"$PY" -m pytest -q tests/test_cuda.py "tests/test_priors.py::test_cuda" 2>&1 | tee "$OUT/gpu_tests.txt"
"$PY" benchmarks/speed.py --device cuda --out "$OUT" 2>&1 | tee "$OUT/gpu_speed.txt"
N=$("$PY" -c "import torch; print(min(2, torch.cuda.device_count()))")
mkdir -p "$OUT/ddp"
"$PY" -m torch.distributed.run --standalone --nproc_per_node="$N" tests/ddp_worker.py "$OUT/ddp" fit 2>&1 | tail -5 | tee "$OUT/gpu_torchrun.txt"
"$PY" - "$OUT/ddp" "$N" <<'PY' | tee -a "$OUT/gpu_torchrun.txt"
import sys, torch
out, n = sys.argv[1], int(sys.argv[2])
for name in ("backprop", "adjoint"):
    w = [torch.load(f"{out}/{name}-weights-{r}.pt", map_location="cpu") for r in range(n)]
    same = all(torch.equal(w[0][k], wr[k]) for wr in w[1:] for k in w[0])
    print(f"torchrun NCCL, {n} process(es), {name}: weights identical across ranks: {same}")
PY
