//! A numbered stream of messages for the fault tests: a publisher that re-sends whatever the
//! broker did not acknowledge, and a subscriber on a persistent session that keeps every
//! sequence number it receives, across broker restarts.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};

use super::free_port;

/// The payload of message `seq`: `{"seq":<seq>}`.
pub fn payload(seq: usize) -> String {
    format!(r#"{{"seq":{seq}}}"#)
}

/// The sequence numbers found in `text`, one a line (`{"seq":N}` as the rule wrote it).
pub fn seqs_in(text: &str) -> Vec<usize> {
    text.lines()
        .filter_map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).ok()?;
            value["seq"].as_u64().map(|n| n as usize)
        })
        .collect()
}

/// Publishes `count` messages at QoS 1 on `in/0` .. `in/<topics-1>` (message `seq` on topic
/// `seq % topics`) at about `rate` a second. A message is done when the broker acknowledged
/// it; when the connection is lost, every message not acknowledged is published again, and
/// so is every message still not acknowledged after `STALE` without any acknowledgement (a
/// retransmission of rumqttc's after a reconnect can leave a message no longer tracked).
pub struct Publisher {
    pub acked: Arc<AtomicUsize>,
    pub resent: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl Publisher {
    pub fn start(port: u16, count: usize, topics: usize, rate: u32) -> Publisher {
        let acked = Arc::new(AtomicUsize::new(0));
        let resent = Arc::new(AtomicUsize::new(0));
        let (a, r) = (acked.clone(), resent.clone());
        let thread = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(publish(port, count, topics, rate, a, r));
        });
        Publisher {
            acked,
            resent,
            thread: Some(thread),
        }
    }

    pub fn acked(&self) -> usize {
        self.acked.load(Ordering::Relaxed)
    }

    /// Waits until the broker acknowledged `n` messages.
    pub fn wait_for_acked(&self, n: usize, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        while self.acked() < n {
            assert!(
                std::time::Instant::now() < deadline,
                "the broker acknowledged only {} of {n} messages",
                self.acked()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until every message was acknowledged (at most a minute).
    pub fn finish(mut self) {
        let thread = self.thread.take().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !thread.is_finished() {
            assert!(
                std::time::Instant::now() < deadline,
                "the publisher did not finish: the broker acknowledged {} messages",
                self.acked()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        thread.join().unwrap();
    }
}

async fn publish(
    port: u16,
    count: usize,
    topics: usize,
    rate: u32,
    acked: Arc<AtomicUsize>,
    resent: Arc<AtomicUsize>,
) {
    const HANDED: usize = 100;
    const STALE: Duration = Duration::from_secs(2);
    let options = MqttOptions::new(format!("stream-pub-{}", free_port()), "127.0.0.1", port);
    let (client, mut events) = AsyncClient::new(options, HANDED);
    let mut to_send: VecDeque<usize> = (0..count).collect();
    let mut unsent: VecDeque<usize> = VecDeque::new();
    let mut by_pkid: HashMap<u16, usize> = HashMap::new();
    let mut done: BTreeSet<usize> = BTreeSet::new();
    let mut connected = false;
    let burst = (rate / 100).max(1) as usize;
    let mut ticks = tokio::time::interval(Duration::from_millis(10));
    let mut last_ack = std::time::Instant::now();
    while done.len() < count {
        tokio::select! {
            _ = ticks.tick(), if connected => {
                if to_send.is_empty() && last_ack.elapsed() > STALE {
                    let lost: Vec<usize> = (0..count).filter(|s| !done.contains(s)).collect();
                    resent.fetch_add(lost.len(), Ordering::Relaxed);
                    unsent.clear();
                    by_pkid.clear();
                    to_send.extend(lost);
                    last_ack = std::time::Instant::now();
                }
                for _ in 0..burst {
                    if unsent.len() >= HANDED {
                        break;
                    }
                    let Some(seq) = to_send.pop_front() else { break };
                    let topic = format!("in/{}", seq % topics);
                    // Full while requests handed before a lost connection still wait in
                    // rumqttc's queue: this one waits for the next tick.
                    if client.try_publish(topic, QoS::AtLeastOnce, false, payload(seq)).is_err() {
                        to_send.push_front(seq);
                        break;
                    }
                    unsent.push_back(seq);
                }
            }
            event = events.poll() => match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    connected = true;
                    last_ack = std::time::Instant::now();
                }
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                    if let Some(seq) = unsent.pop_front() {
                        by_pkid.insert(pkid, seq);
                    }
                }
                Ok(Event::Incoming(Packet::PubAck(ack))) => {
                    last_ack = std::time::Instant::now();
                    if let Some(seq) = by_pkid.remove(&ack.pkid) {
                        done.insert(seq);
                        acked.store(done.len(), Ordering::Relaxed);
                    }
                }
                Ok(_) => {}
                Err(_) => {
                    // A clean session: rumqttc drops what it had; publish it all again.
                    connected = false;
                    let lost: Vec<usize> = unsent.drain(..).chain(by_pkid.drain().map(|(_, s)| s)).collect();
                    resent.fetch_add(lost.len(), Ordering::Relaxed);
                    for seq in lost.into_iter().rev() {
                        to_send.push_front(seq);
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_millis(300), events.poll()).await;
}

/// Subscribes to `filter` at QoS 1 on a persistent session and keeps the sequence number of
/// every message, reconnecting whenever the connection is lost.
pub struct Collector {
    seqs: Arc<Mutex<Vec<usize>>>,
    /// SUBACKs received: 1 at start, one more each time a lost session made it subscribe again.
    pub subscribed: Arc<AtomicUsize>,
}

impl Collector {
    pub fn start(port: u16, filter: &str) -> Collector {
        let seqs = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let filter = filter.to_owned();
        let kept = seqs.clone();
        let subscribed = Arc::new(AtomicUsize::new(0));
        let subacks = subscribed.clone();
        std::thread::spawn(move || {
            let mut options =
                MqttOptions::new(format!("stream-sub-{}", free_port()), "127.0.0.1", port);
            options.set_clean_session(false);
            let (client, mut connection) = rumqttc::Client::new(options, 100);
            client.subscribe(&filter, QoS::AtLeastOnce).unwrap();
            for event in connection.iter() {
                match event {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        subacks.fetch_add(1, Ordering::Relaxed);
                        let _ = ready_tx.send(());
                    }
                    // A broker that crashed forgot the session and its subscription.
                    Ok(Event::Incoming(Packet::ConnAck(ack))) if !ack.session_present => {
                        let _ = client.try_subscribe(&filter, QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let text = String::from_utf8_lossy(&p.payload);
                        kept.lock().unwrap().extend(seqs_in(&text));
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        });
        ready
            .recv_timeout(Duration::from_secs(10))
            .expect("no SUBACK");
        Collector { seqs, subscribed }
    }

    pub fn seqs(&self) -> Vec<usize> {
        self.seqs.lock().unwrap().clone()
    }
}

/// What a sink holds of a stream of `count` messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub unique: usize,
    pub lost: usize,
    pub duplicates: usize,
}

impl Tally {
    pub fn of(seqs: &[usize], count: usize) -> Tally {
        let unique: BTreeSet<usize> = seqs.iter().copied().filter(|s| *s < count).collect();
        Tally {
            unique: unique.len(),
            lost: count - unique.len(),
            duplicates: seqs.len() - unique.len(),
        }
    }
}
