#!/usr/bin/env bash
# Wheels for a GPU machine that has CUDA torch but no registry (Python 3.12; torch, numpy, scipy, PIL, einops,
# tokenizers, huggingface_hub there): nnsight and what it needs beyond such an image, and transformers at the
# version the tests pass with here. Run where the package registry is reachable, then carry .whl to the GPU
# run (`bash benchmarks/gpu.sh` installs it). About 25 MB.
#
#     bash benchmarks/gpu_wheels.sh                # → .whl/ (kept out of git by .git/info/exclude)
#     WHEELS=/tmp/whl bash benchmarks/gpu_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DEST=${WHEELS:-.whl}
if [ "$DEST" = .whl ] && ! grep -qx '/.whl/' .git/info/exclude 2>/dev/null; then echo '/.whl/' >> .git/info/exclude; fi
NAMES="nnsight transformers greenlet pydantic pydantic_core annotated-types typing-inspection typing_extensions
       websocket-client zstandard"
PINS=$("$PY" -c "import importlib.metadata as m, sys; print(' '.join(f'{n}=={m.version(n)}' for n in sys.argv[1:]))" $NAMES)
echo "gpu_wheels.sh: $PINS"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 -d "$DEST" $PINS
ls -la "$DEST"
