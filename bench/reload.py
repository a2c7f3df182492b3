#!/usr/bin/env python3
"""Hot reload under load: dnsperf sends a steady stream of queries while the zone file is
rewritten WRITES times, valid and broken versions alternating. Prints dnsperf's lost queries and
response codes (the target: 0 lost, 0 SERVFAIL) and how long after its write each valid version
was first answered (the target: within 1 s). Everything stays on loopback.

    bench/reload.py              # 100 writes at 5,000 queries/s
    WRITES=20 RATE=2000 bench/reload.py
"""

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import dnswire

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WRITES = int(os.environ.get("WRITES", "100"))
RATE = int(os.environ.get("RATE", "5000"))
GAP = 0.3  # seconds between writes
UK_ECS = "00011800510245"  # family 1, /24, scope 0, 81.2.69 (three octets, RFC 7871 6)

ZONE = """origin: llm.example.com.
soa: { primary: ns1, contact: hostmaster@example.com }
ns: [ns1]
records:
  ns1: { A: [198.51.100.53] }
regions:
  us-east:
    location: { lat: 37.4, lon: -79.1 }
    addresses: [203.0.113.10]
  eu-west:
    location: { lat: 53.3, lon: -6.3 }
    ADDRESSES_KEY: [ADDRESS]
services:
  api: { ttl: 5, regions: [us-east, eu-west] }
"""


def zone(version, valid):
    address = "198.18.%d.%d" % (version // 256, version % 256)
    key = "addresses" if valid else "adresses"  # the broken one has a typo, as operators do
    return ZONE.replace("ADDRESSES_KEY", key).replace("ADDRESS", address), address


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    if not shutil.which("dnsperf"):
        raise SystemExit("dnsperf is needed: apt-get install dnsperf")
    work = tempfile.mkdtemp()
    zones = os.path.join(work, "zones")
    os.mkdir(zones)
    path = os.path.join(zones, "llm.yaml")
    text, address = zone(0, True)
    with open(path, "w") as f:
        f.write(text)
    port = free_port()
    server = subprocess.Popen(
        [os.path.join(ROOT, "target/release/regiondns"), "serve", "--zones", zones,
         "--geoip", os.path.join(ROOT, "geoip/dbip-country.mmdb"),
         "--listen", f"127.0.0.1:{port}", "--admin", "off", "--rrl-rate", "0"],
        env={**os.environ, "RUST_LOG": "warn"}, stderr=subprocess.PIPE, text=True)
    queries = os.path.join(work, "queries")
    with open(queries, "w") as f:
        f.write("api.llm.example.com A\n")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(0.5)
    time.sleep(0.5)

    duration = int(WRITES * GAP + 3)
    perf = subprocess.Popen(
        ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", queries, "-l", str(duration),
         "-Q", str(RATE), "-c", "4", "-E", f"8:{UK_ECS}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(1)
    delays, qid = [], 0
    for version in range(1, WRITES + 1):
        valid = version % 2 == 1
        text, address = zone(version, valid)
        written = time.monotonic()
        with open(path, "w") as f:  # in place, as an editor or a deploy script may
            f.write(text)
        if valid:
            while time.monotonic() - written < 5:
                qid = (qid + 1) & 0xFFFF
                if dnswire.ask(sock, port, qid, "api.llm.example.com", "81.2.69") == address:
                    delays.append(time.monotonic() - written)
                    break
                time.sleep(0.005)
            else:
                delays.append(float("inf"))
        time.sleep(max(0.0, GAP - (time.monotonic() - written)))
    out, _ = perf.communicate()
    server.terminate()
    _, errors = server.communicate()

    sent = re.search(r"Queries sent:\s+(\d+)", out)
    lost = re.search(r"Queries lost:\s+(\d+)", out)
    codes = re.search(r"Response codes:\s+(.*)", out)
    servfail = re.search(r"SERVFAIL (\d+)", codes.group(1)) if codes else None
    delays.sort()
    print(f"{WRITES} writes ({len(delays)} valid, {WRITES - len(delays)} broken), "
          f"dnsperf at {RATE} queries/s for {duration} s")
    print(f"queries sent {sent.group(1) if sent else '?'}, lost {lost.group(1) if lost else '?'}, "
          f"SERVFAIL {servfail.group(1) if servfail else 0}; response codes: {codes.group(1) if codes else '?'}")
    print(f"valid version answered after its write: p50 {delays[len(delays) // 2] * 1000:.0f} ms, "
          f"max {delays[-1] * 1000:.0f} ms")
    print(f"broken versions reported: {errors.count('unknown key `adresses`')}")
    ok = lost and lost.group(1) == "0" and not servfail and delays[-1] < 1.0
    print("targets (0 lost, 0 SERVFAIL, every valid version within 1 s):", "met" if ok else "NOT met")


if __name__ == "__main__":
    main()
