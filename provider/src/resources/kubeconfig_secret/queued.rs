//! Writes Infisical queued as change requests instead of applying them, kept in the resource's
//! private state: a later apply that would send the same write again (and so queue a second
//! request for the same change) reports the waiting request instead.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::infisical::same_modulo_trimming;

/// The change requests castle is waiting on, one per secret name at most.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Queued {
    /// Waiting writes.
    #[serde(default)]
    pub writes: Vec<QueuedWrite>,
}

/// One write waiting in a change request.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct QueuedWrite {
    /// Secret name.
    pub key: String,
    /// Value sent (sensitive, like the state's own values).
    pub value: String,
    /// Comment sent.
    pub comment: String,
    /// The request's slug, as Infisical's UI shows it.
    pub slug: String,
    /// The request's id.
    pub id: String,
}

// Values are sensitive: Debug shows only which secrets wait on which request.
impl fmt::Debug for Queued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.writes.iter().map(|w| (&w.key, &w.slug)))
            .finish()
    }
}

impl Queued {
    /// The request already holding this very write, if any.
    pub fn waiting(&self, key: &str, value: &str, comment: &str) -> Option<&QueuedWrite> {
        self.writes
            .iter()
            .find(|w| w.key == key && w.comment == comment && same_modulo_trimming(&w.value, value))
    }

    /// Remembers a write Infisical queued (replacing an older one for the same secret).
    pub fn record(&mut self, write: QueuedWrite) {
        self.writes.retain(|w| w.key != write.key);
        self.writes.push(write);
    }

    /// Forgets the request for `key` once Infisical holds its value (it was merged).
    pub fn settle(&mut self, key: &str, stored: &str) {
        self.writes
            .retain(|w| !(w.key == key && same_modulo_trimming(&w.value, stored)));
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(key: &str, value: &str) -> QueuedWrite {
        QueuedWrite {
            key: key.into(),
            value: value.into(),
            comment: String::new(),
            slug: "abc".into(),
            id: "1".into(),
        }
    }

    #[test]
    fn the_same_write_is_found_until_infisical_holds_it() {
        let mut queued = Queued::default();
        queued.record(write("KUBECONFIG", "a\n"));
        assert!(queued.waiting("KUBECONFIG", "a\n\n", "").is_some());
        assert!(queued.waiting("KUBECONFIG", "b\n", "").is_none());
        assert!(queued
            .waiting("KUBECONFIG", "a\n", "other comment")
            .is_none());
        queued.settle("KUBECONFIG", "old\n");
        assert!(!queued.is_empty());
        queued.settle("KUBECONFIG", "a\n");
        assert!(queued.is_empty());
    }

    #[test]
    fn debug_shows_no_value() {
        let mut queued = Queued::default();
        queued.record(write("K", "secret-kubeconfig"));
        assert!(!format!("{queued:?}").contains("secret-kubeconfig"));
    }
}
