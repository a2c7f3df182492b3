"""Just enough DNS wire format for the benchmark scripts: an A query with an ECS option, and the
first A record of a reply. Standard library only."""

import socket
import struct


def query_packet(qid, name, ecs_subnet):
    """An A query for `name` with EDNS (1232) and ECS for the /24 of `ecs_subnet` (a.b.c)."""
    header = struct.pack(">HHHHHH", qid, 0, 1, 0, 0, 1)
    labels = name.rstrip(".").split(".")
    qname = b"".join(bytes([len(label)]) + label.encode() for label in labels) + b"\0"
    ecs = struct.pack(">HBB", 1, 24, 0) + bytes(int(x) for x in ecs_subnet.split("."))
    opt = b"\0" + struct.pack(">HHIH", 41, 1232, 0, 4 + len(ecs)) + struct.pack(">HH", 8, len(ecs)) + ecs
    return header + qname + struct.pack(">HH", 1, 1) + opt


def skip_name(reply, pos):
    while True:
        length = reply[pos]
        if length & 0xC0 == 0xC0:
            return pos + 2
        if length == 0:
            return pos + 1
        pos += length + 1


def first_a(reply):
    """The first A record's address in a reply, or None."""
    if len(reply) < 12 or struct.unpack(">H", reply[6:8])[0] == 0:
        return None
    pos = skip_name(reply, 12) + 4
    pos = skip_name(reply, pos)
    rtype, _, _, rdlen = struct.unpack(">HHIH", reply[pos:pos + 10])
    if rtype != 1 or rdlen != 4:
        return None
    return socket.inet_ntoa(reply[pos + 10:pos + 14])


def ask(sock, port, qid, name, ecs_subnet):
    """The first A address answered to one query, or None (no answer or timeout)."""
    sock.sendto(query_packet(qid, name, ecs_subnet), ("127.0.0.1", port))
    try:
        return first_a(sock.recv(4096))
    except socket.timeout:
        return None
