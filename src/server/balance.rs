//! Places connections on the accepting threads: packed onto one while the load is light,
//! spread evenly once it is not.
//!
//! Every thread accepts on the one listening socket, and the thread that wakes first drains the
//! whole backlog: a burst of new connections (a load balancer opening its pool, a page opening
//! its six, a benchmark's 32) landed on one thread while the others idled, which left the
//! gateway on one core under load (measured in BENCHMARKS.md, "Connections spread over the
//! threads"). Spread evenly from the first connection, though, a light load (a few browsers)
//! kept every thread waking up for a request now and then, and on a VM each of those wake-ups
//! across cores cost more CPU than the request itself: 4 connections spread over two threads
//! took 43–51 µs of CPU per request, packed onto one 32–39 µs, at 0.75 × the packed rate
//! (BENCHMARKS.md, "Packed at light load"). nginx's workers fall into the packed placement by
//! their accept race; here it is the rule: a new connection goes to the busiest thread that
//! serves fewer than [`PACK`], and once every thread serves that many, to the thread serving the
//! fewest. A connection accepted on another thread than its target is handed over: that costs
//! moving the socket from one reactor to the other once per connection, nothing per request.
//!
//! A connection counts for its thread from the accept until its socket closes, upgraded
//! websockets included: the connection's IO holds its [`Load`].

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Connections a thread takes before another thread is given any: about one browser's worth (up to
/// six HTTP/1 connections per origin, and its engine websockets). Below it the load is light
/// enough for one thread, and packing it there spares the others their wake-ups; above it every
/// thread gets its share, so a burst (a load balancer's pool, clients reconnecting after a
/// restart) still reaches every core.
pub(crate) const PACK: usize = 8;

/// A connection handed from the thread that accepted it to the one that will serve it.
pub(crate) struct Handed {
    tcp: std::net::TcpStream,
    peer: SocketAddr,
    load: Load,
}

impl Handed {
    /// The socket, registered with the calling thread's runtime, its peer, and its count.
    pub(crate) fn take(self) -> io::Result<Placed> {
        let tcp = TcpStream::from_std(self.tcp)?;
        Ok((tcp, self.peer, self.load))
    }
}

/// A connection to serve on this thread: its socket, its peer, and its count here.
pub(crate) type Placed = (TcpStream, SocketAddr, Load);

/// The live connections of every accepting thread, and where to send a thread its new ones.
pub(crate) struct Balance {
    threads: Vec<Slot>,
}

struct Slot {
    live: AtomicUsize,
    inbox: mpsc::UnboundedSender<Handed>,
}

/// A thread's share of [`Balance`]: its index and the connections handed to it.
pub(crate) struct Inbox {
    pub(crate) index: usize,
    pub(crate) rx: mpsc::UnboundedReceiver<Handed>,
}

impl Balance {
    /// A balance over `n` threads (at least one), with the inbox of each.
    pub(crate) fn new(n: usize) -> (Arc<Balance>, Vec<Inbox>) {
        let (threads, inboxes) = (0..n.max(1))
            .map(|index| {
                let (tx, rx) = mpsc::unbounded_channel();
                let slot = Slot {
                    live: AtomicUsize::new(0),
                    inbox: tx,
                };
                (slot, Inbox { index, rx })
            })
            .unzip();
        (Arc::new(Balance { threads }), inboxes)
    }

    /// Where a connection just accepted by thread `here` should be served: `Some` with it
    /// counted for this thread, `None` once it has been handed to the thread [`Self::target`]
    /// picked.
    pub(crate) fn place(
        self: &Arc<Self>,
        here: usize,
        mut tcp: TcpStream,
        peer: SocketAddr,
    ) -> Option<Placed> {
        let target = self.target(here);
        if target != here {
            let std = match tcp.into_std() {
                Ok(std) => std,
                Err(e) => {
                    // The socket could not leave this thread's reactor; it is lost either way.
                    tracing::warn!(error = %e, "cannot hand a connection to another thread");
                    return None;
                }
            };
            let handed = Handed {
                tcp: std,
                peer,
                load: self.claim(target),
            };
            // Sent: `None`. Refused only when that thread stopped since `target` looked;
            // then the connection is served here.
            let mpsc::error::SendError(back) = self.threads[target].inbox.send(handed).err()?;
            tcp = match TcpStream::from_std(back.tcp) {
                Ok(tcp) => tcp,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot serve a connection on this thread");
                    return None;
                }
            };
        }
        Some((tcp, peer, self.claim(here)))
    }

    /// Where the next connection goes: the busiest thread serving fewer than [`PACK`], else the
    /// thread serving the fewest; `here` whenever it is among the best. A thread whose inbox is
    /// closed (it failed to start, or is stopping) takes none.
    fn target(&self, here: usize) -> usize {
        // (connections served, thread) of every thread that takes connections.
        let open = || {
            self.threads
                .iter()
                .enumerate()
                .filter(|&(i, t)| i == here || !t.inbox.is_closed())
                .map(|(i, t)| (t.live.load(Ordering::Relaxed), i))
        };
        // On a tie, `here` wins: no hand-over.
        open()
            .filter(|&(n, _)| n < PACK)
            .max_by_key(|&(n, i)| (n, i == here))
            .or_else(|| open().min_by_key(|&(n, i)| (n, i != here)))
            .map_or(here, |(_, i)| i)
    }

    /// Counts a connection for thread `i` until the returned guard is dropped. Counted when the
    /// thread is chosen, not when it takes the connection, so that a burst does not send every
    /// connection to the same thread before it has counted the first.
    fn claim(self: &Arc<Self>, i: usize) -> Load {
        self.threads[i].live.fetch_add(1, Ordering::Relaxed);
        Load {
            balance: self.clone(),
            index: i,
        }
    }

    #[cfg(test)]
    fn live(&self) -> Vec<usize> {
        self.threads
            .iter()
            .map(|t| t.live.load(Ordering::Relaxed))
            .collect()
    }
}

