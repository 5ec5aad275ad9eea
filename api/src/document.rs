//! YAML text → typed resources. A file may hold several documents; each is dispatched on its
//! `apiVersion` and `kind` and read with serde-saphyr under explicit budgets. Every problem
//! names the file, the line and the field path (the [`crate::index`] turns the reader's
//! positions into paths).

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_saphyr::budget::BudgetBreach;
use serde_saphyr::Error as YamlError;

use crate::gateway::HttpRoute;
use crate::index::{self, child_path, Index, Pos};
use crate::k8s::{EndpointSlice, Service};
use crate::problem::{Problem, Severity};
use crate::skiff_kinds::{self, InboundPolicy, TrafficPolicy, Workload};

/// A resource Skiff understands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resource {
    Service(Service),
    EndpointSlice(EndpointSlice),
    HttpRoute(Box<HttpRoute>),
    Workload(Workload),
    TrafficPolicy(Box<TrafficPolicy>),
    InboundPolicy(InboundPolicy),
}

impl Resource {
    /// The kind as written in YAML, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Resource::Service(_) => "Service",
            Resource::EndpointSlice(_) => "EndpointSlice",
            Resource::HttpRoute(_) => "HTTPRoute",
            Resource::Workload(_) => "Workload",
            Resource::TrafficPolicy(_) => "TrafficPolicy",
            Resource::InboundPolicy(_) => "InboundPolicy",
        }
    }

    pub fn metadata(&self) -> &crate::k8s::ObjectMeta {
        match self {
            Resource::Service(r) => &r.metadata,
            Resource::EndpointSlice(r) => &r.metadata,
            Resource::HttpRoute(r) => &r.metadata,
            Resource::Workload(r) => &r.metadata,
            Resource::TrafficPolicy(r) => &r.metadata,
            Resource::InboundPolicy(r) => &r.metadata,
        }
    }
}

/// Why a file could not be read as policy. Always names the file and, where known, the line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{file}:{line}: {message}")]
pub struct DocumentError {
    /// The file name the caller gave.
    pub file: String,
    /// 1-based; 0 when the problem concerns the whole file.
    pub line: u64,
    /// The field path and what is wrong with it.
    pub message: String,
}

/// The largest policy file Skiff will read; larger input is refused before parsing.
pub const MAX_FILE_BYTES: usize = 4 * 1024 * 1024;

/// A value read from a policy file, with what is needed to point at its fields.
#[derive(Clone, Debug)]
pub struct Located<T> {
    /// The file name the caller gave.
    pub file: Arc<str>,
    /// Field path → line, for this document.
    pub index: Arc<Index>,
    /// The resource, a part of it, or its validated form.
    pub value: T,
}

impl<T> Located<T> {
    /// The same place, holding another value (a part of this one, or its validated form).
    pub fn with<U>(&self, value: U) -> Located<U> {
        Located {
            file: self.file.clone(),
            index: self.index.clone(),
            value,
        }
    }

    pub fn line(&self, path: &str) -> usize {
        self.index.line(path)
    }

    /// `file:line` of a field, to name another place in a message.
    pub fn place(&self, path: &str) -> String {
        format!("{}:{}", self.file, self.line(path))
    }

    pub fn error(&self, path: impl Into<String>, message: impl Into<String>) -> Problem {
        self.problem(path.into(), message.into(), Severity::Error)
    }

    pub fn warning(&self, path: impl Into<String>, message: impl Into<String>) -> Problem {
        self.problem(path.into(), message.into(), Severity::Warning)
    }

    fn problem(&self, path: String, message: String, severity: Severity) -> Problem {
        Problem {
            file: self.file.to_string(),
            line: self.line(&path),
            path,
            message,
            severity,
        }
    }
}

