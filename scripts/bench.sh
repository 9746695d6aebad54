#!/usr/bin/env bash
# `make bench`: runs every benchmark under scripts/bench/ (each updates its section of
# docs/benchmarks.md). Pass names to run only some: scripts/bench.sh gemma-runtime
set -euo pipefail
cd "$(dirname "$0")/bench"
if [ $# -gt 0 ]; then scripts=("$@"); else scripts=($(ls *.sh | grep -v '^lib.sh$' | sed 's/\.sh$//')); fi
for s in "${scripts[@]}"; do
  echo "== bench: $s"
  bash "./$s.sh"
done
