//! Reading the subscribing connection in batches when messages come fast.
//!
//! On loopback, beside the broker, most of topicrule's CPU goes to wake-ups, not to messages:
//! each arrival wakes the thread, each wake-up's republish wakes the broker. When a message
//! comes less than `GAP` after topicrule found nothing more to read, the socket's low-water
//! mark (`SO_RCVLOWAT`) is raised, so that the kernel wakes topicrule only once a few
//! messages are waiting; what came below the mark is read at the next tick of tokio's timer,
//! which ticks every millisecond. One wake-up then carries several messages, and their
//! republishes leave in one write. A tick that brings nothing lowers the mark again: a
//! message that comes alone is read the moment it arrives, as before.
//!
//! The mark is four messages of the sizes seen: half of the acknowledgements topicrule
//! sends at once (`subscriber::ACK_BATCH`), so that a broker that waits for acknowledgements
//! before it sends more (QoS 1, its in-flight window full) is answered at once, not at the
//! tick.
//!
//! Invariant: while the mark is raised, the timer is armed; so a message waits at most one
//! tick (a millisecond) before it is read.

use std::future::Future as _;
use std::io::{ErrorKind, Read as _};
use std::os::fd::{AsRawFd, OwnedFd};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use tokio::time::{Instant, Sleep};

/// A message that comes this soon after topicrule found nothing more to read starts
/// batching.
const GAP: Duration = Duration::from_micros(500);
/// What is read below the mark waits for the timer's next tick: tokio rounds a deadline up
/// to its next millisecond, so this deadline ends at that tick.
const TICK: Duration = Duration::from_micros(1);
/// The mark, in messages of the average size seen, and its bounds in bytes.
const MARK_MESSAGES: usize = 4;
const MARK_BYTES: std::ops::RangeInclusive<usize> = 64..=4096;

/// The batching state of a plain TCP connection.
pub(super) struct Pace {
    /// A second handle on the socket (a `dup`): the tick's reads go around tokio, which
    /// hears of no data below the mark. Dropped with the connection.
    socket: OwnedFd,
    batching: bool,
    /// When tokio last found nothing to read, unless something was read since.
    idle_since: Option<Instant>,
    /// The average size of the last messages (a moving average over about eight).
    message_bytes: usize,
    /// The next tick, armed while batching.
    tick: Pin<Box<Sleep>>,
}

impl Pace {
    pub fn new(socket: OwnedFd) -> Pace {
        Pace {
            socket,
            batching: false,
            idle_since: None,
            message_bytes: 256,
            tick: Box::pin(tokio::time::sleep(TICK)),
        }
    }

    /// Notes the size of a message read.
    pub fn message(&mut self, bytes: usize) {
        self.message_bytes = (self.message_bytes * 7 + bytes) / 8;
    }

    /// Notes that tokio read the socket: a message this soon after the socket ran dry
    /// raises the mark; while batching, what comes next waits for the next tick.
    pub fn read(&mut self, cx: &mut Context<'_>) -> std::io::Result<()> {
        let now = Instant::now();
        let soon = self.idle_since.take().is_some_and(|idle| now - idle < GAP);
        if !self.batching && soon {
            let mark =
                (self.message_bytes * MARK_MESSAGES).clamp(*MARK_BYTES.start(), *MARK_BYTES.end());
            self.set_mark(mark)?;
            self.batching = true;
        }
        if self.batching {
            self.arm(cx, now);
        }
        Ok(())
    }

    /// When tokio found nothing to read: at the timer's tick, reads what came below the mark
    /// into `buf` (`Ready(Ok(0))`: the connection is closed); lowers the mark when nothing
    /// came since the last read.
    pub fn poll_below_mark(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<std::io::Result<usize>> {
        if !self.batching {
            self.idle_since.get_or_insert_with(Instant::now);
            return Poll::Pending;
        }
        if self.tick.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        match self.recv(buf) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Ok(n) => {
                self.arm(cx, Instant::now());
                return Poll::Ready(Ok(n));
            }
            Err(e) => return Poll::Ready(Err(e)),
        }
        // A tick without a message: one wake-up an arrival again. What came between the
        // read above and the lower mark woke nobody: read it now.
        if let Err(e) = self.set_mark(1) {
            return Poll::Ready(Err(e));
        }
        self.batching = false;
        match self.recv(buf) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => Poll::Pending,
            result => Poll::Ready(result),
        }
    }

    fn arm(&mut self, cx: &mut Context<'_>, now: Instant) {
        self.tick.as_mut().reset(now + TICK);
        let _ = self.tick.as_mut().poll(cx);
    }

    /// Reads what the socket holds, without waiting (the socket is non-blocking).
    fn recv(&self, buf: &mut BytesMut) -> std::io::Result<usize> {
        let start = buf.len();
        buf.resize(start + *MARK_BYTES.end(), 0);
        let read = (&*socket2::SockRef::from(&self.socket)).read(&mut buf[start..]);
        buf.truncate(start + read.as_ref().map_or(0, |n| *n));
        read
    }

    fn set_mark(&self, bytes: usize) -> std::io::Result<()> {
        let value = libc::c_int::try_from(bytes).expect("a small mark");
        // SAFETY: `socket` is an open descriptor owned here; the option's value is a
        // `c_int` of the size passed.
        let done = unsafe {
            libc::setsockopt(
                self.socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVLOWAT,
                std::ptr::from_ref(&value).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if done == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}
