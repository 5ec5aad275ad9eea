//! What validation reports: one problem per thing wrong, each naming the file, the line and the
//! field path, so a user can fix every mistake in one pass.

use std::fmt;

/// Whether a problem stops the policy from being applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// The policy is refused; the last good snapshot keeps serving.
    Error,
    /// The policy is applied, but something in it is ignored (a feature Skiff does not implement
    /// yet, a route that can never match, …); the message says what.
    Warning,
}

/// One thing wrong with the policy, located precisely enough to fix it without searching.
///
/// Displays as `routes.yaml:14 spec.rules[0].backendRefs[1].weight: must be ≥ 0`; warnings put
/// `warning: ` before the message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The file name the caller passed to [`crate::load`].
    pub file: String,
    /// 1-based line in `file`; 0 when the problem concerns the whole file (it is too large).
    pub line: usize,
    /// Field path inside the document, like `spec.rules[0].matches[1].path.value`; empty when
    /// the problem concerns the whole document (a YAML syntax error, an unknown kind).
    pub path: String,
    /// Lowercase; says what is wrong and what is allowed.
    pub message: String,
    /// Whether the policy is refused because of it.
    pub severity: Severity,
}

impl Problem {
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        if !self.path.is_empty() {
            write!(f, " {}", self.path)?;
        }
        let prefix = match self.severity {
            Severity::Error => "",
            Severity::Warning => "warning: ",
        };
        write!(f, ": {prefix}{}", self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(line: usize, path: &str, severity: Severity) -> Problem {
        Problem {
            file: "routes.yaml".to_string(),
            line,
            path: path.to_string(),
            message: "must be ≥ 0".to_string(),
            severity,
        }
    }

    #[test]
    fn displays_file_line_path_and_message() {
        let cases = [
            (
                problem(14, "spec.rules[0].backendRefs[1].weight", Severity::Error),
                "routes.yaml:14 spec.rules[0].backendRefs[1].weight: must be ≥ 0",
            ),
            (
                problem(3, "spec.hostnames", Severity::Warning),
                "routes.yaml:3 spec.hostnames: warning: must be ≥ 0",
            ),
            (
                problem(7, "", Severity::Error),
                "routes.yaml:7: must be ≥ 0",
            ),
            (problem(0, "", Severity::Error), "routes.yaml: must be ≥ 0"),
        ];
        for (problem, expected) in cases {
            assert_eq!(problem.to_string(), expected);
        }
    }
}
