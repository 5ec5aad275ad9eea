"""The PNG plots: latency percentiles, throughput and cost per target, and the handshakes per
second of a sidecar."""

from .report import paired, ratio, series, summary
from .system import PROXY_CORE


def plots(raw, settings, target_list, out_dir):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.patches
    import matplotlib.pyplot as plt

    names = [t.name for t in target_list]
    colors = {
        "direct": "#7f7f7f",
        "skiff-1hop": "#1f77b4",
        "skiff-2hop": "#6baed6",
        "skiff-2hop-mtls": "#9467bd",
        "nginx": "#2ca02c",
        "haproxy": "#d62728",
    }
    written = []

    def bars(ax, key, value, scale=1.0, label_digits=0):
        stats = [summary(series(raw, key, name, value)) for name in names]
        medians = [s[0] * scale if s else 0 for s in stats]
        low = [(s[0] - s[1]) * scale if s else 0 for s in stats]
        high = [(s[2] - s[0]) * scale if s else 0 for s in stats]
        ax.bar(
            names,
            medians,
            yerr=[low, high],
            capsize=4,
            color=[colors.get(n, "#999") for n in names],
        )
        for i, (name, m) in enumerate(zip(names, medians)):
            text = f"{m:,.{label_digits}f}"
            # The same ratio as the table: per repetition against direct, then the median.
            against_direct = summary(paired(raw, key, name, value, ratio))
            if name != "direct" and against_direct:
                text += f"\n×{against_direct[0]:.2f}"
            ax.annotate(
                text,
                (i, m + high[i]),  # above the whisker
                ha="center",
                va="bottom",
                fontsize=8,
                xytext=(0, 3),
                textcoords="offset points",
            )
        ax.tick_params(axis="x", labelrotation=20)
        ax.margins(y=0.2)

    # Latency percentiles per target, one panel per rate.
    fig, axes = plt.subplots(
        1, len(settings.rates), figsize=(6 * len(settings.rates), 4.8), squeeze=False
    )
    percentiles = [("p50_us", "p50"), ("p99_us", "p99"), ("p99.9_us", "p99.9")]
    width = 0.8 / len(percentiles)
    for ax, rate in zip(axes[0], settings.rates):
        key = f"h1_latency@{rate}"
        for j, (value, label) in enumerate(percentiles):
            stats = [summary(series(raw, key, name, value)) for name in names]
            xs = [i + (j - 1) * width for i in range(len(names))]
            med = [s[0] if s else 0 for s in stats]
            err = [
                [s[0] - s[1] if s else 0 for s in stats],
                [s[2] - s[0] if s else 0 for s in stats],
            ]
            ax.bar(
                xs,
                med,
                width,
                yerr=err,
                capsize=3,
                label=label,
                alpha=[1.0, 0.7, 0.45][j],
                color=[colors.get(n, "#999") for n in names],
                edgecolor="black",
                linewidth=0.4,
            )
            for x, m, top in zip(xs, med, err[1]):
                ax.annotate(
                    f"{m:,.0f}",
                    (x, m + top),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    xytext=(0, 2),
                    textcoords="offset points",
                )
        ax.set_xticks(range(len(names)), names, rotation=20)
        ax.set_yscale("log")
        ax.set_ylabel("latency (µs, log scale)")
        ax.set_title(f"HTTP/1.1 at {rate:,} req/s\n(median of the runs; whiskers min–max)")
        handles = [
            matplotlib.patches.Patch(facecolor="#999", alpha=a, edgecolor="black", label=label)
            for a, (_, label) in zip([1.0, 0.7, 0.45], percentiles)
        ]
        ax.legend(handles=handles, fontsize=8, loc="upper left")
    fig.suptitle("Latency at a fixed request rate (oha open-loop, latency-corrected)")
    fig.tight_layout()
    fig.savefig(out_dir / "latency.png", dpi=110)
    plt.close(fig)
    written.append(out_dir / "latency.png")

    # Throughput per target.
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    bars(axes[0][0], "h1_throughput", "rps")
    axes[0][0].set_title(f"HTTP/1.1 req/s ({settings.h1_connections} connections)")
    bars(axes[0][1], "h2_throughput", "rps")
    axes[0][1].set_title(
        f"h2c req/s ({settings.h2_connections} conns × {settings.h2_streams} streams)"
    )
    bars(axes[1][0], "tcp_download", "gbps", label_digits=2)
    axes[1][0].set_title("TCP bulk download GB/s (1 connection)")
    bars(axes[1][1], "tcp_upload", "gbps", label_digits=2)
    axes[1][1].set_title("TCP bulk upload GB/s (1 connection)")
    fig.suptitle(
        f"Throughput, proxy pinned to core {PROXY_CORE} (median, whiskers min–max, ×ratio to direct)"
    )
    fig.tight_layout()
    fig.savefig(out_dir / "throughput.png", dpi=110)
    plt.close(fig)
    written.append(out_dir / "throughput.png")

    # Cost: CPU per request and memory, proxies only.
    proxy_names = [name for name in names if name != "direct"]
    reference = 2000 if 2000 in settings.rates else settings.rates[0]
    fig, axes = plt.subplots(1, 4, figsize=(19, 4.5))
    for ax, (key, value, scale, title) in zip(
        axes,
        [
            (
                "h1_throughput",
                "cpu_us_per_request",
                1.0,
                "proxy CPU µs per HTTP/1.1 request\n(max load)",
            ),
            ("memory", "idle_rss_kib", 1 / 1024, "RSS idle (MiB)"),
            (
                f"h1_latency@{reference}",
                "peak_rss_kib",
                1 / 1024,
                f"RSS at {reference:,} HTTP/1.1 req/s (MiB)",
            ),
            ("memory", "kib_per_1000_idle", 1 / 1000, "RSS per idle keep-alive connection (KiB)"),
        ],
    ):
        stats = [summary(series(raw, key, name, value)) for name in proxy_names]
        med = [s[0] * scale if s else 0 for s in stats]
        err = [
            [(s[0] - s[1]) * scale if s else 0 for s in stats],
            [(s[2] - s[0]) * scale if s else 0 for s in stats],
        ]
        ax.bar(
            proxy_names,
            med,
            yerr=err,
            capsize=4,
            color=[colors.get(n, "#999") for n in proxy_names],
        )
        for i, m in enumerate(med):
            ax.annotate(
                f"{m:,.1f}",
                (i, m + err[1][i]),
                ha="center",
                va="bottom",
                fontsize=8,
                xytext=(0, 3),
                textcoords="offset points",
            )
        ax.set_title(title)
        ax.tick_params(axis="x", labelrotation=20)
        ax.margins(y=0.2)
    fig.suptitle("Cost of the proxy (skiff-2hop, skiff-2hop-mtls: both sidecars added up)")
    fig.tight_layout()
    fig.savefig(out_dir / "cost.png", dpi=110)
    plt.close(fig)
    written.append(out_dir / "cost.png")

    # Handshakes: connections per second one core of the sidecar sustains, by kind.
    for name in names:
        kinds = [
            (mode, label)
            for mode, label in (
                ("plaintext", "plaintext TCP"),
                ("full", "mTLS full"),
                ("resumed", "mTLS resumed"),
            )
            if raw.get(f"handshakes_{mode}", {}).get(name)
        ]
        if not kinds:
            continue
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
        for ax, (value, title, digits) in zip(
            axes,
            [
                (
                    "per_core_second",
                    "connections/s per sidecar core\n(10⁶ ÷ CPU µs/connection)",
                    0,
                ),
                ("cpu_us_per_connection", "sidecar CPU µs per connection", 1),
            ],
        ):
            stats = [summary(series(raw, f"handshakes_{mode}", name, value)) for mode, _ in kinds]
            med = [st[0] if st else 0 for st in stats]
            err = [
                [st[0] - st[1] if st else 0 for st in stats],
                [st[2] - st[0] if st else 0 for st in stats],
            ]
            labels = [label for _, label in kinds]
            ax.bar(labels, med, yerr=err, capsize=4, color=["#bbb", "#9467bd", "#c5b0d5"])
            for i, m in enumerate(med):
                ax.annotate(
                    f"{m:,.{digits}f}",
                    (i, m + err[1][i]),
                    ha="center",
                    va="bottom",
                    fontsize=8,
                    xytext=(0, 3),
                    textcoords="offset points",
                )
            ax.set_title(title)
            ax.margins(y=0.2)
        fig.suptitle(
            f"New connections into the server sidecar of {name} (one worker, core {PROXY_CORE}; "
            "median, whiskers min–max)"
        )
        fig.tight_layout()
        fig.savefig(out_dir / "handshakes.png", dpi=110)
        plt.close(fig)
        written.append(out_dir / "handshakes.png")
    return written
