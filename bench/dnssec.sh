#!/usr/bin/env bash
# What DNSSEC costs: one regiondns (release build, 1 UDP worker, the bundled country database)
# serving the three-region zone signed with a fresh key, and dnsperf asking for the geo answer
# with ECS from Tokyo, without DO and with DO (RRSIGs copied, nothing signed per query),
# alternating. Then the worst case an attacker can choose: NXDOMAIN for names never asked
# before, with DO, each needing a new signed NSEC (compact denial). Prints qps, CPU per query
# and response size for each. Loopback only.
#
#   bench/dnssec.sh
#   DURATION=20 ROUNDS=3 bench/dnssec.sh
#
# Target (issue 13): with DO, qps and CPU per query within 10% of the unsigned figure.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-2}
ADDR=127.0.0.1 PORT=5398
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

need_dnsperf
cargo build --release --quiet
mkdir -p "$work/zones"
./target/release/regiondns dnssec keygen --zone llm.example.com --out "$work/zones/k.pem" >/dev/null 2>&1
three_region_zone "$work/zones" "dnssec: { key: k.pem }"
RUST_LOG=warn ./target/release/regiondns serve --zones "$work/zones" --listen "$ADDR:$PORT" \
  --admin off --udp-workers 1 --rrl-rate 0 & pids+=($!); pid=$!
wait_for_dns $ADDR $PORT

echo "api.llm.example.com A" >"$work/geo"
python3 -c "
for i in range(2_000_000):
    print(f'n{i}.llm.example.com A')" >"$work/random"
# Tokyo (133.242.0.0/24): ECS option family 1, /24, scope 0, three octets.
ecs=(-E "8:0001180085f200")
size() { dig @$ADDR -p $PORT "$@" | awk '/MSG SIZE/ {print $NF}'; }
echo "response sizes: geo answer $(size +subnet=133.242.0.0/24 api.llm.example.com A) bytes," \
  "with DO $(size +dnssec +subnet=133.242.0.0/24 api.llm.example.com A);" \
  "NXDOMAIN with DO $(size +dnssec nope.llm.example.com A)"

ticks=$(getconf CLK_TCK)
run() {
  local name=$1 queries=$2; shift 2
  read -r u0 s0 < <(cpu_ticks "$pid")
  out=$(dnsperf -s $ADDR -p "$PORT" -d "$queries" -l "$DURATION" -c 4 -q 200 "$@" 2>&1)
  read -r u1 s1 < <(cpu_ticks "$pid")
  completed=$(awk '/Queries completed:/ {print $3}' <<<"$out")
  qps=$(awk '/Queries per second:/ {printf "%.0f", $4}' <<<"$out")
  codes=$(awk -F: '/Response codes:/ {print $2}' <<<"$out" | xargs)
  cpu=$(awk -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v hz="$ticks" -v n="$completed" \
    'BEGIN { printf "%.2f %.2f", (u + s) / hz * 1e6 / n, u / hz * 1e6 / n }')
  read -r total user <<<"$cpu"
  printf '%-22s %10s %12s %10s  %s\n' "$name" "$qps" "$total" "$user" "$codes"
  echo "$name|$qps|$total" >>"$work/rows"
}

printf '%-22s %10s %12s %10s  %s\n' queries qps "CPU us/q" "user us/q" "response codes"
for _ in $(seq "$ROUNDS"); do
  run "geo, no DO" "$work/geo" "${ecs[@]}"
  run "geo, DO" "$work/geo" "${ecs[@]}" -D
done
run "new NXDOMAIN, DO" "$work/random" -D -n 1
awk -F'|' '
  { n[$1]++; qps[$1] += $2; cpu[$1] += $3 }
  END {
    a = "geo, no DO"; b = "geo, DO"
    printf "\nmeans, DO / no DO: qps %.2fx, CPU per query %.2fx\n",
      (qps[b] / n[b]) / (qps[a] / n[a]), (cpu[b] / n[b]) / (cpu[a] / n[a])
  }' "$work/rows"
