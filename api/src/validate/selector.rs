//! Label selectors (an InboundPolicy's `spec.selector`) and the labels they match (a Workload's
//! `metadata.labels`), checked as the Kubernetes API server checks them: label keys and values,
//! and values present for `In`/`NotIn`, absent for `Exists`/`DoesNotExist`.

use std::collections::BTreeMap;

use super::fields;
use crate::document::Located;
use crate::index::child_path;
use crate::policy::{LabelOperator, LabelRequirement, LabelSelector};
use crate::problem::Problem;
use crate::skiff_kinds::{self, LabelSelectorOperator};

/// The selector written at `at` (like `spec.selector`), checked. Problems go to `found`, and a
/// requirement with one is left out (its resource is then discarded anyway).
pub(super) fn label_selector<T>(
    item: &Located<T>,
    at: &str,
    spec: &skiff_kinds::LabelSelector,
    found: &mut Vec<Problem>,
) -> LabelSelector {
    let mut requirements = Vec::new();
    let match_labels = format!("{at}.matchLabels");
    for (key, value) in &spec.match_labels {
        // As the index writes it: `matchLabels.app`, `matchLabels["app.kubernetes.io/name"]`.
        let path = child_path(&match_labels, key);
        if label(item, &path, key, value, found) {
            requirements.push(LabelRequirement {
                key: key.clone(),
                operator: LabelOperator::In(vec![value.clone()]),
            });
        }
    }
    for (index, expression) in spec.match_expressions.iter().enumerate() {
        let path = format!("{at}.matchExpressions[{index}]");
        let before = found.len();
        if let Err(message) = fields::label_key(&expression.key) {
            found.push(item.error(format!("{path}.key"), message));
        }
        let operator = expression.operator;
        let values = &expression.values;
        let takes_values = matches!(
            operator,
            LabelSelectorOperator::In | LabelSelectorOperator::NotIn
        );
        if takes_values && values.is_empty() {
            found.push(item.error(
                format!("{path}.values"),
                format!("operator {operator:?} needs at least one value"),
            ));
        }
        if !takes_values && !values.is_empty() {
            found.push(item.error(
                format!("{path}.values"),
                format!(
                    "operator {operator:?} takes no values (it only looks at whether the label \
                     is there); remove values"
                ),
            ));
        }
        if takes_values {
            for (i, value) in values.iter().enumerate() {
                if let Err(message) = fields::label_value(value) {
                    found.push(item.error(format!("{path}.values[{i}]"), message));
                }
            }
        }
        if found.len() > before {
            continue;
        }
        requirements.push(LabelRequirement {
            key: expression.key.clone(),
            operator: match operator {
                LabelSelectorOperator::In => LabelOperator::In(values.clone()),
                LabelSelectorOperator::NotIn => LabelOperator::NotIn(values.clone()),
                LabelSelectorOperator::Exists => LabelOperator::Exists,
                LabelSelectorOperator::DoesNotExist => LabelOperator::DoesNotExist,
            },
        });
    }
    LabelSelector { requirements }
}

/// A resource's `metadata.labels`, every key and value checked.
pub(super) fn labels<T>(
    item: &Located<T>,
    labels: &BTreeMap<String, String>,
    found: &mut Vec<Problem>,
) {
    for (key, value) in labels {
        label(item, &child_path("metadata.labels", key), key, value, found);
    }
}

/// One `key: value` label (at `path`); whether both are valid.
fn label<T>(
    item: &Located<T>,
    path: &str,
    key: &str,
    value: &str,
    found: &mut Vec<Problem>,
) -> bool {
    let checked = fields::label_key(key).and_then(|()| fields::label_value(value));
    checked
        .map_err(|message| found.push(item.error(path, message)))
        .is_ok()
}
