#!/usr/bin/env bash
# Instructions per query on the in-process path (request bytes in, response bytes out), counted
# by callgrind: the figure repeats across runs, so a change's cost shows even on a noisy
# machine. Each case runs 1 and 1+N times; the difference divided by N is one query's cost.
#
#   bench/instructions.sh            # N = 20000
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-20000}
command -v valgrind >/dev/null || { sudo -n true 2>/dev/null && S=sudo || S=; $S apt-get install -y -qq valgrind >/dev/null; }
cargo bench --bench instructions --no-run --quiet 2>/dev/null
bin=$(ls -t target/release/deps/instructions-* | grep -v '\.d$' | head -1)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
count() { # case, queries
  valgrind --tool=callgrind --callgrind-out-file="$work/out" "$bin" "$1" "$2" >/dev/null 2>"$work/log"
  awk '/Collected :/ {print $4}' "$work/log"
}
for case in 0 1 2 3 4 5 6 7; do
  name=$(sed -n "$((case + 1))p" <<<$'geo answer with ECS\nstatic answer\nNXDOMAIN\ngeo, a repeat (cache)\ngeo, load: kept\ngeo, load: moved\ngeo, 4,096 /24s\ngeo, 4,096 /24s, load')
  base=$(count "$case" 1)
  full=$(count "$case" $((N + 1)))
  printf '%-22s %8.0f instructions per query\n' "$name" "$(awk -v a="$base" -v b="$full" -v n="$N" 'BEGIN { print (b - a) / n }')"
done
