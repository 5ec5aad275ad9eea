"""A misbehaving HTTP/1.1 backend for the resilience tests, with a ledger of what it executed.

Every request to any path except /__fault is a "business" request. For each one the server
decides, from its fault settings, whether to fail it, delay it or reset the connection, and
appends one JSON line to the ledger (--ledger FILE) once it has read the request and *before*
any delay or answer, flushed, so a test can check afterwards that no POST was executed twice
(even when the server is killed right after), and sees a request the proxy gave up on while
the server was delaying it (a per-try timeout, a lost hedge).

Fault settings (flags at start, changed at runtime by POST /__fault with a JSON object of the
same names, underscores for dashes; GET /__fault shows them and the counters):
  fail_percent P, fail_status S   answer S (default 503) to P % of the requests
  delay_ms D                      wait D ms before answering (after reading the body)
  reset_percent P, reset_mode M   reset the connection (RST, never a clean close) for P % of the
                                  requests, at point M:
                                    after-request  the whole request was read, no answer
                                    mid-response   the status line, headers and half the body
                                                   were sent
                                    mid-body       half the request body was read (a request
                                                   without a body is reset after its head)
  --reset-mid-body                short for --reset-mode mid-body
Percentages are spread evenly (the k-th request of a run of 100 fails when floor(k*P/100)
grows), so "50" alternates exactly and a test never depends on luck; --seed N draws them at
random from a seeded generator instead. Failing and resetting count independently.

A request's id is its x-request-id header, else its path. Ledger lines:
  {"id", "method", "path", "backend", "attempt", "outcome", "executed", "body_bytes", "t"}
where attempt is the x-skiff-attempt header the proxy puts on a retried or hedged request (null
on a first attempt), outcome is the status answered ("200", "503"), "reset-after-request",
"reset-mid-response" or "reset-mid-body", and executed is false only for mid-body resets (the
handler never had the whole request, so nothing was done). Answers carry `x-backend: NAME` and
a JSON body {"backend", "id", "method", "path", "attempt", "body_bytes"}. A backend that fails
or delays everything (--fail-percent 100, --delay-ms D) is one behaviour per pod.
"""

import argparse
import json
import random
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RESET_MODES = ("after-request", "mid-response", "mid-body")
SETTINGS = ("fail_percent", "fail_status", "delay_ms", "reset_percent", "reset_mode")


class Faults:
    """The fault settings and counters, shared by every handler thread."""

    def __init__(self, args):
        self.lock = threading.Lock()
        self.fail_percent = args.fail_percent
        self.fail_status = args.fail_status
        self.delay_ms = args.delay_ms
        self.reset_percent = args.reset_percent
        self.reset_mode = args.reset_mode
        self.rng = random.Random(args.seed) if args.seed is not None else None
        self.requests = 0
        self.failed = 0
        self.resets = 0

    def update(self, changes):
        unknown = sorted(set(changes) - set(SETTINGS))
        if unknown:
            raise ValueError("unknown settings %s (known: %s)" % (unknown, list(SETTINGS)))
        with self.lock:
            for key, value in changes.items():
                if key == "reset_mode":
                    if value not in RESET_MODES:
                        raise ValueError("reset_mode must be one of %s" % (RESET_MODES,))
                elif not isinstance(value, int) or value < 0:
                    raise ValueError("%s must be a non-negative integer" % key)
                elif key.endswith("_percent") and value > 100:
                    raise ValueError("%s must be at most 100" % key)
                setattr(self, key, value)

    def snapshot(self):
        with self.lock:
            return {
                "fail_percent": self.fail_percent,
                "fail_status": self.fail_status,
                "delay_ms": self.delay_ms,
                "reset_percent": self.reset_percent,
                "reset_mode": self.reset_mode,
                "requests": self.requests,
                "failed": self.failed,
                "resets": self.resets,
            }

    def _hit(self, n, percent):
        if percent <= 0:
            return False
        if percent >= 100:
            return True
        if self.rng is not None:
            return self.rng.random() * 100 < percent
        return ((n + 1) * percent) // 100 > (n * percent) // 100

    def decide(self):
        """Counts one request and returns (reset_mode or None, fail_status or None, delay s)."""
        with self.lock:
            n = self.requests
            self.requests += 1
            reset = self.reset_mode if self._hit(n, self.reset_percent) else None
            fail = None
            if reset is None and self._hit(n, self.fail_percent):
                fail = self.fail_status
                self.failed += 1
            if reset is not None:
                self.resets += 1
            return reset, fail, self.delay_ms / 1000.0


