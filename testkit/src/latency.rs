//! A latency-injecting TCP proxy (issue 18): the network between a
//! controller and its nodes, on loopback, where this machine's kernel has no
//! `netem`.
//!
//! [`LatencyProxy::start`] listens on a free port of `127.0.0.1` for each
//! upstream (each also on `127.0.0.1`: it forwards to nothing else) and
//! delivers every segment it reads, either way, a fixed one-way delay after
//! it arrived, in order; a closed half is passed on after the same delay. So
//! a request and its answer take one round trip of twice the delay, and a
//! client that waits for an answer it could have pipelined pays for it in
//! wall time. The TCP handshake between a client and the proxy is not
//! delayed (the kernel answers it); everything after it is.
//!
//! It logs every segment (connection, direction, when it arrived, its size):
//! [`LatencyProxy::segments`] and [`round_trips`] count the round trips a
//! client waited for, the way a packet capture would.
//!
//! It runs on its own thread and tokio runtime, so it serves whatever runtime
//! (or none) the caller uses, and stops (closing every connection) when dropped.

use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdListener};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// Which way a segment went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the client to the upstream server.
    Up,
    /// From the upstream server to the client.
    Down,
}

/// One segment the proxy read (and delivered `delay` later).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// The connection, numbered from 0 in the order they were accepted.
    pub connection: u32,
    /// Which upstream (its index in [`LatencyProxy::start`]'s list).
    pub upstream: usize,
    /// Which way.
    pub direction: Direction,
    /// When it reached the proxy, from the proxy's start.
    pub at: Duration,
    /// Its size in bytes.
    pub len: usize,
}

