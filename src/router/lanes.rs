//! Lanes: the messages of one topic are processed one at a time, in the order they arrived;
//! different topics proceed in parallel.
//!
//! Invariant: a topic has at most one lane, and its messages leave it in arrival order, the
//! next only once the one before has finished; so a message's effects (a republish, a line
//! of a file) never overtake those of an earlier message of its topic, and a message whose
//! action is being retried holds the later messages of its topic behind it.

use std::collections::VecDeque;

use foldhash::HashMap;

use super::subscriber::Delivery;

/// The topics that have a lane (a message being processed), each with the messages
/// waiting behind it. Owned by the subscribing task: no lock. Hashed with foldhash (seeded
/// per process), as the payloads' keys are: a lane opens and closes for most messages.
#[derive(Default)]
pub(super) struct Lanes {
    waiting: HashMap<String, VecDeque<Delivery>>,
}

impl Lanes {
    /// Queues `delivery` behind the messages of its topic. When its topic has no lane yet,
    /// opens one and gives `delivery` back: the caller processes it now.
    pub fn enqueue(&mut self, delivery: Delivery) -> Option<Delivery> {
        let topic = delivery.message.topic();
        if let Some(queue) = self.waiting.get_mut(topic.as_ref()) {
            queue.push_back(delivery);
            return None;
        }
        self.waiting.insert(topic.into_owned(), VecDeque::new());
        Some(delivery)
    }

    /// The next message of `topic`'s lane, once the one before has finished; `None` closes
    /// the lane.
    pub fn next(&mut self, topic: &str) -> Option<Delivery> {
        let queue = self.waiting.get_mut(topic)?;
        let next = queue.pop_front();
        if next.is_none() {
            self.waiting.remove(topic);
        }
        next
    }

    /// Drops the messages waiting in every lane (not the ones being processed); how many.
    pub fn clear_waiting(&mut self) -> usize {
        self.waiting.values_mut().map(|q| q.drain(..).count()).sum()
    }
}