/// Parses every document of one file. Problems found so far never stop the rest of the file:
/// each document is read on its own (a YAML syntax error ends the file, since the parser
/// cannot find where the next document starts).
pub fn read_file(file: &str, text: &str) -> (Vec<Located<Resource>>, Vec<Problem>) {
    let file: Arc<str> = Arc::from(file);
    let whole_file = |line: usize, message: String| Problem {
        file: file.to_string(),
        line,
        path: String::new(),
        message,
        severity: Severity::Error,
    };
    if text.len() > MAX_FILE_BYTES {
        let message = format!(
            "file is {} bytes; the limit is {MAX_FILE_BYTES} (4 MiB)",
            text.len()
        );
        return (Vec::new(), vec![whole_file(0, message)]);
    }
    let (documents, scan_error) = index::scan(text);
    let mut resources = Vec::new();
    let mut problems = Vec::new();
    for document in documents {
        let located = Located {
            file: file.clone(),
            index: Arc::new(document.index),
            value: (),
        };
        let slice = DocumentText::new(text, document.bytes.clone(), document.start);
        match read_document(&located, &slice) {
            Ok(resource) => resources.push(located.with(resource)),
            Err(problem) => problems.push(problem),
        }
    }
    if let Some(error) = scan_error {
        problems.push(whole_file(error.line, error.message));
    }
    (resources, problems)
}

/// One document's text, padded so that the reader's columns are the file's columns.
struct DocumentText {
    text: String,
    /// Added to the reader's 1-based line to get the file's.
    first_line: usize,
}

impl DocumentText {
    fn new(file_text: &str, bytes: std::ops::Range<usize>, start: Pos) -> DocumentText {
        let content = file_text.get(bytes).unwrap_or("");
        let mut text = " ".repeat(start.col.saturating_sub(1));
        text.push_str(content);
        DocumentText {
            text,
            first_line: start.line,
        }
    }
}

/// The supported kinds, for the message about an unsupported one.
const SUPPORTED: &str = "v1 Service, discovery.k8s.io/v1 EndpointSlice, \
    gateway.networking.k8s.io/v1 HTTPRoute, skiff.dev/v1alpha1 Workload, TrafficPolicy, \
    InboundPolicy";

fn read_document(doc: &Located<()>, text: &DocumentText) -> Result<Resource, Problem> {
    if !doc.index.is_mapping() {
        return Err(doc.error(
            "",
            "a policy document must be a mapping with apiVersion, kind, metadata and spec",
        ));
    }
    let api_version = doc.index.top_level("apiVersion");
    let kind = doc.index.top_level("kind");
    let (Some(api_version), Some(kind)) = (api_version, kind) else {
        let missing = if api_version.is_none() {
            "apiVersion"
        } else {
            "kind"
        };
        return Err(doc.error(missing, "required field is missing"));
    };
    let expected_version = match kind {
        "Service" => "v1",
        "EndpointSlice" => "discovery.k8s.io/v1",
        "HTTPRoute" => "gateway.networking.k8s.io/v1",
        "Workload" | "TrafficPolicy" | "InboundPolicy" => skiff_kinds::API_VERSION,
        _ => {
            let hint = ["Service", "EndpointSlice", "HTTPRoute", "Workload"]
                .iter()
                .chain(&["TrafficPolicy", "InboundPolicy"])
                .find(|known| known.eq_ignore_ascii_case(kind))
                .map(|known| format!(" (did you mean {known}?)"))
                .unwrap_or_default();
            return Err(doc.error(
                "kind",
                format!("kind {kind:?} is not supported{hint}; supported: {SUPPORTED}"),
            ));
        }
    };
    let version_ok = api_version == expected_version
        || (kind == "HTTPRoute" && api_version == "gateway.networking.k8s.io/v1beta1");
    if !version_ok {
        let also = if kind == "HTTPRoute" {
            " (or gateway.networking.k8s.io/v1beta1)"
        } else {
            ""
        };
        return Err(doc.error(
            "apiVersion",
            format!("{kind} has apiVersion {expected_version}{also}, not {api_version:?}"),
        ));
    }
    let resource = match kind {
        "Service" => Resource::Service(deserialize(doc, text)?),
        "EndpointSlice" => Resource::EndpointSlice(deserialize(doc, text)?),
        "HTTPRoute" => Resource::HttpRoute(Box::new(deserialize(doc, text)?)),
        "Workload" => Resource::Workload(deserialize(doc, text)?),
        "TrafficPolicy" => Resource::TrafficPolicy(Box::new(deserialize(doc, text)?)),
        _ => Resource::InboundPolicy(deserialize(doc, text)?),
    };
    Ok(resource)
}

