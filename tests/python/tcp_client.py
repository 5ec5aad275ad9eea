"""Opaque TCP client for tcp_server.py, printing JSON.

--banner: read the server's first line before sending anything (server speaks first).
Then send --line (answered by "250 ok ..."), then --bulk bytes with no newline, then half-close
and read everything until the server closes.
"""

import argparse
import json
import socket
import sys


def read_line(sock, buf):
    while b"\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("eof before a full line; got %r" % buf)
        buf += data
    line, rest = buf.split(b"\n", 1)
    return line.rstrip(b"\r").decode(), rest


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--banner", action="store_true")
    parser.add_argument("--line", default="HELO skiff")
    parser.add_argument("--bulk", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args()
    result = {}
    buf = b""
    try:
        sock = socket.create_connection((args.host, args.port), timeout=args.timeout)
        if args.banner:
            result["banner"], buf = read_line(sock, buf)
        sock.sendall(args.line.encode() + b"\r\n")
        result["reply"], buf = read_line(sock, buf)
        if args.bulk:
            chunk = b"x" * 65536
            left = args.bulk
            while left:
                n = min(left, len(chunk))
                sock.sendall(chunk[:n])
                left -= n
        sock.shutdown(socket.SHUT_WR)
        while True:
            data = sock.recv(65536)
            if not data:
                break
            buf += data
        result["after_half_close"] = buf.decode().strip()
        sock.close()
    except Exception as e:  # report what was seen so far, for the test's failure message
        result["error"] = repr(e)
        result["unread"] = buf.decode(errors="replace")
        print(json.dumps(result))
        sys.exit(1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
