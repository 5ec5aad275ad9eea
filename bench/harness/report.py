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


def paired(raw, key, target, value, how, against="direct"):
    """Per repetition, `how(target's value, against's value)` from the same repetition."""
    mine, other = series(raw, key, target, value), series(raw, key, against, value)
    return [
        how(m, d) if m is not None and d not in (None, 0) else None for m, d in zip(mine, other)
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
        "`worker_processes 1`, haproxy `nbthread 1`. skiff-2hop and skiff-2hop-mtls count both "
        "sidecars (CPU and memory added up; both share the proxy core).\n"
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
    out.extend(mtls_section(raw, settings, names, reference))
    out.extend(handshake_section(raw, settings, names))
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


# The mTLS target and the plaintext one it is compared with.
MTLS_TARGET = "skiff-2hop-mtls"
PLAINTEXT_TARGET = "skiff-2hop"


def mtls_section(raw, settings, names, reference):
    """skiff-2hop-mtls against skiff-2hop, figure by figure, paired within each repetition."""
    if MTLS_TARGET not in names or PLAINTEXT_TARGET not in names:
        return []
    out = [
        "## mTLS between sidecars: skiff-2hop-mtls against skiff-2hop\n",
        "The same two hops (client sidecar → server sidecar → upstream, both sidecars on the proxy "
        "core), once in plaintext and once with identities from skiff-control: TLS 1.3 between "
        "the sidecars, HTTP/1.1 and h2c carried over one pooled HTTP/2 connection (ALPN "
        "`skiff/h2`), TCP over a TLS connection of its own (`skiff/tcp`). *mTLS − plaintext* and "
        "*mTLS ÷ plaintext* are computed within each repetition, then summarised: median "
        "(min…max). CPU and memory count both sidecars.\n",
        f"| figure | {PLAINTEXT_TARGET} | {MTLS_TARGET} | mTLS − plaintext | mTLS ÷ plaintext |",
        "|---|---|---|---|---|",
    ]
    rows = []
    for rate in settings.rates:
        for value, label in (("p50_us", "p50"), ("p99_us", "p99")):
            rows.append((f"{label} @{rate:,} req/s (µs)", f"h1_latency@{rate}", value, 0, 1.0))
    rows += [
        ("HTTP/1.1 req/s (max)", "h1_throughput", "rps", 0, 1.0),
        ("h2c req/s (max)", "h2_throughput", "rps", 0, 1.0),
        ("TCP download GB/s", "tcp_download", "gbps", 2, 1.0),
        ("TCP upload GB/s", "tcp_upload", "gbps", 2, 1.0),
        ("CPU µs/req, HTTP/1.1 max", "h1_throughput", "cpu_us_per_request", 1, 1.0),
        ("CPU µs/req, h2c max", "h2_throughput", "cpu_us_per_request", 1, 1.0),
        (f"CPU µs/req @{reference:,}", f"h1_latency@{reference}", "cpu_us_per_request", 1, 1.0),
        ("RSS idle (MiB)", "memory", "idle_rss_kib", 1, 1 / 1024),
        ("KiB per idle connection", "memory", "kib_per_1000_idle", 1, 1 / 1000),
    ]
    for label, key, value, digits, scale in rows:
        difference = summary(paired(raw, key, MTLS_TARGET, value, delta, PLAINTEXT_TARGET))
        quotient = summary(paired(raw, key, MTLS_TARGET, value, ratio, PLAINTEXT_TARGET))
        out.append(
            f"| {label} "
            f"| {fmt(summary(series(raw, key, PLAINTEXT_TARGET, value)), digits, scale)} "
            f"| {fmt(summary(series(raw, key, MTLS_TARGET, value)), digits, scale)} "
            f"| {fmt_signed(difference, digits, scale)} "
            f"| {fmt_ratio(quotient)} |"
        )
    out.append("")
    return out


def fmt_signed(stat, digits, scale):
    if stat is None:
        return "—"
    med, lo, hi = (v * scale for v in stat)
    return f"{med:+,.{digits}f} ({lo:+,.{digits}f}…{hi:+,.{digits}f})"


HANDSHAKE_KINDS = (
    ("plaintext", "plaintext TCP (no TLS)"),
    ("full", "mTLS, full handshake"),
    ("resumed", "mTLS, resumed (TLS 1.3 ticket)"),
)


def handshake_section(raw, settings, names):
    """New connections per second into one sidecar on one core."""
    measured = [n for n in names if raw.get("handshakes_full", {}).get(n)]
    if not measured:
        return []
    out = [
        "## Handshakes per second on one core\n",
        "`skiff-bench handshakes` in the plain pod (core "
        f"{LOAD_CORE}) opens new connections to a port of the mTLS server pod, which its capture "
        f"sends to the sidecar's inbound port (the sidecar: one worker, pinned to core "
        f"{PROXY_CORE}), {settings.handshake_concurrency} at a time for "
        f"{settings.handshake_seconds} s each kind. Each completes a TLS 1.3 handshake (ALPN "
        "`skiff/tcp`, X25519, ECDSA P-256 leaves on both sides, the client's certificate signed by "
        "the control plane's root and the sidecar's verified against `ca-bundle.pem` and its SPIFFE "
        "ID), then sends `close\\n` to the app behind the sidecar, which closes at once, reads until "
        "the sidecar has forwarded that close, and closes too (the server side closes first: no "
        "client port is held in TIME-WAIT). *Per core* is what one core of "
        "the sidecar sustains: connections ÷ the sidecar's CPU seconds (10⁶ ÷ CPU µs per "
        "connection), whichever core was the limit of the measured rate. *TLS cost* is the "
        "sidecar's CPU per connection minus that of plaintext, within each repetition.\n",
        "| target | connection | connections/s measured | sidecar CPU µs/connection "
        "| **per core: connections/s** | TLS cost µs | sidecar busy | core "
        f"{LOAD_CORE} busy | resumed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in measured:
        for mode, label in HANDSHAKE_KINDS:
            key = f"handshakes_{mode}"
            runs = raw.get(key, {}).get(name, [])
            if not runs:
                continue
            tls_cost = (
                "—"
                if mode == "plaintext"
                else fmt_signed(
                    summary(
                        [
                            m - p if m is not None and p is not None else None
                            for m, p in zip(
                                series(raw, key, name, "cpu_us_per_connection"),
                                series(raw, "handshakes_plaintext", name, "cpu_us_per_connection"),
                            )
                        ]
                    ),
                    1,
                    1.0,
                )
            )
            shares = [
                r["resumed"] / max(r["full"] + r["resumed"], 1)
                for r in runs
                if r.get("full") is not None
            ]
            out.append(
                f"| {name} | {label} "
                f"| {fmt(summary(series(raw, key, name, 'per_second')))} "
                f"| {fmt(summary(series(raw, key, name, 'cpu_us_per_connection')), 1)} "
                f"| **{fmt(summary(series(raw, key, name, 'per_core_second')))}** "
                f"| {tls_cost} "
                f"| {fmt_pct(summary(series(raw, key, name, 'proxy_busy')))} "
                f"| {fmt_pct(summary(series(raw, key, name, 'load_core_busy')))} "
                f"| {'—' if mode == 'plaintext' else fmt_pct(summary(shares))} |"
            )
    negotiated = {}
    for mode in ("full", "resumed"):
        for name in measured:
            for values in raw.get(f"handshakes_{mode}", {}).get(name, []):
                for parameters, n in (values.get("negotiated") or {}).items():
                    negotiated[parameters] = negotiated.get(parameters, 0) + n
    if negotiated:
        out.append(
            "\nNegotiated (cipher suite / key exchange, TLS connections of the run): "
            + ", ".join(f"{p} × {n:,}" for p, n in sorted(negotiated.items()))
            + "."
        )
    out.append("")
    return out
