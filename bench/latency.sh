#!/usr/bin/env bash
# policy: latency beside policy: nearest, on the traffic resolvers send: GeoLite2 City, the
# three regions of the other benchmarks, one UDP worker each, every query another client /24
# (bench/clients.py, bench/diverse.c). The latency server reads a table of ROWS rows (default
# 1,000,000: a third as many /24s, measured to each region, with random round trips and
# samples; made here with a fixed seed). Prints each server's start (until it answers),
# compile log line, RSS and mean ECS scope, then runs alternating (nearest, latency, ...) with
# qps and CPU per query, and the ratios.
#
#   bench/latency.sh                 # 1,000,000 rows, 2 rounds of 10 s
#   ROWS=300000 ROUNDS=3 bench/latency.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

ROWS=${ROWS:-1000000}
ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-10}
ADDR=127.0.0.1
NEAREST_PORT=5391 LATENCY_PORT=5392
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

db=$(city_db "$work")
clients=$(client_networks "$db" 4)
cargo build --release --quiet
cc -O2 -o "$work/diverse" bench/diverse.c

python3 - "$ROWS" >"$work/latency.csv" <<'PY'
import random, sys
rows = int(sys.argv[1])
random.seed(29)
print("network,region,rtt_ms,samples")
networks = set()
while len(networks) * 3 < rows:
    networks.add(random.randrange(1 << 24) << 8)
for n in sorted(networks):
    net = f"{n >> 24}.{n >> 16 & 255}.{n >> 8 & 255}.0/24"
    for region in ("us-east", "eu-west", "ap-northeast"):
        print(f"{net},{region},{random.uniform(5, 300):.1f},{random.randint(1, 60)}")
PY
echo "table: $(($(wc -l <"$work/latency.csv") - 1)) rows, $(du -m "$work/latency.csv" | cut -f1) MB"

start() { # name port policy [flags...]
  local name=$1 port=$2 policy=$3; shift 3
  mkdir -p "$work/$name"
  three_region_zone "$work/$name"
  sed -i "s/  api: { ttl: 20, regions: \[us-east, eu-west, ap-northeast\] }/  api: { ttl: 20, regions: [us-east, eu-west, ap-northeast], policy: $policy }/" "$work/$name/llm.yaml"
  local began=$(date +%s.%N)
  RUST_LOG=info ./target/release/regiondns serve --zones "$work/$name" --geoip "$db" \
    --listen "$ADDR:$port" --admin off --udp-workers 1 --rrl-rate 0 "$@" 2>"$work/$name.log" &
  pids+=($!)
  eval "${name}_pid=$!"
  # A table of a million rows takes a while to join into the map: wait up to two minutes.
  for _ in $(seq 1200); do
    dig @$ADDR -p "$port" +time=1 +tries=1 +short api.llm.example.com A >/dev/null 2>&1 && break
    sleep 0.1
  done
  printf '%-8s answers %.1f s after its start; %s\n' "$name" "$(awk -v a="$began" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')" \
    "$(grep -o 'GeoIP networks compiled.*' "$work/$name.log" | head -1)"
}
start nearest $NEAREST_PORT nearest
start latency $LATENCY_PORT latency --latency "$work/latency.csv"

ticks=$(getconf CLK_TCK)
rss_mb() { awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }
run() { # name port pid
  local name=$1 port=$2 pid=$3
  read -r u0 s0 < <(cpu_ticks "$pid")
  out=$("$work/diverse" "$port" "$clients" "$DURATION" 200)
  read -r u1 s1 < <(cpu_ticks "$pid")
  read -r completed qps p50 p99 scope < <(awk '{ print $4, $8, $10, $12, $16 }' <<<"$out")
  cpu=$(awk -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v hz="$ticks" -v n="$completed" \
    'BEGIN { printf "%.2f %.2f", (u + s) / hz * 1e6 / n, u / hz * 1e6 / n }')
  read -r total user <<<"$cpu"
  printf '%-8s %10s %12s %10s %10s %8s %7s\n' "$name" "$qps" "$p50/$p99" "$total" "$user" "$(rss_mb "$pid")" "$scope"
  echo "$name $qps $total $user" >>"$work/rows"
}
printf '%-8s %10s %12s %10s %10s %8s %7s\n' policy qps p50/p99\ us "CPU us/q" "user us/q" "RSS MB" scope
for _ in $(seq "$ROUNDS"); do
  run nearest $NEAREST_PORT "$nearest_pid"
  run latency $LATENCY_PORT "$latency_pid"
done
awk '{ n[$1]++; qps[$1] += $2; cpu[$1] += $3; user[$1] += $4 }
  END { printf "\nlatency / nearest: qps %.2fx, CPU per query %.2fx, user-space CPU per query %.2fx\n",
    (qps["latency"] / n["latency"]) / (qps["nearest"] / n["nearest"]),
    (cpu["latency"] / n["latency"]) / (cpu["nearest"] / n["nearest"]),
    (user["latency"] / n["latency"]) / (user["nearest"] / n["nearest"]) }' "$work/rows"
