#!/usr/bin/env bash
# Run HERE (a machine with a network), in the repository root, before the device call:
#   deploy/gpu/fetch-carry.sh
# Fills .gpu-carry/ (git-ignored) with what deploy/gpu/bench-gpu.sh installs on the GPU machine,
# which has no network: py3.12 wheels (deploy/gpu/carry-requirements.txt) and Debian bookworm's
# bubblewrap .deb (the image has no bwrap; unpacked with dpkg -x it runs there). About 5 MiB.
set -euo pipefail
cd "$(dirname "$0")/../.."
carry=.gpu-carry
mkdir -p "$carry"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -d "$carry" -r deploy/gpu/carry-requirements.txt
if ! ls "$carry"/bubblewrap_*_amd64.deb >/dev/null 2>&1; then
  (cd "$carry" && apt-get download bubblewrap:amd64)
fi
ls -la "$carry"
du -sh "$carry"
