#!/usr/bin/env python3
"""Zone transfers of a big zone: starts the release server on a zone of RECORDS static A
records (default 100,000) with `transfer` and a TSIG key, then, as a secondary would (dnspython,
over loopback TCP), takes it by AXFR (time, records, messages, and the server's RSS before and
after), changes one record in the file and takes the change by IXFR from the old serial (time
and records), ROUNDS times. Loopback only.

    bench/transfer.py
    RECORDS=50000 ROUNDS=5 bench/transfer.py
    SIGNED=1 bench/transfer.py      # the zone signed (dnssec: a key made here)

Target (issue 30): an IXFR of a one-record change in under 100 ms; AXFR time and memory stated.
"""

import os
import socket
import subprocess
import tempfile
import time

import dns.message
import dns.query
import dns.rdatatype
import dns.tsigkeyring

from records import status_kb
from scale import GEOIP, HEAD, ROOT, free_port, until_txt

RECORDS = int(os.environ.get("RECORDS", "100000"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
SIGNED = os.environ.get("SIGNED") == "1"
KEY = "xfr.llm.example.com."
SECRET = "c2VjcmV0LXNlY3JldC1zZWNyZXQtMzItYnl0ZXMhISE="
ZONE_NAME = "llm.example.com."


def zone_text(version):
    lines = [HEAD.replace("MARK", f"v{version}")]
    for i in range(RECORDS):
        last = (i & 255) if i != 0 else version % 250 + 1
        lines.append(f"  host{i}: {{ A: [10.{i >> 16 & 255}.{i >> 8 & 255}.{last}] }}\n")
    lines.append("transfer:\n  to: [127.0.0.0/8]\n  tsig: " + KEY + "\n")
    if SIGNED:
        lines.append("dnssec: { key: k.pem }\n")
    return "".join(lines)


def write_zone(zones, version):
    path = os.path.join(zones, "llm.yaml")
    with open(path + ".new", "w") as f:
        f.write(zone_text(version))
    os.rename(path + ".new", path)


def serial_of(port, keyring):
    query = dns.message.make_query(ZONE_NAME, "SOA")
    query.use_tsig(keyring, keyname=KEY)
    reply = dns.query.udp(query, "127.0.0.1", port=port, timeout=2)
    return reply.answer[0][0].serial


def transfer(port, keyring, rdtype, serial=None):
    """Records and messages of one transfer (each message's TSIG checked by dnspython), and its
    time from request to last message."""
    started = time.monotonic()
    records = messages = 0
    kwargs = {"serial": serial} if rdtype == "IXFR" else {}
    for message in dns.query.xfr("127.0.0.1", ZONE_NAME, rdtype=rdtype, port=port,
                                 keyring=keyring, keyname=KEY, lifetime=60, **kwargs):
        messages += 1
        records += sum(len(rrset) for rrset in message.answer)
    return records, messages, time.monotonic() - started


def main():
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp()
    zones = os.path.join(work, "zones")
    os.mkdir(zones)
    binary = os.path.join(ROOT, "target/release/regiondns")
    if SIGNED:
        subprocess.run([binary, "dnssec", "keygen", "--zone", ZONE_NAME, "--out",
                        os.path.join(zones, "k.pem")], check=True, stdout=subprocess.DEVNULL)
    write_zone(zones, 0)
    keys = os.path.join(work, "tsig.yaml")
    with open(keys, "w") as f:
        f.write(f"- name: {KEY}\n  algorithm: hmac-sha256\n  secret: {SECRET}\n")
    keyring = dns.tsigkeyring.from_text({KEY: ("hmac-sha256", SECRET)})
    port = free_port()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(0.05)
    server = subprocess.Popen(
        [binary, "serve", "--zones", zones,
         "--geoip", GEOIP, "--listen", f"127.0.0.1:{port}", "--admin", "off",
         "--tsig-keys", keys, "--transfer-min-interval", "1s"],
        env={**os.environ, "RUST_LOG": "warn"})
    try:
        until_txt(sock, port, "v0", limit=60.0)
        time.sleep(1)
        rss = status_kb(server.pid, "VmRSS")
        records, messages, took = transfer(port, keyring, "AXFR")
        after = status_kb(server.pid, "VmRSS")
        kind = "signed " if SIGNED else ""
        print(f"AXFR of {RECORDS:,} {kind}static records: {records:,} records in {messages} messages, "
              f"{took * 1000:.0f} ms; server RSS {rss / 1024:.1f} MB before, "
              f"{after / 1024:.1f} MB after (peak {status_kb(server.pid, 'VmHWM') / 1024:.1f} MB)")
        worst = 0.0
        for version in range(1, ROUNDS + 1):
            old = serial_of(port, keyring)
            write_zone(zones, version)
            until_txt(sock, port, f"v{version}", limit=60.0)
            served = time.monotonic()
            deadline = served + 10
            while serial_of(port, keyring) == old:
                if time.monotonic() > deadline:
                    raise SystemExit("the serial did not grow")
                time.sleep(0.01)
            bumped = time.monotonic() - served
            records, messages, took = transfer(port, keyring, "IXFR", old)
            worst = max(worst, took)
            print(f"IXFR from serial {old} after a two-record edit: {records} records in "
                  f"{messages} message(s), {took * 1000:.1f} ms (new serial "
                  f"{bumped * 1000:.0f} ms after the edit was served)")
        verdict = "met" if worst < 0.1 else "NOT met"
        print(f"target (IXFR under 100 ms): {verdict}, worst {worst * 1000:.1f} ms")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
