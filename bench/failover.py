#!/usr/bin/env python3
"""Failover time: how long after a region's health endpoint breaks do answers point elsewhere,
and how long after it heals do they come back; for regiondns and, the same way, for gdnsd.

Each server answers for us-east (127.0.0.10) and eu-west (127.0.0.20), checked over HTTP
against endpoints this script runs on those addresses, marked down after 2 failures and up
after 2 successes (regiondns: `fall: 2, rise: 2`; gdnsd: the `http_status` monitor with
`down_thresh => 2, up_thresh => 2`). gdnsd checks every 2 s at the least, so the runs are
regiondns every 1 s, and both every 2 s. The script queries every 10 ms as a UK resolver (ECS),
breaks eu-west's endpoint BREAKS times at random phases and prints p50 and max of both delays
per run. Everything stays on loopback.

`fleet3@1` runs three regiondns instances as a fleet (each polls the others' views; a region is
down only for a majority): a break counts as moved once all three answer elsewhere, and as back
once all three answer it again.

    bench/failover.py                       # 20 breaks per run
    BREAKS=5 RUNS="regiondns@1 fleet3@1 gdnsd@2" bench/failover.py
"""

import http.server
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time

import dnswire

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BREAKS = int(os.environ.get("BREAKS", "20"))
# Runs as server@interval: gdnsd checks every 2 s at the least, so both are compared at 2 s.
RUNS = os.environ.get("RUNS", "regiondns@1 fleet3@1 regiondns@2 gdnsd@2").split()
FALL, RISE = 2, 2
EU_WEST, US_EAST = "127.0.0.20", "127.0.0.10"

healthy = threading.Event()
healthy.set()


class Health(http.server.BaseHTTPRequestHandler):
    def handle(self):
        try:
            super().handle()
        except ConnectionError:
            pass  # gdnsd closes once it has the status line

    def do_GET(self):
        status = 200 if healthy.is_set() else 503
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


class AlwaysHealthy(Health):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answer(sock, dns_port, qid):
    return dnswire.ask(sock, dns_port, qid, "api.llm.example.com", "81.2.69")


def wait_for(sock, dns_ports, predicate, limit=15.0):
    """Queries every server every 10 ms until predicate(address) holds for all of them;
    returns the seconds it took."""
    start = time.monotonic()
    qid = 0
    while time.monotonic() - start < limit:
        answers = []
        for port in dns_ports:
            qid = (qid + 1) & 0xFFFF
            answers.append(answer(sock, port, qid))
        if all(predicate(a) for a in answers):
            return time.monotonic() - start
        time.sleep(0.01)
    raise SystemExit("no change within %.0f s" % limit)


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def write_zone(http_port, work, interval):
    zones = os.path.join(work, "zones")
    os.mkdir(zones)
    check = (f'check: {{ http: "http://HOST:{http_port}/healthz", interval: {interval}s, '
             f"timeout: 500ms, fall: {FALL}, rise: {RISE} }}")
    with open(os.path.join(zones, "llm.yaml"), "w") as f:
        f.write(f"""
origin: llm.example.com.
soa: {{ primary: ns1, contact: hostmaster@example.com }}
ns: [ns1]
records:
  ns1: {{ A: [198.51.100.53] }}
regions:
  us-east:
    location: {{ lat: 37.4, lon: -79.1 }}
    addresses: [{US_EAST}]
    {check.replace('HOST', US_EAST)}
  eu-west:
    location: {{ lat: 53.3, lon: -6.3 }}
    addresses: [{EU_WEST}]
    {check.replace('HOST', EU_WEST)}
services:
  api: {{ ttl: 5, regions: [us-east, eu-west] }}
""")
    return zones


def serve_args(zones, dns_port):
    binary = os.path.join(ROOT, "target", "release", "regiondns")
    return [binary, "serve", "--zones", zones,
            "--geoip", os.path.join(ROOT, "geoip", "dbip-country.mmdb"),
            "--listen", f"127.0.0.1:{dns_port}", "--admin", "off"]


def regiondns(dns_ports, http_port, work, interval):
    zones = write_zone(http_port, work, interval)
    return [subprocess.Popen(serve_args(zones, dns_ports[0]), env={**os.environ, "RUST_LOG": "warn"})]


