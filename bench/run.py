#!/usr/bin/env python3
"""The Skiff benchmark: a direct connection, one and two Skiff hops (plaintext, and mTLS with
identities from a control plane), nginx and haproxy, side by side in one run, on one machine,
reported as medians with min-max and as ratios to direct; and mTLS handshakes per second on
the one core of a sidecar.

Run it through `make bench` (installs what it needs and builds release binaries first), or
directly as root: `target/bench-venv/bin/python bench/run.py [--quick]`. bench/README.md explains
the method and how to read the results.

This file holds the run itself: the settings of the two modes, the figures, the
repetitions with targets interleaved, the optional perf profile, and main. The pieces it uses
are in harness/ (see harness/__init__.py for the map).
"""

import argparse
import fcntl
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from harness.load import h2load, handshakes, memory, oha, tcp_bulk
from harness.mesh import NS_PREFIX, POD_NET, VIP_NET, Mesh, http_status
from harness.plots import plots
from harness.report import collect_errors, report
from harness.system import LOAD_CORE, WORKSPACE, log, machine, run
from harness.targets import all_proxies, targets

BENCH_DIR = Path(__file__).resolve().parent
LOCK_FILE = "/run/skiff-bench.lock"


@dataclass
class Settings:
    """How much of everything one run measures (`--quick` or the full default)."""

    repetitions: int
    rates: list  # HTTP/1.1 request rates (req/s) at which latency is measured, ascending
    latency_seconds: float
    throughput_seconds: float
    tcp_seconds: float
    warmup_seconds: float
    idle_connections: int
    latency_connections: int  # oha -c at a fixed rate
    h1_connections: int  # h2load --h1 -c at maximum throughput
    h2_connections: int  # h2load -c
    h2_streams: int  # h2load -m: concurrent streams per connection
    handshake_seconds: float  # each kind of connection of the handshake figure
    handshake_concurrency: int  # connections in flight during it


FULL = Settings(
    repetitions=5,
    rates=[1000, 2000, 5000],
    latency_seconds=5,
    throughput_seconds=5,
    tcp_seconds=3,
    warmup_seconds=1,
    idle_connections=1000,
    latency_connections=16,
    h1_connections=64,
    h2_connections=4,
    h2_streams=64,
    handshake_seconds=3,
    handshake_concurrency=32,
)
QUICK = Settings(
    repetitions=2,
    rates=[2000],
    latency_seconds=2,
    throughput_seconds=2,
    tcp_seconds=1,
    warmup_seconds=1,
    idle_connections=1000,
    latency_connections=16,
    h1_connections=64,
    h2_connections=4,
    h2_streams=64,
    handshake_seconds=2,
    handshake_concurrency=32,
)

# The kinds of connection of the handshake figure: plaintext first, the baseline to subtract.
HANDSHAKE_MODES = ("plaintext", "full", "resumed")


@dataclass
class Figure:
    """One thing measured on every target in every repetition."""

    key: str  # key in the raw results
    measure: object  # (target) -> dict of values


def figures(tools, settings):
    s = settings
    result = []
    for rate in s.rates:
        result.append(
            Figure(
                f"h1_latency@{rate}",
                lambda t, r=rate: oha(tools, t, s.latency_seconds, s.latency_connections, r),
            )
        )
    result += [
        Figure(
            "h1_throughput",
            lambda t: h2load(t, s.throughput_seconds, s.h1_connections, 1, http1=True),
        ),
        Figure(
            "h2_throughput",
            lambda t: h2load(t, s.throughput_seconds, s.h2_connections, s.h2_streams),
        ),
        Figure("tcp_download", lambda t: tcp_bulk(tools, t, s.tcp_seconds, "download")),
        Figure("tcp_upload", lambda t: tcp_bulk(tools, t, s.tcp_seconds, "upload")),
    ]
    return result


def warm_up(tools, target, settings):
    """HTTP/1.1 at the lowest fixed rate, so connections and pools exist and the code is paged in
    before measuring. Gentle on purpose: a burst at full speed would leave its memory in the
    proxy and inflate the RSS measured under the fixed-rate load that follows."""
    oha(tools, target, settings.warmup_seconds, settings.latency_connections, settings.rates[0])


