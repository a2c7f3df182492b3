#!/usr/bin/env python3
"""Compares regiondns with Knot DNS, the reference authoritative server, query by query.

Both serve the same zone (tests/knot/llm.yaml and tests/knot/llm.example.com.zone) on
127.0.0.1. A generated corpus of queries (every name and type, EDNS and Client Subnet variants,
flags, TCP, other opcodes and classes, malformed packets) goes to both; the responses are
compared field by field: rcode, flags, every section and the OPT record. Each difference is
either one of the intentional ones listed in INTENTIONAL (and in the README) or a failure.

Usage: tests/knot/compare.py REGIONDNS_BINARY   (knotd from Debian's knot package, dnspython)
"""

import os
import random
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
ORIGIN = "llm.example.com."
NSID = b"compare-ns"
ECS = 8
NSID_CODE = 3
EDE = 15

KNOT_CONF = """server:
    listen: 127.0.0.1@{port}
    rundir: {dir}
    identity: ""
    version: ""
    nsid: {nsid}
    udp-max-payload: 1232
database:
    storage: {dir}
log:
  - target: stderr
    any: error
zone:
  - domain: {origin}
    file: {zone}
"""


def free_port():
    """A port free for both UDP and TCP on 127.0.0.1."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                    return port
                except OSError:
                    continue
    raise SystemExit("no free port")


def exchange(port, wire, tcp, timeout=2.0):
    """The response bytes, or None when the server sends nothing."""
    family = socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, family) as sock:
        sock.settimeout(timeout)
        try:
            if tcp:
                sock.connect(("127.0.0.1", port))
                sock.sendall(struct.pack("!H", len(wire)) + wire)
                length = recv_exact(sock, 2)
                if length is None:
                    return None
                return recv_exact(sock, struct.unpack("!H", length)[0])
            sock.sendto(wire, ("127.0.0.1", port))
            return sock.recv(65535)
        except (socket.timeout, ConnectionError):
            return None


def recv_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def wait_until_answering(port, process):
    """True once the server answers on `port`; False when it exits first (its port taken by
    someone else between free_port() and its start) or never answers."""
    query = dns.message.make_query(ORIGIN, "SOA").to_wire()
    for _ in range(100):
        if process.poll() is not None:
            return False
        if exchange(port, query, False, timeout=0.2):
            return True
        time.sleep(0.1)
    return False


def start(what, command, work):
    """Starts `command(port)` on a free port and waits until it answers: up to three ports,
    since another program may take a port between its choice and the server's bind. The
    server's stderr goes to a file (a pipe nobody reads would stall it), shown if it fails."""
    log_path = os.path.join(work, f"{what}.log")
    for _ in range(3):
        port = free_port()
        with open(log_path, "w") as log:
            process = subprocess.Popen(command(port), stdout=subprocess.DEVNULL, stderr=log,
                                       env={**os.environ, "RUST_LOG": "error"})
        if wait_until_answering(port, process):
            return port, process
        process.terminate()
        process.wait(timeout=10)
    with open(log_path) as log:
        raise SystemExit(f"{what} did not answer on three ports; its log:\n{log.read()}")


# ---------------------------------------------------------------------------------------------
# The corpus

NAMES = [
    ORIGIN, "ns1", "ns2", "mail", "docs", "www", "web", "chain", "geo", "dangling", "loop1",
    "tonodata", "todelegated", "a.b.deep", "b.deep", "deep", "big", "_https._tcp.api",
    "_tcp.api", "10.in-addr", "sub", "x.y.sub", "ns.sub", "api", "nope", "a.nope",
    "WwW.LLM.Example.COM.", "example.org.", "example.com.", ".",
]
TYPES = ["A", "AAAA", "NS", "SOA", "MX", "TXT", "CNAME", "SRV", "CAA", "PTR", "DS", "ANY", "RRSIG",
         "HINFO", "TYPE65000", "DNSKEY", "NSEC"]


def absolute(name):
    if name.endswith("."):
        return name
    return f"{name}.{ORIGIN}"


