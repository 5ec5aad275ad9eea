//! Where every field of a policy file sits. One pass over the YAML parser's events splits a file
//! into documents and maps each field path (`spec.rules[0].backendRefs[1].weight`) to its line,
//! so validation code speaks in paths and problems still name lines.
//!
//! The same pass is the first line of defence against pathological input: it refuses deep
//! nesting, too many nodes or documents, and never expands aliases (it only notes where they
//! are), so its cost is linear in the file size.

use std::collections::HashMap;

use serde_saphyr::granit_parser::{self, Event, Parser, Span};

/// Deepest nesting of mappings and sequences accepted (Kubernetes objects need about 12).
pub const MAX_DEPTH: usize = 64;
/// Most YAML nodes (scalars, mappings, sequences) accepted in one file.
pub const MAX_NODES_PER_FILE: usize = 500_000;
/// Most documents accepted in one file.
pub const MAX_DOCUMENTS_PER_FILE: usize = 1_024;

/// A position in a file; both 1-based, as editors show them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub col: usize,
}

/// What kind of node sits at a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NodeKind {
    Mapping,
    Sequence,
    Scalar,
}

/// One node of the document: a mapping value or a sequence item (or the root).
#[derive(Debug)]
struct Entry {
    path: String,
    /// The line problems about this field point at: the key's line for a mapping value, the
    /// item's first line for a sequence item.
    line: usize,
    /// Where the key starts, for mapping values: the parser reports unknown fields there.
    key: Option<Pos>,
    /// Where the value starts and ends (end exclusive).
    start: Pos,
    end: Pos,
    kind: NodeKind,
}

/// The field paths of one YAML document and their lines.
#[derive(Debug)]
pub struct Index {
    /// In source order; the root (path `""`) first.
    entries: Vec<Entry>,
    by_path: HashMap<String, usize>,
    /// Scalar values directly under the root mapping (`apiVersion`, `kind`), read before the
    /// document is deserialized to decide its type.
    top_level: Vec<(String, String)>,
}

impl Index {
    /// The line of `path`, or of its nearest ancestor that is in the document (a missing field
    /// is reported on the line of the object that lacks it).
    pub fn line(&self, path: &str) -> usize {
        let mut path = path;
        loop {
            if let Some(&entry) = self.by_path.get(path) {
                return self.entries[entry].line;
            }
            match parent_path(path) {
                Some(parent) => path = parent,
                None => return self.first_line(),
            }
        }
    }

    /// Whether `path` is written in the document (as opposed to defaulted).
    pub fn contains(&self, path: &str) -> bool {
        self.by_path.contains_key(path)
    }

    /// The line of the document's first node.
    pub fn first_line(&self) -> usize {
        self.entries.first().map(|e| e.start.line).unwrap_or(1)
    }

    /// The value of a scalar directly under the root mapping.
    pub fn top_level(&self, key: &str) -> Option<&str> {
        self.top_level
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the document is a mapping (every Kubernetes object is).
    pub fn is_mapping(&self) -> bool {
        self.entries
            .first()
            .is_some_and(|e| e.kind == NodeKind::Mapping)
    }

    /// The path of the field whose key starts at `pos` (where the reader reports unknown and
    /// duplicate keys), else of the value at `pos`.
    pub fn key_at(&self, pos: Pos) -> &str {
        match self.entries.iter().find(|e| e.key == Some(pos)) {
            Some(entry) => &entry.path,
            None => self.value_at(pos),
        }
    }

    /// The path of the innermost value containing `pos` (where the reader reports values of
    /// the wrong type). Used to give a path to the reader's errors, which carry only a position.
    pub fn value_at(&self, pos: Pos) -> &str {
        self.innermost(pos, |_| true)
            .map(|e| e.path.as_str())
            .unwrap_or("")
    }

    /// The path of the innermost mapping containing `pos`: where a missing field belongs.
    pub fn mapping_at(&self, pos: Pos) -> &str {
        self.innermost(pos, |e| e.kind == NodeKind::Mapping)
            .map(|e| e.path.as_str())
            .unwrap_or("")
    }

    /// The entry with the latest start among those whose span holds `pos`. Ends count as
    /// inside: a block mapping ends where the next token starts, and the reader reports a
    /// missing field there.
    fn innermost(&self, pos: Pos, keep: impl Fn(&Entry) -> bool) -> Option<&Entry> {
        self.entries
            .iter()
            .filter(|e| keep(e) && e.start <= pos && pos <= e.end)
            .max_by_key(|e| e.start)
    }
}

/// `spec.rules[0]` → `spec`; `spec.rules` → `spec`; `spec` → `""`; `""` → `None`.
pub fn parent_path(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    let cut = if path.ends_with(']') {
        path.rfind('[')
    } else {
        path.rfind('.').or(Some(0))
    };
    cut.map(|at| &path[..at])
}

/// Appends a mapping key to a path: `spec` + `rules` → `spec.rules`. Keys that are not plain
/// identifiers (label keys like `kubernetes.io/service-name`) are quoted:
/// `metadata.labels["kubernetes.io/service-name"]`.
pub fn child_path(parent: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    match (parent.is_empty(), plain) {
        (true, true) => key.to_string(),
        (false, true) => format!("{parent}.{key}"),
        (_, false) => format!("{parent}[{key:?}]"),
    }
}

/// One document of a file: where its text is, and its index.
#[derive(Debug)]
pub struct ScannedDocument {
    /// Byte range of the document's content in the file (after any `---`).
    pub bytes: std::ops::Range<usize>,
    /// Position of the first byte of `bytes`.
    pub start: Pos,
    /// Field paths → lines of this document.
    pub index: Index,
}

/// Why a file could not be scanned completely. Documents before the failure are still returned.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ScanError {
    /// 1-based line of the failure.
    pub line: usize,
    /// What the parser or a limit refused.
    pub message: String,
}

