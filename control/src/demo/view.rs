//! The live view: one row per second of the client's traffic (requests per second, success
//! rate, latency, the split between the two versions as percentages and a bar, the
//! configuration version the client's proxy runs), and the summary at the end.
//!
//! Rows scroll rather than redraw, so the history of a weight change stays on screen and the
//! output reads the same in a terminal, a pipe or a log:
//!
//! ```text
//!  TIME  REQ/S  SUCCESS   P50 ms   P99 ms   SPLIT                                  CONFIG (client proxy)
//!    1s    200   100.0%     1.31     4.02   v1  80% ████████████████░░░░  20% v2   3dfd3be3319a896f
//!    2s    200   100.0%     1.28     3.87   v1   0% ░░░░░░░░░░░░░░░░░░░░ 100% v2   91c0aa5e02f4d1b7  ← new configuration
//! ```

use std::collections::BTreeMap;

use super::apps::Report;

/// Width of the split bar in characters (one per 5%).
const BAR: usize = 20;

/// Renders rows and keeps the totals for the summary.
pub struct View {
    /// The names the two versions' servers answer with (`v1`, `v2`), in column order.
    versions: [String; 2],
    /// The client proxy's configuration version in the previous row, to mark a change.
    last_config: Option<String>,
    /// Everything so far, for the summary.
    totals: Totals,
}

/// The whole run, added up from the per-second reports.
#[derive(Default)]
struct Totals {
    seconds: u64,
    completed: u64,
    succeeded: u64,
    failed: u64,
    /// Responses by status code.
    statuses: BTreeMap<u16, u64>,
    /// Responses by the version that answered.
    served_by: BTreeMap<String, u64>,
    /// Each second's median latency: their median is the summary's typical latency.
    p50s: Vec<f64>,
    /// The worst second's 99th percentile.
    worst_p99: f64,
    /// Every configuration version the client's proxy ran, in order.
    configs: Vec<String>,
}

impl View {
    pub fn new(versions: [String; 2]) -> View {
        View {
            versions,
            last_config: None,
            totals: Totals::default(),
        }
    }

    /// The column titles.
    pub fn header(&self) -> String {
        let [v1, v2] = &self.versions;
        // `v1 100% <bar> 100% v2`
        let split_width = v1.chars().count() + v2.chars().count() + BAR + 12;
        format!(
            " {:>4}  {:>5}  {:>7}  {:>7}  {:>7}   {:<split_width$}   CONFIG (client proxy)",
            "TIME", "REQ/S", "SUCCESS", "P50 ms", "P99 ms", "SPLIT"
        )
    }

    /// One second of traffic; `config` is the version the client's proxy runs now (`None` when
    /// its admin port did not answer).
    pub fn row(&mut self, report: &Report, config: Option<&str>) -> String {
        self.add(report, config);
        let completed = report.completed();
        let success = if completed == 0 {
            "-".to_string()
        } else {
            format!(
                "{:.1}%",
                100.0 * report.succeeded() as f64 / completed as f64
            )
        };
        let [v1, v2] = &self.versions;
        let n1 = report.served_by.get(v1).copied().unwrap_or(0);
        let n2 = report.served_by.get(v2).copied().unwrap_or(0);
        let split = match shares(n1, n2) {
            Some((p1, p2)) => format!("{v1} {p1:>3}% {} {p2:>3}% {v2}", bar(p1)),
            None => format!("{v1}    - {}    - {v2}", "·".repeat(BAR)),
        };
        let mut line = format!(
            " {:>3}s  {completed:>5}  {success:>7}  {:>7.2}  {:>7.2}   {split}   {}",
            report.second,
            report.p50_ms,
            report.p99_ms,
            config.unwrap_or("?"),
        );
        if config.is_some() && self.last_config.as_deref() != config {
            if self.last_config.is_some() {
                line.push_str("  ← new configuration");
            }
            self.last_config = config.map(str::to_string);
        }
        for (status, n) in &report.statuses {
            if !(200..300).contains(status) {
                line.push_str(&format!("  {status}×{n}"));
            }
        }
        if report.failed > 0 {
            line.push_str(&format!(
                "  no response×{} ({})",
                report.failed,
                report.error.as_deref().unwrap_or("?")
            ));
        }
        line
    }

    fn add(&mut self, report: &Report, config: Option<&str>) {
        let totals = &mut self.totals;
        totals.seconds += 1;
        totals.completed += report.completed();
        totals.succeeded += report.succeeded();
        totals.failed += report.failed;
        for (status, n) in &report.statuses {
            *totals.statuses.entry(*status).or_default() += n;
        }
        for (name, n) in &report.served_by {
            *totals.served_by.entry(name.clone()).or_default() += n;
        }
        if report.completed() > 0 {
            totals.p50s.push(report.p50_ms);
            totals.worst_p99 = totals.worst_p99.max(report.p99_ms);
        }
        if let Some(config) = config {
            if totals.configs.last().map(String::as_str) != Some(config) {
                totals.configs.push(config.to_string());
            }
        }
    }

