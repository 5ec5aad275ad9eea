#!/usr/bin/env python3
"""The control plane's fan-out: N simulated proxies (1,000 and 10,000) on one `skiff-control`,
the time from a policy file edit until every proxy has ACKed it, and what each connected proxy
costs the control plane.

Run it through `make bench-fanout` (builds release binaries first), or directly:
`python3 bench/fanout.py [--quick]`. Needs no root and nothing outside the standard library:
everything runs on 127.0.0.1. bench/README.md explains the method.

For each scenario and each N: a fresh `skiff-control` pinned to core 1, watching an empty
directory; `skiff-bench fanout` pinned to core 0 writes the generated policy there, connects N
proxies, edits the policy several times and prints its measurements as JSON (see
bench/src/fanout/mod.rs). This script starts and stops the processes, keeps their logs, and
writes the tables.
"""

import argparse
import datetime
import fcntl
import json
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from harness.report import fmt, summary
from harness.system import (
    LOAD_CORE,
    PROXY_CORE,
    WORKSPACE,
    cpuidle,
    first_line,
    log,
    meminfo_total,
    run,
    stop,
    wait_for,
)

BENCH_DIR = Path(__file__).resolve().parent
# Shared with bench/run.py: two benchmarks on one 2-core machine would measure each other.
LOCK_FILE = "/run/skiff-bench.lock"


@dataclass
class Scenario:
    """One mix of proxies and policy, measured at each N in `proxies`."""

    key: str
    title: str
    proxies: list
    args: list  # extra arguments of `skiff-bench fanout`
    poll_interval: str = None  # skiff-control --poll-interval; None: --poll-interval of this script


# Every simulated proxy advertises HTTP/2 frames of up to 1 MiB, as skiff-proxy does.
FRAME = ["--max-frame-size", str(1 << 20)]

SCENARIOS = [
    Scenario(
        "replicas",
        "replicas of 100 workloads; 5 pods per workload listed as endpoints (policy fixed)",
        [1000, 10000],
        ["--endpoints-per-workload", "5", *FRAME],
    ),
    Scenario(
        "own-workload",
        "every proxy its own workload (no two views alike); same policy",
        [1000, 10000],
        ["--endpoints-per-workload", "5", "--workload-per-proxy", *FRAME],
    ),
    Scenario(
        "all-endpoints",
        "replicas of 100 workloads, every pod an endpoint (policy grows with N)",
        [1000, 10000],
        ["--endpoints-per-workload", "0", *FRAME],
    ),
]

