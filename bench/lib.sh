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
