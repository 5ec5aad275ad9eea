"""Sends one raw, possibly malformed, HTTP/1.1 request and prints the response's status line.

Usage: raw_http.py HOST PORT CASE
Prints `STATUS <line>` or `CLOSED` when the connection closed without a response.
"""

import socket
import sys

CASES = {
    "huge-header": b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n",
    "too-many-headers": b"GET / HTTP/1.1\r\nHost: x\r\n"
    + b"".join(b"X-H%d: v\r\n" % i for i in range(150))
    + b"\r\n",
    "conflicting-content-length": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
    b"Content-Length: 6\r\n\r\nhello",
    "space-in-header-name": b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: v\r\n\r\n",
    "valid": b"GET /after-abuse HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
}


def main():
    host, port, case = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    with socket.create_connection((host, port), timeout=20) as sock:
        sock.sendall(CASES[case])
        response = b""
        while b"\r\n" not in response:
            chunk = sock.recv(4096)
            if not chunk:
                break
            response += chunk
    if not response:
        print("CLOSED")
    else:
        print("STATUS " + response.split(b"\r\n", 1)[0].decode("latin-1"))


if __name__ == "__main__":
    main()
