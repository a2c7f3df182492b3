#!/usr/bin/env python3
"""Scale: the same server with a small zone (3 regions, 2 static records) and a large one (1,000
regions in the service, 10,000 static records), with the bundled country database. For each it
starts the server STARTS times and reloads each one RELOADS times, and prints the median and the
largest start-up time (spawn to first answer) and reload time (SIGHUP after a rewrite, to the
new answer): single runs on a shared machine swing by 2x. Then RSS (the largest seen, after
the reloads and after the load), the maximum rate (dnsperf, ECS on every query, unthrottled)
and the queries lost at 80% of that rate; then the large/small qps ratio. Last, eight large
zones in one directory: start-up, and how soon an edit to one file is answered (the watcher
reads only that file). Everything stays on loopback.

    bench/scale.py                 # 10 s runs, 1 UDP worker, 5 starts x 3 reloads
    DURATION=20 WORKERS=2 STARTS=10 bench/scale.py

Targets (issue 11): qps within 20% of the small zone's, start-up and reload under 200 ms, RSS
under 30 MB, 0 lost at 80% of the maximum rate.
"""

import os
import random
import re
import shutil
import signal
import statistics
import socket
import subprocess
import tempfile
import time

import dnswire

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DURATION = int(os.environ.get("DURATION", "10"))
WORKERS = os.environ.get("WORKERS", "1")
STARTS = int(os.environ.get("STARTS", "5"))
RELOADS = int(os.environ.get("RELOADS", "3"))
GEOIP = os.path.join(ROOT, "geoip/dbip-country.mmdb")
# Tokyo (133.242.0.0/24) as the client, as in bench/vs-gdnsd.sh: family 1, /24, three octets.
TOKYO_ECS = "8:0001180085f200"

HEAD = """origin: llm.example.com.
soa: { primary: ns1, contact: hostmaster@example.com }
ns: [ns1]
records:
  ns1: { A: [198.51.100.53] }
  marker: { TXT: ["MARK"] }
"""


def small_zone(mark):
    return HEAD.replace("MARK", mark) + """regions:
  us-east: { location: { lat: 37.4, lon: -79.1 }, addresses: [203.0.113.10] }
  eu-west: { location: { lat: 53.3, lon: -6.3 }, addresses: [203.0.113.20] }
  ap-northeast: { location: { lat: 35.7, lon: 139.7 }, addresses: [203.0.113.30] }
services:
  api: { ttl: 20, regions: [us-east, eu-west, ap-northeast] }
"""


def large_zone(mark, regions=1000, records=10000):
    rng = random.Random(11)
    lines = [HEAD.replace("MARK", mark)]
    lines += [f"  host{i}: {{ A: [10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}] }}\n"
              for i in range(records)]
    lines.append("regions:\n")
    for i in range(regions):
        lat, lon = rng.uniform(-60, 70), rng.uniform(-180, 180)
        lines.append(f"  r{i}: {{ location: {{ lat: {lat:.3f}, lon: {lon:.3f} }}, "
                     f"addresses: [198.18.{i >> 8}.{i & 255}] }}\n")
    names = ", ".join(f"r{i}" for i in range(regions))
    lines.append(f"services:\n  api: {{ ttl: 20, regions: [{names}] }}\n")
    return "".join(lines)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def txt_of(reply):
    """The text of the first TXT record in a reply, or None."""
    if reply is None or len(reply) < 12 or int.from_bytes(reply[6:8], "big") == 0:
        return None
    pos = dnswire.skip_name(reply, 12) + 4
    pos = dnswire.skip_name(reply, pos)
    if int.from_bytes(reply[pos:pos + 2], "big") != 16:
        return None
    rdata = reply[pos + 10:pos + 10 + int.from_bytes(reply[pos + 8:pos + 10], "big")]
    return rdata[1:1 + rdata[0]].decode()


def ask_txt(sock, port, name):
    qid = random.randrange(65536)
    packet = qid.to_bytes(2, "big") + b"\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00"
    packet += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\x00"
    packet += b"\x00\x10\x00\x01"
    try:
        sock.sendto(packet, ("127.0.0.1", port))
        reply, _ = sock.recvfrom(4096)
    except OSError:
        return None
    return txt_of(reply)


def until_txt(sock, port, want, limit=10.0, name="marker.llm.example.com"):
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if ask_txt(sock, port, name) == want:
            return time.monotonic()
        time.sleep(0.001)
    raise SystemExit(f"no answer {want!r} within {limit} s")


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1)) / 1024


def dnsperf(port, queries, rate=None):
    args = ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", queries, "-l", str(DURATION),
            "-c", "4", "-q", "200", "-E", TOKYO_ECS]
    if rate:
        args += ["-Q", str(rate)]
    out = subprocess.run(args, capture_output=True, text=True).stdout
    qps = float(re.search(r"Queries per second:\s+([\d.]+)", out).group(1))
    lost = int(re.search(r"Queries lost:\s+(\d+)", out).group(1))
    return qps, lost


