#!/usr/bin/env bash
# The GPU check in one call on the device machine (python 3.12 + torch 2.11, no network, no
# bubblewrap), from the repository root, with .gpu-carry/ carried (deploy/gpu/fetch-carry.sh):
#   bash deploy/gpu/bench-gpu.sh            # figures to $OUT/bench-gpu.json (or ./bench-gpu.json)
# Extra arguments go to `runner bench --suite gpu` (e.g. --quick). Steps:
# 1. install the carried wheels into /tmp/site (PYTHONPATH; this checkout's runner on it too);
# 2. unpack bubblewrap into /opt/bwrap (RUNNER_BWRAP; a root-owned path outside /tmp, which the
#    sandbox mounts afresh) and check that the sandbox works;
# 3. run the suite on cuda, printing the table and writing the JSON.
set -uo pipefail
cd "$(dirname "$0")/../.."
carry=.gpu-carry
out=${OUT:-.}
python=${PYTHON:-python3}
[ -d "$carry" ] || { echo "no $carry/: run deploy/gpu/fetch-carry.sh here first and carry $carry" >&2; exit 2; }
$python -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
  "$carry"/*.whl || exit 3
export PYTHONPATH="$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 COLUMNS=${COLUMNS:-220}
if ! command -v bwrap >/dev/null; then
  deb=$(ls "$carry"/bubblewrap_*.deb | head -1)
  mkdir -p /opt/bwrap && dpkg -x "$deb" /opt/bwrap || exit 4
  export RUNNER_BWRAP=/opt/bwrap/usr/bin/bwrap
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
$python - <<'PY'
import sys, torch
from runner.sandbox import sandbox_available
s = sandbox_available()
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, cuda available: {torch.cuda.is_available()}")
print(f"sandbox: {'available' if s.available else 'UNAVAILABLE'}: {s.detail}")
PY
$python -m runner.cli bench --suite gpu --device cuda --out "$out/bench-gpu.json" "$@" 2>&1 | tee "$out/bench-gpu.log"
exit "${PIPESTATUS[0]}"
