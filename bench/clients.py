#!/usr/bin/env python3
"""Client networks as resolvers send them, for bench/diverse.c: COUNT distinct /24s (IPv4) or
/56s (IPv6), each located (with coordinates) by a City database, drawn with a fixed seed so
every run and every server gets the same list, one "network/prefix" a line.

    python3 bench/clients.py DB [--family 4|6] [--count 100000] [--seed 1] > clients.txt

IPv4: random addresses until COUNT located /24s. IPv6: the database's own IPv6 networks with
coordinates (not the IPv4 tree or its aliases), then a random /56 inside a random one of them.
Needs the `maxminddb` module (pip install maxminddb).
"""

import argparse
import ipaddress
import random
import sys

import maxminddb


def located(record):
    if not isinstance(record, dict):
        return False
    location = record.get("location") or {}
    return "latitude" in location or "latitude" in record


def ipv4(reader, count, rng):
    seen = set()
    while len(seen) < count:
        network = rng.getrandbits(24) << 8
        if network in seen:
            continue
        if located(reader.get(str(ipaddress.IPv4Address(network)))):
            seen.add(network)
    order = sorted(seen)
    rng.shuffle(order)
    return [f"{ipaddress.IPv4Address(n)}/24" for n in order]


def ipv6(reader, count, rng):
    # The IPv4 tree (::/96) and its aliases (::ffff:0:0/96, 2001::/32, 2002::/16) are not IPv6.
    aliases = [ipaddress.ip_network(n) for n in ("::/96", "::ffff:0:0/96", "2001::/32", "2002::/16")]
    networks = [
        network
        for network, record in reader
        if network.version == 6
        and located(record)
        and not any(network.subnet_of(a) for a in aliases)
    ]
    if not networks:
        sys.exit("the database has no located IPv6 networks")
    seen = set()
    while len(seen) < count:
        network = rng.choice(networks)
        base = int(network.network_address) >> 72
        spare = 56 - network.prefixlen
        if spare > 0:
            base |= rng.getrandbits(spare)
        seen.add(base << 72)
    order = sorted(seen)
    rng.shuffle(order)
    return [f"{ipaddress.IPv6Address(n)}/56" for n in order]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("db")
    parser.add_argument("--family", type=int, choices=(4, 6), default=4)
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with maxminddb.open_database(args.db) as reader:
        lines = (ipv4 if args.family == 4 else ipv6)(reader, args.count, rng)
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
