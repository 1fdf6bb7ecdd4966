//! Every Redis key the gateway uses, in one place. All keys start with
//! `{prefix}:`; the braces are a cluster hash tag, so every key lands in one
//! slot and multi-key scripts work on Redis Cluster.

/// Key names under one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    base: String,
}

impl Keys {
    /// Keys under `prefix` (validated by config: no braces, no spaces).
    pub fn new(prefix: &str) -> Self {
        Self {
            base: format!("{{{prefix}}}"),
        }
    }

    /// The stream of delivery jobs, one entry per (event, route).
    pub fn jobs(&self) -> String {
        format!("{}:jobs", self.base)
    }

    /// The dedupe record of one delivery id of one source.
    pub fn seen(&self, source: &str, delivery_id: &str) -> String {
        format!("{}:seen:{source}:{delivery_id}", self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_one_hash_tag() {
        let keys = Keys::new("switchyard");
        assert_eq!(keys.jobs(), "{switchyard}:jobs");
        assert_eq!(keys.seen("github", "abc"), "{switchyard}:seen:github:abc");
    }
}
