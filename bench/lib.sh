# Shared by the shell benchmarks (sourced, not run).

# Installs dnsperf and dig from Debian when either is missing.
need_dnsperf() {
  if ! command -v dnsperf >/dev/null 2>&1 || ! command -v dig >/dev/null 2>&1; then
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq dnsperf bind9-dnsutils >/dev/null
  fi
}

# Waits (up to 5 s) until the server at $1 port $2 answers the example service.
wait_for_dns() {
  for _ in $(seq 50); do
    dig @"$1" -p "$2" +time=1 +tries=1 +short api.llm.example.com A >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "no answer from $1 port $2" >&2
  return 1
}

# Installs gdnsd and a C compiler from Debian when either is missing.
need_gdnsd() {
  if ! command -v gdnsd >/dev/null 2>&1 || ! command -v cc >/dev/null 2>&1; then
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq gdnsd gcc >/dev/null
  fi
}

# Prints the path of a GeoLite2 City database (2018-07-03, as PyPI's maxminddb-geolite2 ships
# it), fetched with the tests' real databases (scripts/fetch-real-geoip) the first time.
city_db() {
  scripts/fetch-real-geoip >&2
  realpath target/real-geoip/GeoLite2-City.mmdb
}

# Writes gdnsd's configuration to $1/config for one geoip map of the database $2, serving on
# $3 (address:port): the regions given after that as "name lat lon address" arguments, nearest
# first by auto_dc_coords, as the service api.
gdnsd_config() {
  local dir=$1 db=$2 listen=$3
  shift 3
  local names="" coords="" dcmap=""
  for region in "$@"; do
    read -r name lat lon address <<<"$region"
    names+="$name, "
    coords+="          $name => [ $lat, $lon ]"$'\n'
    dcmap+="$name => $address, "
  done
  mkdir -p "$dir/run"
  cat >"$dir/config" <<EOF
options => {
  listen => [ $listen ]
  udp_threads => 1
  tcp_threads => 1
  run_dir => $dir/run
  state_dir => $dir/run
}
plugins => {
  geoip => {
    maps => {
      llm => {
        geoip2_db => $db
        datacenters => [${names%, }]
        auto_dc_coords => {
$coords        }
      }
    }
    resources => {
      api => {
        map => llm
        dcmap => { ${dcmap%, } }
      }
    }
  }
}
EOF
}

# Prints the path of a list of client networks located by the database $1 (family $2: 4 or 6),
# made once by bench/clients.py with a fixed seed and kept in target/.
client_networks() {
  local db=$1 family=$2 list=target/bench-clients/v$2.txt
  if [ ! -s "$list" ]; then
    python3 -c "import maxminddb" 2>/dev/null || python3 -m pip install --quiet maxminddb
    mkdir -p target/bench-clients
    python3 bench/clients.py "$db" --family "$family" >"$list.tmp"
    mv "$list.tmp" "$list"
  fi
  realpath "$list"
}

# Writes the benchmarks' regiondns zone (three regions with coordinates, the service `api`) to
# $1/llm.yaml, followed by the lines given as $2.
three_region_zone() {
  cat >"$1/llm.yaml" <<EOF
origin: llm.example.com.
soa: { primary: ns1.llm.example.com., contact: hostmaster.example.com., serial: 1, negative_ttl: 30 }
ns: [ns1.llm.example.com., ns2.llm.example.com.]
records:
  ns1: { A: [198.51.100.53] }
  ns2: { A: [198.51.100.54] }
regions:
  us-east: { location: { lat: 37.4, lon: -79.1 }, addresses: [203.0.113.10] }
  eu-west: { location: { lat: 53.3, lon: -6.3 }, addresses: [203.0.113.20] }
  ap-northeast: { location: { lat: 35.7, lon: 139.7 }, addresses: [203.0.113.30] }
services:
  api: { ttl: 20, regions: [us-east, eu-west, ap-northeast] }
${2:-}
EOF
}

# A process's user and system CPU so far, in clock ticks (from /proc/PID/stat).
cpu_ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }
