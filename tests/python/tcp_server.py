"""Opaque TCP server.

On accept it sends --banner (if any) before reading anything, like SMTP or MySQL. Then it
answers every line with "250 ok <line>", and when the client half-closes (EOF) it sends
"received <N>" (total bytes read) and closes.
"""

import argparse
import socketserver
import sys


class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        sock = self.request
        if self.server.banner:
            sock.sendall(self.server.banner.encode() + b"\r\n")
        total = 0
        pending = b""
        while True:
            data = sock.recv(65536)
            if not data:
                break
            total += len(data)
            pending += data
            while b"\n" in pending and len(pending) < 4096:
                line, pending = pending.split(b"\n", 1)
                sock.sendall(b"250 ok " + line.rstrip(b"\r") + b"\r\n")
            if len(pending) >= 4096:
                pending = b""
        sock.sendall(b"received %d\r\n" % total)
        sys.stderr.write("connection done, received %d bytes\n" % total)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--banner", default="")
    args = parser.parse_args()
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    server = socketserver.ThreadingTCPServer(("0.0.0.0", args.port), Handler)
    server.daemon_threads = True
    server.banner = args.banner
    sys.stderr.write("tcp listening on %d\n" % args.port)
    server.serve_forever()


if __name__ == "__main__":
    main()
