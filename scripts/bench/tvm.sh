#!/usr/bin/env bash
# The TVM kernel libraries of the real Gemma 3 270M: compile time per target (`alc build`, no
# kernel cache) for f32, bf16 and q4bf16 weights, and prefill/decode speed of the `tvm` backend
# on this machine (linux-x86_64), with the `native` backend on q4bf16 (native f32/bf16 and the
# llama.cpp peers are measured once, by gemma-runtime.sh). Draws docs/img/bench-tvm.svg.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$REPO"
PROMPT_TOKENS=${PROMPT_TOKENS:-128}
GEN_TOKENS=${GEN_TOKENS:-64}
REPS=${REPS:-3}
TARGETS=${TARGETS:-"linux-x86_64 linux-arm64 android-arm64"}
WORK="$REPO/.cache/bench/tvm"
mkdir -p "$WORK"
unset AVA_KERNEL_CACHE

ids="2"
for i in $(seq 1 $((PROMPT_TOKENS - 1))); do ids="$ids,$((1000 + (i * 7919) % 20000))"; done

checkpoint() { # checkpoint WEIGHTS: the 270M checkpoint directory in WEIGHTS
  case $1 in
    q4bf16)
      [ -d "$WORK/gemma3-270m-q4bf16" ] ||
        "$ALC" -q quantize "$MODELS/gemma3-270m-f32" --quant q4bf16 -o "$WORK/gemma3-270m-q4bf16" > /dev/null
      echo "$WORK/gemma3-270m-q4bf16" ;;
    *) echo "$MODELS/gemma3-270m-$1" ;;
  esac
}

compile_row() { # compile_row WEIGHTS: seconds per target of `alc build`
  local w=$1 row="| $1 |" out secs
  for t in $TARGETS; do
    out="$WORK/build-$w-$t.json"
    "$ALC" --json build "$(checkpoint "$w")" --target "$t" -o "$WORK/built-$w-$t" > "$out"
    secs=$(json_field "$out" seconds)
    row="$row $(printf '%.1f' "$secs") |"
  done
  echo "$row"
}

speed_row() { # speed_row WEIGHTS BACKEND: median prefill/decode tok/s of `alc run`
  local w=$1 backend=$2 archive="$WORK/gemma3-270m-$1-linux-x86_64.tar" out prefill=() decode=()
  [ -f "$archive" ] || "$ALC" -q package "$WORK/built-$w-linux-x86_64" -o "$archive" > /dev/null
  for r in $(seq 1 "$REPS"); do
    out="$WORK/run-$w-$backend-$r.json"
    "$ALC" --json run "$archive" --backend "$backend" --prompt-ids "$ids" \
      --max-tokens "$GEN_TOKENS" --ignore-eos > "$out"
    prefill+=("$(json_field "$out" prefill_tok_s)")
    decode+=("$(json_field "$out" decode_tok_s)")
  done
  printf '| ours, %s | %s | %.1f | %.1f |\n' "$backend" "$w" \
    "$(printf '%s\n' "${prefill[@]}" | median)" "$(printf '%s\n' "${decode[@]}" | median)"
}

[ -x "$ALC" ] || cargo build --release --bins
[ -d "$MODELS/gemma3-270m-f32" ] || make real-models
rm -f "$WORK"/*.tar

table=$(mktemp)
{
  echo "Real Gemma 3 270M. Compile: seconds of \`alc build\` per target (TVM $(
    .venv/bin/python -c 'import tvm; print(tvm.__version__)' 2>/dev/null || echo '?'), no kernel cache)."
  echo "Speed: prompt $PROMPT_TOKENS tokens, $GEN_TOKENS generated, median of $REPS runs, $(nproc) threads,"
  echo "linux-x86_64 kernels. Machine: $(machine_line); other processes kept it $(cpu_busy) busy just"
  echo "before the runs. Script: \`scripts/bench/tvm.sh\`."
  echo
  echo "| weights |$(for t in $TARGETS; do printf ' %s s |' "$t"; done)"
  echo "|---|$(for _ in $TARGETS; do printf -- '---|'; done)"
  for w in f32 bf16 q4bf16; do compile_row "$w"; done
  echo
  echo "| engine | weights | prefill tok/s | decode tok/s |"
  echo "|---|---|---|---|"
  for w in f32 bf16 q4bf16; do speed_row "$w" tvm; done
  speed_row q4bf16 native
} > "$table"
cat "$table"
write_section tvm "$table"
draw_chart bars tvm 2 "engine,weights" "prefill tok/s,decode tok/s" \
  "Gemma 3 270M on the TVM backend, tokens/s" bench-tvm.svg