/// The proxy: see the [module docs](self). Stopped when dropped.
#[derive(Debug)]
pub struct LatencyProxy {
    ports: Vec<u16>,
    delay: Duration,
    started: Instant,
    log: Arc<Mutex<Vec<Segment>>>,
    stop: Option<tokio::sync::watch::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LatencyProxy {
    /// Starts a proxy with a listener in front of each of `upstream_ports`
    /// (on `127.0.0.1`), delaying every segment by `one_way`.
    ///
    /// # Panics
    /// When no loopback port can be bound or the thread cannot start (a harness).
    pub fn start(upstream_ports: &[u16], one_way: Duration) -> Self {
        let mut listeners = Vec::new();
        let mut ports = Vec::new();
        for &up in upstream_ports {
            let listener = StdListener::bind((Ipv4Addr::LOCALHOST, 0))
                .expect("bind a loopback port for the latency proxy");
            listener
                .set_nonblocking(true)
                .expect("a non-blocking listener");
            ports.push(listener.local_addr().expect("the proxy's address").port());
            listeners.push((listener, SocketAddr::from((Ipv4Addr::LOCALHOST, up))));
        }
        let started = Instant::now();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let shared = Shared {
            delay: one_way,
            started,
            log: log.clone(),
            next: Arc::new(AtomicU32::new(0)),
        };
        let thread = std::thread::Builder::new()
            .name("latency-proxy".into())
            .spawn(move || serve(listeners, shared, stopped))
            .expect("start the latency proxy's thread");
        Self {
            ports,
            delay: one_way,
            started,
            log,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The port in front of each upstream, in the order they were given.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// The one-way delay.
    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// The time on the proxy's clock (what [`Segment::at`] is measured in).
    pub fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// Every segment so far, in the order they reached the proxy.
    pub fn segments(&self) -> Vec<Segment> {
        lock(&self.log).clone()
    }

    /// The segments that reached the proxy between `from` and `to` (on
    /// [`LatencyProxy::now`]'s clock): one operation's, to give [`round_trips`].
    pub fn segments_between(&self, from: Duration, to: Duration) -> Vec<Segment> {
        lock(&self.log)
            .iter()
            .filter(|s| s.at >= from && s.at <= to)
            .copied()
            .collect()
    }

    /// Forgets the segments logged so far.
    pub fn clear(&self) {
        lock(&self.log).clear();
    }
}

impl Drop for LatencyProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The round trips a client waited for in `segments` (one connection's, or
/// a window of it): how many times the direction turned from up to down,
/// each a request whose answer came back before the client spoke again.
/// Requests sent back to back without waiting (pipelined) count once.
pub fn round_trips(segments: &[Segment]) -> usize {
    let mut last = None;
    let mut turns = 0;
    for s in segments {
        if last == Some(Direction::Up) && s.direction == Direction::Down {
            turns += 1;
        }
        last = Some(s.direction);
    }
    turns
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[derive(Debug, Clone)]
struct Shared {
    delay: Duration,
    started: Instant,
    log: Arc<Mutex<Vec<Segment>>>,
    next: Arc<AtomicU32>,
}

fn serve(
    listeners: Vec<(StdListener, SocketAddr)>,
    shared: Shared,
    stopped: tokio::sync::watch::Receiver<bool>,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .expect("the latency proxy's runtime");
    runtime.block_on(async move {
        let mut accepting = Vec::new();
        for (index, (listener, upstream)) in listeners.into_iter().enumerate() {
            let listener = tokio::net::TcpListener::from_std(listener)
                .expect("a tokio listener for the proxy");
            let shared = shared.clone();
            let mut stopped = stopped.clone();
            accepting.push(tokio::spawn(async move {
                loop {
                    let client = tokio::select! {
                        accepted = listener.accept() => match accepted {
                            Ok((client, _)) => client,
                            Err(_) => continue,
                        },
                        _ = stopped.changed() => return,
                    };
                    let shared = shared.clone();
                    let stopped = stopped.clone();
                    tokio::spawn(async move {
                        tokio::select! {
                            _ = relay(client, upstream, index, shared) => {}
                            _ = wait_stop(stopped) => {}
                        }
                    });
                }
            }));
        }
        let mut stopped = stopped;
        wait_stop_ref(&mut stopped).await;
        for task in accepting {
            task.abort();
        }
    });
}

async fn wait_stop(mut stopped: tokio::sync::watch::Receiver<bool>) {
    wait_stop_ref(&mut stopped).await;
}

async fn wait_stop_ref(stopped: &mut tokio::sync::watch::Receiver<bool>) {
    while !*stopped.borrow() {
        if stopped.changed().await.is_err() {
            return;
        }
    }
}

/// Relays one connection both ways, each segment `delay` late.
async fn relay(client: TcpStream, upstream: SocketAddr, index: usize, shared: Shared) {
    let connection = shared.next.fetch_add(1, Ordering::Relaxed);
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = one_way(
        client_read,
        server_write,
        Direction::Up,
        connection,
        index,
        shared.clone(),
    );
    let down = one_way(
        server_read,
        client_write,
        Direction::Down,
        connection,
        index,
        shared,
    );
    tokio::join!(up, down);
}

/// Reads `from`, logs each segment, and writes it to `to` `delay` after it
/// arrived; passes the end of the stream on the same way.
async fn one_way(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    direction: Direction,
    connection: u32,
    upstream: usize,
    shared: Shared,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Option<Vec<u8>>)>();
    let delay = shared.delay;
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = from.read(&mut buf).await.unwrap_or(0);
            let arrived = Instant::now();
            if n == 0 {
                let _ = tx.send((arrived + delay, None));
                return;
            }
            lock(&shared.log).push(Segment {
                connection,
                upstream,
                direction,
                at: arrived.duration_since(shared.started),
                len: n,
            });
            if tx.send((arrived + delay, Some(buf[..n].to_vec()))).is_err() {
                return;
            }
        }
    };
    let writer = async move {
        while let Some((due, data)) = rx.recv().await {
            tokio::time::sleep_until(due.into()).await;
            match data {
                Some(bytes) => {
                    if to.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                None => {
                    let _ = to.shutdown().await;
                    return;
                }
            }
        }
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn echo_server() -> (u16, std::thread::JoinHandle<()>) {
        let listener = StdListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let thread = std::thread::spawn(move || {
            if let Ok((mut s, _)) = listener.accept() {
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        });
        (port, thread)
    }

    #[test]
    fn every_exchange_takes_a_round_trip_of_twice_the_delay_and_is_counted() {
        let (port, server) = echo_server();
        let proxy = LatencyProxy::start(&[port], Duration::from_millis(40));
        let mut client = std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, proxy.ports()[0]))
            .expect("connect through the proxy");
        let mut buf = [0u8; 16];
        let started = Instant::now();
        for _ in 0..3 {
            client.write_all(b"ping").expect("send");
            client.read_exact(&mut buf[..4]).expect("the echo");
            assert_eq!(&buf[..4], b"ping");
        }
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(240),
            "3 round trips took {took:?}"
        );
        // Two requests sent back to back, their answers waited for once.
        client.write_all(b"ab").expect("send");
        client.write_all(b"cd").expect("send");
        client.read_exact(&mut buf[..4]).expect("the echoes");
        drop(client);
        server.join().expect("the echo server");
        let segments = proxy.segments();
        assert!(segments
            .iter()
            .all(|s| s.connection == 0 && s.upstream == 0));
        assert!(round_trips(&segments) >= 4);
        assert!(round_trips(&segments) <= 5, "{segments:?}");
    }

    #[test]
    fn round_trips_count_turns_from_up_to_down() {
        let seg = |direction, ms| Segment {
            connection: 0,
            upstream: 0,
            direction,
            at: Duration::from_millis(ms),
            len: 1,
        };
        use Direction::{Down, Up};
        let log = [
            seg(Down, 0),
            seg(Up, 1),
            seg(Up, 2),
            seg(Down, 50),
            seg(Down, 51),
            seg(Up, 100),
            seg(Down, 150),
            seg(Up, 151),
        ];
        assert_eq!(round_trips(&log), 2);
        assert_eq!(round_trips(&[]), 0);
    }
}