def fleet(dns_ports, http_port, work, interval):
    """One regiondns per DNS port, each the others' peer (their own fleet listeners)."""
    zones = write_zone(http_port, work, interval)
    token = os.path.join(work, "fleet-token")
    with open(token, "w") as f:
        f.write("bench-fleet-secret")
    fleet_ports = [free_port() for _ in dns_ports]
    servers = []
    for i, dns_port in enumerate(dns_ports):
        args = serve_args(zones, dns_port) + [
            "--nsid", f"ns{i + 1}", "--fleet-listen", f"127.0.0.1:{fleet_ports[i]}",
            "--fleet-token-file", token, "--state-dir", os.path.join(work, f"state{i + 1}")]
        for j, port in enumerate(fleet_ports):
            if j != i:
                args += ["--peer", f"http://127.0.0.1:{port}"]
        servers.append(subprocess.Popen(args, env={**os.environ, "RUST_LOG": "warn"}))
    return servers


def gdnsd(dns_ports, http_port, work, interval):
    dns_port = dns_ports[0]
    city = subprocess.run(["bash", "-c", '. bench/lib.sh && need_gdnsd && city_db "$1"', "-", work],
                          cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()
    config = os.path.join(work, "gdnsd")
    os.makedirs(os.path.join(config, "zones"))
    os.makedirs(os.path.join(config, "run"))
    with open(os.path.join(config, "config"), "w") as f:
        f.write(f"""
options => {{
  listen => [ 127.0.0.1:{dns_port} ]
  udp_threads => 1
  tcp_threads => 1
  run_dir => {config}/run
  state_dir => {config}/run
}}
service_types => {{
  web => {{
    plugin => http_status, port => {http_port}, url_path => /healthz,
    interval => {interval}, timeout => 1, down_thresh => {FALL}, up_thresh => {RISE}, ok_thresh => 1
  }}
}}
plugins => {{
  geoip => {{
    maps => {{
      llm => {{
        geoip2_db => {city}
        datacenters => [us-east, eu-west]
        auto_dc_coords => {{ us-east => [ 37.4, -79.1 ], eu-west => [ 53.3, -6.3 ] }}
      }}
    }}
    resources => {{
      api => {{ map => llm, service_types => web, dcmap => {{ us-east => {US_EAST}, eu-west => {EU_WEST} }} }}
    }}
  }}
}}
""")
    with open(os.path.join(config, "zones", "llm.example.com"), "w") as f:
        f.write("$TTL 3600\n@ SOA ns1 hostmaster.example.com. 1 3600 600 1209600 30\n"
                "@ NS ns1\nns1 A 198.51.100.53\napi 5 DYNA geoip!api\n")
    return [subprocess.Popen(["gdnsd", "-c", config, "start"], stderr=subprocess.DEVNULL)]


def measure(name, start, http_port, interval):
    dns_ports = [free_port() for _ in range(3 if name.startswith("fleet3") else 1)]
    work = tempfile.mkdtemp()
    servers = start(dns_ports, http_port, work, interval)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(0.5)
    away, back = [], []
    try:
        time.sleep(0.5)
        wait_for(sock, dns_ports, lambda a: a == EU_WEST)
        for i in range(BREAKS):
            time.sleep(random.uniform(0.0, interval))  # a random phase against the probe ticks
            healthy.clear()
            away.append(wait_for(sock, dns_ports, lambda a: a == US_EAST))
            time.sleep(random.uniform(0.0, interval))
            healthy.set()
            back.append(wait_for(sock, dns_ports, lambda a: a == EU_WEST))
            print(f"{name} break {i + 1:2}: moved away after {away[-1]:.2f} s, "
                  f"back after {back[-1]:.2f} s", file=sys.stderr)
    finally:
        for server in servers:
            server.terminate()
            server.wait()
    return away, back


def main():
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    http_port = free_port()
    endpoints = []
    for address in (US_EAST, EU_WEST):
        handler = Health if address == EU_WEST else AlwaysHealthy
        endpoint = http.server.ThreadingHTTPServer((address, http_port), handler)
        threading.Thread(target=endpoint.serve_forever, daemon=True).start()
        endpoints.append(endpoint)
    starts = {"regiondns": regiondns, "fleet3": fleet, "gdnsd": gdnsd}
    results = {}
    for run in RUNS:
        name, interval = run.split("@")
        results[run] = measure(run, starts[name], http_port, int(interval))
    for endpoint in endpoints:
        endpoint.shutdown()

    print(f"fall {FALL}, rise {RISE}, {BREAKS} breaks; server@check interval in seconds")
    print(f"{'server':14} {'away p50':>9} {'away max':>9} {'back p50':>9} {'back max':>9}")
    for run, (away, back) in results.items():
        print(f"{run:14} {percentile(away, 50):8.2f}s {max(away):8.2f}s "
              f"{percentile(back, 50):8.2f}s {max(back):8.2f}s")
    if "regiondns@1" in results:
        away = results["regiondns@1"][0]
        print(f"regiondns target at 1 s: away max under 3 s: {'met' if max(away) < 3 else 'NOT met'}")


if __name__ == "__main__":
    main()
