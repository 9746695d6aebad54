#!/usr/bin/env bash
# Compiling the synthetic Gemma 3 1B and 4B (fixtures/gen/make_synthetic_gemma.py: the published
# layouts, bf16, sharded, random weights): wall time and peak RSS of each stage run as its own
# verb (quantize q4bf16 RTN, build, package) and of the whole `alc compile`, next to the
# parameter count (time should grow about linearly with it; peak RSS should stay bounded).
# The checkpoints are written into .cache/synthetic once (2 GB and 7.8 GB) and kept;
# BIG_MODELS_CLEAN=1 removes them afterwards. BIG_MODELS="1b" runs only the 1B.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$REPO"
PRESETS=${BIG_MODELS:-"1b 4b"}
TARGET=${BIG_MODELS_TARGET:-linux-arm64}
SYNTH="$REPO/.cache/synthetic"
WORK="$REPO/.cache/bench/big-models"
rm -rf "$WORK" && mkdir -p "$WORK" "$SYNTH"
[ -x "$ALC" ] || { echo "big-models: build first (cargo build --release --bins)"; exit 1; }
busy=$(cpu_busy)

rows="$WORK/rows.md"; : > "$rows"
# timed LABEL CMD...: runs CMD under /usr/bin/time; prints "seconds peak_rss_mib".
timed() {
  local label=$1; shift
  /usr/bin/time -o "$WORK/time-$label" -f '%e %M' "$@" > "$WORK/out-$label.json"
  awk '{ printf "%.1f %d\n", $1, $2 / 1024 }' "$WORK/time-$label"
}
for preset in $PRESETS; do
  src="$SYNTH/gemma3-$preset"
  if [ ! -d "$src" ]; then
    start=$(date +%s.%N)
    .venv/bin/python fixtures/gen/make_synthetic_gemma.py --preset "$preset" -o "$src"
    echo "big-models: generated $src in $(echo "$(date +%s.%N) - $start" | bc) s"
  fi
  gb=$(du -sb "$src" | awk '{ printf "%.2f", $1 / 1e9 }')
  read -r qs qm < <(timed "q-$preset" "$ALC" -q --json quantize "$src" --quant q4bf16 -o "$WORK/q4-$preset")
  read -r bs bm < <(timed "b-$preset" "$ALC" -q --json build "$WORK/q4-$preset" --target "$TARGET" -o "$WORK/built-$preset")
  read -r ps pm < <(timed "p-$preset" "$ALC" -q --json package "$WORK/built-$preset" -o "$WORK/pkg-$preset.tar")
  rm -rf "$WORK/cache-$preset"
  read -r cs cm < <(timed "c-$preset" "$ALC" -q --json --cache-dir "$WORK/cache-$preset" compile "$src" \
    --quant q4bf16 --target "$TARGET" --context 2048 -o "$WORK/dist-$preset")
  est=$(json_field "$WORK/out-c-$preset.json" total_bytes)
  printf '| synthetic %s | %s GB | %s / %s | %s / %s | %s / %s | %s / %s | %d |\n' "$preset" "$gb" \
    "$qs" "$qm" "$bs" "$bm" "$ps" "$pm" "$cs" "$cm" "$((est / 1048576))" >> "$rows"
  rm -rf "$WORK/q4-$preset" "$WORK/built-$preset" "$WORK/pkg-$preset.tar" "$WORK/cache-$preset" "$WORK/dist-$preset"
  [ "${BIG_MODELS_CLEAN:-0}" = 1 ] && rm -rf "$src"
done

body="$WORK/section.md"
{
  echo "### Compiling the synthetic Gemma 3 1B and 4B"
  echo
  echo "Checkpoints from \`fixtures/gen/make_synthetic_gemma.py\` (published layouts, bf16, random"
  echo "weights; the 4B's vision tower is a small stand-in the pipeline skips). Each cell: wall seconds /"
  echo "peak RSS in MiB (\`/usr/bin/time\`). Quantize is q4bf16 round-to-nearest; build and compile target"
  echo "\`$TARGET\`; compile runs every stage in one process with an empty cache; the last column is the"
  echo "runtime memory estimate \`alc compile\` records at context 2048 (f16 KV cache)."
  echo "Machine: $(machine_line); CPU busy before the run: $busy. Script: \`scripts/bench/big-models.sh\`."
  echo
  echo "| model | checkpoint | quantize | build | package | compile | estimate MiB |"
  echo "|---|---|---|---|---|---|---|"
  cat "$rows"
} > "$body"
write_section big-models "$body"
cat "$body"
