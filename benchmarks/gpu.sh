#!/usr/bin/env bash
# The GPU benchmark run (issue 20): LLaVA-1.5-7B and Qwen2.5-VL-7B geometry, random bf16 weights, one GPU.
# Under 8 minutes on one H200 (the script skips parts not started by 450 s; a hard stop at 470 s).
#
#     bash benchmarks/gpu.sh                        # → benchmarks/results/gpu_*.json
#     bash benchmarks/gpu.sh --parts qwen_forward   # any arguments go on to `python -m benchmarks.gpu`
#
# Python: $PYTHON, else .venv/bin/python if its torch sees a GPU, else python3 (a GPU image's, with CUDA
# torch). What interp needs beyond such an image (nnsight, transformers 5.24, ...) comes as wheels in .whl/,
# made beforehand by `bash benchmarks/gpu_wheels.sh` where the package registry is reachable; they are
# installed into /tmp/site here, without network.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
if [ -z "${PYTHON:-}" ]; then
  PYTHON=python3
  if [ -x .venv/bin/python ] && .venv/bin/python -c "import sys, torch; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
    PYTHON=.venv/bin/python
  fi
fi
if compgen -G ".whl/*.whl" > /dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PYTHON" - <<'PY'
import importlib.util, sys
import torch
missing = [m for m in ("nnsight", "transformers", "einops", "scipy", "PIL") if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"gpu.sh: {', '.join(missing)} not importable by {sys.executable}; make wheels with "
             "`bash benchmarks/gpu_wheels.sh` (where the registry is reachable) and carry .whl")
if not torch.cuda.is_available():
    print(f"gpu.sh: torch {torch.__version__} sees no GPU; running on the CPU (use --quick there)", file=sys.stderr)
else:
    print(f"gpu.sh: {torch.cuda.get_device_name()} · torch {torch.__version__} (CUDA {torch.version.cuda})")
PY
exec timeout --signal=INT --kill-after=10 470 "$PYTHON" -m benchmarks.gpu "$@"
