//! Which Redis node serves each partition, and whether it answers: what
//! `/readyz` and the inventory name, and what the watcher logs when a
//! partition stops or starts answering.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

use super::{Queue, QueueError};

/// The Redis deployment in use and its primaries, as last asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RedisNodes {
    /// `single`, `sentinel` or `cluster`.
    pub mode: &'static str,
    /// One entry per primary (and per primary that does not answer).
    pub nodes: Vec<NodeInUse>,
}

/// A primary and the partitions it serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeInUse {
    /// `host:port`: the one that answered, or for one that does not, the
    /// last one seen serving these partitions (`None` if none ever did).
    pub node: Option<String>,
    /// The partitions' hash tags.
    pub partitions: Vec<String>,
    /// It answered within the bound.
    pub answering: bool,
    /// Why it did not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl RedisNodes {
    /// Every primary answered.
    pub fn all_answering(&self) -> bool {
        self.nodes.iter().all(|n| n.answering)
    }

    /// Adds one partition's answer: to the entry of the same node and state,
    /// else as a new one.
    fn add(&mut self, tag: &str, node: Option<String>, error: Option<String>) {
        let answering = error.is_none();
        match self
            .nodes
            .iter_mut()
            .find(|n| n.node == node && n.answering == answering)
        {
            Some(entry) => entry.partitions.push(tag.to_owned()),
            None => self.nodes.push(NodeInUse {
                node,
                partitions: vec![tag.to_owned()],
                answering,
                error,
            }),
        }
    }
}

/// The last node seen serving each slot, so a primary that stops answering
/// is still named.
#[derive(Debug, Default)]
pub(super) struct LastSeen(Mutex<HashMap<u16, String>>);

impl LastSeen {
    fn note(&self, slot: u16, node: &str) {
        if let Ok(mut seen) = self.0.lock()
            && seen.get(&slot).is_none_or(|known| known != node)
        {
            seen.insert(slot, node.to_owned());
        }
    }

    fn get(&self, slot: u16) -> Option<String> {
        self.0.lock().ok()?.get(&slot).cloned()
    }
}

impl Queue {
    /// Asks the primary of every written partition (each partition's own on
    /// a cluster; the one primary otherwise) for its address, within
    /// `within`, and groups the partitions by the node that serves them.
    pub async fn nodes(&self, within: Duration) -> RedisNodes {
        self.ask_nodes(within).await.0
    }

    /// Ready to take webhooks: every partition's primary answers within
    /// `within`, and Redis's eviction policy lets acked jobs be kept. The
    /// nodes come back either way, for the answer to name them.
    pub async fn ready(&self, within: Duration) -> (RedisNodes, Result<(), QueueError>) {
        let (nodes, failed) = self.ask_nodes(within).await;
        let verdict = match failed {
            Some(err) => Err(err),
            None => self.refused_for_eviction(),
        };
        (nodes, verdict)
    }

    /// [`Self::nodes`], and the first failure.
    async fn ask_nodes(&self, within: Duration) -> (RedisNodes, Option<QueueError>) {
        let groups: Vec<(u16, Vec<&str>)> = if self.cluster {
            self.written
                .iter()
                .map(|p| (p.slot, vec![p.tag.as_str()]))
                .collect()
        } else {
            let tags = self.written.iter().map(|p| p.tag.as_str()).collect();
            vec![(self.home().slot, tags)]
        };
        let answers = futures_util::future::join_all(
            groups
                .iter()
                .map(|(slot, _)| self.answer_within(within, self.conn.serving(*slot))),
        )
        .await;
        let mut nodes = RedisNodes {
            mode: self.mode,
            nodes: Vec::new(),
        };
        let mut failed = None;
        for ((slot, tags), answer) in groups.iter().zip(answers) {
            let (node, error) = match answer {
                Ok(node) => {
                    self.last_seen.note(*slot, &node);
                    (Some(node), None)
                }
                Err(err) => {
                    let said = err.to_string();
                    failed.get_or_insert(err);
                    (self.last_seen.get(*slot), Some(said))
                }
            };
            for tag in tags {
                nodes.add(tag, node.clone(), error.clone());
            }
        }
        (nodes, failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_group_by_node_and_state() {
        let mut nodes = RedisNodes {
            mode: "cluster",
            nodes: Vec::new(),
        };
        let a = Some("127.0.0.1:7000".to_owned());
        let b = Some("127.0.0.1:7001".to_owned());
        nodes.add("{p0}", a.clone(), None);
        nodes.add("{p1}", b.clone(), Some("timed out".into()));
        nodes.add("{p2}", a.clone(), None);
        nodes.add("{p3}", b.clone(), Some("timed out".into()));
        nodes.add("{p4}", None, Some("refused".into()));
        assert_eq!(nodes.nodes.len(), 3);
        assert_eq!(nodes.nodes[0].partitions, ["{p0}", "{p2}"]);
        assert_eq!(nodes.nodes[1].partitions, ["{p1}", "{p3}"]);
        assert!(!nodes.all_answering());
        assert_eq!(nodes.nodes[2].node, None);
    }
}