/// The reader's limits. The file-size cap and the index's own limits come first; these bound
/// what aliases could make of a small file.
fn reader_options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_depth = index::MAX_DEPTH;
    budget.max_documents = 1;
    budget.max_nodes = 250_000;
    budget.max_events = 1_000_000;
    budget.max_aliases = 1_000;
    budget.max_anchors = 1_000;
    budget.max_recorded_anchor_events = 100_000;
    budget.max_total_scalar_bytes = 2 * MAX_FILE_BYTES;
    budget.max_merge_keys = 1_000;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options.alias_limits.max_total_replayed_events = 100_000;
    options.with_snippet = false;
    options
}

fn deserialize<T: DeserializeOwned>(doc: &Located<()>, text: &DocumentText) -> Result<T, Problem> {
    serde_saphyr::from_str_with_options::<T>(&text.text, reader_options())
        .map_err(|error| yaml_problem(doc, text, &error))
}

/// Turns a reader error into a problem with a path: the reader knows the position, the index
/// knows which field is there.
fn yaml_problem(doc: &Located<()>, text: &DocumentText, error: &YamlError) -> Problem {
    let mut error = error;
    while let YamlError::WithSnippet { error: inner, .. }
    | YamlError::AliasError { error: inner, .. } = error
    {
        error = inner;
    }
    let position = error.location().filter(|l| l.line() > 0).map(|l| Pos {
        line: l.line() as usize + text.first_line - 1,
        col: l.column() as usize,
    });
    let Some(position) = position else {
        return doc.error("", message_of(error));
    };
    let at_position = |path: &str, message: String| {
        let mut problem = doc.error(path, message);
        problem.line = position.line;
        problem
    };
    match error {
        YamlError::SerdeMissingField { field, .. } => {
            let object = doc.index.mapping_at(position);
            doc.error(child_path(object, field), "required field is missing")
        }
        YamlError::SerdeUnknownField {
            field, expected, ..
        } => at_position(doc.index.key_at(position), unknown_field(field, expected)),
        // A duplicate key's line is its own, not the first occurrence's.
        YamlError::DuplicateMappingKey { .. } => {
            at_position(doc.index.key_at(position), message_of(error))
        }
        // The whole document is refused, wherever the budget ran out.
        YamlError::Budget { .. }
        | YamlError::AliasReplayLimitExceeded { .. }
        | YamlError::AliasExpansionLimitExceeded { .. }
        | YamlError::AliasReplayStackDepthExceeded { .. } => at_position("", message_of(error)),
        _ => match doc.index.value_at(position) {
            "" => at_position("", message_of(error)),
            path => doc.error(path, message_of(error)),
        },
    }
}

fn unknown_field(field: &str, expected: &[&str]) -> String {
    let close = expected
        .iter()
        .find(|known| edit_distance(known, field) <= 2 || known.eq_ignore_ascii_case(field));
    let hint = close
        .map(|known| format!(" (did you mean {known}?)"))
        .unwrap_or_default();
    if expected.is_empty() {
        format!("unknown field {field:?}{hint}")
    } else {
        format!(
            "unknown field {field:?}{hint}; allowed here: {}",
            expected.join(", ")
        )
    }
}

/// Levenshtein distance, for "did you mean" hints on short field names.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

