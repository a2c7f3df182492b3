#!/usr/bin/env bash
# regiondns beside gdnsd, the fastest open-source health-checked Geo-DNS server, in one run on
# this machine: the same three regions with coordinates, the same GeoLite2 City database in
# MaxMind's nested shape, ECS on every query. Runs alternate (A B A B ...), each prints qps,
# lost, latency, the server's CPU per query (utime + stime from /proc/PID/stat, and utime
# alone) and RSS; then the ratios. The floor beside them: bench/echo.c, a batched responder
# that only echoes each query.
#
# QUERY=diverse (the default) is the traffic resolvers send: every query carries another client
# /24 in its ECS option, round-robin over 100,000 networks located in the database
# (bench/clients.py, fixed seed), sent by bench/diverse.c (batched, 200 outstanding), which
# also reports latency percentiles and the answers' mean ECS scope. QUERY=diverse6 does the
# same with IPv6 /56s. The other queries repeat one question (dnsperf, 4 clients, 200
# outstanding), which mostly measures a response cache: ecs (Tokyo's /24), noecs (the source
# address decides), static.
#
#   bench/vs-gdnsd.sh                        # diverse IPv4 clients, 10 s runs, 2 rounds
#   DURATION=20 ROUNDS=3 bench/vs-gdnsd.sh
#   QUERY=ecs bench/vs-gdnsd.sh              # or diverse6, noecs, static
#   WORKERS=2 bench/vs-gdnsd.sh              # regiondns UDP workers (gdnsd keeps 1 thread)
#   SURVEY=3000 bench/vs-gdnsd.sh            # also: both servers' answers and scopes for the
#                                            # first 3,000 networks, compared
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-2}
QUERY=${QUERY:-diverse}
WORKERS=${WORKERS:-1}
ADDR=127.0.0.1
GDNSD_PORT=5396 OURS_PORT=5397 ECHO_PORT=5395
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

need_dnsperf
need_gdnsd

db=$(city_db "$work")

# The same data for both servers.
mkdir -p "$work/gdnsd/zones" "$work/gdnsd/run" "$work/zones"
gdnsd_config "$work/gdnsd" "$db" "$ADDR:$GDNSD_PORT" "us-east 37.4 -79.1 203.0.113.10" \
  "eu-west 53.3 -6.3 203.0.113.20" "ap-northeast 35.7 139.7 203.0.113.30"
cat >"$work/gdnsd/zones/llm.example.com" <<'EOF'
$TTL 3600
@ SOA ns1 hostmaster.example.com. 1 3600 600 1209600 30
@ NS ns1
@ NS ns2
ns1 A 198.51.100.53
ns2 A 198.51.100.54
api 20 DYNA geoip!api
EOF
three_region_zone "$work/zones"

cargo build --release --quiet
cc -O2 -o "$work/echo" bench/echo.c
cc -O2 -o "$work/diverse" bench/diverse.c
gdnsd -c "$work/gdnsd" start 2>"$work/gdnsd.log" & pids+=($!); gdnsd_pid=$!
RUST_LOG=warn ./target/release/regiondns serve --zones "$work/zones" --geoip "$db" \
  --listen "$ADDR:$OURS_PORT" --admin off --udp-workers "$WORKERS" --rrl-rate "${RRL_RATE:-0}" & pids+=($!); ours_pid=$!
"$work/echo" "$ECHO_PORT" & pids+=($!); echo_pid=$!
wait_for_dns $ADDR $GDNSD_PORT
wait_for_dns $ADDR $OURS_PORT

# Tokyo (133.242.0.0/24) as the client: ECS option family 1, /24, scope 0, three octets.
case "$QUERY" in
  diverse) clients=$(client_networks "$db" 4) ;;
  diverse6) clients=$(client_networks "$db" 6) ;;
  ecs) echo "api.llm.example.com A" >"$work/queries"; ecs=(-E "8:0001180085f200") ;;
  noecs) echo "api.llm.example.com A" >"$work/queries"; ecs=() ;;
  static) echo "ns1.llm.example.com A" >"$work/queries"; ecs=() ;;
  *) echo "QUERY is diverse, diverse6, ecs, noecs or static" >&2; exit 2 ;;
