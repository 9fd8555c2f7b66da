//! Lanes: the messages of one topic are processed one at a time, in the order they arrived;
//! different topics proceed in parallel.
//!
//! Invariant: a topic has at most one lane, and a lane's task takes its messages in arrival
//! order; so a message's effects (a republish, a line of a file) never overtake those of an
//! earlier message of its topic, and a message whose action is being retried holds the
//! later messages of its topic behind it.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use tokio::sync::OwnedSemaphorePermit;

use super::subscriber::Delivery;

/// A message and its place among the messages topicrule holds (`max_in_flight`).
pub(super) type Held = (Delivery, OwnedSemaphorePermit);

/// The topics that have a lane, each with the messages waiting in it.
#[derive(Default)]
pub(super) struct Lanes {
    waiting: Mutex<HashMap<String, VecDeque<Held>>>,
}

impl Lanes {
    /// Queues `held` behind the messages of its topic. When its topic has no lane yet, opens
    /// one and gives `held` back: the caller starts the lane's task with it.
    pub fn enqueue(&self, held: Held) -> Option<Held> {
        let mut waiting = self.lock();
        let topic = held.0.message.topic();
        if let Some(queue) = waiting.get_mut(topic.as_ref()) {
            queue.push_back(held);
            return None;
        }
        waiting.insert(topic.into_owned(), VecDeque::new());
        Some(held)
    }

    /// The next message of `topic`'s lane; `None` closes the lane.
    pub fn next(&self, topic: &str) -> Option<Held> {
        let mut waiting = self.lock();
        let next = waiting.get_mut(topic)?.pop_front();
        if next.is_none() {
            waiting.remove(topic);
        }
        next
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<Held>>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}