def measure_all(tools, settings, target_list, mesh, rotate=True):
    """Every figure on every target, `settings.repetitions` times. In each repetition: fresh
    proxies for the memory figures (idle, then idle connections); fresh proxies again for the
    load figures (a warm-up, then latency from the lowest rate up, throughput, TCP, and last the
    handshakes into the server sidecar of an mTLS target), so neither inherits the other's
    memory. Each figure is measured on every target in turn (A B C … A B C …), the order
    rotating between repetitions."""
    raw = {}  # figure -> target -> [one dict per repetition]
    proxies = all_proxies(target_list)
    figure_list = figures(tools, settings)
    for rep in range(settings.repetitions):
        shift = rep % len(target_list) if rotate else 0
        order = target_list[shift:] + target_list[:shift]
        log(f"repetition {rep + 1}/{settings.repetitions}: order {' '.join(t.name for t in order)}")
        for proxy in proxies:
            proxy.start()
        try:
            time.sleep(0.5)
            for target in order:
                if target.proxies:
                    # A first request, so the memory counted as idle includes what serving needs.
                    http_status(target.ns, target.h1_url)
                    time.sleep(0.3)
                    record(raw, "memory", target, memory(tools, target, settings.idle_connections))
            for proxy in proxies:
                proxy.stop()
            for proxy in proxies:
                proxy.start()
            for target in order:
                warm_up(tools, target, settings)
            for figure in figure_list:
                for target in order:
                    try:
                        values = figure.measure(target)
                    except (RuntimeError, ValueError, subprocess.TimeoutExpired) as error:
                        # Keep the rest of the run; the report lists the failure.
                        values = {"errors": 1, "error_kinds": {"failed": str(error)[:500]}}
                    record(raw, figure.key, target, values)
            for target in order:
                if target.handshake_proxy is None:
                    continue
                for mode in HANDSHAKE_MODES:
                    try:
                        values = handshakes(
                            tools,
                            target,
                            mesh,
                            settings.handshake_seconds,
                            settings.handshake_concurrency,
                            mode,
                        )
                    except (RuntimeError, ValueError, subprocess.TimeoutExpired) as error:
                        values = {"errors": 1, "error_kinds": {"failed": str(error)[:500]}}
                    record(raw, f"handshakes_{mode}", target, values)
        finally:
            for proxy in proxies:
                proxy.stop()
    return raw


# What the progress log shows of each measurement.
LOGGED = (
    "rps",
    "p50_us",
    "p99_us",
    "gbps",
    "cpu_us_per_request",
    "idle_rss_kib",
    "per_second",
    "resumed",
    "cpu_us_per_connection",
    "errors",
)


def record(raw, key, target, values):
    raw.setdefault(key, {}).setdefault(target.name, []).append(values)
    brief = ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in values.items()
        if k in LOGGED
    )
    log(f"  {key:<18} {target.name:<11} {brief}")


def profile(tools, settings, target, out_dir):
    """`perf record` of the first proxy of `target` during an HTTP/1.1 throughput run; writes
    perf-NAME.data and the top of `perf report` (by object, then by symbol) as perf-NAME.txt."""
    if not shutil.which("perf"):
        log("perf not found (Debian: linux-perf): skipping the profile")
        return None
    pid = target.pids()[0]
    data = out_dir / f"perf-{target.name}.data"
    seconds = max(settings.throughput_seconds, 5)
    argv = [
        "perf",
        "record",
        "-F",
        999,
        "--call-graph",
        "dwarf,16384",
        "-p",
        pid,
        "-o",
        data,
        "--",
        "sleep",
        seconds + 1,
    ]
    recorder = subprocess.Popen(
        [str(a) for a in argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.5)
    h2load(target, seconds, settings.h1_connections, 1, http1=True)
    _, err = recorder.communicate(timeout=120)
    if recorder.returncode != 0 or not data.exists():
        log(f"perf record failed: {err.strip()[-500:]}")
        return None
    report_argv = ["perf", "report", "-i", data, "--stdio", "--no-children", "-g", "none"]
    by_object = run([*report_argv, "-F", "overhead,dso"], check=False, timeout=600)
    by_symbol = run(
        [*report_argv, "--percent-limit", "0.3", "-F", "overhead,dso,sym"], check=False, timeout=600
    )
    (out_dir / f"perf-{target.name}.txt").write_text(
        f"# perf record -F 999 --call-graph dwarf of {target.name} under HTTP/1.1 load "
        f"(h2load --h1, {settings.h1_connections} connections, {seconds} s).\n"
        f"# Call graphs: perf report -i {data}\n\n{by_object.stdout}\n{by_symbol.stdout}"
    )
    return out_dir / f"perf-{target.name}.txt"


def find_tool(name, candidates):
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if not found:
        raise SystemExit(f"{name} not found (run `make bench`, which installs and builds it)")
    return found


def parse_args():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a few seconds per figure, 2 repetitions: for development",
    )
    parser.add_argument("--repetitions", type=int, help="override the number of repetitions")
    parser.add_argument(
        "--rates", help="HTTP/1.1 rates for the latency figure, comma-separated (req/s)"
    )
    parser.add_argument(
        "--targets", help="only these targets, comma-separated (direct is always included)"
    )
    parser.add_argument(
        "--perf",
        action="store_true",
        help="also record a perf profile of skiff-1hop under HTTP/1.1 load",
    )
    parser.add_argument(
        "--out",
        default=str(BENCH_DIR / "results"),
        help="results directory (default bench/results)",
    )
    parser.add_argument(
        "--target-dir", default=os.environ.get("CARGO_TARGET_DIR", str(WORKSPACE / "target"))
    )
    args = parser.parse_args()
    args.command_line = "make bench" + (
        " ARGS='" + " ".join(sys.argv[1:]) + "'" if len(sys.argv) > 1 else ""
    )
    return args