esac
if [ -n "${SURVEY:-}" ] && [ -n "${clients:-}" ]; then
  "$work/diverse" $GDNSD_PORT "$clients" --survey "$SURVEY" >"$work/survey-gdnsd"
  "$work/diverse" $OURS_PORT "$clients" --survey "$SURVEY" >"$work/survey-ours"
  # network, gdnsd's answer and scope, ours.
  paste -d' ' "$work/survey-gdnsd" "$work/survey-ours" | awk -v n="$SURVEY" '
    { same += ($2 == $5); g += $3; o += $6; gw += ($3 <= 16); ow += ($6 <= 16)
      hg[$3]++; ho[$6]++ }
    END {
      printf "survey of %d networks: the same answer for %d; mean ECS scope gdnsd /%.1f (%.0f%% at /16 or wider), regiondns /%.1f (%.0f%%)\n",
        NR, same, g / NR, 100 * gw / NR, o / NR, 100 * ow / NR
      printf "scope    gdnsd  regiondns\n"
      for (s = 0; s <= 32; s++) if (hg[s] || ho[s]) printf "/%-6d %6d %10d\n", s, hg[s], ho[s]
    }'
fi
check=$(dig @$ADDR -p $OURS_PORT +short api.llm.example.com A +subnet=133.242.0.0/24)
theirs=$(dig @$ADDR -p $GDNSD_PORT +short api.llm.example.com A +subnet=133.242.0.0/24)
echo "Tokyo's answer: regiondns $check, gdnsd $theirs"

ticks=$(getconf CLK_TCK)
rss_mb() { awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }

# One run against the server on $2 (pid $3); prints a row and appends it to $work/rows.
run() {
  local name=$1 port=$2 pid=$3
  read -r u0 s0 < <(cpu_ticks "$pid")
  if [ -n "${clients:-}" ]; then
    out=$("$work/diverse" "$port" "$clients" "$DURATION" 200)
    read -r completed lost qps latency p99 scope wide codes < <(awk '{
      printf "%s %s %s %s %s %s %s ", $4, $6, $8, $10, $12, $16, $18
      for (i = 21; i <= NF; i++) printf "%s ", $i; printf "\n" }' <<<"$out")
    latency="$latency/$p99"
  else
    out=$(dnsperf -s $ADDR -p "$port" -d "$work/queries" -l "$DURATION" -c 4 -q 200 "${ecs[@]}" 2>&1)
    completed=$(awk '/Queries completed:/ {print $3}' <<<"$out")
    lost=$(awk '/Queries lost:/ {print $3}' <<<"$out")
    qps=$(awk '/Queries per second:/ {printf "%.0f", $4}' <<<"$out")
    latency=$(awk '/Average Latency/ {printf "%.0f", $4 * 1e6}' <<<"$out")
    codes=$(awk -F: '/Response codes:/ {print $2}' <<<"$out" | xargs)
    scope=- wide=-
  fi
  read -r u1 s1 < <(cpu_ticks "$pid")
  cpu=$(awk -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v hz="$ticks" -v n="$completed" \
    'BEGIN { printf "%.2f %.2f", (u + s) / hz * 1e6 / n, u / hz * 1e6 / n }')
  read -r total user <<<"$cpu"
  printf '%-10s %10s %8s %12s %10s %10s %8s %7s %6s  %s\n' "$name" "$qps" "$lost" "$latency" "$total" "$user" "$(rss_mb "$pid")" "$scope" "$wide" "$codes"
  echo "$name $qps $total $user" >>"$work/rows"
}

echo "query: $QUERY, $DURATION s runs, regiondns with $WORKERS UDP worker(s), gdnsd with 1 UDP thread"
latency_heading="mean us"
[ -z "${clients:-}" ] || latency_heading="p50/p99 us"
printf '%-10s %10s %8s %12s %10s %10s %8s %7s %6s  %s\n' server qps lost "$latency_heading" "CPU us/q" "user us/q" "RSS MB" scope wide "response codes"
for _ in $(seq "$ROUNDS"); do
  run gdnsd $GDNSD_PORT $gdnsd_pid
  run regiondns $OURS_PORT $ours_pid
  run echo $ECHO_PORT $echo_pid
done

awk '
  { n[$1]++; qps[$1] += $2; cpu[$1] += $3; user[$1] += $4 }
  END {
    g = "gdnsd"; r = "regiondns"
    printf "\nmeans over the rounds, regiondns / gdnsd: qps %.2fx, CPU per query %.2fx, user-space CPU per query %.2fx\n",
      (qps[r] / n[r]) / (qps[g] / n[g]), (cpu[r] / n[r]) / (cpu[g] / n[g]), (user[r] / n[r]) / (user[g] / n[g])
    printf "the echo floor: %.0f qps at %.2f us of CPU per query (%.2f in user space)\n",
      qps["echo"] / n["echo"], cpu["echo"] / n["echo"], user["echo"] / n["echo"]
  }' "$work/rows"
