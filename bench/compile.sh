#!/usr/bin/env bash
# How long the GeoIP database takes to become a map, beside gdnsd, which compiles the same
# database the same way at its start: GeoLite2 City with 3 regions and with 30, each server
# started ROUNDS times, timed from its start until it answers a query for the service (dig,
# polled every 5 ms). Prints the median and largest start, and the server's peak memory
# (VmHWM). Then regiondns's peak memory during a GeoIP reload (the file replaced, the new map
# compiled while the old one serves).
#
#   bench/compile.sh            # 5 rounds
#   ROUNDS=9 bench/compile.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

ROUNDS=${ROUNDS:-5}
ADDR=127.0.0.1
GDNSD_PORT=5396 OURS_PORT=5397 ADMIN_PORT=5398
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

need_dnsperf
need_gdnsd
db=$(city_db "$work")
cargo build --release --quiet

# Region i of n at spread-out coordinates (the three of the other benchmarks when n is 3).
coords() {
  local n=$1 i=$2
  if [ "$n" -eq 3 ]; then
    sed -n "$((i + 1))p" <<<$'37.4 -79.1\n53.3 -6.3\n35.7 139.7'
  else
    awk -v i="$i" 'BEGIN { printf "%d %d\n", -45 + (i * 37) % 110, -180 + (i * 71) % 360 }'
  fi
}

# The same regions for both servers: gdnsd's config and zone, regiondns's zone.
write_configs() {
  local n=$1 dir=$work/$1
  mkdir -p "$dir/gdnsd/zones" "$dir/gdnsd/run" "$dir/zones"
  local gdnsd_regions=() regions="" names=""
  for i in $(seq 0 $((n - 1))); do
    read -r lat lon < <(coords "$n" "$i")
    gdnsd_regions+=("r$i $lat $lon 203.0.113.$((i + 1))")
    regions+="  r$i: { location: { lat: $lat, lon: $lon }, addresses: [203.0.113.$((i + 1))] }"$'\n'
    names+="r$i, "
  done
  gdnsd_config "$dir/gdnsd" "$db" "$ADDR:$GDNSD_PORT" "${gdnsd_regions[@]}"
  cat >"$dir/gdnsd/zones/llm.example.com" <<'EOF'
$TTL 3600
@ SOA ns1 hostmaster.example.com. 1 3600 600 1209600 30
@ NS ns1
ns1 A 198.51.100.53
api 20 DYNA geoip!api
EOF
  cat >"$dir/zones/llm.yaml" <<EOF
origin: llm.example.com.
soa: { primary: ns1.llm.example.com., contact: hostmaster.example.com., serial: 1, negative_ttl: 30 }
ns: [ns1.llm.example.com.]
records:
  ns1: { A: [198.51.100.53] }
regions:
$regions
services:
  api: { ttl: 20, regions: [${names%, }] }
EOF
}

answers() { dig @$ADDR -p "$1" +time=1 +tries=1 +short api.llm.example.com A >/dev/null 2>&1; }
hwm_mb() { awk '/VmHWM/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }
now_ms() { date +%s%3N; }

# Starts "$@" (a server on port $1 of the call), prints "milliseconds peak-MB", stops it.
start_once() {
  local port=$1; shift
  local t0 pid
  t0=$(now_ms)
  "$@" >/dev/null 2>&1 &
  pid=$!
  until answers "$port"; do
    kill -0 "$pid" 2>/dev/null || { echo "the server exited" >&2; return 1; }
    sleep 0.005
  done
  echo "$(($(now_ms) - t0)) $(hwm_mb "$pid")"
  kill "$pid"
  wait "$pid" 2>/dev/null || true
}

stats() { sort -n | awk '{ v[NR] = $1 } END { printf "median %d ms, largest %d ms", v[int((NR + 1) / 2)], v[NR] }'; }

for n in 3 30; do
  write_configs "$n"
  dir=$work/$n
  : >"$work/gdnsd-$n" && : >"$work/ours-$n"
  for _ in $(seq "$ROUNDS"); do
    start_once $GDNSD_PORT gdnsd -c "$dir/gdnsd" -f start >>"$work/gdnsd-$n"
    start_once $OURS_PORT ./target/release/regiondns serve --zones "$dir/zones" --geoip "$db" \
      --listen "$ADDR:$OURS_PORT" --admin off >>"$work/ours-$n"
  done
  printf '%2d regions: gdnsd     start %s, peak %s MB\n' "$n" "$(stats <"$work/gdnsd-$n")" "$(sort -n -k2 "$work/gdnsd-$n" | tail -1 | cut -d' ' -f2)"
  printf '%2d regions: regiondns start %s, peak %s MB\n' "$n" "$(stats <"$work/ours-$n")" "$(sort -n -k2 "$work/ours-$n" | tail -1 | cut -d' ' -f2)"
done

# A GeoIP reload: the peak memory it takes beside what the server held before.
cp "$db" "$work/city.mmdb"
RUST_LOG=info ./target/release/regiondns serve --zones "$work/3/zones" --geoip "$work/city.mmdb" \
  --listen "$ADDR:$OURS_PORT" --admin "$ADDR:$ADMIN_PORT" 2>"$work/reload.log" &
pids+=($!)
ours=$!
until answers $OURS_PORT; do sleep 0.05; done
sleep 1
before_rss=$(awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$ours/status")
echo 1 >/proc/$ours/clear_refs 2>/dev/null || true
cp "$db" "$work/city.mmdb.new" && mv "$work/city.mmdb.new" "$work/city.mmdb"
for _ in $(seq 100); do grep -q "GeoIP reloaded" "$work/reload.log" && break; sleep 0.1; done
grep -q "GeoIP reloaded" "$work/reload.log" || { echo "no reload logged" >&2; exit 1; }
sleep 1
after_rss=$(awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$ours/status")
echo "GeoIP reload (3 regions): RSS $before_rss MB before, $after_rss MB after; peak since start $(hwm_mb "$ours") MB"
grep -o "GeoIP networks compiled (GeoIP reload).*" "$work/reload.log"