/// Splits `text` into documents and indexes each. Empty documents (nothing but `---` or
/// comments) are left out.
pub fn scan(text: &str) -> (Vec<ScannedDocument>, Option<ScanError>) {
    let mut scanner = Scanner::default();
    let options = granit_parser::options! {
        flow_nesting_limit: MAX_DEPTH + 1,
        block_nesting_limit: MAX_DEPTH + 1,
        emit_comments: false,
    };
    for event in Parser::new_from_str_with_options(text, options) {
        let result = match event {
            Ok((event, span)) => scanner.event(event, span, text),
            Err(error) => Err(ScanError {
                line: error.marker().line().max(1),
                message: scan_message(&error.info()),
            }),
        };
        if let Err(error) = result {
            return (scanner.documents, Some(error));
        }
    }
    (scanner.documents, None)
}

/// The parser's words, lowercased the way the rest of our messages are.
fn scan_message(info: &str) -> String {
    let info = info.trim();
    if info.contains("nesting") || info.contains("recursion") {
        return format!("nesting is deeper than {MAX_DEPTH} levels ({info})");
    }
    format!("invalid YAML: {info}")
}

/// A container being walked.
#[derive(Debug)]
enum Frame {
    /// A mapping; `key` is set between a key and its value.
    Mapping {
        entry: usize,
        key: Option<(String, Pos)>,
    },
    Sequence {
        entry: usize,
        next: usize,
    },
    /// Inside a key that is itself a collection (`? [a, b]: c`), which has no path.
    ComplexKey {
        depth: usize,
    },
}

#[derive(Default)]
struct Scanner {
    documents: Vec<ScannedDocument>,
    /// The document being walked: its start and the index being built.
    current: Option<(usize, Pos, Index)>,
    stack: Vec<Frame>,
    nodes: usize,
}

fn pos(marker: &granit_parser::Marker) -> Pos {
    Pos {
        line: marker.line(),
        col: marker.col() + 1,
    }
}

