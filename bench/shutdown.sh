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

if ! command -v dnsperf >/dev/null 2>&1 || ! command -v dig >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq dnsperf bind9-dnsutils >/dev/null
fi

cargo build --release --quiet
RUST_LOG=info ./target/release/regiondns serve --listen "$ADDR:$PORT" --admin off \
  --drain-period "$DRAIN" 2>/tmp/regiondns-shutdown.log &
server=$!
for _ in $(seq 50); do
  dig @$ADDR -p "$PORT" +time=1 +tries=1 +short api.llm.example.com A >/dev/null 2>&1 && break
  sleep 0.1
done

queries=$(mktemp)
echo "api.llm.example.com A" >"$queries"
dnsperf -s $ADDR -p "$PORT" -d "$queries" -l 6 -c 4 -q 200 -Q "$RATE" -t 1 \
  -E "8:0001180051024500" >/tmp/dnsperf-shutdown.out 2>&1 &
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
