#!/usr/bin/env bash
# The L2T mask-scope ladder (vit -> lit_all -> lit_nosys -> lit) on the embedded demo, one seed by default.
#   bash scripts/demo_ablation.sh [--seeds 0 1 2]
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 0 ] && set -- --seeds 0
.venv/bin/python -m lit.demo --scopes vit lit_all lit_nosys lit --out results/demo_ablation "$@"