def make(name, qtype, *, edns=0, payload=1232, do=False, options=(), flags=None,
         rdclass="IN", opcode=0, version=0):
    query = dns.message.make_query(absolute(name), qtype, rdclass=rdclass,
                                   use_edns=edns, payload=payload,
                                   want_dnssec=do, options=list(options))
    if edns is not False and edns is not None and edns >= 0:
        query.use_edns(version, 0x8000 if do else 0, payload, options=list(options))
    query.set_opcode(opcode)
    if flags is not None:
        query.flags = flags | (query.flags & 0x7800)
    wire = bytearray(query.to_wire())
    # dnspython writes names in lower case? It keeps case; the case variant checks 0x20.
    return bytes(wire)


def option(code, data):
    return dns.edns.GenericOption(code, data)


def ecs_option(family, source, scope, address):
    return option(ECS, struct.pack("!HBB", family, source, scope) + address)


def corpus():
    """(description, wire, tcp) for every query."""
    cases = []
    for name in NAMES:
        for qtype in TYPES:
            cases.append((f"{name} {qtype}", make(name, qtype), False))
    variants = [
        ("no EDNS", dict(edns=None)),
        ("EDNS payload 512", dict(payload=512)),
        ("EDNS payload 4096", dict(payload=4096)),
        ("EDNS payload 100", dict(payload=100)),
        ("DO", dict(do=True)),
        ("EDNS version 1", dict(version=1)),
        ("NSID", dict(options=[option(NSID_CODE, b"")])),
        ("unknown option", dict(options=[option(65001, b"\x01\x02")])),
        ("ECS 192.0.2.0/24", dict(options=[ecs_option(1, 24, 0, bytes([192, 0, 2]))])),
        ("ECS 2001:db8::/48", dict(options=[ecs_option(2, 48, 0, bytes.fromhex("20010db80000"))])),
        ("ECS 0/0", dict(options=[ecs_option(1, 0, 0, b"")])),
        ("RD off", dict(flags=0)),
        ("CD", dict(flags=dns.flags.RD | dns.flags.CD)),
        ("AD", dict(flags=dns.flags.RD | dns.flags.AD)),
        ("TC in query", dict(flags=dns.flags.RD | dns.flags.TC)),
    ]
    for label, kwargs in variants:
        for name, qtype in [("api", "A"), ("api", "AAAA"), ("www", "A"), ("big", "TXT"),
                            ("nope", "A"), ("ns1", "MX"), ("sub", "A"), (ORIGIN, "NS"),
                            ("example.org.", "A"), ("geo", "A"), (ORIGIN, "ANY")]:
            cases.append((f"{name} {qtype} {label}", make(name, qtype, **kwargs), False))
    bad_ecs = [
        ("ECS unknown family", ecs_option(3, 24, 0, bytes([192, 0, 2]))),
        ("ECS prefix over 32", ecs_option(1, 33, 0, bytes([192, 0, 2, 1, 0]))),
        ("ECS too few octets", ecs_option(1, 24, 0, bytes([192, 0]))),
        ("ECS too many octets", ecs_option(1, 16, 0, bytes([192, 0, 2]))),
        ("ECS bits beyond prefix", ecs_option(1, 20, 0, bytes([192, 0, 2]))),
        ("ECS empty", option(ECS, b"")),
        ("ECS v6 prefix over 128", ecs_option(2, 129, 0, bytes(17))),
    ]
    for label, bad in bad_ecs:
        BAD_ECS.add(label.removeprefix("ECS "))
        for name in ["api", "www", "nope"]:
            cases.append((f"{name} A {label}", make(name, "A", options=[bad]), False))
    for opcode in [1, 2, 3, 4, 5, 6, 15]:
        for edns in [None, 0]:
            cases.append((f"opcode {opcode} edns {edns}", make("api", "A", opcode=opcode, edns=edns),
                          False))
    for rdclass in ["CH", "HS", "NONE", "ANY"]:
        for name, qtype in [("api", "A"), ("version.bind.", "TXT"), ("id.server.", "TXT")]:
            cases.append((f"{name} {qtype} class {rdclass}",
                          make(name, qtype, rdclass=rdclass), False))
    for name, qtype in [("api", "A"), ("big", "TXT"), ("www", "A"), ("nope", "A"), (ORIGIN, "ANY"),
                        ("sub", "NS"), (ORIGIN, "AXFR"), (ORIGIN, "IXFR"), ("api", "AXFR"),
                        ("todelegated", "A"), ("loop1", "A"), ("dangling", "AAAA")]:
        for edns in [None, 0]:
            cases.append((f"{name} {qtype} TCP edns {edns}", make(name, qtype, edns=edns), True))
    cases.extend(malformed())
    return cases