class Ledger:
    """One JSON line per request that reached the handler, appended and flushed."""

    def __init__(self, path):
        self.lock = threading.Lock()
        self.file = open(path, "a", encoding="utf-8") if path else None

    def record(self, entry):
        if self.file is None:
            return
        line = json.dumps(entry, separators=(",", ":")) + "\n"
        with self.lock:
            self.file.write(line)
            self.file.flush()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "skiff-fault-server"
    disable_nagle_algorithm = True

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("%s %s\n" % (self.address_string(), fmt % args))

    def body_length(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return None
        return int(self.headers.get("Content-Length", "0") or 0)

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
        length = self.body_length()
        if length is not None:
            return self.read_exactly(length)
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

    def reset(self):
        """Aborts the connection with a RST once the handler returns (see FaultServer)."""
        self.request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.server.mark_reset(self.request)
        self.close_connection = True

    def reply(self, status, payload, extra=()):
        body = json.dumps(payload).encode() + b"\n"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-backend", self.server.name)
        for name, value in extra:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def control(self):
        faults = self.server.faults
        if self.command == "POST":
            try:
                faults.update(json.loads(self.rfile.read(self.body_length() or 0) or b"{}"))
            except (ValueError, TypeError) as e:
                self.reply(400, {"error": str(e)})
                return
            sys.stderr.write("faults now %s\n" % json.dumps(faults.snapshot()))
        else:
            self.read_body()
        self.reply(200, faults.snapshot())

    def handle_any(self):
        if self.path.split("?", 1)[0] == "/__fault":
            self.control()
            return
        request_id = self.headers.get("x-request-id") or self.path
        attempt = self.headers.get("x-skiff-attempt")
        entry = {
            "id": request_id,
            "method": self.command,
            "path": self.path,
            "backend": self.server.name,
            "attempt": int(attempt) if attempt and attempt.isdigit() else attempt,
        }
        reset, fail, delay = self.server.faults.decide()
        if reset == "mid-body":
            length = self.body_length()
            received = self.read_exactly(length // 2) if length else 0
            entry.update(outcome="reset-mid-body", executed=False, body_bytes=received)
            self.server.ledger.record(dict(entry, t=time.time()))
            self.reset()
            return
        body_bytes = self.read_body()
        status = fail or 200
        outcome = "reset-" + reset if reset else str(status)
        entry.update(outcome=outcome, executed=True, body_bytes=body_bytes)
        # The commit point: recorded (and flushed) before the delay and the answer.
        self.server.ledger.record(dict(entry, t=time.time()))
        if delay:
            time.sleep(delay)
        payload = {
            "backend": self.server.name,
            "id": request_id,
            "method": self.command,
            "path": self.path,
            "attempt": entry["attempt"],
            "body_bytes": body_bytes,
        }
        if reset == "after-request":
            self.reset()
            return
        if reset == "mid-response":
            body = json.dumps(payload).encode() + b"\n" + b" " * 4096
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("x-backend", self.server.name)
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.reset()
            return
        self.reply(status, payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = handle_any


class FaultServer(ThreadingHTTPServer):
    daemon_threads = True
    # A burst of reconnections after a fault must not overflow the accept queue.
    request_queue_size = 1024

    def __init__(self, address, args):
        super().__init__(address, Handler)
        self.name = args.name
        self.verbose = args.verbose
        self.faults = Faults(args)
        self.ledger = Ledger(args.ledger)
        self.reset_lock = threading.Lock()
        self.reset_sockets = set()

    def server_bind(self):
        # HTTPServer.server_bind looks up getfqdn(host): a DNS query a pod can only time out on.
        import socketserver

        socketserver.TCPServer.server_bind(self)
        self.server_name = "localhost"
        self.server_port = self.server_address[1]

    def mark_reset(self, sock):
        with self.reset_lock:
            self.reset_sockets.add(id(sock))

    def shutdown_request(self, request):
        # A reset connection is closed without shutdown(SHUT_WR), which would send a FIN first;
        # with SO_LINGER 0 the close sends only a RST.
        with self.reset_lock:
            reset = id(request) in self.reset_sockets
            self.reset_sockets.discard(id(request))
        if reset:
            self.close_request(request)
        else:
            super().shutdown_request(request)

    def handle_error(self, request, client_address):
        # A peer that goes away mid-request is part of the game, not an error worth a traceback.
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
            if self.verbose:
                sys.stderr.write("connection from %s: %r\n" % (client_address, exc))
            return
        super().handle_error(request, client_address)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bind", default="0.0.0.0")
    parser.add_argument("--name", default="fault-server", help="answered in x-backend")
    parser.add_argument("--ledger", help="append one JSON line per request here")
    parser.add_argument("--fail-percent", type=int, default=0)
    parser.add_argument("--fail-status", type=int, default=503)
    parser.add_argument("--delay-ms", type=int, default=0)
    parser.add_argument("--reset-percent", type=int, default=0)
    parser.add_argument("--reset-mode", choices=RESET_MODES, default="after-request")
    parser.add_argument("--reset-mid-body", action="store_true", help="--reset-mode mid-body")
    parser.add_argument("--seed", type=int, help="random faults from this seed, not spread")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args()
    if args.reset_mid_body:
        args.reset_mode = "mid-body"
    server = FaultServer((args.bind, args.port), args)
    sys.stderr.write(
        "fault server %s listening on %s:%d, faults %s\n"
        % (args.name, args.bind, args.port, json.dumps(server.faults.snapshot()))
    )
    server.serve_forever()


if __name__ == "__main__":
    main()