def main():
    args = parse_args()
    if os.geteuid() != 0:
        raise SystemExit("the benchmark needs root (network namespaces, iptables, setpriv)")
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("the benchmark needs two CPUs (proxy on core 1, load on core 0)")
    settings = QUICK if args.quick else FULL
    if args.repetitions:
        settings.repetitions = args.repetitions
    if args.rates:
        settings.rates = sorted(int(r) for r in args.rates.split(","))

    target_dir = Path(args.target_dir)
    if not target_dir.is_absolute():
        target_dir = WORKSPACE / target_dir
    cargo_home = Path(os.environ.get("CARGO_HOME", Path.home() / ".cargo"))
    tools = {
        "skiff-proxy": find_tool(
            "skiff-proxy",
            [os.environ.get("SKIFF_PROXY_BIN"), target_dir / "release" / "skiff-proxy"],
        ),
        "skiff-bench": find_tool("skiff-bench", [target_dir / "release" / "skiff-bench"]),
        "skiff-control": find_tool(
            "skiff-control",
            [os.environ.get("SKIFF_CONTROL_BIN"), target_dir / "release" / "skiff-control"],
        ),
        "oha": find_tool("oha", [shutil.which("oha"), cargo_home / "bin" / "oha"]),
    }

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    run_dir = out_dir / "run"
    shutil.rmtree(run_dir, ignore_errors=True)

    lock = open(LOCK_FILE, "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise SystemExit(f"another benchmark is running (lock {LOCK_FILE})") from None

    # This script and everything it starts stays off the proxy core unless pinned there.
    os.sched_setaffinity(0, {LOAD_CORE})
    # 1000 idle connections need more descriptors than the usual soft limit of 1024, in the
    # client and in every proxy; children inherit the limit.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (65536, max(hard, 65536)))
    except (ValueError, OSError):  # no CAP_SYS_RESOURCE (a container): the hard limit it is
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    info = machine(tools)
    started = time.monotonic()
    mesh = Mesh(run_dir)
    # SIGTERM (e.g. a CI timeout) ends the run through the same cleanup as an exception.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        log(f"mesh: namespaces {NS_PREFIX}*, pods on {POD_NET}.0/24, VIPs on {VIP_NET}.0/24")
        mesh.create()
        mesh.write_policy()
        for pod in ("upstream", "server", "mtls-server"):
            mesh.start_upstream(pod, tools["skiff-bench"])
        target_list = targets(mesh, tools["skiff-proxy"])
        if args.targets:
            wanted = {"direct", *args.targets.split(",")}
            unknown = wanted - {t.name for t in target_list}
            if unknown:
                raise SystemExit(
                    f"unknown targets {', '.join(sorted(unknown))}; there are "
                    + ", ".join(t.name for t in target_list)
                )
            target_list = [t for t in target_list if t.name in wanted]
        if any(getattr(proxy, "mtls", False) for proxy in all_proxies(target_list)):
            mesh.start_control_plane(tools["skiff-control"])
        for proxy in all_proxies(target_list):
            proxy.prepare()

        raw = measure_all(tools, settings, target_list, mesh)
        perf_report = None
        if args.perf:
            skiff = next((t for t in target_list if t.name == "skiff-1hop"), None)
            if skiff:
                for proxy in all_proxies([skiff]):
                    proxy.start()
                try:
                    perf_report = profile(tools, settings, skiff, out_dir)
                finally:
                    for proxy in all_proxies([skiff]):
                        proxy.stop()
    finally:
        mesh.close()

    errors = collect_errors(raw)
    info["mode"] = f"{'quick' if args.quick else 'full'}: {settings.repetitions} repetitions"
    info["duration"] = f"{time.monotonic() - started:.0f} s"
    markdown = report(raw, settings, info, target_list, args, errors)
    (out_dir / "results.md").write_text(markdown)
    (out_dir / "raw.json").write_text(
        json.dumps(
            {
                "machine": info,
                "settings": settings.__dict__,
                "command": args.command_line,
                "results": raw,
            },
            indent=1,
        )
    )
    written = plots(raw, settings, target_list, out_dir)
    print(markdown)
    print(
        f"Written: {out_dir / 'results.md'}, {out_dir / 'raw.json'}, "
        + ", ".join(str(p) for p in written)
        + (f", {perf_report}" if perf_report else "")
    )
    log(f"done in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