def malformed():
    base = make("www", "A")
    with_opt = make("www", "A", options=[option(NSID_CODE, b"")])
    header = bytearray(base[:12])
    cases = []

    def add(label, wire):
        cases.append((f"malformed: {label}", bytes(wire), False))

    for n in [0, 5, 11, 12, 20, len(base) - 1]:
        add(f"truncated to {n}", base[:n])
    add("trailing byte", base + b"\x00")
    add("trailing garbage", base + b"garbage")
    no_question = bytearray(header)
    no_question[4:6] = b"\x00\x00"
    add("QDCOUNT 0", no_question)
    two = bytearray(base)
    two[4:6] = b"\x00\x02"
    two += base[12:]
    add("QDCOUNT 2", two)
    claims_two = bytearray(base)
    claims_two[4:6] = b"\x00\x02"
    add("QDCOUNT 2 with one question", claims_two)
    long_label = bytearray(header) + bytes([64]) + b"a" * 64 + b"\x00\x00\x01\x00\x01"
    add("label over 63", long_label)
    long_name = bytearray(header) + (bytes([63]) + b"a" * 63) * 4 + b"\x00\x00\x01\x00\x01"
    add("name over 255", long_name)
    pointer_loop = bytearray(header) + b"\xc0\x0c\x00\x01\x00\x01"
    add("question pointer to itself", pointer_loop)
    forward = bytearray(header) + b"\xc0\x20\x00\x01\x00\x01" + b"\x00" * 16
    add("question forward pointer", forward)
    extended = bytearray(header) + b"\x41abc\x00\x00\x01\x00\x01"
    add("extended label type", extended)
    opt = with_opt[len(base):]
    twice = bytearray(with_opt)
    twice[10:12] = b"\x00\x02"
    twice += opt
    add("OPT twice", twice)
    in_answer = bytearray(with_opt)
    in_answer[6:8] = b"\x00\x01"
    in_answer[10:12] = b"\x00\x00"
    add("OPT in the answer section", in_answer)
    named = bytearray(base) + b"\x01x\x00" + opt[1:]
    named[10:12] = b"\x00\x01"
    add("OPT not owned by the root", named)
    bad_rdlen = bytearray(with_opt)
    bad_rdlen[-6:-4] = b"\x00\x20"
    add("OPT rdata longer than the packet", bad_rdlen)
    answer_in_query = bytearray(base)
    answer_in_query[6:8] = b"\x00\x01"
    answer_in_query += b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\xc0\x00\x02\x01"
    add("query with an answer record", answer_in_query)
    response = bytearray(base)
    response[2] |= 0x80
    add("QR set", response)
    response_garbage = bytearray(b"\x12\x34\x80\x00\x00\x05") + b"\xff" * 20
    add("QR set and garbage", response_garbage)
    return cases


# ---------------------------------------------------------------------------------------------
# Comparing


