//! A TCP fault injector between the gateway and a Qlik stand-in: it passes bytes both ways
//! until told to refuse connections or to reset one in the middle of what Qlik is sending.
//! A reset is a real TCP RST (zero linger), what a crashed or restarted Qlik service gives.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A fault proxy listening on an ephemeral loopback port.
pub struct FaultProxy {
    pub addr: SocketAddr,
    shared: Arc<Mutex<Faults>>,
    /// Bumped when the service goes down: open connections are reset too.
    down: tokio::sync::watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Faults {
    target: Option<SocketAddr>,
    /// New connections are accepted and reset at once (the service is down).
    refuse: bool,
    rules: Vec<Rule>,
    /// Bumped by [`FaultProxy::cut_websockets`]; each upgraded connection acts on it once.
    cut_generation: u64,
    cut_after: usize,
    /// Connections reset so far, for the test to see that its fault happened.
    resets: usize,
}

/// Reset the connection `after` bytes into Qlik's answer to a request containing `trigger`.
struct Rule {
    trigger: Vec<u8>,
    after: usize,
    times: usize,
}

impl FaultProxy {
    /// Listens now; forwards each connection to the target set with
    /// [`FaultProxy::forward_to`] (the Qlik stand-in is started with the proxy's URL, so it comes
    /// later), until a fault is set.
    pub async fn start() -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shared = Arc::new(Mutex::new(Faults::default()));
        let s = shared.clone();
        let (down, down_rx) = tokio::sync::watch::channel(0u64);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let s = s.clone();
                let down = down_rx.clone();
                tokio::spawn(async move {
                    if s.lock().unwrap().refuse {
                        reset(&client);
                        s.lock().unwrap().resets += 1;
                        return;
                    }
                    let target = s.lock().unwrap().target;
                    let Some(target) = target else { return };
                    if let Ok(upstream) = TcpStream::connect(target).await {
                        relay(client, upstream, s, down).await;
                    }
                });
            }
        });
        FaultProxy {
            addr,
            shared,
            down,
            task,
        }
    }

    /// Where connections go from now on.
    pub fn forward_to(&self, target: SocketAddr) {
        self.shared.lock().unwrap().target = Some(target);
    }

    /// Where `url` (`scheme://host:port/…`) points, to pass to [`FaultProxy::forward_to`].
    pub fn addr_of(url: &str) -> SocketAddr {
        let rest = url.split_once("://").map_or(url, |(_, r)| r);
        let host_port = rest.split('/').next().unwrap_or(rest);
        host_port
            .parse()
            .expect("a URL with an IP address and a port")
    }

    /// `scheme://addr` of the proxy.
    pub fn url(&self, scheme: &str) -> String {
        format!("{scheme}://{}", self.addr)
    }

    /// While `on`, the service is down: open connections are reset, new ones accepted and reset.
    pub fn refuse(&self, on: bool) {
        self.shared.lock().unwrap().refuse = on;
        if on {
            self.down.send_modify(|g| *g += 1);
        }
    }

    /// The next `times` requests containing `trigger` (ASCII, any case) get `after` bytes of
    /// Qlik's answer, then a reset.
    pub fn reset_answers_to(&self, trigger: &str, after: usize, times: usize) {
        self.shared.lock().unwrap().rules.push(Rule {
            trigger: trigger.to_ascii_lowercase().into_bytes(),
            after,
            times,
        });
    }

    /// Removes every rule set with [`FaultProxy::reset_answers_to`].
    pub fn clear_rules(&self) {
        self.shared.lock().unwrap().rules.clear();
    }

    /// Every connection upgraded to a websocket by now passes `after` more bytes from Qlik, then
    /// is reset.
    pub fn cut_websockets(&self, after: usize) {
        let mut f = self.shared.lock().unwrap();
        f.cut_generation += 1;
        f.cut_after = after;
    }

    /// Connections reset so far.
    pub fn resets(&self) -> usize {
        self.shared.lock().unwrap().resets
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn reset(s: &TcpStream) {
    let _ = s.set_zero_linger();
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty()
        && hay
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

/// Bytes both ways; a cut armed by a rule or a websocket cut ends both legs with a reset
/// towards the gateway.
async fn relay(
    client: TcpStream,
    upstream: TcpStream,
    faults: Arc<Mutex<Faults>>,
    mut down: tokio::sync::watch::Receiver<u64>,
) {
    // Only outages from now on end this connection.
    down.borrow_and_update();
    let (mut c_rx, mut c_tx) = client.into_split();
    let (mut u_rx, mut u_tx) = upstream.into_split();
    // Bytes of Qlik's answer still to pass before the reset.
    let armed: Arc<Mutex<Option<usize>>> = Arc::default();
    let arm = armed.clone();
    let f = faults.clone();
    let to_qlik = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match c_rx.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            {
                let mut f = f.lock().unwrap();
                if let Some(rule) = f
                    .rules
                    .iter_mut()
                    .find(|r| r.times > 0 && contains(&buf[..n], &r.trigger))
                {
                    rule.times -= 1;
                    *arm.lock().unwrap() = Some(rule.after);
                }
            }
            if u_tx.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let (kill_tx, kill_rx) = tokio::sync::oneshot::channel::<()>();
    let to_gateway = async move {
        let mut kill_rx = kill_rx;
        let mut buf = vec![0u8; 64 * 1024];
        let mut upgraded = false;
        let mut seen_generation = faults.lock().unwrap().cut_generation;
        loop {
            let read = tokio::select! {
                r = u_rx.read(&mut buf) => r,
                _ = &mut kill_rx => {
                    reset(c_tx.as_ref());
                    faults.lock().unwrap().resets += 1;
                    return;
                }
            };
            let n = match read {
                Ok(0) | Err(_) => {
                    let _ = c_tx.shutdown().await;
                    return;
                }
                Ok(n) => n,
            };
            if !upgraded && buf[..n].starts_with(b"HTTP/1.1 101") {
                upgraded = true;
                seen_generation = faults.lock().unwrap().cut_generation;
            }
            if upgraded {
                let f = faults.lock().unwrap();
                if f.cut_generation != seen_generation {
                    seen_generation = f.cut_generation;
                    *armed.lock().unwrap() = Some(f.cut_after);
                }
            }
            let cut = *armed.lock().unwrap();
            match cut {
                Some(left) if left <= n => {
                    let _ = c_tx.write_all(&buf[..left]).await;
                    let _ = c_tx.flush().await;
                    reset(c_tx.as_ref());
                    faults.lock().unwrap().resets += 1;
                    return;
                }
                Some(left) => *armed.lock().unwrap() = Some(left - n),
                None => {}
            }
            if c_tx.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let mut kill_tx = Some(kill_tx);
    tokio::pin!(to_qlik, to_gateway);
    // Either leg ending drops both: after a cut that sends the reset.
    loop {
        tokio::select! {
            _ = &mut to_qlik => return,
            _ = &mut to_gateway => return,
            changed = down.changed(), if kill_tx.is_some() => {
                // Sender gone (the proxy was dropped): nothing more to watch.
                let k = kill_tx.take();
                if let (Ok(()), Some(k)) = (changed, k) {
                    let _ = k.send(());
                }
            }
        }
    }
}
