#!/usr/bin/env bash
# SIGTERM under load: serves the example zone, sends ECS queries with dnsperf at a fixed rate,
# sends SIGTERM in the middle, and prints how long the server took to exit, its exit status and
# what dnsperf saw. Queries sent after the sockets closed get no answer (dnsperf counts them
# lost); the server answers every query it has received (tests/server.rs shows it for TCP).
#
#   bench/shutdown.sh                 # 20,000 q/s for 6 s, SIGTERM after 2 s
#   RATE=50000 DRAIN=2s bench/shutdown.sh
set -euo pipefail
cd "$(dirname "$0")/.."

RATE=${RATE:-20000}
DRAIN=${DRAIN:-0s}
PORT=${PORT:-5398}
ADDR=127.0.0.1

. bench/lib.sh
need_dnsperf

cargo build --release --quiet
RUST_LOG=info ./target/release/regiondns serve --listen "$ADDR:$PORT" --admin off --rrl-rate 0 \
  --drain-period "$DRAIN" 2>/tmp/regiondns-shutdown.log &
server=$!
wait_for_dns $ADDR "$PORT"

queries=$(mktemp)
echo "api.llm.example.com A" >"$queries"
dnsperf -s $ADDR -p "$PORT" -d "$queries" -l 6 -c 4 -q 200 -Q "$RATE" -t 1 \
  -E "8:00011800510245" >/tmp/dnsperf-shutdown.out 2>&1 &
perf=$!
sleep 2
sent_at=$(date +%s.%N)
kill -TERM $server
status=0
wait $server || status=$?
ended_at=$(date +%s.%N)
wait $perf || true
rm -f "$queries"

awk -v a="$sent_at" -v b="$ended_at" 'BEGIN { printf "exit %.3f s after SIGTERM (drain period '"$DRAIN"')\n", b - a }'
echo "exit status: $status"
grep -E "Queries sent|Queries completed|Queries lost" /tmp/dnsperf-shutdown.out
grep -E "shutting down|stopping|still running" /tmp/regiondns-shutdown.log || true