/// Our wording of the reader's errors: lowercase, saying what is allowed.
fn message_of(error: &YamlError) -> String {
    match error {
        YamlError::SerdeUnknownVariant {
            variant, expected, ..
        } => format!(
            "unknown value {variant:?}; allowed: {}",
            expected.join(", ")
        ),
        YamlError::SerdeInvalidType {
            unexpected,
            expected,
            ..
        }
        | YamlError::SerdeInvalidValue {
            unexpected,
            expected,
            ..
        } => format!("expected {expected}, found {unexpected}"),
        YamlError::InvalidScalar { ty, .. } => match *ty {
            "u8" => "must be an integer from 0 to 255".to_string(),
            "u16" => "must be an integer from 0 to 65535".to_string(),
            "u32" => "must be an integer from 0 to 4294967295".to_string(),
            "i32" | "i64" | "u64" | "usize" | "isize" => "must be an integer".to_string(),
            "bool" => "must be true or false".to_string(),
            other => format!("must be a {other}"),
        },
        YamlError::NullIntoString { .. } => "must be a string, not null".to_string(),
        YamlError::DuplicateMappingKey { key, .. } => match key {
            Some(key) => format!("duplicate key {key:?}; each key may appear once"),
            None => "duplicate key; each key may appear once".to_string(),
        },
        YamlError::Unexpected { expected, .. } => match *expected {
            "sequence start" => "must be a list".to_string(),
            "mapping start" | "mapping" => "must be a mapping".to_string(),
            "string scalar" => "must be a string".to_string(),
            other => format!("expected {other}"),
        },
        YamlError::Budget { breach, .. } => budget_message(breach),
        YamlError::AliasReplayLimitExceeded { .. }
        | YamlError::AliasExpansionLimitExceeded { .. }
        | YamlError::AliasReplayStackDepthExceeded { .. } => {
            "refused: aliases expand beyond the reader's budget (an alias bomb?)".to_string()
        }
        other => plain_message(other),
    }
}

fn budget_message(breach: &BudgetBreach) -> String {
    match breach {
        BudgetBreach::Aliases { .. }
        | BudgetBreach::AliasAnchorRatio { .. }
        | BudgetBreach::RecordedAnchorEvents { .. }
        | BudgetBreach::RecordedAnchorBytes { .. } => {
            "refused: aliases expand beyond the reader's budget (an alias bomb?)".to_string()
        }
        BudgetBreach::Depth { .. } => format!(
            "refused: nesting is deeper than {} levels (reader budget)",
            index::MAX_DEPTH
        ),
        BudgetBreach::Nodes { .. } | BudgetBreach::Events { .. } => {
            "refused: the document has more nodes than the reader's budget allows".to_string()
        }
        other => format!("refused: the document exceeds the reader's budget ({other:?})"),
    }
}

/// The reader's own words without its `line N column M:` prefix.
fn plain_message(error: &YamlError) -> String {
    let text = error.to_string();
    let first = text.lines().next().unwrap_or("").trim();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    let message = match first.find(": ") {
        Some(at) if first.starts_with("line ") => &first[at + 2..],
        _ => first,
    };
    let mut chars = message.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => "invalid YAML".to_string(),
    }
}

/// Parses every document in `text` (the content of `file`, used in errors) without checking
/// references between resources; [`crate::load`] does everything. Empty documents are
/// skipped. Returns every problem, not just the first.
pub fn parse_documents(file: &str, text: &str) -> Result<Vec<Resource>, Vec<DocumentError>> {
    let (resources, problems) = read_file(file, text);
    if problems.is_empty() {
        return Ok(resources.into_iter().map(|r| r.value).collect());
    }
    Err(problems
        .into_iter()
        .map(|p| DocumentError {
            file: p.file,
            line: p.line as u64,
            message: if p.path.is_empty() {
                p.message
            } else {
                format!("{}: {}", p.path, p.message)
            },
        })
        .collect())
}

#[cfg(test)]
mod tests;
