#!/usr/bin/env python3
"""Soak: the server under steady load while everything around it moves. dnsperf sends half the
measured maximum rate (ECS of a UK resolver) for SOAK_SECONDS while eu-west's health endpoint
flaps every 2 s, the zone file is rewritten every 5 s (every fourth version broken) and the
GeoIP file is replaced every 30 s. Prints lost queries, SERVFAILs (the zone configures no
fail-closed answer, so every one is unexpected), maximum latency, and RSS and open file
descriptors at the start and at the end (read after 3 s with no change, so a reload in flight
is not counted). Exits 1 when a target is missed: 0 lost, 0 SERVFAIL, descriptors flat, RSS
within 20%. Everything stays on loopback.

    bench/soak.py                               # 10 minutes, release build
    SOAK_SECONDS=60 BINARY=target/debug/regiondns bench/soak.py   # what CI runs
"""

import http.server
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import dnswire

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECONDS = int(os.environ.get("SOAK_SECONDS", "600"))
BINARY = os.environ.get("BINARY", "")
QUIET_END = 3  # seconds at the end with no change, before RSS and descriptors are read
UK_ECS = "00011800510245"  # family 1, /24, scope 0, 81.2.69

eu_healthy = threading.Event()
eu_healthy.set()


class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = eu_healthy.is_set() or self.server.server_address[1] != EU_PORT[0]
        self.send_response(200 if ok else 503)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


EU_PORT = [0]


def zone(version, us_port, eu_port):
    key = "adresses" if version % 4 == 3 else "addresses"  # a typo, as operators make
    check = "{{ http: \"http://127.0.0.1:{}/healthz\", interval: 500ms, timeout: 400ms, fall: 2, rise: 2 }}"
    return f"""origin: llm.example.com.
soa: {{ primary: ns1, contact: hostmaster@example.com }}
ns: [ns1]
records:
  ns1: {{ A: [198.51.100.53] }}
  version: {{ TXT: ["v{version}"] }}
regions:
  us-east:
    location: {{ lat: 37.4, lon: -79.1 }}
    addresses: [203.0.113.10]
    check: {check.format(us_port)}
  eu-west:
    location: {{ lat: 53.3, lon: -6.3 }}
    {key}: [203.0.113.20]
    check: {check.format(eu_port)}
services:
  api: {{ ttl: 5, regions: [us-east, eu-west] }}
"""


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(binary, zones, geoip, work, attempts=3):
    """The server on a free port, answering; its log is kept in `work`. A port found free can be
    taken before the server binds it (by another program's outgoing TCP connection): a server
    that exits before it answers is started again on another port, and its log is shown."""
    for attempt in range(1, attempts + 1):
        port = free_port()
        log_path = os.path.join(work, f"server-{attempt}.log")
        with open(log_path, "w") as log:
            server = subprocess.Popen(
                [binary, "serve", "--zones", zones, "--geoip", geoip,
                 "--listen", f"127.0.0.1:{port}", "--admin", "off", "--rrl-rate", "0"],
                env={**os.environ, "RUST_LOG": "warn"}, stderr=log)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.2)
            start = time.monotonic()
            while server.poll() is None and time.monotonic() - start < 10:
                if dnswire.ask(sock, port, 1, "api.llm.example.com", "81.2.69") is not None:
                    return server, port
                time.sleep(0.05)
        if server.poll() is None:
            server.kill()
            server.wait()
        with open(log_path) as log:
            said = log.read()[-2000:]
        print(f"the server on port {port} did not answer (exit {server.returncode}): {said}",
              file=sys.stderr)
    raise SystemExit(f"the server did not answer in {attempts} attempts")


def process_figures(pid):
    with open(f"/proc/{pid}/status") as f:
        rss = int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1)) / 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def write_atomically(path, data, mode="w"):
    with open(path + ".new", mode) as f:
        f.write(data)
    os.rename(path + ".new", path)