GOAL_SECONDS = 1.0


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def answers(url):
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def measure(tools, scenario, proxies, args, run_dir):
    """One fresh control plane, one simulator run: the simulator's JSON."""
    run_dir.mkdir(parents=True)
    policy = run_dir / "policy"
    policy.mkdir()
    api, admin = free_port(), free_port()
    control_log = run_dir / "control.log"
    with open(control_log, "w") as out:
        control = subprocess.Popen(
            [
                "taskset", "-c", str(PROXY_CORE), tools["skiff-control"],
                "--policy", str(policy),
                "--listen", f"127.0.0.1:{api}",
                "--admin", f"127.0.0.1:{admin}",
                "--poll-interval", scenario.poll_interval or args.poll_interval,
                "--ca-dir", str(run_dir / "ca"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "SKIFF_LOG": os.environ.get("SKIFF_BENCH_LOG", "info")},
        )  # fmt: skip
    control.log_path = control_log
    try:
        wait_for(
            "skiff-control", lambda: answers(f"http://127.0.0.1:{admin}/healthz/live"), control
        )
        argv = [
            "taskset", "-c", str(LOAD_CORE), tools["skiff-bench"], "fanout",
            "--control-plane", f"127.0.0.1:{api}",
            "--admin", f"127.0.0.1:{admin}",
            "--pid", control.pid,
            "--policy-dir", policy,
            "--ca-dir", run_dir / "ca",
            "--proxies", proxies,
            "--edits", args.edits,
            "--connect-rate", args.connect_rate,
            "--decode", args.decode,
            *scenario.args,
        ]  # fmt: skip
        (run_dir / "command").write_text(" ".join(map(str, argv)) + "\n")
        sim = run(argv, timeout=1800, env={**os.environ, "RUST_BACKTRACE": "0"})
        (run_dir / "simulator.log").write_text(sim.stderr)
        for line in sim.stderr.splitlines():
            log(f"  {line}")
        return json.loads(sim.stdout)
    finally:
        stop(control)


def delivery_table(results):
    head = (
        "| Scenario | Proxies | Config | Rename → all ACKed | of which: rename → published "
        "| published → all ACKed | Per proxy p50 / p99 from rename | from published "
        "| All in < 1 s |\n"
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|\n"
    )
    rows = []
    for key, proxies, result in results:
        edits = result["edits"]
        col = lambda name: summary([e[name] for e in edits])  # noqa: E731
        total = col("rename_to_last_ack_ms")
        met = sum(e["rename_to_last_ack_ms"] < GOAL_SECONDS * 1000 for e in edits)
        config_kb = edits[0]["bytes_received"] / proxies / 1000
        rows.append(
            f"| {key} | {proxies:,} | {config_kb:,.0f} kB "
            f"| **{fmt(total)} ms** | {fmt(col('rename_to_published_ms'))} ms "
            f"| {fmt(col('published_to_last_ack_ms'))} ms "
            f"| {fmt(col('p50_from_rename_ms'))} / {fmt(col('p99_from_rename_ms'))} ms "
            f"| {fmt(col('p50_from_published_ms'))} / {fmt(col('p99_from_published_ms'))} ms "
            f"| {met} of {len(edits)} edits |"
        )
    return head + "\n".join(rows) + "\n"


def cost_table(results):
    head = (
        "| Scenario | Proxies | Control plane CPU per fan-out | Sent per fan-out "
        "| RSS: policy loaded | N connected | after the edits | **Per connected proxy** "
        "| Connect + first sync |\n"
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|\n"
    )
    rows = []
    for key, proxies, result in results:
        edits = result["edits"]
        rss = result["rss_kib"]
        cpu = summary([e["control_cpu_seconds"] for e in edits])
        sent = edits[0]["bytes_received"] / 1e6
        rows.append(
            f"| {key} | {proxies:,} | {fmt(cpu, 2)} s | {sent:,.0f} MB "
            f"| {rss['idle'] / 1024:,.0f} MiB | {rss['connected'] / 1024:,.0f} MiB "
            f"| {rss['after_edits'] / 1024:,.0f} MiB | **{result['kib_per_proxy']:.1f} KiB** "
            f"| {result['connect_and_sync_seconds']:.1f} s |"
        )
    return head + "\n".join(rows) + "\n"


def report(results, info, args):
    scenarios = {s.key: s for s in SCENARIOS}
    used = []
    for key, _, _ in results:
        if key not in used:
            used.append(key)
    lines = [
        "# Control plane fan-out",
        "",
        f"Command: `{args.command_line}`. Each cell: median (min–max) over "
        f"{args.edits} edits; the edits change one HTTPRoute's weights (temporary file + "
        "rename). *Published* is the control plane's "
        "`skiff_control_snapshot_published_timestamp_seconds`; the control plane polls the "
        f"directory every {args.poll_interval} (unless the scenario says otherwise), so "
        "*rename → published* is that poll plus the reload (read, parse, validate).",
        "",
        "| Scenario | What |",
        "|---|---|",
        *[f"| {key} | {scenarios[key].title} |" for key in used],
        "",
        "## Time until every proxy has ACKed an edit",
        "",
        delivery_table(results),
        "## What it costs the control plane",
        "",
        cost_table(results),
        "*Per connected proxy*: (RSS with N connected − RSS with the policy loaded) ÷ N. CPU: "
        "utime + stime of the control plane from just before the rename until it counted every "
        "ACK (10 ms resolution).",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in info.items()],
        "",
    ]
    return "\n".join(lines)


def machine(tools):
    cpu = "unknown"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    commit = run(["git", "-C", WORKSPACE, "rev-parse", "--short=12", "HEAD"], check=False)
    dirty = run(["git", "-C", WORKSPACE, "status", "--porcelain"], check=False).stdout.strip()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{cpu}, {os.cpu_count()} CPUs",
        "memory": meminfo_total(),
        "kernel": platform.release(),
        "cpuidle driver / governor": cpuidle(),
        "open files (per process)": f"{soft}",
        "pinning": f"skiff-control on core {PROXY_CORE} (its default multi-threaded runtime), "
        f"the simulator on core {LOAD_CORE} (one thread), all on 127.0.0.1",
        "skiff commit": (commit.stdout.strip() or "unknown")
        + (" (work tree modified)" if dirty else ""),
        "rustc": first_line(["rustc", "--version"]),
        "python": platform.python_version(),
    }


