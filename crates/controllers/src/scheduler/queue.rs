//! The scheduling queue, as upstream's: an active queue ordered by priority then arrival, a
//! backoff queue for pods whose last attempt erred, and an unschedulable set that waits for a
//! cluster change that could help (a node added or changed, a pod deleted).

use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::framework::PodInfo;

/// How long a pod waits after its n-th failed attempt: 1 s doubling to 10 s, as upstream.
pub fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(1u64 << attempts.saturating_sub(1).min(4)).min(Duration::from_secs(10))
}

/// Unschedulable pods are retried at least this often even if nothing seems to change
/// (upstream: 5 minutes).
pub const UNSCHEDULABLE_FLUSH: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Active,
    Backoff(Instant),
    Unschedulable(Instant),
    /// Popped and being scheduled or bound.
    InFlight,
}

struct Entry {
    pod: Arc<PodInfo>,
    attempts: u32,
    place: Place,
    /// Bumped each time the entry enters the active heap, so stale heap items are skipped.
    generation: u64,
    /// A cluster change arrived while in flight: a failure goes to backoff, not unschedulable.
    moved_while_in_flight: bool,
    /// The last failure message recorded for the pod, so repeats are not written again.
    pub last_message: Option<String>,
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct HeapItem {
    priority: i32,
    order: std::cmp::Reverse<u64>,
    generation: u64,
    key: String,
}

#[derive(Default)]
pub struct Queue {
    entries: HashMap<String, Entry>,
    heap: BinaryHeap<HeapItem>,
    sequence: u64,
}

impl Queue {
    /// Adds a pod waiting for a node, or refreshes one already queued. An update to a pod that
    /// was unschedulable makes it active again: the change may help.
    pub fn add_or_update(&mut self, pod: Arc<PodInfo>) {
        let key = pod.key();
        match self.entries.get_mut(&key) {
            Some(entry) => {
                entry.pod = pod;
                if matches!(entry.place, Place::Unschedulable(_)) {
                    self.activate(&key);
                }
            }
            None => {
                self.entries.insert(
                    key.clone(),
                    Entry {
                        pod,
                        attempts: 0,
                        place: Place::InFlight,
                        generation: 0,
                        moved_while_in_flight: false,
                        last_message: None,
                    },
                );
                self.activate(&key);
            }
        }
    }

    pub fn remove(&mut self, key: &str) {
        self.entries.remove(key);
    }

    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    fn activate(&mut self, key: &str) {
        let Some(entry) = self.entries.get_mut(key) else { return };
        self.sequence += 1;
        entry.place = Place::Active;
        entry.generation = self.sequence;
        self.heap.push(HeapItem {
            priority: entry.pod.priority,
            order: std::cmp::Reverse(self.sequence),
            generation: self.sequence,
            key: key.to_owned(),
        });
    }

    /// The next pod to schedule, highest priority first, then oldest.
    pub fn pop(&mut self) -> Option<Arc<PodInfo>> {
        while let Some(item) = self.heap.pop() {
            let Some(entry) = self.entries.get_mut(&item.key) else { continue };
            if entry.place != Place::Active || entry.generation != item.generation {
                continue;
            }
            entry.place = Place::InFlight;
            entry.attempts += 1;
            entry.moved_while_in_flight = false;
            return Some(entry.pod.clone());
        }
        None
    }

    /// The pod was bound: it leaves the queue.
    pub fn done(&mut self, key: &str) {
        self.entries.remove(key);
    }

    /// No node fits. Returns true when `message` differs from the last one recorded, so the
    /// caller writes the condition and event only for news.
    pub fn unschedulable(&mut self, key: &str, message: &str, now: Instant) -> bool {
        let Some(entry) = self.entries.get_mut(key) else { return false };
        entry.place = if entry.moved_while_in_flight {
            Place::Backoff(now + backoff(entry.attempts))
        } else {
            Place::Unschedulable(now)
        };
        let news = entry.last_message.as_deref() != Some(message);
        entry.last_message = Some(message.to_owned());
        news
    }

    /// The attempt failed for another reason (a binding error): retry after a backoff.
    pub fn retry_later(&mut self, key: &str, now: Instant) {
        if let Some(entry) = self.entries.get_mut(key) {
            entry.place = Place::Backoff(now + backoff(entry.attempts));
        }
    }

    /// Something changed that may let unschedulable pods fit: retry them now.
    pub fn cluster_changed(&mut self) {
        let mut wake = Vec::new();
        for (key, entry) in &mut self.entries {
            match entry.place {
                Place::Unschedulable(_) => wake.push(key.clone()),
                Place::InFlight => entry.moved_while_in_flight = true,
                _ => {}
            }
        }
        for key in &wake {
            self.activate(key);
        }
    }

    /// Moves pods whose backoff ended, and unschedulable pods that waited a whole flush
    /// interval, to the active queue. Returns whether any moved.
    pub fn flush(&mut self, now: Instant) -> bool {
        let due: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| match e.place {
                Place::Backoff(until) => until <= now,
                Place::Unschedulable(since) => now.duration_since(since) >= UNSCHEDULABLE_FLUSH,
                _ => false,
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in &due {
            self.activate(key);
        }
        !due.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;

    fn pod(name: &str, priority: i32) -> Arc<PodInfo> {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"containers": [], "priority": priority},
        }))
        .unwrap();
        Arc::new(PodInfo::new(Arc::new(pod)))
    }

    #[test]
    fn priority_then_arrival() {
        let mut q = Queue::default();
        q.add_or_update(pod("low", 0));
        q.add_or_update(pod("high", 10));
        q.add_or_update(pod("low2", 0));
        let order: Vec<String> = std::iter::from_fn(|| q.pop()).map(|p| p.name.clone()).collect();
        assert_eq!(order, ["high", "low", "low2"]);
    }

    #[test]
    fn unschedulable_waits_for_a_change() {
        let mut q = Queue::default();
        let now = Instant::now();
        q.add_or_update(pod("p", 0));
        q.pop().unwrap();
        assert!(q.unschedulable("ns/p", "0/1 nodes", now));
        assert!(q.pop().is_none());
        assert!(!q.flush(now + Duration::from_secs(5)));
        q.cluster_changed();
        assert_eq!(q.pop().unwrap().name, "p");
        // The same message again is not news.
        assert!(!q.unschedulable("ns/p", "0/1 nodes", now));
        // Nothing changes, but the periodic flush retries it.
        assert!(q.flush(now + UNSCHEDULABLE_FLUSH));
        assert!(q.pop().is_some());
    }

    #[test]
    fn a_change_during_the_attempt_is_not_lost() {
        let mut q = Queue::default();
        let now = Instant::now();
        q.add_or_update(pod("p", 0));
        q.pop().unwrap();
        q.cluster_changed();
        q.unschedulable("ns/p", "no", now);
        assert!(q.flush(now + backoff(1)));
        assert!(q.pop().is_some());
    }

    #[test]
    fn backoff_doubles_to_ten_seconds() {
        assert_eq!([1, 2, 3, 4, 5, 9].map(|n| backoff(n).as_secs()), [1, 2, 4, 8, 10, 10]);
    }
}
