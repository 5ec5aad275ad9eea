"""HTTP/1.1 test server for the skiff end-to-end tests.

Routes:
  GET  /slow?secs=3   logs "slow request started", waits, then answers 200 with a known body
                      (SLOW_BODY_LINE repeated SLOW_BODY_REPEAT times)
  PUT|POST /upload?throttle_ms=0
                      streams the request body (chunked or Content-Length) and answers
                      {"received": N}; memory does not grow with the body. With throttle_ms it
                      sleeps that long after each 64 KiB read: a slow consumer, so a proxy that
                      does not apply back-pressure has to buffer
  GET  /bytes?n=N     streams N bytes ("a") with a Content-Length, in 64 KiB writes
  anything else       echoes method, path, Host header, request headers and body size as JSON
Every response names the server (--name) so tests can tell backends apart. --bind takes an IPv4
or IPv6 address ("::" listens on both families).
"""

import argparse
import json
import socket
import socketserver
import sys
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SLOW_BODY_LINE = b"skiff-slow-response-line\n"
SLOW_BODY_REPEAT = 4000


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "skiff-test-http"
    # Headers and body are separate writes; without this, Nagle + delayed ACK add 40 ms.
    disable_nagle_algorithm = True

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (self.address_string(), fmt % args))

    def read_body(self, throttle=0.0):
        """Reads the whole request body in bounded pieces and returns its size."""
        total = 0
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise ConnectionError("eof inside chunked body")
                size = int(line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    # Trailers until the empty line.
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return total
                remaining = size
                while remaining:
                    piece = self.rfile.read(min(remaining, 65536))
                    if not piece:
                        raise ConnectionError("eof inside chunk")
                    remaining -= len(piece)
                    total += len(piece)
                    if throttle:
                        time.sleep(throttle)
                self.rfile.readline(3)
        length = int(self.headers.get("Content-Length", "0") or 0)
        while total < length:
            piece = self.rfile.read(min(length - total, 65536))
            if not piece:
                raise ConnectionError("eof inside body")
            total += len(piece)
            if throttle:
                time.sleep(throttle)
        return total

    def reply(self, status, body, content_type="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Served-By", self.server.name)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def handle_any(self):
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        if url.path == "/upload" and self.command in ("PUT", "POST"):
            throttle = float(query.get("throttle_ms", ["0"])[0]) / 1000.0
            received = self.read_body(throttle)
            sys.stderr.write("upload received %d bytes\n" % received)
            self.reply(200, json.dumps({"received": received, "server": self.server.name}).encode())
            return
        body_bytes = self.read_body()
        if url.path == "/bytes":
            total = int(query.get("n", ["0"])[0])
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(total))
            self.end_headers()
            block = b"a" * 65536
            left = total
            while left:
                n = min(left, len(block))
                self.wfile.write(block[:n])
                left -= n
            return
        if url.path == "/slow":
            secs = float(query.get("secs", ["3"])[0])
            sys.stderr.write("slow request started\n")
            sys.stderr.flush()
            time.sleep(secs)
            self.reply(200, SLOW_BODY_LINE * SLOW_BODY_REPEAT, "text/plain")
            sys.stderr.write("slow request answered\n")
            return
        echo = {
            "server": self.server.name,
            "method": self.command,
            "path": self.path,
            "host": self.headers.get("Host"),
            "version": self.request_version,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body_bytes": body_bytes,
        }
        self.reply(200, json.dumps(echo, indent=1).encode() + b"\n")

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = handle_any


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bind", default="0.0.0.0")
    parser.add_argument("--name", default="http-server")
    args = parser.parse_args()
    server_class = ThreadingHTTPServer
    if ":" in args.bind:
        # An IPv6 address ("::" also accepts IPv4 unless net.ipv6.bindv6only is set).
        class server_class(ThreadingHTTPServer):
            address_family = socket.AF_INET6

            def server_bind(self):
                # HTTPServer.server_bind would look up getfqdn("::1"): a DNS query that a pod
                # namespace can only time out on.
                socketserver.TCPServer.server_bind(self)
                self.server_name = "localhost"
                self.server_port = self.server_address[1]

    server = server_class((args.bind, args.port), Handler)
    server.daemon_threads = True
    server.name = args.name
    sys.stderr.write("listening on %s:%d\n" % (args.bind, args.port))
    server.serve_forever()


if __name__ == "__main__":
    main()
