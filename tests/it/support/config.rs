//! The TOML a test appends to [`config_toml`](super::gateway::config_toml):
//! `[delivery]` keys, owners, sources and routes, written by a typed builder
//! instead of fixtures copied from file to file.
//!
//! Values are raw TOML (`"2s"` with its quotes, `{ max_attempts = 3 }`) except
//! where a method says it quotes: the builder only lays out tables.

use std::fmt::Write as _;

/// `key = value` lines, `value` raw TOML.
#[derive(Debug, Clone, Default)]
struct Keys(Vec<(String, String)>);

impl Keys {
    fn push(&mut self, key: &str, value: impl Into<String>) {
        self.0.push((key.to_owned(), value.into()));
    }

    fn write(&self, out: &mut String) {
        for (key, value) in &self.0 {
            writeln!(out, "{key} = {value}").expect("write to a String");
        }
    }
}

/// `s` as a TOML basic string (test values hold no quotes or backslashes).
pub fn quoted(s: &str) -> String {
    assert!(
        !s.contains(['"', '\\', '\n']),
        "quote {s:?} by hand: it needs escapes"
    );
    format!("\"{s}\"")
}

/// `[owners.<id>]`.
#[derive(Debug, Clone)]
pub struct Owner {
    id: String,
    keys: Keys,
}

impl Owner {
    /// An owner with its team and contact.
    pub fn new(id: &str, team: &str, contact: &str) -> Self {
        let mut keys = Keys::default();
        keys.push("team", quoted(team));
        keys.push("contact", quoted(contact));
        Self {
            id: id.to_owned(),
            keys,
        }
    }

    /// The usual `devex` owner: Developer Experience, devex@example.com.
    pub fn devex() -> Self {
        Self::new("devex", "Developer Experience", "devex@example.com")
    }

    /// The `sre` owner of the heavy suites (recovery, chaos).
    pub fn sre() -> Self {
        Self::new("sre", "SRE", "sre@example.com")
    }

    /// One more key (`runbook`, `alert_url`, `alert_format`), `value` quoted.
    pub fn with(mut self, key: &str, value: &str) -> Self {
        self.keys.push(key, quoted(value));
        self
    }
}

/// `[sources.<name>]`.
#[derive(Debug, Clone)]
pub struct Source {
    name: String,
    keys: Keys,
}

impl Source {
    /// A source on `path` verified by `scheme` with `secrets` (each quoted;
    /// no `secrets` key when there are none).
    pub fn new(name: &str, path: &str, scheme: &str, secrets: &[&str]) -> Self {
        let mut keys = Keys::default();
        keys.push("path", quoted(path));
        keys.push("scheme", quoted(scheme));
        if !secrets.is_empty() {
            let secrets: Vec<String> = secrets.iter().map(|s| quoted(s)).collect();
            keys.push("secrets", format!("[{}]", secrets.join(", ")));
        }
        Self {
            name: name.to_owned(),
            keys,
        }
    }

    /// The usual `[sources.github]` on `/hooks/github`.
    pub fn github(secret: &str) -> Self {
        Self::new("github", "/hooks/github", "github", &[secret])
    }

    /// One more key, `value` raw TOML.
    pub fn with(mut self, key: &str, value: &str) -> Self {
        self.keys.push(key, value);
        self
    }
}

/// One `[[routes]]` entry.
#[derive(Debug, Clone)]
pub struct Route {
    name: String,
    source: String,
    owner: String,
    description: String,
    on_failure: String,
    keys: Keys,
    destination: Keys,
}

impl Route {
    /// `name` from `source` to `url`, owned by `owner`; its description and
    /// on_failure say it is a test route unless set.
    pub fn new(name: &str, source: &str, owner: &str, url: &str) -> Self {
        let mut destination = Keys::default();
        destination.push("url", quoted(url));
        Self {
            name: name.to_owned(),
            source: source.to_owned(),
            owner: owner.to_owned(),
            description: format!("test route {name}"),
            on_failure: "nothing real".to_owned(),
            keys: Keys::default(),
            destination,
        }
    }

    /// Its `description`.
    pub fn description(self, description: &str) -> Self {
        Self {
            description: description.to_owned(),
            ..self
        }
    }

