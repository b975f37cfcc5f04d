//! A work queue with upstream's guarantees, for loops that are not one kube-runtime
//! `Controller` per kind (the garbage collector): a key waits at most once, is never handed to
//! two workers at once, and one added while it is being worked on is worked on again after.

use std::collections::{HashSet, VecDeque};
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;

pub struct WorkQueue<T> {
    state: Mutex<State<T>>,
    ready: Notify,
}

struct State<T> {
    waiting: VecDeque<T>,
    queued: HashSet<T>,
    active: HashSet<T>,
    /// Added while active: queued again when done.
    dirty: HashSet<T>,
}

impl<T: Clone + Eq + Hash + Send + 'static> WorkQueue<T> {
    pub fn new() -> WorkQueue<T> {
        WorkQueue {
            state: Mutex::new(State {
                waiting: VecDeque::new(),
                queued: HashSet::new(),
                active: HashSet::new(),
                dirty: HashSet::new(),
            }),
            ready: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn add(&self, key: T) {
        let mut s = self.lock();
        if s.active.contains(&key) {
            s.dirty.insert(key);
            return;
        }
        if s.queued.insert(key.clone()) {
            s.waiting.push_back(key);
            drop(s);
            self.ready.notify_one();
        }
    }

    /// Waits for the next key; the caller must call `done` with it.
    pub async fn next(&self) -> T {
        loop {
            let notified = self.ready.notified();
            {
                let mut s = self.lock();
                if let Some(key) = s.waiting.pop_front() {
                    s.queued.remove(&key);
                    s.active.insert(key.clone());
                    if !s.waiting.is_empty() {
                        self.ready.notify_one();
                    }
                    return key;
                }
            }
            notified.await;
        }
    }

    /// The worker finished `key`; it runs again if it was added meanwhile.
    pub fn done(&self, key: &T) {
        let mut s = self.lock();
        s.active.remove(key);
        if s.dirty.remove(key) {
            drop(s);
            self.add(key.clone());
        }
    }

    /// Adds the key again after `delay` (a retry).
    pub fn add_after(self: &std::sync::Arc<Self>, key: T, delay: Duration) {
        let queue = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            queue.add(key);
        });
    }

    pub fn len(&self) -> usize {
        self.lock().waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T: Clone + Eq + Hash + Send + 'static> Default for WorkQueue<T> {
    fn default() -> Self {
        WorkQueue::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dedups_and_reruns_keys_added_while_active() {
        let q = WorkQueue::new();
        q.add("a");
        q.add("b");
        q.add("a");
        assert_eq!(q.len(), 2);
        let a = q.next().await;
        assert_eq!(a, "a");
        q.add("a"); // while active: not handed out twice
        assert_eq!(q.next().await, "b");
        assert!(q.is_empty());
        q.done(&"a");
        assert_eq!(q.next().await, "a");
    }
}
