#!/usr/bin/env bash
# Re-resolve every environment's lock from pyproject.toml, lock/*.in and constraints.txt (`make lock`).
# Only this script resolves; `make env` and the environment files install the locks as they are.
# The CPU torch wheel is found through pip's find-links (PIP_FIND_LINKS or `pip config`), or through
# UV_FIND_LINKS / UV_EXTRA_INDEX_URL set by the caller (e.g. PyTorch's CPU wheel index).
set -euo pipefail
cd "$(dirname "$0")/.."
UV=${UV:-uv}
cpu_links=${UV_FIND_LINKS:-${PIP_FIND_LINKS:-$(pip config get global.find-links 2>/dev/null || true)}}
common=(--python-version 3.11 --python-platform x86_64-manylinux_2_28 --generate-hashes --quiet
        --custom-compile-command "make lock")
compile() {  # compile OUT INPUT... [FLAGS]
  local out=$1; shift
  "$UV" pip compile "${common[@]}" "$@" -o "$out"
  echo "$out: $(grep -c '^[A-Za-z0-9].*==' "$out") distributions"
}
compile lock/build.txt lock/build.in
UV_FIND_LINKS=$cpu_links compile lock/cpu.txt pyproject.toml lock/cpu.in --extra test -c constraints.txt \
  --no-emit-package torchvision   # the registry's torchvision is a CUDA build that breaks CPU imports
compile lock/gpu.txt pyproject.toml lock/gpu.in --extra gpu -c constraints.txt
compile lock/vllm.txt lock/vllm.in