/// One connection's count on its thread, for as long as the connection is open.
pub(crate) struct Load {
    balance: Arc<Balance>,
    index: usize,
}

impl Drop for Load {
    fn drop(&mut self) {
        self.balance.threads[self.index]
            .live
            .fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn pair(l: &TcpListener) -> (TcpStream, TcpStream, SocketAddr) {
        let client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (server, peer) = l.accept().await.unwrap();
        (client, server, peer)
    }

    /// Accepts `n` connections, the `i`th on thread `by(i)`: the clients, and the connections
    /// that stayed on the thread that accepted them.
    async fn accept(
        l: &TcpListener,
        balance: &Arc<Balance>,
        n: usize,
        by: impl Fn(usize) -> usize,
    ) -> (Vec<TcpStream>, Vec<Placed>) {
        let (mut clients, mut kept) = (Vec::new(), Vec::new());
        for i in 0..n {
            let (c, s, peer) = pair(l).await;
            clients.push(c);
            kept.extend(balance.place(by(i), s, peer));
        }
        (clients, kept)
    }

    /// Takes what `balance` handed to `inbox`, as its thread would.
    fn take_all(inbox: &mut Inbox) -> Vec<Placed> {
        let mut got = Vec::new();
        while let Ok(h) = inbox.rx.try_recv() {
            let placed = h.take().unwrap();
            assert!(placed.1.ip().is_loopback());
            got.push(placed);
        }
        got
    }

    #[tokio::test]
    async fn a_light_load_is_packed_onto_one_thread_whichever_accepts_it() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (balance, mut inboxes) = Balance::new(2);
        // The threads take turns accepting: the first one's connections stay where they are, the
        // other's are handed to it.
        let (_clients, kept) = accept(&l, &balance, PACK, |i| i % 2).await;
        assert_eq!(balance.live(), vec![PACK, 0]);
        assert_eq!(kept.len(), PACK / 2);
        assert_eq!(take_all(&mut inboxes[0]).len(), PACK / 2);
        assert!(take_all(&mut inboxes[1]).is_empty());
    }

    #[tokio::test]
    async fn a_burst_accepted_on_one_thread_is_spread_over_all() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (balance, mut inboxes) = Balance::new(3);
        // Thread 0 accepts every connection.
        let (_clients, kept) = accept(&l, &balance, 3 * PACK + 3, |_| 0).await;
        // Each thread filled to PACK in turn, then one more each.
        assert_eq!(balance.live(), vec![PACK + 1; 3]);
        assert_eq!(kept.len(), PACK + 1);
        for inbox in &mut inboxes[1..] {
            assert_eq!(take_all(inbox).len(), PACK + 1, "thread {}", inbox.index);
        }
        // Handed connections were dropped above: their threads count none now.
        assert_eq!(balance.live(), vec![PACK + 1, 0, 0]);
        drop(kept);
        assert_eq!(balance.live(), vec![0, 0, 0]);
    }

    #[tokio::test]
    async fn a_thread_with_room_takes_the_next_connection_before_an_idle_one() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (balance, mut inboxes) = Balance::new(2);
        let (_clients, _kept) = accept(&l, &balance, 2 * PACK, |_| 0).await;
        let mut theirs = take_all(&mut inboxes[1]);
        assert_eq!(balance.live(), vec![PACK, PACK]);
        // Two of thread 1's connections close: it has room again, and gets the next ones.
        theirs.truncate(PACK - 2);
        let (_c, s, peer) = pair(&l).await;
        assert!(balance.place(0, s, peer).is_none(), "handed to thread 1");
        assert_eq!(balance.live(), vec![PACK, PACK - 1]);
        drop(theirs);
    }

    #[tokio::test]
    async fn a_closed_thread_gets_no_more_connections() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (balance, mut inboxes) = Balance::new(2);
        inboxes[1].rx.close();
        let mut kept = Vec::new();
        for _ in 0..4 {
            let (_c, s, peer) = pair(&l).await;
            kept.push(balance.place(0, s, peer).unwrap());
        }
        assert_eq!(balance.live()[0], 4);
    }

    #[tokio::test]
    async fn a_thread_gone_without_closing_is_skipped_and_the_connection_served_here() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (balance, mut inboxes) = Balance::new(2);
        // Thread 1 never started: its inbox was dropped, its count says nothing.
        drop(inboxes.pop());
        let (_c1, s1, p1) = pair(&l).await;
        let first = balance.place(0, s1, p1).unwrap();
        let (_c2, s2, p2) = pair(&l).await;
        let second = balance.place(0, s2, p2);
        assert!(
            second.is_some(),
            "served here when the other thread is gone"
        );
        let (_c3, s3, p3) = pair(&l).await;
        assert!(balance.place(0, s3, p3).is_some());
        drop((first, second));
    }
}
