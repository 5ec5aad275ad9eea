//! Parses the Prometheus text exposition a sidecar serves on `:15020/metrics`, just enough to
//! sum a metric over the series whose labels match.

use std::collections::BTreeMap;

/// One sample line: `name{labels} value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Every sample of one scrape.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    pub samples: Vec<Sample>,
}

impl Metrics {
    /// Parses exposition text; comment lines are skipped, malformed lines panic (a sidecar that
    /// serves them is broken).
    pub fn parse(text: &str) -> Metrics {
        let samples = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| parse_line(l).unwrap_or_else(|| panic!("malformed metrics line: {l:?}")))
            .collect();
        Metrics { samples }
    }

    /// Sum of `name`'s samples whose labels include every `(key, value)` of `labels` (0 when
    /// none match).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|s| s.value).sum()
    }

    /// Samples of `name` whose labels include `labels`.
    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).is_some_and(|have| have == v))
        })
    }

    /// Whether any sample named `name` exists.
    pub fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|s| s.name == name)
    }

    /// The series of `name` (or of every `skiff_` metric when there is none), one per line, for
    /// failure messages.
    pub fn describe(&self, name: &str) -> String {
        let mut lines: Vec<String> = self
            .samples
            .iter()
            .filter(|s| s.name == name)
            .map(|s| format!("  {}{:?} {}", s.name, s.labels, s.value))
            .collect();
        if lines.is_empty() {
            lines.push(format!(
                "  (no series named {name}; skiff_ series present:)"
            ));
            let mut names: Vec<&str> = self
                .samples
                .iter()
                .map(|s| s.name.as_str())
                .filter(|n| n.starts_with("skiff_"))
                .collect();
            names.dedup();
            lines.extend(names.into_iter().map(|n| format!("  {n}")));
        }
        lines.join("\n")
    }
}

fn parse_line(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(mut body) = rest.strip_prefix('{') {
        loop {
            body = body.trim_start_matches([',', ' ']);
            if let Some(after) = body.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = body.find('=')?;
            let key = body[..eq].trim().to_string();
            let quoted = body[eq + 1..].strip_prefix('"')?;
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let close = loop {
                match chars.next()? {
                    (_, '\\') => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        escaped => value.push(escaped),
                    },
                    (i, '"') => break i,
                    (_, c) => value.push(c),
                }
            };
            labels.insert(key, value);
            body = &quoted[close + 1..];
        }
    }
    let value = match rest.split_whitespace().next()? {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_sums_by_label_subset() {
        let text = r#"
# HELP skiff_requests_total Requests.
# TYPE skiff_requests_total counter
skiff_requests_total{direction="outbound",service="default/echo",code="200"} 3
skiff_requests_total{direction="outbound",service="default/echo",code="503"} 1
skiff_requests_total{direction="inbound",service="default/echo",code="200"} 2 1700000000
skiff_request_duration_seconds_bucket{direction="inbound",le="+Inf"} 2
skiff_weird{path="a\"b,c}",x="1"} 1.5e0
skiff_plain 7
"#;
        let m = Metrics::parse(text);
        assert_eq!(
            m.sum("skiff_requests_total", &[("direction", "outbound")]),
            4.0
        );
        assert_eq!(
            m.sum(
                "skiff_requests_total",
                &[("direction", "outbound"), ("code", "200")]
            ),
            3.0
        );
        assert_eq!(m.sum("skiff_requests_total", &[]), 6.0);
        assert_eq!(
            m.sum("skiff_requests_total", &[("direction", "sideways")]),
            0.0
        );
        assert_eq!(
            m.sum("skiff_request_duration_seconds_bucket", &[("le", "+Inf")]),
            2.0
        );
        assert_eq!(m.sum("skiff_weird", &[("path", "a\"b,c}")]), 1.5);
        assert_eq!(m.sum("skiff_plain", &[]), 7.0);
    }
}
