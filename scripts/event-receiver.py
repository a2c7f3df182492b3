#!/usr/bin/env python3
"""A receiver of regiondns failover events: it checks each event's signature and prints the
event as a line of JSON; a request without the right signature gets 401 and is not printed.

    REGIONDNS_HOOK_SECRET=... scripts/event-receiver.py [PORT]      # default 8053; 0: any

The zone file then names it: events: [{ url: "http://HOST:PORT/", secret: "${REGIONDNS_HOOK_SECRET}" }]
"""
import hashlib
import hmac
import http.server
import os
import sys

SECRET = os.environ["REGIONDNS_HOOK_SECRET"].encode()


class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        expected = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, self.headers.get("X-Regiondns-Signature", "")):
            self.send_response(401)
            self.end_headers()
            return
        print(body.decode(), flush=True)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


server = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 8053), Receiver)
print(f"listening on 127.0.0.1:{server.server_address[1]}", file=sys.stderr, flush=True)
server.serve_forever()
