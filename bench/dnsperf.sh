#!/usr/bin/env bash
# Throughput and CPU cost of geo answers: serves the example zone with the bundled GeoIP data on
# loopback, sends ECS queries for the service name with dnsperf, and prints queries per second
# and the server's CPU time per query, for clients in three places.
#
#   bench/dnsperf.sh            # 10 s per run
#   DURATION=30 bench/dnsperf.sh
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-4}
PORT=${PORT:-5399}
ADDR=127.0.0.1

. bench/lib.sh
need_dnsperf

cargo build --release --quiet
RUST_LOG=warn ./target/release/regiondns serve --listen "$ADDR:$PORT" --rrl-rate 0 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
wait_for_dns $ADDR "$PORT"

queries=$(mktemp)
echo "api.llm.example.com A" >"$queries"
ticks=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$server/stat"; }

printf '%-28s %12s %10s %16s %12s\n' client "queries" "qps" "CPU us/query" "avg latency"
# ECS option payload: family 1, source /24, scope 0, three address bytes (hex).
for client in "133.242.0.0/24 Japan 0001180085f200" \
              "81.2.69.0/24 UK 00011800510245" \
              "8.8.8.0/24 US 00011800080808"; do
  set -- $client
  before=$(cpu_ticks)
  out=$(dnsperf -s $ADDR -p "$PORT" -d "$queries" -l "$DURATION" -c "$CLIENTS" -q 200 -E "8:$3" 2>&1)
  after=$(cpu_ticks)
  completed=$(awk '/Queries completed:/ {print $3}' <<<"$out")
  qps=$(awk '/Queries per second:/ {print $4}' <<<"$out")
  latency=$(awk '/Average Latency/ {print $4}' <<<"$out")
  cpu_us=$(awk -v t=$((after - before)) -v hz="$ticks" -v n="$completed" \
    'BEGIN { if (n > 0) printf "%.2f", t / hz * 1e6 / n; else print "n/a" }')
  printf '%-28s %12s %10.0f %16s %11ss\n' "$1 ($2)" "$completed" "$qps" "$cpu_us" "$latency"
done
rm -f "$queries"