impl Scanner {
    fn event(&mut self, event: Event<'_>, span: Span, text: &str) -> Result<(), ScanError> {
        let too_much = |line: usize, message: String| Err(ScanError { line, message });
        match event {
            Event::DocumentStart(..) => {
                let start = span.end.byte_offset().unwrap_or(0);
                let index = Index {
                    entries: Vec::new(),
                    by_path: HashMap::new(),
                    top_level: Vec::new(),
                };
                self.current = Some((start, pos(&span.end), index));
                self.stack.clear();
            }
            Event::DocumentEnd => {
                let end = span.start.byte_offset().unwrap_or(text.len());
                if let Some((start, start_pos, index)) = self.current.take() {
                    if !is_empty_document(&index) {
                        if self.documents.len() == MAX_DOCUMENTS_PER_FILE {
                            return too_much(
                                start_pos.line,
                                format!("more than {MAX_DOCUMENTS_PER_FILE} documents in one file"),
                            );
                        }
                        self.documents.push(ScannedDocument {
                            bytes: start..end.max(start),
                            start: start_pos,
                            index,
                        });
                    }
                }
            }
            Event::Scalar(value, ..) => self.node(NodeKind::Scalar, Some(&value), span)?,
            Event::Alias(_) => self.node(NodeKind::Scalar, None, span)?,
            Event::MappingStart(..) => self.node(NodeKind::Mapping, None, span)?,
            Event::SequenceStart(..) => self.node(NodeKind::Sequence, None, span)?,
            Event::MappingEnd | Event::SequenceEnd => self.end(span),
            _ => {}
        }
        if self.nodes > MAX_NODES_PER_FILE {
            return too_much(
                span.start.line(),
                format!("more than {MAX_NODES_PER_FILE} YAML nodes in one file"),
            );
        }
        if self.stack.len() > MAX_DEPTH {
            return too_much(
                span.start.line(),
                format!("nesting is deeper than {MAX_DEPTH} levels"),
            );
        }
        Ok(())
    }

    fn node(&mut self, kind: NodeKind, scalar: Option<&str>, span: Span) -> Result<(), ScanError> {
        self.nodes += 1;
        let Some((_, _, index)) = self.current.as_mut() else {
            return Ok(());
        };
        let start = pos(&span.start);
        let end = pos(&span.end);
        let is_collection = kind != NodeKind::Scalar;
        let mut complex_key = false;
        // Decide this node's path (None: it is a key, or inside a complex key).
        let placed = match self.stack.last_mut() {
            None => Some((String::new(), start.line, None)),
            Some(Frame::ComplexKey { depth }) => {
                if is_collection {
                    *depth += 1;
                }
                None
            }
            Some(Frame::Mapping {
                key: key @ None, ..
            }) => {
                *key = Some((scalar.unwrap_or("?").to_string(), start));
                if is_collection {
                    complex_key = true;
                }
                None
            }
            Some(Frame::Mapping { entry, key }) => {
                let (name, key_pos) = key.take().unwrap_or_default();
                let parent = *entry;
                if parent == 0 {
                    if let Some(value) = scalar {
                        index.top_level.push((name.clone(), value.to_string()));
                    }
                }
                let path = child_path(&index.entries[parent].path, &name);
                Some((path, key_pos.line, Some(key_pos)))
            }
            Some(Frame::Sequence { entry, next }) => {
                let path = format!("{}[{next}]", index.entries[*entry].path);
                *next += 1;
                Some((path, start.line, None))
            }
        };
        if complex_key {
            self.stack.push(Frame::ComplexKey { depth: 1 });
        }
        let Some((path, line, key)) = placed else {
            return Ok(());
        };
        let entry = index.entries.len();
        index.by_path.entry(path.clone()).or_insert(entry);
        index.entries.push(Entry {
            path,
            line,
            key,
            start,
            end,
            kind,
        });
        match kind {
            NodeKind::Mapping => self.stack.push(Frame::Mapping { entry, key: None }),
            NodeKind::Sequence => self.stack.push(Frame::Sequence { entry, next: 0 }),
            NodeKind::Scalar => {}
        }
        Ok(())
    }

    fn end(&mut self, span: Span) {
        match self.stack.last_mut() {
            Some(Frame::ComplexKey { depth }) => {
                *depth -= 1;
                if *depth == 0 {
                    self.stack.pop();
                }
            }
            Some(Frame::Mapping { entry, .. } | Frame::Sequence { entry, .. }) => {
                let entry = *entry;
                if let Some((_, _, index)) = self.current.as_mut() {
                    index.entries[entry].end = pos(&span.end);
                }
                self.stack.pop();
            }
            None => {}
        }
    }
}

