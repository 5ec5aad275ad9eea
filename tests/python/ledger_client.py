"""Load client for the resilience tests: GETs and POSTs with unique ids, and the fate of each.

Runs --concurrency worker threads, each with its own keep-alive HTTP/1.1 connection
(http.client), for --duration seconds or until --requests requests were sent, at most --rate
requests per second in all (0: as fast as answers come). Each request has a unique id,
PREFIX-WORKER-SEQ, sent as `x-request-id` and in the path (/ledger/ID); --post-percent of them
are POSTs with a --body-bytes body (spread evenly, like the fault server's percentages).

Every request ends in exactly one class:
  ok            a 2xx
  refused       any status with `x-skiff-error` (the proxy answered for itself)
  backend_5xx   a 5xx without `x-skiff-error` (the backend's own failure)
  other_status  anything else (4xx without the header, 1xx, 3xx)
  truncated     the status line and headers came, then the body broke off (reset, early close
                or timeout): a response had started, so the request was executed
  unknown       no response at all: connection refused, reset, closed or timed out before the
                status line. The client cannot know whether the server executed it.

Writes a JSON summary to --summary (and stdout): totals per class and method, per status,
per x-skiff-error reason and per x-backend, the elapsed time, and up to 20 examples of each
non-ok class. With --outcomes FILE, one JSON line per request:
{"id", "method", "class", "status", "error", "backend", "detail"}. While running it prints a
progress line ({"progress": N}) to stderr every half second.
"""

import argparse
import http.client
import json
import sys
import threading
import time
from collections import Counter

EXAMPLES = 20


class Pacer:
    """Hands out permission to send at most `rate` requests per second, evenly spaced."""

    def __init__(self, rate):
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.lock = threading.Lock()
        self.next = time.monotonic()

    def wait(self):
        if not self.interval:
            return
        with self.lock:
            slot = self.next
            self.next = max(self.next + self.interval, time.monotonic() - 1.0)
        delay = slot - time.monotonic()
        if delay > 0:
            time.sleep(delay)


class Tally:
    """What every worker saw, merged under one lock."""

    def __init__(self, outcomes_path):
        self.lock = threading.Lock()
        self.classes = Counter()
        self.by_method = Counter()
        self.statuses = Counter()
        self.errors = Counter()
        self.backends = Counter()
        self.examples = {}
        self.sent = 0
        self.outcomes = open(outcomes_path, "w", encoding="utf-8") if outcomes_path else None

    def record(self, request_id, method, cls, status, error, backend, detail):
        with self.lock:
            self.classes[cls] += 1
            self.by_method["%s %s" % (method, cls)] += 1
            if status is not None:
                self.statuses[str(status)] += 1
            if error:
                self.errors[error] += 1
            if backend:
                self.backends[backend] += 1
            if cls != "ok":
                examples = self.examples.setdefault(cls, [])
                if len(examples) < EXAMPLES:
                    examples.append(
                        {"id": request_id, "method": method, "status": status,
                         "error": error, "detail": detail}
                    )
            if self.outcomes is not None:
                self.outcomes.write(
                    json.dumps(
                        {"id": request_id, "method": method, "class": cls, "status": status,
                         "error": error, "backend": backend, "detail": detail},
                        separators=(",", ":"),
                    )
                    + "\n"
                )


def classify(status, error):
    if error:
        return "refused"
    if 200 <= status < 300:
        return "ok"
    if status >= 500:
        return "backend_5xx"
    return "other_status"


def worker(index, args, tally, pacer, deadline, budget):
    conn = None
    seq = 0
    body = b"x" * args.body_bytes
    while time.monotonic() < deadline:
        with tally.lock:
            if budget is not None and tally.sent >= budget:
                return
            n = tally.sent
            tally.sent += 1
        pacer.wait()
        post = ((n + 1) * args.post_percent) // 100 > (n * args.post_percent) // 100
        method = "POST" if post else "GET"
        request_id = "%s-%d-%d" % (args.id_prefix, index, seq)
        seq += 1
        headers = {"x-request-id": request_id, "Host": args.host_header or args.host}
        if post:
            headers["Content-Type"] = "application/octet-stream"
        if conn is None:
            conn = http.client.HTTPConnection(args.host, args.port, timeout=args.timeout)
        try:
            conn.request(method, "/ledger/" + request_id, body=body if post else None,
                         headers=headers)
            response = conn.getresponse()
        except (OSError, http.client.HTTPException) as e:
            # No response: whatever happened upstream is unknown to us.
            conn.close()
            conn = None
            tally.record(request_id, method, "unknown", None, None, None,
                         "%s: %s" % (type(e).__name__, e))
            continue
        status = response.status
        error = response.getheader("x-skiff-error")
        backend = response.getheader("x-backend")
        try:
            response.read()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            conn = None
            tally.record(request_id, method, "truncated", status, error, backend,
                         "%s: %s" % (type(e).__name__, e))
            continue
        if response.will_close:
            conn.close()
            conn = None
        tally.record(request_id, method, classify(status, error), status, error, backend, None)
    if conn is not None:
        conn.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, default=80)
    parser.add_argument("--host-header", help="Host header (default: --host)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds (upper bound)")
    parser.add_argument("--requests", type=int, help="stop after this many requests")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rate", type=float, default=0.0, help="requests per second, 0: free")
    parser.add_argument("--post-percent", type=int, default=0)
    parser.add_argument("--body-bytes", type=int, default=256)
    parser.add_argument("--id-prefix", default="r")
    parser.add_argument("--timeout", type=float, default=30.0, help="per socket operation")
    parser.add_argument("--summary", help="write the JSON summary here too")
    parser.add_argument("--outcomes", help="one JSON line per request")
    args = parser.parse_args()

    tally = Tally(args.outcomes)
    pacer = Pacer(args.rate)
    start = time.monotonic()
    deadline = start + args.duration
    threads = [
        threading.Thread(target=worker, args=(i, args, tally, pacer, deadline, args.requests),
                         daemon=True)
        for i in range(args.concurrency)
    ]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        time.sleep(0.5)
        with tally.lock:
            done = sum(tally.classes.values())
        sys.stderr.write(json.dumps({"progress": done}) + "\n")
    elapsed = time.monotonic() - start
    if tally.outcomes is not None:
        tally.outcomes.close()
    summary = {
        "requests": sum(tally.classes.values()),
        "elapsed_secs": round(elapsed, 3),
        "classes": dict(tally.classes),
        "by_method": dict(tally.by_method),
        "statuses": dict(tally.statuses),
        "errors": dict(tally.errors),
        "backends": dict(tally.backends),
        "examples": tally.examples,
    }
    text = json.dumps(summary, sort_keys=True)
    if args.summary:
        with open(args.summary, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
