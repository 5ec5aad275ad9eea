"""One measurement of one figure on one target: the load generator's own figures, plus the
proxies' CPU time and memory and how busy each core was while it ran."""

import contextlib
import json
import re
import subprocess
import time

from .mesh import pod_ns
from .system import LOAD_CORE, PROXY_CORE, Usage, in_ns, rss_kib, run

H2LOAD_REQUESTS = re.compile(
    r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored"
)
H2LOAD_FINISHED = re.compile(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s")
H2LOAD_STATUS = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")


def oha(tools, target, seconds, connections, rate=None):
    """HTTP/1.1 keep-alive load with oha: closed-loop (as fast as possible) without `rate`,
    open-loop at `rate` req/s with latency correction (no coordinated omission) with it."""
    argv = [
        tools["oha"],
        "-z",
        f"{seconds}s",
        "-c",
        connections,
        "--no-tui",
        "--output-format",
        "json",
        "--wait-ongoing-requests-after-deadline",
        "--worker-threads",
        1,
    ]
    if rate is not None:
        argv += ["-q", rate, "--latency-correction"]
    argv.append(target.h1_url)
    with Usage(target.pid_groups()) as usage:
        result = run(in_ns(target.ns, argv, core=LOAD_CORE), timeout=seconds + 120)
    report = json.loads(result.stdout)
    summary = report["summary"]
    codes = report.get("statusCodeDistribution", {})
    ok = int(codes.get("200", 0))
    requests = sum(int(n) for n in codes.values())
    errors = (requests - ok) + sum(int(n) for n in report.get("errorDistribution", {}).values())
    percentiles = report["latencyPercentiles"]
    return usage_figures(usage, ok) | {
        "requests": ok,
        "errors": errors,
        "error_kinds": {
            **{f"HTTP {c}": n for c, n in codes.items() if c != "200"},
            **report.get("errorDistribution", {}),
        },
        "rps": ok / max(summary.get("total") or usage.wall, 1e-9),
        "p50_us": seconds_to_us(percentiles.get("p50")),
        "p99_us": seconds_to_us(percentiles.get("p99")),
        "p99.9_us": seconds_to_us(percentiles.get("p99.9")),
    }


def seconds_to_us(value):
    return None if value is None else value * 1e6


def h2load(target, seconds, connections, streams, http1=False):
    """Load with h2load, as fast as the target goes: h2c (prior knowledge) on `connections`
    connections with `streams` concurrent streams each, or with `http1` HTTP/1.1 keep-alive on
    `connections` connections (one request at a time each, no pipelining)."""
    # h2load takes whole seconds.
    argv = ["h2load", "-t", 1, "-c", connections, "-D", max(1, round(seconds))]
    argv += ["--h1", target.h1_url] if http1 else ["-m", streams, target.h2_url]
    with Usage(target.pid_groups()) as usage:
        result = run(in_ns(target.ns, argv, core=LOAD_CORE), timeout=seconds + 120)
    requests, finished, status = (
        p.search(result.stdout) for p in (H2LOAD_REQUESTS, H2LOAD_FINISHED, H2LOAD_STATUS)
    )
    if not (requests and finished and status):
        raise RuntimeError(f"cannot read h2load's output:\n{result.stdout}\n{result.stderr}")
    failed, errored = int(requests.group(5)), int(requests.group(6))
    ok = int(status.group(1))
    not_2xx = sum(int(status.group(i)) for i in (2, 3, 4))
    elapsed = float(finished.group(1)) / (1000 if finished.group(2) == "ms" else 1)
    return usage_figures(usage, ok) | {
        "requests": ok,
        "errors": failed + errored + not_2xx,
        "error_kinds": {"failed": failed, "errored": errored, "not 2xx": not_2xx},
        "rps": ok / elapsed,
    }


def tcp_bulk(tools, target, seconds, direction):
    """One connection of opaque TCP bulk transfer through the target, in GB/s."""
    argv = [
        tools["skiff-bench"],
        "tcp",
        "--addr",
        target.tcp_addr,
        "--direction",
        direction,
        "--seconds",
        seconds,
    ]
    with Usage(target.pid_groups()) as usage:
        result = run(in_ns(target.ns, argv, core=LOAD_CORE), timeout=seconds + 60)
    transfer = json.loads(result.stdout)
    return usage_figures(usage, None) | {"gbps": transfer["gigabytes_per_second"], "errors": 0}


def usage_figures(usage, requests):
    figures = {
        "proxy_cpu_s": usage.cpu,
        "wall_s": usage.wall,
        "peak_rss_kib": usage.peak_rss_kib,
        "load_core_busy": usage.core_busy.get(LOAD_CORE),
        "proxy_core_busy": usage.core_busy.get(PROXY_CORE),
    }
    if usage.pids:
        figures["proxy_busy"] = usage.cpu / usage.wall
    if usage.pids and requests:
        figures["cpu_us_per_request"] = usage.cpu / requests * 1e6
        if len(usage.groups) > 1:
            figures["cpu_us_per_request_by_proxy"] = {
                name: cpu / requests * 1e6 for name, cpu in usage.cpu_by_group.items()
            }
    return figures


def memory(tools, target, connections):
    """The proxies' RSS when idle, and its growth with `connections` idle keep-alive
    connections (one request each, then nothing), scaled to 1000 connections."""
    idle = rss_kib(target.pids())
    argv = in_ns(
        target.ns,
        [tools["skiff-bench"], "hold", "--addr", target.h1_addr, "--connections", connections],
        core=LOAD_CORE,
    )
    proc = subprocess.Popen(
        [str(a) for a in argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        if not line.startswith("holding"):
            proc.stdin.close()
            raise RuntimeError(
                f"idle connections through {target.name} failed: {line}{proc.stderr.read()}"
            )
        time.sleep(1.0)  # let the proxies finish setting up what each connection keeps
        held = rss_kib(target.pids())
    finally:
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.close()
        proc.wait(60)
    return {
        "idle_rss_kib": idle,
        "held_rss_kib": held,
        "kib_per_1000_idle": (held - idle) * 1000 / connections,
        "errors": 0,
    }


def handshakes(tools, target, mesh, seconds, concurrency, mode):
    """New connections per second into the server sidecar of an mTLS target, made by
    `skiff-bench handshakes` from the plain pod (no sidecar of its own) to a port of the server
    pod, which its capture sends to the sidecar's inbound port: `full` TLS 1.3 handshakes,
    `resumed` ones, or `plaintext` TCP for comparison; each connection closed after the
    handshake. The sidecar's CPU time gives its cost per connection, and so the rate one core
    sustains, even when the client's core is the limit."""
    argv = [
        tools["skiff-bench"],
        "handshakes",
        "--addr",
        target.handshake_addr,
        "--ca-dir",
        mesh.ca_dir,
        "--server-identity",
        target.handshake_identity,
        "--mode",
        mode,
        "--concurrency",
        concurrency,
        "--seconds",
        seconds,
    ]
    sidecar = target.handshake_proxy
    with Usage({sidecar.name: sidecar.pids()}) as usage:
        result = run(in_ns(pod_ns("plain"), argv, core=LOAD_CORE), timeout=seconds + 60)
    report = json.loads(result.stdout)
    connections = report["connections"]
    figures = {
        "connections": connections,
        "per_second": report["per_second"],
        "full": report["full"],
        "resumed": report["resumed"],
        "errors": report["errors"],
        "error_kinds": report["error_kinds"],
        "handshake_p50_us": report["handshake_p50_us"],
        "negotiated": report.get("negotiated", {}),
        "proxy_cpu_s": usage.cpu,
        "wall_s": usage.wall,
        "proxy_busy": usage.cpu / usage.wall,
        "load_core_busy": usage.core_busy.get(LOAD_CORE),
        "proxy_core_busy": usage.core_busy.get(PROXY_CORE),
    }
    if connections:
        figures["cpu_us_per_connection"] = usage.cpu / connections * 1e6
        if usage.cpu > 0:
            figures["per_core_second"] = connections / usage.cpu
    return figures