/// A document that holds nothing but a null (a lone `---`).
fn is_empty_document(index: &Index) -> bool {
    match index.entries.as_slice() {
        [] => true,
        [root] => root.kind == NodeKind::Scalar && root.start == root.end,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTE: &str = "\
# a comment
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: web
  labels: {kubernetes.io/service-name: web}
spec:
  rules:
  - matches:
    - path: {type: PathPrefix, value: /api}
    backendRefs:
    - name: web-v1
      port: 80
    - name: web-v2
      weight: 10
---
--- {kind: Service}
";

    #[test]
    fn maps_paths_to_lines() {
        let (documents, error) = scan(ROUTE);
        assert_eq!(error, None);
        assert_eq!(documents.len(), 2, "the lone --- is skipped");
        let index = &documents[0].index;
        let cases = [
            ("", 2),
            ("kind", 3),
            ("metadata.name", 5),
            ("metadata.labels[\"kubernetes.io/service-name\"]", 6),
            ("spec.rules", 8),
            ("spec.rules[0]", 9),
            ("spec.rules[0].matches[0].path.value", 10),
            ("spec.rules[0].backendRefs[1]", 14),
            ("spec.rules[0].backendRefs[1].weight", 15),
            // Missing fields fall back to their nearest ancestor.
            ("spec.rules[0].backendRefs[1].port", 14),
            ("spec.rules[3].filters", 8),
            ("nothing.here", 2),
        ];
        for (path, line) in cases {
            assert_eq!(index.line(path), line, "{path}");
        }
        assert_eq!(index.top_level("kind"), Some("HTTPRoute"));
        assert!(index.is_mapping());
        assert_eq!(documents[1].index.top_level("kind"), Some("Service"));
        assert_eq!(documents[1].start.line, 17);
        assert_eq!(&ROUTE[documents[1].bytes.clone()], " {kind: Service}");
    }

    #[test]
    fn finds_the_path_at_a_position() {
        let (documents, _) = scan(ROUTE);
        let index = &documents[0].index;
        // The key `weight` (line 15, column 7) and its value (column 15).
        assert_eq!(
            index.key_at(Pos { line: 15, col: 7 }),
            "spec.rules[0].backendRefs[1].weight"
        );
        assert_eq!(
            index.value_at(Pos { line: 15, col: 15 }),
            "spec.rules[0].backendRefs[1].weight"
        );
        let api = ROUTE.lines().nth(9).unwrap().find("/api").unwrap() + 1;
        assert_eq!(
            index.value_at(Pos { line: 10, col: api }),
            "spec.rules[0].matches[0].path.value"
        );
        // A block mapping starts where its first key does: the value, not the key, is meant.
        assert_eq!(
            index.value_at(Pos { line: 10, col: 7 }),
            "spec.rules[0].matches[0]"
        );
        assert_eq!(
            index.mapping_at(Pos { line: 15, col: 7 }),
            "spec.rules[0].backendRefs[1]"
        );
    }

    #[test]
    fn parent_and_child_paths() {
        assert_eq!(parent_path("spec.rules[0].name"), Some("spec.rules[0]"));
        assert_eq!(parent_path("spec.rules[0]"), Some("spec.rules"));
        assert_eq!(parent_path("spec"), Some(""));
        assert_eq!(parent_path(""), None);
        assert_eq!(
            parent_path("metadata.labels[\"a.b/c\"]"),
            Some("metadata.labels")
        );
        assert_eq!(child_path("", "spec"), "spec");
        assert_eq!(child_path("spec", "rules"), "spec.rules");
        assert_eq!(child_path("a", "x.y/z"), "a[\"x.y/z\"]");
    }

    #[test]
    fn syntax_errors_keep_earlier_documents_and_name_the_line() {
        let text = "kind: A\n---\nkind: B\nspec: [1, 2\nother: 3\n";
        let (documents, error) = scan(text);
        assert_eq!(documents.len(), 1);
        let error = error.unwrap();
        assert!(error.line >= 4, "{error:?}");
        assert!(error.message.starts_with("invalid YAML"), "{error:?}");
    }

    #[test]
    fn deep_nesting_is_refused() {
        let deep = format!("a: {}{}\n", "[".repeat(10_000), "]".repeat(10_000));
        let (_, error) = scan(&deep);
        assert!(error.unwrap().message.contains("nesting"));
        let deep_block = format!("a:\n{}x\n", "- ".repeat(10_000));
        let (_, error) = scan(&deep_block);
        assert!(error.unwrap().message.contains("nesting"));
    }

    #[test]
    fn aliases_are_not_expanded() {
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x]\n");
        for level in 1..40 {
            let refs = vec![format!("*a{}", level - 1); 9].join(", ");
            bomb.push_str(&format!("a{level}: &a{level} [{refs}]\n"));
        }
        let (documents, error) = scan(&bomb);
        assert_eq!(error, None);
        assert_eq!(documents.len(), 1);
    }
}
