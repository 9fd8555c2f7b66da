//! One MQTT connection, driven by the task that owns it: the byte stream, a read buffer the
//! packets are parsed from, a write buffer everything to send is encoded into, and the
//! keep-alive.
//!
//! Invariant: the write buffer is written whole, in order, before anything else is read
//! into it by a new connection; what one wake-up brings (many packets in one read) is
//! answered with one write. A lost connection drops both buffers: what they held belonged
//! to a session that is gone, and each owner (`subscriber`, `publisher`) knows what that
//! cost it.

use std::future::{poll_fn, Future as _};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt as _};
use tokio::time::{Interval, MissedTickBehavior, Sleep};

use super::pace::Pace;
use super::session::{Codec, ConnectOptions, Incoming, Malformed};
use super::transport::{Endpoint, OpenError, Stream};

/// How long opening the stream and the CONNECT/CONNACK exchange may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How much the read buffer asks of the socket at once.
const READ_CHUNK: usize = 64 * 1024;
/// How long `poll_write_soon` may put a write off, hoping to join the next one.
const PUT_OFF: Duration = Duration::from_millis(1);
/// What `poll_write_soon` writes at once, whatever the hurry.
const PUT_OFF_BYTES: usize = 16 * 1024;

/// Why no connection was made.
#[derive(Debug, thiserror::Error)]
pub(super) enum ConnectError {
    /// The broker answered and refused: bad credentials, a client id or a protocol it does
    /// not take. The same settings will be refused again.
    #[error("{0}")]
    Refused(String),
    /// The broker's host name does not resolve: a typo, or a network not up yet.
    #[error("{0}")]
    Unresolved(String),
    /// The TLS handshake failed on the certificates or protocols.
    #[error("{0}")]
    Untrusted(String),
    /// Anything else (the broker down or unreachable, a timeout): worth trying again.
    #[error("{0}")]
    Failed(String),
}

