//! Route filters: does an event match a route? JSON pointer tests parse the
//! body at most once per event, and only when some route needs it.

use std::cell::OnceCell;

use http::HeaderMap;
use serde_json::Value;

use crate::config::{Filter, FilterField, FilterTest};

/// One event as filters see it.
pub struct EventView<'a> {
    headers: &'a HeaderMap,
    body: &'a [u8],
    json: OnceCell<Option<Value>>,
}

impl<'a> EventView<'a> {
    /// A view of a request's headers and body.
    pub fn new(headers: &'a HeaderMap, body: &'a [u8]) -> Self {
        Self {
            headers,
            body,
            json: OnceCell::new(),
        }
    }

    /// The body as JSON; `None` when it is not JSON (then every JSON pointer
    /// test fails, which is what a route on JSON fields expects).
    fn json(&self) -> Option<&Value> {
        self.json
            .get_or_init(|| serde_json::from_slice(self.body).ok())
            .as_ref()
    }

    /// True when `filter` matches (no filter matches everything).
    pub fn matches(&self, filter: Option<&Filter>) -> bool {
        filter.is_none_or(|f| self.eval(f))
    }

    fn eval(&self, filter: &Filter) -> bool {
        match filter {
            Filter::All(filters) => filters.iter().all(|f| self.eval(f)),
            Filter::Any(filters) => filters.iter().any(|f| self.eval(f)),
            Filter::Test { field, test } => match field {
                FilterField::Header(name) => self
                    .headers
                    .get_all(name)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .any(|v| passes(test, v)),
                FilterField::JsonPointer(pointer) => {
                    match self.json().and_then(|json| json.pointer(pointer)) {
                        Some(Value::String(s)) => passes(test, s),
                        // Numbers, booleans and null compare by their JSON text,
                        // so `equals = "42"` matches 42 and `equals = "true"` true.
                        Some(v @ (Value::Number(_) | Value::Bool(_) | Value::Null)) => {
                            passes(test, &v.to_string())
                        }
                        Some(Value::Array(_) | Value::Object(_)) | None => false,
                    }
                }
            },
        }
    }
}

fn passes(test: &FilterTest, value: &str) -> bool {
    match test {
        FilterTest::Equals(expected) => value == expected,
        FilterTest::Prefix(prefix) => value.starts_with(prefix.as_str()),
        FilterTest::AnyOf(values) => values.iter().any(|v| v == value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderName;
    use proptest::prelude::*;

    fn pointer(p: &str, test: FilterTest) -> Filter {
        Filter::Test {
            field: FilterField::JsonPointer(p.to_owned()),
            test,
        }
    }

    fn header(name: &'static str, test: FilterTest) -> Filter {
        Filter::Test {
            field: FilterField::Header(HeaderName::from_static(name)),
            test,
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (n, v) in pairs {
            map.append(*n, v.parse().expect("header value"));
        }
        map
    }

    #[test]
    fn json_pointer_tests() {
        let body = br#"{"type":"invoice.paid","data":{"amount":42,"live":true,"tags":["a"]}}"#;
        let none = HeaderMap::new();
        let view = EventView::new(&none, body);
        assert!(view.matches(Some(&pointer(
            "/type",
            FilterTest::Prefix("invoice.".into())
        ))));
        assert!(!view.matches(Some(&pointer(
            "/type",
            FilterTest::Prefix("charge.".into())
        ))));
        assert!(view.matches(Some(&pointer(
            "/type",
            FilterTest::Equals("invoice.paid".into())
        ))));
        assert!(view.matches(Some(&pointer(
            "/data/amount",
            FilterTest::Equals("42".into())
        ))));
        assert!(view.matches(Some(&pointer(
            "/data/live",
            FilterTest::AnyOf(vec!["true".into()])
        ))));
        assert!(!view.matches(Some(&pointer(
            "/data/tags",
            FilterTest::Equals("[\"a\"]".into())
        ))));
        assert!(!view.matches(Some(&pointer(
            "/missing",
            FilterTest::Prefix(String::new())
        ))));
    }

    #[test]
    fn non_json_bodies_fail_json_tests_only() {
        let map = headers(&[("x-github-event", "push")]);
        let view = EventView::new(&map, b"\xff\xfe not json");
        assert!(!view.matches(Some(&pointer("/type", FilterTest::Prefix(String::new())))));
        assert!(view.matches(Some(&header(
            "x-github-event",
            FilterTest::Equals("push".into())
        ))));
        assert!(view.matches(None));
    }

    #[test]
    fn combinations() {
        let map = headers(&[("x-github-event", "issues")]);
        let view = EventView::new(&map, br#"{"action":"opened"}"#);
        let issues = header(
            "x-github-event",
            FilterTest::AnyOf(vec!["issues".into(), "pull_request".into()]),
        );
        let opened = pointer("/action", FilterTest::Equals("opened".into()));
        let closed = pointer("/action", FilterTest::Equals("closed".into()));
        assert!(view.matches(Some(&Filter::All(vec![issues.clone(), opened.clone()]))));
        assert!(!view.matches(Some(&Filter::All(vec![issues.clone(), closed.clone()]))));
        assert!(view.matches(Some(&Filter::Any(vec![closed.clone(), issues]))));
        assert!(!view.matches(Some(&Filter::Any(vec![closed]))));
    }

    proptest! {
        /// Arbitrary bodies never panic, including deeply nested JSON.
        #[test]
        fn arbitrary_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..500), depth in 0usize..5000) {
            let none = HeaderMap::new();
            let filter = pointer("/a/b/0", FilterTest::Prefix(String::new()));
            let _ = EventView::new(&none, &body).matches(Some(&filter));
            let nested = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
            let _ = EventView::new(&none, nested.as_bytes()).matches(Some(&filter));
        }
    }
}
