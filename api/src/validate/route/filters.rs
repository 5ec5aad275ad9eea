//! The filters of a rule (or of a backend): each checked against the Gateway API's rules; the
//! header modifiers become what the proxy applies, the others are ignored with a warning.

use std::collections::HashMap;

use super::{fields, Checker, MAX_FILTERS, MAX_HEADER_ACTIONS};
use crate::config::HeaderModifier;
use crate::gateway::{
    FilterType, HttpHeaderFilter, HttpPathModifier, HttpRequestMirrorFilter,
    HttpRequestRedirectFilter, HttpRouteFilter, PathModifierType,
};

impl Checker<'_> {
    /// Checks a rule's (or a backend's) filters; returns the header modifications Skiff
    /// applies.
    pub(super) fn filters(
        &mut self,
        path: &str,
        filters: &[HttpRouteFilter],
        has_backends: bool,
    ) -> (HeaderModifier, HeaderModifier) {
        let mut request = HeaderModifier::default();
        let mut response = HeaderModifier::default();
        let list_path = format!("{path}.filters");
        self.limit(&list_path, filters.len(), MAX_FILTERS, "filters");
        let mut first_of_type: HashMap<&'static str, usize> = HashMap::new();
        for (at, filter) in filters.iter().enumerate() {
            let filter_path = format!("{list_path}[{at}]");
            let (type_name, field) = filter.filter_type.names();
            let set = set_fields(filter);
            if !set.contains(&field) {
                self.error(
                    filter_path.as_str(),
                    format!("a filter of type {type_name} needs the {field} field"),
                );
            }
            for other in set.iter().filter(|f| **f != field) {
                self.error(
                    format!("{filter_path}.{other}"),
                    format!("must not be set when type is {type_name}"),
                );
            }
            let once = !matches!(
                filter.filter_type,
                FilterType::RequestMirror | FilterType::ExtensionRef | FilterType::ExternalAuth
            );
            if let Some(first) = first_of_type.insert(type_name, at) {
                if once {
                    self.error(
                        format!("{filter_path}.type"),
                        format!(
                            "{type_name} is already used by filters[{first}]; it may appear once"
                        ),
                    );
                }
            }
            let ignored = |what: &str| {
                format!("{what} filters are not implemented yet; this filter is ignored")
            };
            match filter.filter_type {
                FilterType::RequestHeaderModifier => {
                    if let Some(modifier) = &filter.request_header_modifier {
                        request = self.header_filter(&format!("{filter_path}.{field}"), modifier);
                    }
                }
                FilterType::ResponseHeaderModifier => {
                    if let Some(modifier) = &filter.response_header_modifier {
                        response = self.header_filter(&format!("{filter_path}.{field}"), modifier);
                    }
                }
                FilterType::RequestMirror => {
                    if let Some(mirror) = &filter.request_mirror {
                        self.mirror(&format!("{filter_path}.{field}"), mirror);
                    }
                    self.warn(filter_path, ignored("RequestMirror"));
                }
                FilterType::RequestRedirect => {
                    if let Some(redirect) = &filter.request_redirect {
                        self.redirect(&format!("{filter_path}.{field}"), redirect);
                    }
                    self.warn(filter_path, ignored("RequestRedirect"));
                }
                FilterType::UrlRewrite => {
                    if let Some(rewrite) = &filter.url_rewrite {
                        if let Some(modifier) = &rewrite.path {
                            self.path_modifier(&format!("{filter_path}.{field}.path"), modifier);
                        }
                    }
                    self.warn(filter_path, ignored("URLRewrite"));
                }
                FilterType::Cors => self.warn(filter_path, ignored("CORS")),
                FilterType::ExternalAuth => self.warn(filter_path, ignored("ExternalAuth")),
                FilterType::ExtensionRef => self.warn(
                    filter_path,
                    "ExtensionRef filters name implementation-specific filters and Skiff has \
                     none; this filter is ignored",
                ),
            }
        }
        let redirect = first_of_type.get("RequestRedirect");
        if redirect.is_some() && first_of_type.contains_key("URLRewrite") {
            self.error(
                list_path.as_str(),
                "RequestRedirect and URLRewrite cannot be used in the same rule",
            );
        }
        if let (Some(at), true) = (redirect, has_backends) {
            self.error(
                format!("{list_path}[{at}]"),
                "a RequestRedirect filter cannot be used together with backendRefs",
            );
        }
        (request, response)
    }

    fn header_filter(&mut self, path: &str, filter: &HttpHeaderFilter) -> HeaderModifier {
        let mut modifier = HeaderModifier::default();
        // Lower-cased header name → the path of the action that names it first.
        let mut actions: HashMap<String, String> = HashMap::new();
        let mut claim = |checker: &mut Self, name: &str, at: String| {
            let lower = name.to_ascii_lowercase();
            match actions.get(&lower) {
                Some(first) => checker.error(
                    at,
                    format!("header {name:?} already has an action ({first}); use one action per header"),
                ),
                None => {
                    actions.insert(lower, at);
                }
            }
        };
        for (list, field) in [(&filter.set, "set"), (&filter.add, "add")] {
            self.limit(
                &format!("{path}.{field}"),
                list.len(),
                MAX_HEADER_ACTIONS,
                "headers",
            );
            for (at, header) in list.iter().enumerate() {
                let header_path = format!("{path}.{field}[{at}]");
                if let Err(message) = fields::header_name(&header.name) {
                    self.error(format!("{header_path}.name"), message);
                }
                if let Err(message) = fields::header_value(&header.value, 4096) {
                    self.error(format!("{header_path}.value"), message);
                }
                claim(self, &header.name, header_path);
                let pair = (header.name.to_ascii_lowercase(), header.value.clone());
                match field {
                    "set" => modifier.set.push(pair),
                    _ => modifier.add.push(pair),
                }
            }
        }
        self.limit(
            &format!("{path}.remove"),
            filter.remove.len(),
            MAX_HEADER_ACTIONS,
            "headers",
        );
        for (at, name) in filter.remove.iter().enumerate() {
            let remove_path = format!("{path}.remove[{at}]");
            if let Err(message) = fields::header_name(name) {
                self.error(remove_path.as_str(), message);
            }
            claim(self, name, remove_path);
            modifier.remove.push(name.to_ascii_lowercase());
        }
        modifier
    }

    fn mirror(&mut self, path: &str, mirror: &HttpRequestMirrorFilter) {
        if let Some(port) = mirror.backend_ref.port {
            if let Err(message) = fields::port(port) {
                self.error(format!("{path}.backendRef.port"), message);
            }
        }
        if mirror.percent.is_some() && mirror.fraction.is_some() {
            self.error(path, "set percent or fraction, not both");
        }
        if let Some(percent) = mirror.percent {
            if !(0..=100).contains(&percent) {
                self.error(format!("{path}.percent"), "must be between 0 and 100");
            }
        }
        if let Some(fraction) = &mirror.fraction {
            let denominator = fraction.denominator.unwrap_or(100);
            if denominator < 1 {
                self.error(format!("{path}.fraction.denominator"), "must be ≥ 1");
            }
            if fraction.numerator < 0 || fraction.numerator > denominator {
                self.error(
                    format!("{path}.fraction.numerator"),
                    format!("must be between 0 and the denominator ({denominator})"),
                );
            }
        }
    }

    fn redirect(&mut self, path: &str, redirect: &HttpRequestRedirectFilter) {
        if let Some(scheme) = &redirect.scheme {
            if scheme != "http" && scheme != "https" {
                self.error(
                    format!("{path}.scheme"),
                    format!("unknown value {scheme:?}; allowed: http, https"),
                );
            }
        }
        if let Some(port) = redirect.port {
            if let Err(message) = fields::port(port) {
                self.error(format!("{path}.port"), message);
            }
        }
        if let Some(code) = redirect.status_code {
            if ![301, 302, 303, 307, 308].contains(&code) {
                self.error(
                    format!("{path}.statusCode"),
                    format!("{code} is not a redirect status; allowed: 301, 302, 303, 307, 308"),
                );
            }
        }
        if let Some(modifier) = &redirect.path {
            self.path_modifier(&format!("{path}.path"), modifier);
        }
    }

    fn path_modifier(&mut self, path: &str, modifier: &HttpPathModifier) {
        let (needed, other, value) = match modifier.modifier_type {
            PathModifierType::ReplaceFullPath => (
                "replaceFullPath",
                modifier
                    .replace_prefix_match
                    .is_some()
                    .then_some("replacePrefixMatch"),
                &modifier.replace_full_path,
            ),
            PathModifierType::ReplacePrefixMatch => (
                "replacePrefixMatch",
                modifier
                    .replace_full_path
                    .is_some()
                    .then_some("replaceFullPath"),
                &modifier.replace_prefix_match,
            ),
        };
        if value.is_none() {
            self.error(path, format!("type {needed:?} needs the {needed} field"));
        }
        if let Some(other) = other {
            self.error(
                format!("{path}.{other}"),
                format!("must not be set when type is {needed:?}"),
            );
        }
    }
}

/// Which of a filter's type-specific fields are set, by their YAML names.
fn set_fields(filter: &HttpRouteFilter) -> Vec<&'static str> {
    [
        (
            "requestHeaderModifier",
            filter.request_header_modifier.is_some(),
        ),
        (
            "responseHeaderModifier",
            filter.response_header_modifier.is_some(),
        ),
        ("requestMirror", filter.request_mirror.is_some()),
        ("requestRedirect", filter.request_redirect.is_some()),
        ("urlRewrite", filter.url_rewrite.is_some()),
        ("cors", filter.cors.is_some()),
        ("externalAuth", filter.external_auth.is_some()),
        ("extensionRef", filter.extension_ref.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect()
}