    /// Its `on_failure`.
    pub fn on_failure(self, on_failure: &str) -> Self {
        Self {
            on_failure: on_failure.to_owned(),
            ..self
        }
    }

    /// One more route key (`filter`, `retry`...), `value` raw TOML.
    pub fn with(mut self, key: &str, value: &str) -> Self {
        self.keys.push(key, value);
        self
    }

    /// Only events whose `X-GitHub-Event` is `event` (a `filter`).
    pub fn when_github_event(self, event: &str) -> Self {
        self.with(
            "filter",
            &format!(
                r#"{{ header = "X-GitHub-Event", equals = {} }}"#,
                quoted(event)
            ),
        )
    }

    /// One more destination key (`timeout`, `max_in_flight`...), raw TOML.
    pub fn destination(mut self, key: &str, value: &str) -> Self {
        self.destination.push(key, value);
        self
    }
}

/// Owners, sources and routes, written in that order after `[delivery]`.
#[derive(Debug, Clone, Default)]
pub struct ConfigBuilder {
    delivery: Keys,
    owners: Vec<Owner>,
    sources: Vec<Source>,
    routes: Vec<Route>,
    tail: String,
}

impl ConfigBuilder {
    /// Nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A `[delivery]` key, `value` raw TOML.
    pub fn delivery(mut self, key: &str, value: &str) -> Self {
        self.delivery.push(key, value);
        self
    }

    /// `[delivery] retry`: `max_attempts` with backoff from `initial` to `max`.
    pub fn retry(self, max_attempts: u32, initial: &str, max: &str) -> Self {
        self.delivery(
            "retry",
            &format!(
                "{{ max_attempts = {max_attempts}, initial_backoff = {}, max_backoff = {} }}",
                quoted(initial),
                quoted(max)
            ),
        )
    }

    /// `[delivery] breaker`: opens after `failure_threshold` failures, for
    /// `cooldown` if given.
    pub fn breaker(self, failure_threshold: u32, cooldown: Option<&str>) -> Self {
        let cooldown = cooldown.map_or(String::new(), |c| format!(", cooldown = {}", quoted(c)));
        self.delivery(
            "breaker",
            &format!("{{ failure_threshold = {failure_threshold}{cooldown} }}"),
        )
    }

    /// `[delivery] tls_ca_file`: the extra authorities deliveries and
    /// alerts trust.
    pub fn tls_ca_file(self, path: &std::path::Path) -> Self {
        self.delivery("tls_ca_file", &quoted(&path.display().to_string()))
    }

    /// One more owner.
    pub fn owner(mut self, owner: Owner) -> Self {
        self.owners.push(owner);
        self
    }

    /// One more source.
    pub fn source(mut self, source: Source) -> Self {
        self.sources.push(source);
        self
    }

    /// One more route.
    pub fn route(mut self, route: Route) -> Self {
        self.routes.push(route);
        self
    }

    /// TOML written as is after everything else (other tables).
    pub fn raw(mut self, toml: &str) -> Self {
        self.tail.push('\n');
        self.tail.push_str(toml);
        self
    }

    /// The TOML.
    pub fn build(&self) -> String {
        let mut out = String::new();
        if !self.delivery.0.is_empty() {
            out.push_str("\n[delivery]\n");
            self.delivery.write(&mut out);
        }
        for owner in &self.owners {
            writeln!(out, "\n[owners.{}]", owner.id).expect("write to a String");
            owner.keys.write(&mut out);
        }
        for source in &self.sources {
            writeln!(out, "\n[sources.{}]", source.name).expect("write to a String");
            source.keys.write(&mut out);
        }
        for route in &self.routes {
            out.push_str("\n[[routes]]\n");
            let mut head = Keys::default();
            head.push("name", quoted(&route.name));
            head.push("source", quoted(&route.source));
            head.push("owner", quoted(&route.owner));
            head.push("description", quoted(&route.description));
            head.push("on_failure", quoted(&route.on_failure));
            head.write(&mut out);
            route.keys.write(&mut out);
            out.push_str("[routes.destination]\n");
            route.destination.write(&mut out);
        }
        out.push_str(&self.tail);
        out
    }
}