def view(wire):
    """What is compared of a response: every field but the ID (checked against the query)."""
    if wire is None:
        return None
    try:
        message = dns.message.from_wire(wire, ignore_trailing=False)
    except Exception as error:  # noqa: BLE001 - any parse failure is a finding
        return {"unparseable": type(error).__name__}
    options = []
    if message.edns >= 0:
        options = sorted((o.otype, o.to_wire() if hasattr(o, "to_wire") else b"")
                         for o in message.options)
    sections = {}
    for label, section in (("answer", message.answer), ("authority", message.authority),
                           ("additional", message.additional)):
        sections[label] = sorted(line for rrset in section for line in rrset.to_text().split("\n"))
    return {
        "rcode": message.rcode(),
        "opcode": message.opcode(),
        "flags": dns.flags.to_text(message.flags),
        "question": [q.to_text() for q in message.question],
        **sections,
        "edns": message.edns,
        "payload": message.payload if message.edns >= 0 else None,
        "do": bool(message.ednsflags & dns.flags.DO) if message.edns >= 0 else None,
        "options": options,
    }


def differences(ours, theirs):
    if ours is None or theirs is None:
        return [] if ours is theirs else ["response"]
    return [key for key in sorted(set(ours) | set(theirs)) if ours.get(key) != theirs.get(key)]


def without_options(view, codes):
    if view is None:
        return None
    copy = dict(view)
    copy["options"] = [o for o in view["options"] if o[0] not in codes]
    return copy


def ede_code(view):
    for code, data in (view or {}).get("options", []):
        if code == EDE and len(data) >= 2:
            return struct.unpack("!H", data[:2])[0]
    return None


def same_but(ours, theirs, *keys):
    """Whether the two views differ in nothing but `keys`."""
    return set(differences(ours, theirs)) <= set(keys)


def flags_of(view):
    return set(view["flags"].split())


# Each intentional difference: a name, the README's reason, and a test on (case, ours, theirs).
INTENTIONAL = [
    ("ecs-echo",
     "regiondns echoes the Client Subnet option with the scope of its decision (RFC 7871 7.2.1); "
     "Knot without its geoip module ignores the option",
     lambda case, ours, theirs: any(o[0] == ECS for o in ours["options"])
     and not differences(without_options(ours, {ECS}), theirs)),
    ("ede-not-authoritative",
     "REFUSED for a name in no zone here carries Extended DNS Error 20 (Not Authoritative, RFC 8914)",
     lambda case, ours, theirs: ede_code(ours) == 20
     and not differences(without_options(ours, {EDE}), theirs)),
    ("malformed-ecs-formerr",
     "a malformed Client Subnet option gets FORMERR (RFC 7871 6: SHOULD); Knot ignores the option "
     "and answers",
     lambda case, ours, theirs: " ECS " in f" {case} " and case.split(" ECS ")[1] in BAD_ECS
     and ours["rcode"] == dns.rcode.FORMERR and "options" not in differences(ours, theirs)),
    ("cd-copied",
     "the CD bit is copied into the response (RFC 4035 3.1.6: a security-aware server MUST); "
     "Knot clears it",
     lambda case, ours, theirs: flags_of(ours) - flags_of(theirs) == {"CD"}
     and same_but(ours, theirs, "flags")),
    ("transfers-refused",
     "zone transfers are REFUSED (regiondns has no secondaries); Knot answers NOTAUTH when no ACL "
     "allows the transfer",
     lambda case, ours, theirs: ("AXFR" in case or "IXFR" in case)
     and ours["rcode"] == dns.rcode.REFUSED and same_but(ours, theirs, "rcode")),
    ("notify-notimp",
     "NOTIFY gets NOTIMP (RFC 1996: a server that does not implement it; regiondns has no "
     "secondary zones); Knot answers NOTAUTH",
     lambda case, ours, theirs: case.startswith("opcode 4 ")
     and ours["rcode"] == dns.rcode.NOTIMP and same_but(ours, theirs, "rcode")),
    ("formerr-keeps-opt",
     "a FORMERR to a request whose OPT record was readable carries OPT (RFC 6891 6.1.1), so the "
     "client does not conclude that EDNS is unsupported; Knot leaves it out",
     lambda case, ours, theirs: ours["rcode"] == dns.rcode.FORMERR and ours["edns"] == 0
     and theirs["edns"] == -1 and same_but(ours, theirs, "edns", "payload", "do", "options")),
]

