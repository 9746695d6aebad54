# Shared helpers of the benchmark scripts (sourced, not run).
#
# Each benchmark script measures one thing and replaces its own section of
# docs/benchmarks.md, delimited by <!-- bench:NAME --> and <!-- /bench:NAME -->, with a
# markdown table. Sections are appended when missing. Nothing here asserts speed.

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BENCH_DOC="$REPO/docs/benchmarks.md"
MODELS="${AVA_MODELS_DIR:-$REPO/.cache/models}"
PEERS="$REPO/.cache/peers"
ALC="$REPO/target/release/alc"
AON="$REPO/target/release/aon"

# machine_line: one line describing this machine, for the tables' captions.
machine_line() {
  local cpu
  cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
  echo "$(nproc) cores, ${cpu:-unknown CPU}, $(free -g | awk '/Mem:/{print $2}') GiB, $(date -u +%Y-%m-%d)"
}

# write_section NAME FILE: replace (or append) the section NAME of docs/benchmarks.md with FILE.
write_section() {
  local name=$1 body=$2 tmp
  tmp=$(mktemp)
  awk -v name="$name" -v body="$body" '
    BEGIN { start = "<!-- bench:" name " -->"; end = "<!-- /bench:" name " -->" }
    $0 == start { print; while ((getline line < body) > 0) print line; skip = 1; found = 1; next }
    $0 == end { skip = 0 }
    !skip { print }
    END {
      if (!found) {
        print ""; print start
        while ((getline line < body) > 0) print line
        print end
      }
    }' "$BENCH_DOC" > "$tmp"
  mv "$tmp" "$BENCH_DOC"
}

# draw_chart bars|scatter SECTION TABLE COLUMNS... TITLE FILE.svg: draws docs/img/FILE.svg from
# table TABLE (from 1) of SECTION, as just written (examples/bench-chart.rs says the columns).
draw_chart() {
  local kind=$1 section=$2; shift 2
  local args=("$@") out="$REPO/docs/img/${!#}"
  local chart="$REPO/target/release/examples/bench-chart"
  cargo build -q --release --example bench-chart --manifest-path "$REPO/Cargo.toml"
  mkdir -p "$REPO/docs/img"
  "$chart" "$kind" "$BENCH_DOC" "$section" "${args[@]:0:$((${#args[@]} - 1))}" "$out"
}

# json_field FILE KEY: a numeric or string value of a top-level or nested "key": in JSON text
# (first match; good enough for our own --json outputs).
json_field() {
  grep -o "\"$2\": *[^,}]*" "$1" | head -1 | sed 's/^[^:]*: *//; s/"//g'
}

# median: the median of the numbers on stdin.
median() {
  sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) exit 1; print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

# cpu_busy: percent of all CPU time busy over the next 3 seconds (run it before measuring, when
# nothing of ours runs: it says how much else the machine was doing).
cpu_busy() {
  local a b
  a=$(awk '/^cpu /{print $2+$3+$4+$7+$8, $5+$6}' /proc/stat)
  sleep 3
  b=$(awk '/^cpu /{print $2+$3+$4+$7+$8, $5+$6}' /proc/stat)
  echo "$a $b" | awk '{busy = $3 - $1; idle = $4 - $2; printf "%.0f%%", 100 * busy / (busy + idle)}'
}
