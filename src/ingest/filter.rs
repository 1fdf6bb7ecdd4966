//! Route filters: does an event match a route? And the values a source
//! names, such as its ordering key. JSON pointers parse the body at most
//! once per event, and only when something needs it.

use std::cell::OnceCell;

use http::HeaderMap;
use serde_json::Value;

use crate::config::{EventField, Filter, FilterTest};

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

    /// The value at `field`: a header's first value that is text, or the
    /// JSON string, number or boolean at the pointer (numbers and booleans
    /// as their JSON text); `None` when absent, null, an array or an object.
    pub fn value(&self, field: &EventField) -> Option<String> {
        match field {
            EventField::Header(name) => self
                .headers
                .get_all(name)
                .iter()
                .find_map(|v| v.to_str().ok())
                .map(str::to_owned),
            EventField::JsonPointer(pointer) => self
                .json()
                .and_then(|json| json.pointer(pointer))
                .and_then(scalar_text)
                .map(std::borrow::Cow::into_owned),
        }
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
                EventField::Header(name) => self
                    .headers
                    .get_all(name)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .any(|v| passes(test, v)),
                EventField::JsonPointer(pointer) => {
                    match self.json().and_then(|json| json.pointer(pointer)) {
                        // Null compares as its JSON text too, so `equals = "null"` matches it.
                        Some(Value::Null) => passes(test, "null"),
                        Some(value) => scalar_text(value).is_some_and(|text| passes(test, &text)),
                        None => false,
                    }
                }
            },
        }
    }
}

/// A JSON string as itself; a number or boolean as its JSON text, so
/// `equals = "42"` matches 42 and `equals = "true"` true; nothing for null,
/// arrays and objects.
fn scalar_text(value: &Value) -> Option<std::borrow::Cow<'_, str>> {
    match value {
        Value::String(s) => Some(s.as_str().into()),
        Value::Number(_) | Value::Bool(_) => Some(value.to_string().into()),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
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
            field: EventField::JsonPointer(p.to_owned()),
            test,
        }
    }

    fn header(name: &'static str, test: FilterTest) -> Filter {
        Filter::Test {
            field: EventField::Header(HeaderName::from_static(name)),
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
    fn an_events_value_for_its_ordering_key() {
        let body = br#"{"data":{"customer":"cus_1","n":42,"ok":true,"none":null,"list":[1]}}"#;
        let headers = headers(&[("x-shop", "shop-1.example.com")]);
        let view = EventView::new(&headers, body);
        let at = |p: &str| view.value(&EventField::JsonPointer(p.into()));
        assert_eq!(at("/data/customer").as_deref(), Some("cus_1"));
        assert_eq!(at("/data/n").as_deref(), Some("42"));
        assert_eq!(at("/data/ok").as_deref(), Some("true"));
        assert_eq!(at("/data/none"), None, "null is no key");
        assert_eq!(at("/data/list"), None, "nor is an array");
        assert_eq!(at("/data/missing"), None);
        let header = |n: &'static str| view.value(&EventField::Header(HeaderName::from_static(n)));
        assert_eq!(header("x-shop").as_deref(), Some("shop-1.example.com"));
        assert_eq!(header("x-none"), None);
        let not_json = EventView::new(&headers, b"not json");
        assert_eq!(not_json.value(&EventField::JsonPointer("/a".into())), None);
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