def dnsperf(port, queries, seconds, rate=None):
    args = ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", queries, "-l", str(seconds),
            "-c", "4", "-E", f"8:{UK_ECS}"]
    if rate:
        args += ["-Q", str(rate)]
    else:
        args += ["-q", "200"]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def main():
    binary = BINARY
    if not binary:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
        binary = os.path.join(ROOT, "target/release/regiondns")
    if not shutil.which("dnsperf"):
        raise SystemExit("dnsperf is needed: apt-get install dnsperf")
    endpoints = []
    for _ in range(2):
        endpoint = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
        threading.Thread(target=endpoint.serve_forever, daemon=True).start()
        endpoints.append(endpoint)
    us_port, eu_port = (e.server_address[1] for e in endpoints)
    EU_PORT[0] = eu_port

    work = tempfile.mkdtemp()
    zones = os.path.join(work, "zones")
    os.mkdir(zones)
    zone_path = os.path.join(zones, "llm.yaml")
    write_atomically(zone_path, zone(0, us_port, eu_port))
    geoip = os.path.join(work, "geo.mmdb")
    with open(os.path.join(ROOT, "geoip/dbip-country.mmdb"), "rb") as f:
        geoip_bytes = f.read()
    write_atomically(geoip, geoip_bytes, "wb")
    queries = os.path.join(work, "queries")
    with open(queries, "w") as f:
        f.write("api.llm.example.com A\n")

    server, port = start_server(binary, zones, geoip, work)
    try:
        out, _ = dnsperf(port, queries, 5).communicate()
        best = float(re.search(r"Queries per second:\s+([\d.]+)", out).group(1))
        rate = int(best / 2)
        rss_start, fds_start = process_figures(server.pid)
        perf = dnsperf(port, queries, SECONDS, rate)
        began, version, replacements = time.monotonic(), 0, 0
        next_flap, next_zone, next_geoip = 2.0, 5.0, 30.0
        while perf.poll() is None:
            elapsed = time.monotonic() - began
            if elapsed >= SECONDS - QUIET_END:
                time.sleep(0.05)  # the end sample reads what stays, not a reload in flight
                continue
            if elapsed >= next_flap:
                if eu_healthy.is_set():
                    eu_healthy.clear()
                else:
                    eu_healthy.set()
                next_flap += 2.0
            if elapsed >= next_zone:
                version += 1
                write_atomically(zone_path, zone(version, us_port, eu_port))
                next_zone += 5.0
            if elapsed >= next_geoip:
                write_atomically(geoip, geoip_bytes, "wb")
                replacements += 1
                next_geoip += 30.0
            time.sleep(0.05)
        out, _ = perf.communicate()
        rss_end, fds_end = process_figures(server.pid)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait()
        for endpoint in endpoints:
            endpoint.shutdown()

    sent = int(re.search(r"Queries sent:\s+(\d+)", out).group(1))
    lost = int(re.search(r"Queries lost:\s+(\d+)", out).group(1))
    codes = re.search(r"Response codes:\s+(.*)", out).group(1)
    servfail = re.search(r"SERVFAIL (\d+)", codes)
    servfail = int(servfail.group(1)) if servfail else 0
    latency = re.search(r"Average Latency \(s\):\s+([\d.]+) \(min ([\d.]+), max ([\d.]+)\)", out)
    print(f"{SECONDS} s at {rate} queries/s (half of {best:.0f}): {sent} sent, {lost} lost, "
          f"{servfail} SERVFAIL; response codes: {codes}")
    print(f"latency: mean {float(latency.group(1)) * 1000:.2f} ms, "
          f"max {float(latency.group(3)) * 1000:.1f} ms")
    print(f"RSS {rss_start:.1f} -> {rss_end:.1f} MB, open descriptors {fds_start} -> {fds_end}; "
          f"{version} zone writes ({version // 4} broken), {replacements} GeoIP replacements")
    ok = lost == 0 and servfail == 0 and fds_end <= fds_start + 2 and rss_end <= rss_start * 1.2 + 2
    print("targets (0 lost, 0 SERVFAIL, descriptors and RSS flat):", "met" if ok else "NOT met")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