def parse_args():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="2 edits, `replicas` only")
    parser.add_argument("--edits", type=int, default=5, help="edits measured per run")
    parser.add_argument(
        "--scenarios",
        default=",".join(s.key for s in SCENARIOS),
        help="comma-separated: " + ", ".join(s.key for s in SCENARIOS),
    )
    parser.add_argument(
        "--proxies", help="N for every scenario, comma-separated (default: each scenario's own)"
    )
    parser.add_argument(
        "--poll-interval", default="50ms", help="skiff-control --poll-interval (default 50ms, as skiff-control)"
    )
    parser.add_argument("--connect-rate", type=float, default=2000, help="new streams per second")
    parser.add_argument(
        "--decode", default="head", choices=["head", "full"], help="see `skiff-bench fanout -h`"
    )
    parser.add_argument(
        "--out", default=str(BENCH_DIR / "results"), help="results directory (bench/results)"
    )
    parser.add_argument(
        "--target-dir", default=os.environ.get("CARGO_TARGET_DIR", str(WORKSPACE / "target"))
    )
    args = parser.parse_args()
    if args.quick:
        args.edits = 2
        args.scenarios = "replicas"
    args.command_line = "make bench-fanout" + (
        " ARGS='" + " ".join(sys.argv[1:]) + "'" if len(sys.argv) > 1 else ""
    )
    return args


def main():
    args = parse_args()
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("the fan-out benchmark needs two CPUs (control plane and simulator)")
    by_key = {s.key: s for s in SCENARIOS}
    unknown = [k for k in args.scenarios.split(",") if k not in by_key]
    if unknown:
        raise SystemExit(f"unknown scenarios {unknown}; there are {', '.join(by_key)}")
    scenarios = [by_key[k] for k in args.scenarios.split(",")]
    if args.proxies:
        for scenario in scenarios:
            scenario.proxies = [int(n) for n in args.proxies.split(",")]

    target_dir = Path(args.target_dir)
    if not target_dir.is_absolute():
        target_dir = WORKSPACE / target_dir
    tools = {}
    for name in ("skiff-control", "skiff-bench"):
        path = target_dir / "release" / name
        if not os.access(path, os.X_OK):
            raise SystemExit(f"{path} not found (run `make bench-fanout`, which builds it)")
        tools[name] = str(path)

    # Every proxy is a socket in the simulator and one in the control plane.
    largest = max(n for s in scenarios for n in s.proxies)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < largest + 256:
        raise SystemExit(f"{largest:,} proxies need more open files than the limit ({hard})")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    os.sched_setaffinity(0, {LOAD_CORE})

    try:
        lock = open(LOCK_FILE, "w")
    except OSError as error:
        log(f"cannot open {LOCK_FILE} ({error}); not checking for another benchmark")
    else:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"another benchmark is running (lock {LOCK_FILE}); waiting for it to finish")
            fcntl.flock(lock, fcntl.LOCK_EX)

    out_dir = Path(args.out)
    run_root = out_dir / "fanout-run"
    shutil.rmtree(run_root, ignore_errors=True)
    info = machine(tools)
    started = time.monotonic()
    results = []
    for scenario in scenarios:
        for proxies in scenario.proxies:
            log(f"{scenario.key}: {proxies:,} proxies")
            result = measure(tools, scenario, proxies, args, run_root / f"{scenario.key}-{proxies}")
            results.append((scenario.key, proxies, result))
    info["duration"] = f"{time.monotonic() - started:.0f} s"
    markdown = report(results, info, args)
    (out_dir / "fanout.md").write_text(markdown)
    (out_dir / "fanout.json").write_text(
        json.dumps(
            {
                "machine": info,
                "command": args.command_line,
                "results": [{"scenario": k, "proxies": n, **r} for k, n, r in results],
            },
            indent=1,
        )
    )
    print(markdown)
    print(f"Written: {out_dir / 'fanout.md'}, {out_dir / 'fanout.json'}, logs in {run_root}")


if __name__ == "__main__":
    main()