    /// What the whole run added up to.
    pub fn summary(&self) -> String {
        let t = &self.totals;
        if t.seconds == 0 {
            return "Summary: stopped before the first second of traffic.\n".to_string();
        }
        let percent = |n: u64| {
            if t.completed == 0 {
                0.0
            } else {
                100.0 * n as f64 / t.completed as f64
            }
        };
        let mut out = format!(
            "Summary: {} s of traffic, {} requests, {} succeeded ({:.1}%)",
            t.seconds,
            t.completed,
            t.succeeded,
            percent(t.succeeded)
        );
        let others: Vec<String> = t
            .statuses
            .iter()
            .filter(|(status, _)| !(200..300).contains(*status))
            .map(|(status, n)| format!("{status}×{n}"))
            .chain((t.failed > 0).then(|| format!("no response×{}", t.failed)))
            .collect();
        if others.is_empty() {
            out.push_str(".\n");
        } else {
            out.push_str(&format!("; the rest: {}.\n", others.join(", ")));
        }
        let served: Vec<String> = t
            .served_by
            .iter()
            .map(|(name, n)| format!("{name} {n} ({:.1}%)", percent(*n)))
            .collect();
        if !served.is_empty() {
            out.push_str(&format!("  served by: {}\n", served.join(", ")));
        }
        if !t.p50s.is_empty() {
            let mut p50s = t.p50s.clone();
            p50s.sort_by(f64::total_cmp);
            out.push_str(&format!(
                "  latency: p50 {:.2} ms (median of the seconds), p99 {:.2} ms (worst second)\n",
                p50s[p50s.len() / 2],
                t.worst_p99
            ));
        }
        if !t.configs.is_empty() {
            out.push_str(&format!(
                "  client proxy configurations: {}\n",
                t.configs.join(" → ")
            ));
        }
        out
    }
}

/// The two versions' shares in whole percents adding up to 100; a version that answered
/// anything shows at least 1%, one that answered nothing exactly 0%. `None` when neither did.
fn shares(n1: u64, n2: u64) -> Option<(u64, u64)> {
    let total = n1 + n2;
    if total == 0 {
        return None;
    }
    let mut p1 = (100.0 * n1 as f64 / total as f64).round() as u64;
    if n1 > 0 {
        p1 = p1.max(1);
    }
    if n2 > 0 {
        p1 = p1.min(99);
    }
    Some((p1, 100 - p1))
}

/// `█` for the first version's share, `░` for the second's.
fn bar(p1: u64) -> String {
    let full = ((p1 as usize * BAR) + 50) / 100;
    format!("{}{}", "█".repeat(full), "░".repeat(BAR - full))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(second: u64, v1: u64, v2: u64, errors: u64) -> Report {
        let mut report = Report {
            second,
            sent: v1 + v2 + errors,
            p50_ms: 1.25,
            p99_ms: 3.5,
            ..Report::default()
        };
        report.statuses.insert(200, v1 + v2);
        if errors > 0 {
            report.statuses.insert(503, errors);
        }
        report.served_by.insert("v1".into(), v1);
        report.served_by.insert("v2".into(), v2);
        report
    }

    #[test]
    fn shares_add_up_and_never_hide_a_version() {
        assert_eq!(shares(80, 20), Some((80, 20)));
        assert_eq!(shares(0, 50), Some((0, 100)));
        assert_eq!(shares(1, 999), Some((1, 99)));
        assert_eq!(shares(999, 1), Some((99, 1)));
        assert_eq!(shares(0, 0), None);
        assert_eq!(bar(80), "████████████████░░░░");
        assert_eq!(bar(0), "░".repeat(BAR));
    }

    #[test]
    fn rows_show_rate_success_latency_split_and_config_changes() {
        let mut view = View::new(["v1".into(), "v2".into()]);
        let first = view.row(&report(1, 160, 40, 0), Some("aaaa"));
        assert_eq!(
            first,
            "   1s    200   100.0%     1.25     3.50   \
             v1  80% ████████████████░░░░  20% v2   aaaa"
        );
        let second = view.row(&report(2, 0, 190, 10), Some("bbbb"));
        assert!(second.contains(" 95.0% "), "{second}");
        assert!(
            second.contains("v1   0% ░░░░░░░░░░░░░░░░░░░░ 100% v2"),
            "{second}"
        );
        assert!(
            second.contains("bbbb  ← new configuration  503×10"),
            "{second}"
        );
        let summary = view.summary();
        assert!(
            summary.starts_with(
                "Summary: 2 s of traffic, 400 requests, 390 succeeded (97.5%); the rest: 503×10.\n"
            ),
            "{summary}"
        );
        assert!(
            summary.contains("served by: v1 160 (40.0%), v2 230 (57.5%)"),
            "{summary}"
        );
        assert!(summary.contains("configurations: aaaa → bbbb"), "{summary}");
    }
}
