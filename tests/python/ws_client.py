"""WebSocket client: sends text and binary messages (one of 1 MiB), checks the echoes, prints JSON."""

import argparse
import json
import os

from websockets.sync.client import connect


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--messages", type=int, default=20)
    args = parser.parse_args()
    result = {"echoed": 0, "mismatches": 0}
    with connect(args.url, open_timeout=30, close_timeout=10, max_size=None, proxy=None) as ws:
        result["status"] = ws.response.status_code
        for i in range(args.messages):
            message = "hello %d" % i if i % 2 == 0 else os.urandom(1000 + i)
            ws.send(message)
            reply = ws.recv(timeout=30)
            result["echoed"] += 1
            if reply != message:
                result["mismatches"] += 1
        big = os.urandom(1 << 20)
        ws.send(big)
        result["big_ok"] = ws.recv(timeout=60) == big
    print(json.dumps(result))


if __name__ == "__main__":
    main()
