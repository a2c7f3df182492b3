#!/usr/bin/env python3
"""Probing's own cost: the server's CPU while it probes REGIONS regions over HTTP every second
(one endpoint on 127.0.0.1 that this script serves, answering 200), with no queries. Prints
the server's CPU time (utime + stime from /proc) as a share of one core over DURATION
seconds, after the first probes have settled, and the probes the endpoint saw per second.
Run it for the counts an operator has; everything stays on loopback.

    bench/probes.py                      # 300 and 1,000 regions, 20 s each
    REGIONS="30 3000" DURATION=10 bench/probes.py
"""

import http.server
import os
import random
import subprocess
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REGIONS = [int(n) for n in os.environ.get("REGIONS", "300 1000").split()]
DURATION = int(os.environ.get("DURATION", "20"))
GEOIP = os.path.join(ROOT, "geoip/dbip-country.mmdb")


class Healthy(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen = 0

    def do_GET(self):
        Healthy.seen += 1
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


class Endpoint(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # the server closing its kept-alive connections at the end


def zone(regions, url):
    rng = random.Random(1)
    lines = ["origin: llm.example.com.\n",
             "soa: { primary: ns1, contact: hostmaster@example.com }\n",
             "ns: [ns1]\n",
             "records:\n  ns1: { A: [198.51.100.53] }\n",
             "regions:\n"]
    for i in range(regions):
        lines.append(f"  r{i}: {{ location: {{ lat: {rng.uniform(-60, 70):.2f}, "
                     f"lon: {rng.uniform(-180, 180):.2f} }}, addresses: [198.18.{i >> 8}.{i & 255}], "
                     f"check: {{ http: \"{url}\", interval: 1s }} }}\n")
    names = ", ".join(f"r{i}" for i in range(regions))
    lines.append(f"services:\n  api: {{ ttl: 20, regions: [{names}] }}\n")
    return "".join(lines)


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(binary, regions, url):
    work = tempfile.mkdtemp()
    with open(os.path.join(work, "llm.yaml"), "w") as f:
        f.write(zone(regions, url))
    server = subprocess.Popen(
        [binary, "serve", "--zones", work, "--geoip", GEOIP, "--listen", "127.0.0.1:0",
         "--admin", "off"], env={**os.environ, "RUST_LOG": "warn"})
    try:
        time.sleep(5)  # every region probed a few times: connections made, states settled
        cpu, seen, began = cpu_seconds(server.pid), Healthy.seen, time.monotonic()
        time.sleep(DURATION)
        elapsed = time.monotonic() - began
        share = (cpu_seconds(server.pid) - cpu) / elapsed
        rate = (Healthy.seen - seen) / elapsed
    finally:
        server.terminate()
        server.wait()
    print(f"{regions:>6} regions: {rate:7.0f} probes/s, server CPU {share * 100:5.1f}% of a core "
          f"({share / rate * 1e6 if rate else 0:.0f} us per probe)")


def main():
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    endpoint = Endpoint(("127.0.0.1", 0), Healthy)
    threading.Thread(target=endpoint.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{endpoint.server_address[1]}/healthz"
    for regions in REGIONS:
        measure(os.path.join(ROOT, "target/release/regiondns"), regions, url)
    endpoint.shutdown()


if __name__ == "__main__":
    main()
