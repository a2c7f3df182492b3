#!/usr/bin/env python3
"""Memory per record: starts the release server on a zone of one service and no static
records, then on the same zone with RECORDS static A records (default 100,000) in one file, and
prints for each the time from spawn to the first answer, the RSS once started and the peak RSS
(VmHWM, reached while parsing); then the bytes of RSS each record adds. Loopback only.

    bench/records.py
    RECORDS=50000 bench/records.py

Target (issue 12): 100,000 records load in under 2 s at under 300 bytes per record.
"""

import os
import socket
import subprocess
import tempfile
import time

from scale import GEOIP, HEAD, ROOT, free_port, until_txt

RECORDS = int(os.environ.get("RECORDS", "100000"))

ZONE = HEAD.replace("MARK", "up")

SERVICE = """regions:
  us-east: { location: { lat: 37.4, lon: -79.1 }, addresses: [203.0.113.10] }
services:
  api: { ttl: 20, regions: [us-east] }
"""


def status_kb(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise SystemExit(f"no {field} for {pid}")


def measure(work, records):
    zones = os.path.join(work, f"zones-{records}")
    os.mkdir(zones)
    with open(os.path.join(zones, "llm.yaml"), "w") as f:
        f.write(ZONE)
        for i in range(records):
            f.write(f"  host{i}: {{ A: [10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}] }}\n")
        f.write(SERVICE)
    port = free_port()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(0.05)
    spawned = time.monotonic()
    server = subprocess.Popen(
        [os.path.join(ROOT, "target/release/regiondns"), "serve", "--zones", zones,
         "--geoip", GEOIP, "--listen", f"127.0.0.1:{port}", "--admin", "off"],
        env={**os.environ, "RUST_LOG": "warn"})
    try:
        started = until_txt(sock, port, "up", limit=60.0) - spawned
        time.sleep(1)
        return started, status_kb(server.pid, "VmRSS"), status_kb(server.pid, "VmHWM")
    finally:
        server.terminate()
        server.wait()


def main():
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp()
    print(f"{'static records':>15} {'start s':>8} {'RSS MB':>7} {'peak MB':>8}")
    results = {}
    for records in (0, RECORDS):
        started, rss, peak = measure(work, records)
        results[records] = rss
        print(f"{records:>15,} {started:>8.2f} {rss / 1024:>7.1f} {peak / 1024:>8.1f}")
    per_record = (results[RECORDS] - results[0]) * 1024 / RECORDS
    print(f"RSS per static record: {per_record:.0f} bytes")


if __name__ == "__main__":
    main()
