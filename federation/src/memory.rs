//! An in-memory [`LinkStore`]: for tests, benchmarks and tools that need no durability.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use crate::keys::Hash;
use crate::store::{Incoming, LinkStore, Outgoing, Refused, StoreError};
use crate::wire::Item;

#[derive(Default)]
struct Inner {
    outbox: HashMap<String, BTreeMap<u64, Item>>,
    next: HashMap<String, u64>,
    watermark: HashMap<String, (u64, Option<Hash>)>,
    inbox: HashMap<String, Vec<Incoming>>,
    refused: Vec<Refused>,
    /// Fail this many `receive` calls after storing, as a crash between commit and ack would.
    fail_after_store: u32,
}

/// Outboxes, inboxes and watermarks per link, in memory, behind one mutex.
#[derive(Clone, Default)]
pub struct MemoryStore(Arc<Mutex<Inner>>);

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").finish_non_exhaustive()
    }
}

impl MemoryStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `item` for the peer of `link`, numbered after the last one.
    pub fn enqueue(&self, link: &str, item: Item) {
        let mut inner = self.lock();
        let next = inner.next.entry(link.to_owned()).or_default();
        *next += 1;
        let seq = *next;
        inner
            .outbox
            .entry(link.to_owned())
            .or_default()
            .insert(seq, item);
    }

    /// What was received on `link`, in order.
    pub fn inbox(&self, link: &str) -> Vec<Incoming> {
        self.lock().inbox.get(link).cloned().unwrap_or_default()
    }

    /// How many items were received on `link`.
    pub fn inbox_len(&self, link: &str) -> usize {
        self.lock().inbox.get(link).map_or(0, Vec::len)
    }

    /// Items refused for good, on any link.
    pub fn refused(&self) -> Vec<Refused> {
        self.lock().refused.clone()
    }

    /// How many items wait for the peer of `link` to store them.
    pub fn outbox_len(&self, link: &str) -> usize {
        self.lock().outbox.get(link).map_or(0, BTreeMap::len)
    }

    /// Makes the next `n` calls of `receive` fail after storing, as a crash between the commit
    /// and the acknowledgement would.
    pub fn fail_after_store(&self, n: u32) {
        self.lock().fail_after_store = n;
    }
}

impl LinkStore for MemoryStore {
    async fn outbox(
        &self,
        link: &str,
        after: u64,
        max: usize,
    ) -> Result<Vec<Outgoing>, StoreError> {
        Ok(self
            .lock()
            .outbox
            .get(link)
            .map(|o| {
                o.range(after + 1..)
                    .take(max)
                    .map(|(s, i)| Outgoing {
                        link_seq: *s,
                        item: i.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn acked(&self, link: &str, upto: u64, last: Option<Hash>) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let numbered = inner.next.get(link).copied().unwrap_or(0);
        let other = last.is_some_and(|last| {
            inner
                .outbox
                .get(link)
                .and_then(|o| o.get(&upto))
                .is_some_and(|item| item.digest() != last)
        });
        if upto > numbered || other {
            // Restored from a backup: what waits follows the peer's watermark.
            let waiting = inner.outbox.remove(link).unwrap_or_default();
            let renumbered: BTreeMap<u64, Item> = (upto + 1..).zip(waiting.into_values()).collect();
            let next = renumbered.keys().next_back().copied().unwrap_or(upto);
            inner.next.insert(link.to_owned(), next);
            inner.outbox.insert(link.to_owned(), renumbered);
            return Ok(true);
        }
        if let Some(o) = inner.outbox.get_mut(link) {
            o.retain(|s, _| *s > upto);
        }
        Ok(false)
    }

    async fn watermark(&self, link: &str) -> Result<(u64, Option<Hash>), StoreError> {
        Ok(self
            .lock()
            .watermark
            .get(link)
            .copied()
            .unwrap_or((0, None)))
    }

    async fn receive(
        &self,
        link: &str,
        accepted: Vec<Incoming>,
        refused: Vec<Refused>,
    ) -> Result<u64, StoreError> {
        let mut inner = self.lock();
        let (mut mark, mut last) = inner.watermark.get(link).copied().unwrap_or((0, None));
        let mut all: Vec<(u64, Option<Incoming>, Option<Refused>)> = accepted
            .into_iter()
            .map(|i| (i.link_seq, Some(i), None))
            .chain(refused.into_iter().map(|r| (r.link_seq, None, Some(r))))
            .collect();
        all.sort_by_key(|(s, ..)| *s);
        for (seq, ok, bad) in all {
            if seq <= mark {
                continue;
            }
            if seq != mark + 1 {
                break;
            }
            if let Some(i) = ok {
                last = Some(i.item.digest());
                inner.inbox.entry(link.to_owned()).or_default().push(i);
            }
            if let Some(r) = bad {
                last = Some(r.item.digest());
                inner.refused.push(r);
            }
            mark = seq;
        }
        inner.watermark.insert(link.to_owned(), (mark, last));
        if inner.fail_after_store > 0 {
            inner.fail_after_store -= 1;
            return Err(StoreError("stored, then crashed before answering".into()));
        }
        Ok(mark)
    }
}
