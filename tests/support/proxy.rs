//! A loopback TCP proxy in front of the broker that can hold back what the broker sends to
//! chosen connections: their bytes are read and kept (so the broker never blocks), and
//! reach the client only when released. When the broker closes a connection, the proxy
//! closes the client's side, as a broker restart does.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub struct HoldingProxy {
    pub port: u16,
    /// Connections are numbered from 1 as they come; those below this number are held.
    held_below: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
}

impl HoldingProxy {
    /// Proxies `127.0.0.1:<port>` to the broker on `upstream`. Connections whose first bytes
    /// (the MQTT CONNECT, with the client id) contain `marker` can be held.
    pub fn start(upstream: u16, marker: &'static [u8]) -> HoldingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let held_below = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (held, count) = (held_below.clone(), accepted.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                let number = count.fetch_add(1, Ordering::SeqCst) + 1;
                let held = held.clone();
                std::thread::spawn(move || {
                    let hold = move || number < held.load(Ordering::SeqCst);
                    proxy(client, upstream, marker, hold)
                });
            }
        });
        HoldingProxy {
            port,
            held_below,
            accepted,
        }
    }

    /// From now on, holds what the broker sends to the marked connections open now (not to
    /// those that come later, such as the reconnections after a broker restart).
    pub fn hold_current(&self) {
        let next = self.accepted.load(Ordering::SeqCst) + 1;
        self.held_below.store(next, Ordering::SeqCst);
    }
}

fn proxy(mut client: TcpStream, upstream: u16, marker: &[u8], hold: impl Fn() -> bool) {
    let Ok(mut broker) = TcpStream::connect(("127.0.0.1", upstream)) else {
        return;
    };
    let mut first = vec![0u8; 4096];
    let Ok(n) = client.read(&mut first) else {
        return;
    };
    let marked = first[..n].windows(marker.len()).any(|w| w == marker);
    if broker.write_all(&first[..n]).is_err() {
        return;
    }
    let (mut to_broker, mut from_client) =
        (broker.try_clone().unwrap(), client.try_clone().unwrap());
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from_client, &mut to_broker);
        let _ = to_broker.shutdown(Shutdown::Both);
    });
    let mut kept = Vec::new();
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let n = match broker.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        kept.extend_from_slice(&buffer[..n]);
        if marked && hold() {
            continue;
        }
        if client.write_all(&kept).is_err() {
            break;
        }
        kept.clear();
    }
    let _ = client.shutdown(Shutdown::Both);
}
