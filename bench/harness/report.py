"""Statistics over the repetitions and the markdown report."""

import statistics

from .system import LOAD_CORE, PROXY_CORE


def summary(values):
    """(median, min, max) of the non-missing values, or None."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    return statistics.median(values), min(values), max(values)


def series(raw, key, target, value):
    return [run.get(value) for run in raw.get(key, {}).get(target, [])]


def paired(raw, key, target, value, how):
    """Per repetition, `how(target's value, direct's value)` from the same repetition."""
    mine, direct = series(raw, key, target, value), series(raw, key, "direct", value)
    return [
        how(m, d) if m is not None and d not in (None, 0) else None for m, d in zip(mine, direct)
    ]


def ratio(m, d):
    return m / d


def delta(m, d):
    return m - d


def fmt(stat, digits=0, scale=1.0):
    """`median (min–max)`."""
    if stat is None:
        return "—"
    med, lo, hi = (v * scale for v in stat)
    if lo == hi:
        return f"{med:,.{digits}f}"
    return f"{med:,.{digits}f} ({lo:,.{digits}f}–{hi:,.{digits}f})"


def fmt_pct(stat):
    if stat is None:
        return "—"
    med, lo, hi = (round(v * 100) for v in stat)
    return f"{med}%" if lo == hi else f"{med}% ({lo}–{hi})"


def fmt_ratio(stat):
    return "—" if stat is None else f"×{stat[0]:.2f} ({stat[1]:.2f}–{stat[2]:.2f})"


def fmt_added(added, rat):
    if added is None:
        return "—"
    return f"{added[0]:+,.0f} ({added[1]:+,.0f}…{added[2]:+,.0f}), ×{rat[0]:.2f}"


def report(raw, settings, info, target_list, args, errors):
    names = [t.name for t in target_list]
    n = settings.repetitions
    out = []
    out.append("# Skiff benchmark results\n")
    out.append(
        f"Command: `{args.command_line}`{' (quick mode: indicative only)' if args.quick else ''}\n"
    )
    out.append("| machine | |\n|---|---|")
    out.extend(f"| {k} | {v} |" for k, v in info.items())
    out.append("")
    out.append(
        f"Every cell is the median of {n} repetitions with (min–max); ratios and differences to "
        "`direct` are computed per repetition against direct measured in the same repetition, then "
        "summarised the same way. Proxies (skiff, nginx, haproxy) are pinned to core "
        f"{PROXY_CORE}; load generators and the upstream to core {LOAD_CORE}. **Each proxy gets "
        "one core and one worker**: skiff's default single-threaded runtime, nginx "
        "`worker_processes 1`, haproxy `nbthread 1`. skiff-2hop counts both sidecars (CPU and "
        "memory added up; both share the proxy core).\n"
    )
    out.append("| target | path |\n|---|---|")
    out.extend(f"| {t.name} | {t.description} |" for t in target_list)
    out.append("")

    for rate in settings.rates:
        key = f"h1_latency@{rate}"
        out.append(
            f"## HTTP/1.1 latency at {rate:,} req/s (µs)\n\n"
            f"oha open-loop at a fixed rate with latency correction (no coordinated omission), "
            f"{settings.latency_connections} keep-alive connections, {settings.latency_seconds} s per run. "
            "*added* = target − direct within each repetition: median (min…max) in µs, then the median ratio to direct.\n"
        )
        out.append(
            "| target | p50 | p99 | p99.9 | p50 added | p99 added | p99.9 added | proxy CPU µs/req |"
        )
        out.append("|---|---|---|---|---|---|---|---|")
        for name in names:
            cells = [
                fmt(summary(series(raw, key, name, p))) for p in ("p50_us", "p99_us", "p99.9_us")
            ]
            for p in ("p50_us", "p99_us", "p99.9_us"):
                if name == "direct":
                    cells.append("—")
                else:
                    cells.append(
                        fmt_added(
                            summary(paired(raw, key, name, p, delta)),
                            summary(paired(raw, key, name, p, ratio)),
                        )
                    )
            cells.append(
                fmt(summary(series(raw, key, name, "cpu_us_per_request")), 1)
                if name != "direct"
                else "—"
            )
            out.append(f"| {name} | " + " | ".join(cells) + " |")
        out.append("")

    out.append(
        "## Throughput, proxy on one core\n\n"
        f"HTTP/1.1: h2load --h1, {settings.h1_connections} keep-alive connections, one request at a time "
        f"each. h2c: h2load, {settings.h2_connections} connections × {settings.h2_streams} concurrent streams "
        "(nginx speaks HTTP/1.1 to the upstream, haproxy and skiff HTTP/2). TCP: one connection of opaque "
        "bulk transfer, GB/s = 10⁹ bytes/s. Each run lasts "
        f"{settings.throughput_seconds} s (TCP {settings.tcp_seconds} s).\n"
    )
    columns = [
        ("h1_throughput", "rps", "HTTP/1.1 req/s", 0),
        ("h2_throughput", "rps", "h2c req/s", 0),
        ("tcp_download", "gbps", "TCP download GB/s", 2),
        ("tcp_upload", "gbps", "TCP upload GB/s", 2),
    ]
    out.append(
        "| target | " + " | ".join(f"{title} | vs direct" for _, _, title, _ in columns) + " |"
    )
    out.append("|---|" + "---|---|" * len(columns))
    for name in names:
        cells = []
        for key, value, _, digits in columns:
            cells.append(fmt(summary(series(raw, key, name, value)), digits))
            cells.append(
                "—"
                if name == "direct"
                else fmt_ratio(summary(paired(raw, key, name, value, ratio)))
            )
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    out.append("")

    out.append(
        "### Which core was the limit\n\n"
        f"Busy share of each core during the throughput runs (/proc/stat; 100% = saturated). Core {LOAD_CORE} "
        f"runs the load generator and the upstream, core {PROXY_CORE} the proxy; *proxy* is the proxy "
        "processes' own CPU time ÷ wall time. When the load core is saturated and the proxy is not, the "
        "req/s understate the proxy: its capacity on one core is 10⁶ ÷ CPU µs/req (next table).\n"
    )
    out.append(
        f"| target | HTTP/1.1 core {LOAD_CORE} | core {PROXY_CORE} | proxy | h2c core {LOAD_CORE} | core {PROXY_CORE} | proxy | TCP download core {LOAD_CORE} | core {PROXY_CORE} | proxy |"
    )
    out.append("|---|---|---|---|---|---|---|---|---|---|")
    for name in names:
        cells = []
        for key, values in (
            ("h1_throughput", ("load_core_busy", "proxy_core_busy", "proxy_busy")),
            ("h2_throughput", ("load_core_busy", "proxy_core_busy", "proxy_busy")),
            ("tcp_download", ("load_core_busy", "proxy_core_busy", "proxy_busy")),
        ):
            for value in values:
                cells.append(
                    "—"
                    if name == "direct" and value == "proxy_busy"
                    else fmt_pct(summary(series(raw, key, name, value)))
                )
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    background = summary(
        [
            run.get("proxy_core_busy")
            for by_target in raw.values()
            for run in by_target.get("direct", [])
        ]
    )
    if background:
        out.append(
            f"\nBackground on core {PROXY_CORE} during the direct runs (nothing of the benchmark runs there "
            f"then): median {background[0]:.0%}, max {background[2]:.0%}. More than a few percent means other "
            "work shared the machine and the figures are noisier than their min–max suggests."
        )
    out.append("")

    reference = 2000 if 2000 in settings.rates else settings.rates[0]
    out.append(
        "## Cost of the proxy\n\n"
        "CPU µs/req = the proxy processes' utime+stime (/proc/PID/stat) during the run ÷ requests "
        f"completed (at {reference:,} req/s: see the latency table). RSS = VmRSS (/proc/PID/status; nginx: "
        "master + worker): idle = fresh process after one request; under load = peak during the HTTP/1.1 "
        f"run at {reference:,} req/s and at maximum throughput; per idle connection = growth with "
        f"{settings.idle_connections} idle keep-alive connections (one request each) through the proxy.\n"
    )
    out.append(
        f"| target | CPU µs/req HTTP/1.1 max | CPU µs/req h2c max | CPU µs/req @{reference:,} | RSS idle MiB "
        f"| RSS @{reference:,} req/s MiB | RSS max load MiB | KiB per idle connection |"
    )
    out.append("|---|---|---|---|---|---|---|---|")
    for name in names:
        if name == "direct":
            out.append("| direct | — (no proxy) | — | — | — | — | — | — |")
            continue
        out.append(
            f"| {name} | {fmt(summary(series(raw, 'h1_throughput', name, 'cpu_us_per_request')), 1)} "
            f"| {fmt(summary(series(raw, 'h2_throughput', name, 'cpu_us_per_request')), 1)} "
            f"| {fmt(summary(series(raw, f'h1_latency@{reference}', name, 'cpu_us_per_request')), 1)} "
            f"| {fmt(summary(series(raw, 'memory', name, 'idle_rss_kib')), 1, 1 / 1024)} "
            f"| {fmt(summary(series(raw, f'h1_latency@{reference}', name, 'peak_rss_kib')), 1, 1 / 1024)} "
            f"| {fmt(summary(series(raw, 'h1_throughput', name, 'peak_rss_kib')), 1, 1 / 1024)} "
            f"| {fmt(summary(series(raw, 'memory', name, 'kib_per_1000_idle')), 1, 1 / 1000)} |"
        )
    for name in names:
        splits = []
        for key, label in (
            ("h1_throughput", "HTTP/1.1 max"),
            ("h2_throughput", "h2c max"),
            (f"h1_latency@{reference}", f"@{reference:,}"),
        ):
            runs = raw.get(key, {}).get(name, [])
            proxies = runs[0].get("cpu_us_per_request_by_proxy", {}) if runs else {}
            if proxies:
                parts = [
                    f"{proxy} {fmt(summary([r.get('cpu_us_per_request_by_proxy', {}).get(proxy) for r in runs]), 1)}"
                    for proxy in proxies
                ]
                splits.append(f"{label}: " + " + ".join(parts))
        if splits:
            out.append(f"\n{name}, CPU µs/req per proxy: " + "; ".join(splits) + ".")
    out.append("")
    if errors:
        out.append("## Errors during the run\n")
        out.append(
            "Figures with failed requests are suspect (a proxy answering errors fast looks fast):\n"
        )
        out.extend(f"- {e}" for e in errors)
    else:
        out.append(
            "No request failed in any run (every response was 200; h2load counted no failure)."
        )
    out.append("")
    return "\n".join(out)


def collect_errors(raw):
    errors = []
    for key, by_target in raw.items():
        for name, runs in by_target.items():
            for i, values in enumerate(runs):
                if values.get("errors"):
                    errors.append(
                        f"{key} on {name}, repetition {i + 1}: {values['errors']} errors {values.get('error_kinds', '')}"
                    )
    return errors