def start_server(zones, port):
    return subprocess.Popen(
        [os.path.join(ROOT, "target/release/regiondns"), "serve", "--zones", zones,
         "--geoip", GEOIP, "--listen", f"127.0.0.1:{port}", "--admin", "off",
         "--udp-workers", WORKERS, "--rrl-rate", "0"],
        env={**os.environ, "RUST_LOG": "warn"})


def start_and_reload(path, make_zone, sock, first):
    """Starts a server on the zone file at `path`, reloads it RELOADS times; returns the server
    (running), its port, the start-up time and the reload times, in seconds."""
    with open(path, "w") as f:
        f.write(make_zone(first))
    port = free_port()
    spawned = time.monotonic()
    server = start_server(os.path.dirname(path), port)
    try:
        started = until_txt(sock, port, first) - spawned
        reloads = []
        for i in range(1, RELOADS + 1):
            with open(path + ".new", "w") as f:
                f.write(make_zone(f"{first}.{i}"))
            os.rename(path + ".new", path)
            # SIGHUP reloads at once; the file watcher would wait out its debounce first.
            sent = time.monotonic()
            server.send_signal(signal.SIGHUP)
            reloads.append(until_txt(sock, port, f"{first}.{i}") - sent)
            time.sleep(0.3)
    except BaseException:
        stop(server)
        raise
    return server, port, started, reloads


def stop(server):
    server.terminate()
    server.wait()


def measure(name, make_zone, work):
    zones = os.path.join(work, name)
    os.mkdir(zones)
    path = os.path.join(zones, "llm.yaml")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    # Short: a query sent before the server listens is lost, and waiting it out is counted.
    sock.settimeout(0.005)
    starts, reloads, rss = [], [], []
    for run in range(STARTS):
        server, port, started, reloaded = start_and_reload(path, make_zone, sock, f"s{run}")
        starts.append(started)
        reloads += reloaded
        rss.append(rss_mb(server.pid))
        if run < STARTS - 1:
            stop(server)
    try:
        queries = os.path.join(work, "queries")
        best, _ = dnsperf(port, queries)
        qps80, lost80 = dnsperf(port, queries, int(best * 0.8))
        rss.append(rss_mb(server.pid))
    finally:
        stop(server)
    return {
        "start ms": ms(starts),
        "reload ms": ms(reloads),
        "RSS MB": max(rss),
        "max qps": best,
        "80% qps": qps80,
        "lost at 80%": lost80,
    }


def many_zones(work, count=8):
    """`count` large zones in one directory: start-up (spawn to the last zone's answer), then
    RELOADS edits of one file picked up by the watcher (write to new answer, its 100 ms
    debounce included), which reads only that file."""
    zones = os.path.join(work, "many")
    os.mkdir(zones)
    text = large_zone("MARK")

    def write(i, mark):
        path = os.path.join(zones, f"z{i}.yaml")
        with open(path + ".new", "w") as f:
            f.write(text.replace("llm.example.com.", f"llm{i}.example.com.", 1)
                    .replace("MARK", mark))
        os.rename(path + ".new", path)

    for i in range(count):
        write(i, "s")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(0.005)
    port = free_port()
    spawned = time.monotonic()
    server = start_server(zones, port)
    try:
        started = until_txt(sock, port, "s", name=f"marker.llm{count - 1}.example.com") - spawned
        edits = []
        # The first change reads every file (start-up's reading is not stamped): not counted.
        for n in range(RELOADS + 1):
            time.sleep(0.3)
            write(0, f"e{n}")
            written = time.monotonic()
            edits.append(until_txt(sock, port, f"e{n}", name="marker.llm0.example.com") - written)
        rss = rss_mb(server.pid)
    finally:
        stop(server)
    return started, edits[1:], rss


def ms(seconds):
    """Median / largest, in milliseconds."""
    return f"{statistics.median(seconds) * 1000:.0f} / {max(seconds) * 1000:.0f}"


def main():
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    if not shutil.which("dnsperf"):
        raise SystemExit("dnsperf is needed: apt-get install dnsperf")
    work = tempfile.mkdtemp()
    with open(os.path.join(work, "queries"), "w") as f:
        f.write("api.llm.example.com A\n")
    results = {
        "3 regions, 2 records": measure("small", small_zone, work),
        "1,000 regions, 10,000 records": measure("large", large_zone, work),
    }
    keys = list(next(iter(results.values())))
    print(f"{DURATION} s dnsperf runs, {WORKERS} UDP worker(s), {os.path.basename(GEOIP)}; "
          f"times: median / largest of {STARTS} starts and {STARTS * RELOADS} reloads")
    print(f"{'zone':32}" + "".join(f"{k:>14}" for k in keys))
    for name, r in results.items():
        print(f"{name:32}" + "".join(f"{r[k]:>14.1f}" if isinstance(r[k], float) else f"{r[k]:>14}"
                                     for k in keys))
    small, large = results.values()
    print(f"qps, large / small: {large['max qps'] / small['max qps']:.2f}x")
    started, edits, rss = many_zones(work)
    print(f"8 large zones: start-up {started * 1000:.0f} ms, RSS {rss:.1f} MB; an edit to one "
          f"file answered {ms(edits)} ms (median / largest) after its write")


if __name__ == "__main__":
    main()
