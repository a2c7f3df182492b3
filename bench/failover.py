#!/usr/bin/env python3
"""Failover time: how long after a region's health endpoint breaks do answers point elsewhere,
and how long after it heals do they come back.

Serves a zone whose eu-west region is checked (interval 1s, fall 2, rise 2) against an HTTP
endpoint this script runs on 127.0.0.1, queries continuously (every 10 ms) as a UK resolver with
ECS, breaks the endpoint BREAKS times at random phases and prints p50 and max of both delays.
Everything stays on loopback. Standard library only.

    bench/failover.py            # 20 breaks
    BREAKS=5 bench/failover.py
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
INTERVAL, FALL, RISE = 1.0, 2, 2
EU_WEST, US_EAST = "203.0.113.20", "203.0.113.10"

healthy = threading.Event()
healthy.set()


class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        status = 200 if healthy.is_set() else 503
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answer(sock, dns_port, qid):
    return dnswire.ask(sock, dns_port, qid, "api.llm.example.com", "81.2.69")


def wait_for(sock, dns_port, predicate, limit=15.0):
    """Queries every 10 ms until predicate(address) holds; returns the seconds it took."""
    start = time.monotonic()
    qid = 0
    while time.monotonic() - start < limit:
        qid = (qid + 1) & 0xFFFF
        if predicate(answer(sock, dns_port, qid)):
            return time.monotonic() - start
        time.sleep(0.01)
    raise SystemExit("no change within %.0f s" % limit)


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def main():
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    http_port, dns_port = free_port(), free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", http_port), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    zones = tempfile.mkdtemp()
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
  eu-west:
    location: {{ lat: 53.3, lon: -6.3 }}
    addresses: [{EU_WEST}]
    check: {{ http: "http://127.0.0.1:{http_port}/healthz", interval: {int(INTERVAL * 1000)}ms,
             timeout: 500ms, fall: {FALL}, rise: {RISE} }}
services:
  api: {{ ttl: 5, regions: [us-east, eu-west] }}
""")
    binary = os.path.join(ROOT, "target", "release", "regiondns")
    dns = subprocess.Popen(
        [binary, "serve", "--zones", zones, "--geoip", os.path.join(ROOT, "geoip", "dbip-country.mmdb"),
         "--listen", f"127.0.0.1:{dns_port}", "--admin", "off"],
        env={**os.environ, "RUST_LOG": "warn"},
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(0.5)
    away, back = [], []
    try:
        time.sleep(0.5)
        wait_for(sock, dns_port, lambda a: a == EU_WEST)
        for i in range(BREAKS):
            time.sleep(random.uniform(0.0, INTERVAL))  # a random phase against the probe ticks
            healthy.clear()
            away.append(wait_for(sock, dns_port, lambda a: a == US_EAST))
            time.sleep(random.uniform(0.0, INTERVAL))
            healthy.set()
            back.append(wait_for(sock, dns_port, lambda a: a == EU_WEST))
            print(f"break {i + 1:2}: moved away after {away[-1]:.2f} s, back after {back[-1]:.2f} s",
                  file=sys.stderr)
    finally:
        dns.terminate()
        dns.wait()
        server.shutdown()

    print(f"check interval {INTERVAL:.0f}s, fall {FALL}, rise {RISE}, {BREAKS} breaks")
    print(f"endpoint broke  -> first answer elsewhere: p50 {percentile(away, 50):.2f} s, max {max(away):.2f} s")
    print(f"endpoint healed -> first answer back:      p50 {percentile(back, 50):.2f} s, max {max(back):.2f} s")
    target = INTERVAL * FALL + 1.0
    print(f"target: max under {target:.0f} s: {'met' if max(away) < target else 'NOT met'}")


if __name__ == "__main__":
    main()
