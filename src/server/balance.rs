//! Spreads connections evenly over the accepting threads.
//!
//! Every thread accepts on the one listening socket, and the thread that wakes first drains the
//! whole backlog: a burst of new connections (a load balancer opening its pool, a page opening
//! its six, a benchmark's 32) landed on one thread while the others idled, which left the
//! gateway on one core under load (measured in BENCHMARKS.md, "Connections spread over the
//! threads"). nginx's workers have the same race; here a thread that accepts a connection
//! while another thread serves fewer hands the connection over to the thread serving the
//! fewest. That costs moving the socket from one reactor to the other once per connection,
//! nothing per request.
//!
//! A connection counts for its thread from the accept until its socket closes, upgraded
//! websockets included: the connection's IO holds its [`Load`].

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::sync::mpsc;

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
    /// counted for this thread, `None` once it has been handed to a thread serving fewer.
    pub(crate) fn place(
        self: &Arc<Self>,
        here: usize,
        mut tcp: TcpStream,
        peer: SocketAddr,
    ) -> Option<Placed> {
        let target = self.least_loaded(here);
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
            // Sent: `None`. Refused only when that thread stopped since `least_loaded` looked;
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

    /// The thread serving the fewest connections, `here` when it is among them. A thread whose
    /// inbox is closed (it failed to start, or is stopping) takes none.
    fn least_loaded(&self, here: usize) -> usize {
        let mine = self.threads[here].live.load(Ordering::Relaxed);
        let mut best = (mine, here);
        for (i, t) in self.threads.iter().enumerate() {
            let n = t.live.load(Ordering::Relaxed);
            if n < best.0 && !t.inbox.is_closed() {
                best = (n, i);
            }
        }
        best.1
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

    #[tokio::test]
    async fn a_burst_accepted_on_one_thread_is_spread_over_all() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (balance, mut inboxes) = Balance::new(3);
        let mut kept = Vec::new();
        let mut clients = Vec::new();
        for _ in 0..9 {
            let (c, s, peer) = pair(&l).await;
            clients.push(c);
            // Thread 0 accepts every connection.
            if let Some(conn) = balance.place(0, s, peer) {
                kept.push(conn);
            }
        }
        assert_eq!(balance.live(), vec![3, 3, 3]);
        assert_eq!(kept.len(), 3);
        for inbox in &mut inboxes[1..] {
            let mut got = 0;
            while let Ok(h) = inbox.rx.try_recv() {
                let (_conn, peer, _load) = h.take().unwrap();
                assert!(peer.ip().is_loopback());
                got += 1;
            }
            assert_eq!(got, 3, "thread {}", inbox.index);
        }
        // Handed connections were dropped above: their threads count none now.
        assert_eq!(balance.live(), vec![3, 0, 0]);
        drop(kept);
        assert_eq!(balance.live(), vec![0, 0, 0]);
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