BAD_ECS = set()

SILENT = ("formerr-not-silence",
          "a request with a readable header but no readable question gets FORMERR (RFC 1035 4.1.1, "
          "as BIND and NSD answer); Knot sends nothing")


def classify(case, ours, theirs):
    if theirs is None and ours is not None:
        return SILENT[0] if ours.get("rcode") == dns.rcode.FORMERR else None
    for name, _, test in INTENTIONAL:
        try:
            if ours is not None and theirs is not None and test(case, ours, theirs):
                return name
        except (KeyError, TypeError):
            continue
    return None


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    binary = sys.argv[1]
    cases = corpus()
    with tempfile.TemporaryDirectory() as work:
        conf = os.path.join(work, "knot.conf")

        def knot_command(port):
            with open(conf, "w") as f:
                f.write(KNOT_CONF.format(port=port, dir=work, nsid=NSID.decode(), origin=ORIGIN,
                                         zone=os.path.join(HERE, "llm.example.com.zone")))
            return ["knotd", "-c", conf]

        zones = os.path.join(work, "zones")
        os.mkdir(zones)
        with open(os.path.join(HERE, "llm.yaml")) as src, open(os.path.join(zones, "llm.yaml"), "w") as dst:
            dst.write(src.read())

        def ours_command(port):
            return [binary, "serve", "--zones", zones,
                    "--geoip", os.path.join(REPO, "geoip/dbip-country.mmdb"),
                    "--listen", f"127.0.0.1:{port}", "--admin", "off", "--nsid", NSID.decode(),
                    "--rrl-rate", "0"]

        processes = []
        try:
            knot_port, knot = start("knotd", knot_command, work)
            processes.append(knot)
            ours_port, ours = start("regiondns", ours_command, work)
            processes.append(ours)
            return run(cases, ours_port, knot_port)
        finally:
            for process in processes:
                process.terminate()
                process.wait(timeout=10)


def run(cases, ours_port, knot_port):
    rng = random.Random(7)
    identical, intentional, unexplained = 0, Counter(), []
    ours_bytes = knot_bytes = 0
    for label, wire, tcp in cases:
        if len(wire) >= 2:
            wire = struct.pack("!H", rng.randrange(65536)) + wire[2:]
        ours_wire = exchange(ours_port, wire, tcp)
        theirs_wire = exchange(knot_port, wire, tcp)
        for who, response in (("regiondns", ours_wire), ("knot", theirs_wire)):
            if response is not None and response[:2] != wire[:2]:
                unexplained.append((label, [f"{who} answered with another ID"], None, None))
        ours, theirs = view(ours_wire), view(theirs_wire)
        diff = differences(ours, theirs)
        if not diff:
            identical += 1
            if ours_wire and theirs_wire:
                ours_bytes += len(ours_wire)
                knot_bytes += len(theirs_wire)
            continue
        reason = classify(label, ours, theirs)
        if reason:
            intentional[reason] += 1
        else:
            unexplained.append((label, diff, ours, theirs))
    total = len(cases)
    print(f"compared {total} queries with Knot DNS: {identical} identical, "
          f"{sum(intentional.values())} intentionally different, {len(unexplained)} unexplained")
    for name, reason, _ in INTENTIONAL + [(*SILENT, None)]:
        if intentional[name]:
            print(f"  {intentional[name]:4} {name}: {reason}")
    if knot_bytes:
        print(f"bytes in identical responses: regiondns {ours_bytes}, knot {knot_bytes} "
              f"({ours_bytes / knot_bytes:.3f}x)")
    for label, diff, ours, theirs in unexplained:
        print(f"DIFFERENT {label}: {', '.join(diff)}")
        for key in diff:
            print(f"    regiondns {key}: {(ours or {}).get(key) if ours else ours}")
            print(f"    knot      {key}: {(theirs or {}).get(key) if theirs else theirs}")
    print(f"{total - len(unexplained)} passed, {len(unexplained)} failed")
    return 1 if unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
