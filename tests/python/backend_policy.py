"""An HTTP/1.1 backend for tests/tests/resilience_policy.rs that records what reached it.

Every request is answered with the same status (--status, default 200) after the same delay
(--delay-ms, default 0), so one pod is one behaviour: a backend that fails everything, a slow
one, a fast one. Before the delay (so a request the proxy gives up on is still counted) the
server appends one JSON line to the ledger (--ledger FILE), flushed:

  {"backend", "id", "method", "path", "attempt", "body_bytes"}

where id is the request's x-request-id header (else its path without the query), attempt the
x-skiff-attempt header the proxy puts on a retried or hedged request (null on a first attempt)
and body_bytes the size of the request body as received. Answers carry `x-backend: NAME` and a
JSON body {"backend", "id", "attempt", "body_bytes"}. A client that gives up while the server
sleeps (a per-try timeout, a lost hedge) is not an error.
"""

import argparse
import json
import socketserver
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "skiff-policy-backend"
    # Headers and body are separate writes; without this, Nagle + delayed ACK add 40 ms.
    disable_nagle_algorithm = True

    def log_message(self, fmt, *args):
        pass

    def read_exactly(self, n):
        got = 0
        while got < n:
            piece = self.rfile.read(min(n - got, 65536))
            if not piece:
                raise ConnectionError("eof inside body")
            got += len(piece)
        return got

    def read_body(self):
        """Reads the whole request body (Content-Length or chunked); returns its size."""
        if "chunked" not in self.headers.get("Transfer-Encoding", "").lower():
            return self.read_exactly(int(self.headers.get("Content-Length", "0") or 0))
        total = 0
        while True:
            line = self.rfile.readline(65537)
            if not line:
                raise ConnectionError("eof inside chunked body")
            size = int(line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass
                return total
            total += self.read_exactly(size)
            self.rfile.readline(3)

    def handle_any(self):
        body_bytes = 0 if self.command == "HEAD" else self.read_body()
        server = self.server
        attempt = self.headers.get("x-skiff-attempt")
        entry = {
            "backend": server.name,
            "id": self.headers.get("x-request-id") or self.path.split("?", 1)[0],
            "method": self.command,
            "path": self.path,
            "attempt": int(attempt) if attempt and attempt.isdigit() else attempt,
            "body_bytes": body_bytes,
        }
        line = json.dumps(entry, separators=(",", ":")) + "\n"
        with server.ledger_lock:
            server.ledger.write(line)
            server.ledger.flush()
        if server.delay:
            time.sleep(server.delay)
        payload = {key: entry[key] for key in ("backend", "id", "attempt", "body_bytes")}
        body = json.dumps(payload).encode() + b"\n"
        try:
            self.send_response(server.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("x-backend", server.name)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            self.wfile.flush()
        except OSError:
            # The proxy gave up on this attempt (timeout, lost hedge) and closed the connection.
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = handle_any


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024

    def server_bind(self):
        # HTTPServer.server_bind looks up getfqdn(host): a DNS query a pod can only time out on.
        socketserver.TCPServer.server_bind(self)
        self.server_name = "localhost"
        self.server_port = self.server_address[1]

    def handle_error(self, request, client_address):
        # A proxy that closes a connection it no longer needs is part of the game.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bind", default="0.0.0.0")
    parser.add_argument("--name", required=True, help="answered in x-backend, recorded")
    parser.add_argument("--ledger", required=True, help="append one JSON line per request")
    parser.add_argument("--status", type=int, default=200, help="status of every answer")
    parser.add_argument("--delay-ms", type=int, default=0, help="wait before every answer")
    args = parser.parse_args()
    server = Server((args.bind, args.port), Handler)
    server.name = args.name
    server.status = args.status
    server.delay = args.delay_ms / 1000.0
    server.ledger = open(args.ledger, "a", encoding="utf-8")
    server.ledger_lock = threading.Lock()
    sys.stderr.write(
        "backend %s on %s:%d: status %d after %d ms, ledger %s\n"
        % (args.name, args.bind, args.port, args.status, args.delay_ms, args.ledger)
    )
    server.serve_forever()


if __name__ == "__main__":
    main()
