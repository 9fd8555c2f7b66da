//! Reading a connection in batches when messages come fast: the subscribing connection's
//! messages, the publishing connection's PUBACKs.
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
//! sends at once (`subscriber::ACK_BATCH`) and of the publishes it sends at once
//! (`publisher::SEND_BATCH`), so that a broker that waits for an answer before it sends more
//! (its window full) is answered at once, not at the tick. A smaller window lowers it to
//! half the window (`Pace::fit`): a mark the window cannot reach would hold every message
//! until the tick. The publishing connection's window is the PUBACKs it waits for, which
//! change with every publish: a single topic's republishes, one at a time, are never
//! batched. At full load at QoS 1 the publishing connection read each PUBACK with a
//! wake-up of its own (91,000 reads for 100,000); batched, 5,800, and the context switches
//! of 100,000 messages fell from 81,000 to 32,000.
//!
//! Invariant: while the mark is raised, the timer is armed; so a message waits at most one
//! tick (a millisecond) before it is read.

use std::future::Future as _;
use std::io::{ErrorKind, Read as _};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// A message that comes this soon after topicrule found nothing more to read starts
/// batching.
const GAP: Duration = Duration::from_micros(500);
/// What is read below the mark waits for the timer's next tick: tokio rounds a deadline up
/// to its next millisecond, so this deadline ends at that tick.
const TICK: Duration = Duration::from_micros(1);
/// The mark, in messages of the average size seen (at most), and in bytes (at most).
const MARK_MESSAGES: usize = 4;
const MAX_MARK_BYTES: usize = 4096;

/// The batching state of a plain TCP connection. Its socket is passed to each call: the
/// tick's reads go to it directly, around tokio, which hears of no data below the mark.
pub(super) struct Pace {
    /// When tokio last found nothing to read, unless something was read since.
    idle_since: Option<Instant>,
    /// The average size of the last messages (a moving average over about eight).
    message_bytes: usize,
    /// The mark to raise, in messages; 0: never raised.
    mark_messages: usize,
    /// The mark raised, in messages; 0: not batching.
    raised: usize,
    /// The next tick, armed while batching.
    tick: Pin<Box<Sleep>>,
}

impl Pace {
    /// The batching of a connection whose peer sends at most `window` messages before it
    /// waits for an answer (see `fit`).
    pub fn new(window: usize) -> Pace {
        let mut pace = Pace {
            idle_since: None,
            message_bytes: 256,
            mark_messages: 0,
            raised: 0,
            tick: Box::pin(tokio::time::sleep(TICK)),
        };
        pace.fit(window);
        pace
    }

    /// Fits the mark to a peer that sends at most `window` messages before topicrule
    /// answers or sends more: at most half of them, so that a full window always wakes
    /// topicrule; under four, no batching (a mark of one message is the kernel's own, and
    /// one that the window cannot reach would make each message wait for the tick). A
    /// window that shrinks under the mark raised lowers it at the next tick.
    pub fn fit(&mut self, window: usize) {
        let messages = MARK_MESSAGES.min(window / 2);
        self.mark_messages = if messages >= 2 { messages } else { 0 };
    }

    /// Follows tokio's poll of `socket`, which read `polled` into `buf`: a read may raise
    /// the mark; nothing read may be the tick's turn to read what came below it. Returns
    /// what was read (`Ready(Ok(0))`: the connection is closed).
    pub fn after_read(
        &mut self,
        cx: &mut Context<'_>,
        socket: &TcpStream,
        polled: Poll<std::io::Result<usize>>,
        buf: &mut BytesMut,
    ) -> Poll<std::io::Result<usize>> {
        match polled {
            Poll::Ready(Ok(n)) if n > 0 => Poll::Ready(self.read(cx, socket).map(|()| n)),
            Poll::Pending => self.poll_below_mark(cx, socket, buf),
            other => other,
        }
    }

    /// Notes the size of a message read.
    pub fn message(&mut self, bytes: usize) {
        self.message_bytes = (self.message_bytes * 7 + bytes) / 8;
    }

    /// Notes that tokio read the socket: a message this soon after the socket ran dry
    /// raises the mark; while batching, what comes next waits for the next tick.
    fn read(&mut self, cx: &mut Context<'_>, socket: &TcpStream) -> std::io::Result<()> {
        let now = Instant::now();
        let soon = self.idle_since.take().is_some_and(|idle| now - idle < GAP);
        if self.raised == 0 && soon && self.mark_messages > 0 {
            let mark = (self.message_bytes * self.mark_messages).clamp(1, MAX_MARK_BYTES);
            set_mark(socket, mark)?;
            self.raised = self.mark_messages;
        }
        if self.raised > 0 {
            self.arm(cx, now);
        }
        Ok(())
    }

    /// When tokio found nothing to read: at the timer's tick, reads what came below the mark
    /// into `buf` (`Ready(Ok(0))`: the connection is closed); lowers the mark when nothing
    /// came since the last read.
    fn poll_below_mark(
        &mut self,
        cx: &mut Context<'_>,
        socket: &TcpStream,
        buf: &mut BytesMut,
    ) -> Poll<std::io::Result<usize>> {
        if self.raised == 0 {
            self.idle_since.get_or_insert_with(Instant::now);
            return Poll::Pending;
        }
        if self.tick.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        if self.raised <= self.mark_messages {
            match recv(socket, buf) {
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Ok(n) => {
                    self.arm(cx, Instant::now());
                    return Poll::Ready(Ok(n));
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        // A tick without a message, or a mark the window no longer reaches: one wake-up an
        // arrival again. What came before the lower mark woke nobody: read it now.
        if let Err(e) = set_mark(socket, 1) {
            return Poll::Ready(Err(e));
        }
        self.raised = 0;
        match recv(socket, buf) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => Poll::Pending,
            result => Poll::Ready(result),
        }
    }

    fn arm(&mut self, cx: &mut Context<'_>, now: Instant) {
        self.tick.as_mut().reset(now + TICK);
        let _ = self.tick.as_mut().poll(cx);
    }
}

/// Reads what the socket holds, without waiting (the socket is non-blocking).
fn recv(socket: &TcpStream, buf: &mut BytesMut) -> std::io::Result<usize> {
    let start = buf.len();
    buf.resize(start + MAX_MARK_BYTES, 0);
    let read = (&*socket2::SockRef::from(socket)).read(&mut buf[start..]);
    buf.truncate(start + read.as_ref().map_or(0, |n| *n));
    read
}

fn set_mark(socket: &TcpStream, bytes: usize) -> std::io::Result<()> {
    let value = libc::c_int::try_from(bytes).expect("a small mark");
    // SAFETY: `socket` is an open descriptor, borrowed for the call; the option's value is a
    // `c_int` of the size passed.
    let done = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
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

#[cfg(test)]
mod tests {
    use super::Pace;

    #[tokio::test]
    async fn the_mark_is_at_most_half_the_window() {
        let mark = |window: usize| Pace::new(window).mark_messages;
        assert_eq!(mark(usize::MAX), 4);
        assert_eq!(mark(20), 4);
        assert_eq!(mark(8), 4);
        assert_eq!(mark(6), 3);
        assert_eq!(mark(4), 2);
        // A window of three or less: no batching.
        assert_eq!(mark(3), 0);
        assert_eq!(mark(1), 0);
        let mut pace = Pace::new(usize::MAX);
        pace.fit(2);
        assert_eq!(pace.mark_messages, 0);
    }
}
