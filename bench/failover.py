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
import struct
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BREAKS = int(os.environ.get("BREAKS", "20"))
INTERVAL, FALL, RISE = 1.0, 2, 2
EU_WEST, US_EAST = "203.0.113.20", "203.0.113.10"
UK_SUBNET = bytes([81, 2, 69])

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


def query_packet(qid):
    header = struct.pack(">HHHHHH", qid, 0, 1, 0, 0, 1)
    qname = b"".join(bytes([len(p)]) + p for p in [b"api", b"llm", b"example", b"com"]) + b"\0"
    ecs = struct.pack(">HBB", 1, 24, 0) + UK_SUBNET
    opt = b"\0" + struct.pack(">HHIH", 41, 1232, 0, 4 + len(ecs)) + struct.pack(">HH", 8, len(ecs)) + ecs
    return header + qname + struct.pack(">HH", 1, 1) + opt


def first_a(reply):
    """The first A record's address in a reply, or None."""
    if len(reply) < 12 or struct.unpack(">H", reply[6:8])[0] == 0:
        return None
    pos = 12
    while reply[pos] != 0:  # question name (uncompressed)
        pos += reply[pos] + 1
    pos += 5  # root label, type, class
    if reply[pos] & 0xC0 == 0xC0:  # answer owner: pointer or labels
        pos += 2
    else:
        while reply[pos] != 0:
            pos += reply[pos] + 1
        pos += 1
    rtype, _, _, rdlen = struct.unpack(">HHIH", reply[pos:pos + 10])
    if rtype != 1 or rdlen != 4:
        return None
    return socket.inet_ntoa(reply[pos + 10:pos + 14])


def answer(sock, dns_port, qid):
    sock.sendto(query_packet(qid), ("127.0.0.1", dns_port))
    try:
        return first_a(sock.recv(4096))
    except socket.timeout:
        return None


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