/// Why a connection ended (or was not made).
#[derive(Debug, thiserror::Error)]
pub(super) enum Lost {
    #[error("the broker closed the connection")]
    Closed,
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Malformed(#[from] Malformed),
    /// The broker's DISCONNECT (MQTT 5), with its reason.
    #[error("the broker disconnected topicrule: {0}")]
    Disconnected(String),
    /// A packet the protocol does not allow at that point.
    #[error("the broker sent {0}")]
    Unexpected(&'static str),
    #[error("the connection was recycled by the watchdog")]
    Recycled,
    #[error("the broker left a ping unanswered for {0:?}")]
    PingUnanswered(Duration),
    #[error(transparent)]
    NotConnected(#[from] ConnectError),
}

impl From<OpenError> for ConnectError {
    fn from(e: OpenError) -> ConnectError {
        match e {
            OpenError::Unresolved(why) => ConnectError::Unresolved(why),
            OpenError::Untrusted(why) => ConnectError::Untrusted(why),
            OpenError::Failed(why) => ConnectError::Failed(why),
        }
    }
}

/// What the broker said in its CONNACK.
pub(super) struct Connected {
    pub session_present: bool,
    pub receive_maximum: Option<u16>,
}

pub(super) struct Conn {
    pub codec: Codec,
    endpoint: Endpoint,
    options: ConnectOptions,
    io: Option<Box<dyn Stream>>,
    /// Whether reads are batched when messages come fast.
    batch_reads: bool,
    /// The most messages the peer sends before it waits for topicrule's answer: the
    /// batching never waits for more than half of them.
    window: usize,
    /// The batching of the current connection (plain TCP only).
    pace: Option<Pace>,
    read: BytesMut,
    /// Encoded packets waiting for the socket.
    pub out: BytesMut,
    keep_alive: Duration,
    last_write: Instant,
    ping_sent: Option<Instant>,
    ticks: Interval,
    /// When a write put off by `poll_write_soon` is due; `None` when none is.
    put_off: Option<Pin<Box<Sleep>>>,
    /// Counts connections: a message is acknowledged only on the one it came on.
    pub generation: u64,
    /// The watchdog's recycling requests, and how many this connection has seen.
    recycles: Arc<AtomicU64>,
    seen_recycles: u64,
}

impl Conn {
    pub fn new(
        codec: Codec,
        endpoint: Endpoint,
        options: ConnectOptions,
        recycles: Arc<AtomicU64>,
    ) -> Conn {
        let keep_alive = Duration::from_secs(u64::from(options.keep_alive_secs));
        let mut ticks = tokio::time::interval_at(
            tokio::time::Instant::now() + Duration::from_secs(1),
            Duration::from_secs(1),
        );
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Conn {
            codec,
            endpoint,
            options,
            io: None,
            batch_reads: false,
            window: usize::MAX,
            pace: None,
            read: BytesMut::new(),
            out: BytesMut::new(),
            keep_alive,
            last_write: Instant::now(),
            ping_sent: None,
            ticks,
            put_off: None,
            generation: 0,
            seen_recycles: recycles.load(Ordering::Relaxed),
            recycles,
        }
    }

    /// Batches the reads of this connection when messages come fast (see `pace`), for a
    /// first `window` (see `window`).
    pub fn batch_reads(mut self, batch: bool, window: usize) -> Conn {
        self.batch_reads = batch;
        self.window = window;
        self
    }

    /// The most messages the peer can send before topicrule answers or sends more: for
    /// the subscribing connection, the messages topicrule holds at most (`max_in_flight`);
    /// for the publishing one, the PUBACKs it waits for.
    pub fn window(&mut self, window: usize) {
        self.window = window;
        if let Some(pace) = &mut self.pace {
            pace.fit(window);
        }
    }

    pub fn client_id(&self) -> &str {
        &self.options.client_id
    }

    pub fn is_connected(&self) -> bool {
        self.io.is_some()
    }

    /// Opens the stream and exchanges CONNECT and CONNACK, within `CONNECT_TIMEOUT`.
    pub async fn connect(&mut self) -> Result<Connected, ConnectError> {
        self.drop_connection();
        let (io, connected) = tokio::time::timeout(CONNECT_TIMEOUT, self.handshake())
            .await
            .map_err(|_| {
                ConnectError::Failed(format!("no CONNACK within {CONNECT_TIMEOUT:?}"))
            })??;
        self.pace = (self.batch_reads && io.plain_tcp().is_some()).then(|| Pace::new(self.window));
        self.io = Some(io);
        self.generation += 1;
        self.last_write = Instant::now();
        self.ping_sent = None;
        Ok(connected)
    }

    async fn handshake(&mut self) -> Result<(Box<dyn Stream>, Connected), ConnectError> {
        let failed = ConnectError::Failed;
        let mut io = self.endpoint.open().await?;
        let mut connect = BytesMut::new();
        self.codec.connect(&mut connect, &self.options);
        io.write_all(&connect)
            .await
            .map_err(|e| failed(e.to_string()))?;
        io.flush().await.map_err(|e| failed(e.to_string()))?;
        loop {
            let packet = self
                .codec
                .read(&mut self.read)
                .map_err(|e| failed(e.to_string()))?;
            if let Some(packet) = packet {
                return match packet {
                    Incoming::ConnAck {
                        refused: Some(reason),
                        ..
                    } => Err(ConnectError::Refused(reason)),
                    Incoming::ConnAck {
                        session_present,
                        receive_maximum,
                        ..
                    } => Ok((
                        io,
                        Connected {
                            session_present,
                            receive_maximum,
                        },
                    )),
                    _ => Err(failed(
                        "the broker sent another packet before its CONNACK".into(),
                    )),
                };
            }
            self.read.reserve(READ_CHUNK);
            let n = poll_fn(|cx| {
                tokio_util::io::poll_read_buf(std::pin::Pin::new(&mut io), cx, &mut self.read)
            })
            .await
            .map_err(|e| failed(e.to_string()))?;
            if n == 0 {
                return Err(failed(
                    "the broker closed the connection before its CONNACK".into(),
                ));
            }
        }
    }

    /// Forgets the stream and what was buffered for it.
    pub fn drop_connection(&mut self) {
        self.io = None;
        self.pace = None;
        self.read.clear();
        self.out.clear();
    }

    /// Reads what the socket holds into the read buffer: `Ready(Ok)` when bytes arrived
    /// (take the packets with `next_packet`), an error when the connection is lost.
    pub fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Lost>> {
        let Some(io) = self.io.as_mut() else {
            return Poll::Pending;
        };
        if self.read.is_empty() && self.read.capacity() > 4 * READ_CHUNK {
            // What a large packet grew it to goes back to the allocator.
            self.read = BytesMut::new();
        }
        self.read.reserve(READ_CHUNK);
        let polled =
            tokio_util::io::poll_read_buf(std::pin::Pin::new(&mut *io), cx, &mut self.read);
        let polled = match (&mut self.pace, io.plain_tcp()) {
            (Some(pace), Some(socket)) => pace.after_read(cx, socket, polled, &mut self.read),
            _ => polled,
        };
        match polled {
            Poll::Ready(Ok(0)) => Poll::Ready(Err(Lost::Closed)),
            Poll::Ready(Ok(_)) => Poll::Ready(Ok(())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e.into())),
            Poll::Pending => Poll::Pending,
        }
    }

    /// The next whole packet read, if any.
    pub fn next_packet(&mut self) -> Result<Option<Incoming>, Malformed> {
        let buffered = self.read.len();
        Ok(match self.codec.read(&mut self.read)? {
            Some(Incoming::Publish(message)) => {
                if let Some(pace) = &mut self.pace {
                    pace.message(buffered - self.read.len());
                }
                // A small message gets its own bytes, so that the read buffer is reused; a
                // large one keeps its share (a copy would cost more than a new buffer).
                Some(Incoming::Publish(
                    if message.payload().len() < READ_CHUNK / 4 {
                        message.detached()
                    } else {
                        message
                    },
                ))
            }
            Some(Incoming::PingResp) => {
                self.ping_sent = None;
                Some(Incoming::PingResp)
            }
            packet => packet,
        })
    }

    /// Writes the write buffer: `Ready(Ok)` once all of it is written and flushed.
    pub fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Lost>> {
        let Some(io) = self.io.as_mut() else {
            return Poll::Pending;
        };
        let mut io = std::pin::Pin::new(io);
        while !self.out.is_empty() {
            match io.as_mut().poll_write(cx, &self.out) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(Lost::Closed)),
                Poll::Ready(Ok(n)) => {
                    self.out.advance(n);
                    self.last_write = Instant::now();
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                Poll::Pending => return Poll::Pending,
            }
        }
        io.poll_flush(cx).map_err(Lost::Io)
    }

    /// Writes the write buffer now when `now` (or when it grew large), else within
    /// `PUT_OFF`: packets that join the next ones in one write spare the broker a wake-up of
    /// their own (on loopback, where it runs beside topicrule, waking it costs more than the
    /// write). A write put off is never put off again.
    pub fn poll_write_soon(&mut self, cx: &mut Context<'_>, now: bool) -> Poll<Result<(), Lost>> {
        if self.out.is_empty() {
            return Poll::Ready(Ok(()));
        }
        let due = now
            || self.out.len() >= PUT_OFF_BYTES
            || match &mut self.put_off {
                Some(sleep) => sleep.as_mut().poll(cx).is_ready(),
                None => {
                    let mut sleep = Box::pin(tokio::time::sleep(PUT_OFF));
                    let due = sleep.as_mut().poll(cx).is_ready();
                    self.put_off = Some(sleep);
                    due
                }
            };
        if !due {
            return Poll::Pending;
        }
        self.put_off = None;
        self.poll_write(cx)
    }

    /// Once a second: `Ready(Ok)` (after queueing a PINGREQ when nothing was written for the
    /// keep-alive interval), or an error when the broker left a ping unanswered that long or
    /// the watchdog asked for a new connection.
    pub fn poll_tick(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Lost>> {
        if self.ticks.poll_tick(cx).is_pending() {
            return Poll::Pending;
        }
        if self.io.is_none() {
            return Poll::Ready(Ok(()));
        }
        let recycles = self.recycles.load(Ordering::Relaxed);
        if recycles != self.seen_recycles {
            self.seen_recycles = recycles;
            return Poll::Ready(Err(Lost::Recycled));
        }
        if let Some(sent) = self.ping_sent {
            if sent.elapsed() >= self.keep_alive {
                return Poll::Ready(Err(Lost::PingUnanswered(self.keep_alive)));
            }
        } else if self.last_write.elapsed() >= self.keep_alive {
            self.codec.ping(&mut self.out);
            self.ping_sent = Some(Instant::now());
        }
        Poll::Ready(Ok(()))
    }

    /// Sends a DISCONNECT and closes, waiting at most `wait` for the socket.
    pub async fn disconnect(&mut self, wait: Duration) {
        if self.io.is_none() {
            return;
        }
        self.codec.disconnect(&mut self.out);
        let _ = tokio::time::timeout(wait, poll_fn(|cx| self.poll_write(cx))).await;
        if let Some(mut io) = self.io.take() {
            let _ = tokio::time::timeout(wait, io.shutdown()).await;
        }
        self.drop_connection();
    }
}
