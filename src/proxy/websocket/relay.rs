//! The byte relay, an engine socket's second phase: bytes both ways as they come, with only the
//! frame boundaries followed ([`FrameTracker`]). An idle socket holds no buffers, and a large
//! frame streams through instead of being assembled. What still needs frames is done on the
//! boundaries, by a small state machine per direction:
//!
//! - client → Qlik ([`ClientFrames`]): a message over `security.max_websocket_message` is not
//!   passed on; the client gets 1009 and Qlik a close. Data frames count as activity for the
//!   gateway session's idle timer and in the frame metrics. The client's close ends the direction.
//! - Qlik → client ([`QlikFrame`], [`QlikLeg`]): small text frames are read by the
//!   [`FatalWatch`]; Qlik's close frame is held back until the watch has decided whether it
//!   becomes a "reconnect" close (or a login prompt); a gateway close (logout, session end,
//!   shutdown, the client's 1009) is sent at the next boundary.

use std::pin::Pin;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

use super::activity::Activity;
use super::close::{
    close_frame_for, ending_frames, finish_cut_frame, going_away, linger, notification_for,
    too_big_frame, warn_too_big, CLOSE_WAIT,
};
use super::legs::{write_all, write_flush, Side};
use super::notices::{observe_bytes, FatalWatch, FATAL_NOTICE_MAX};
use crate::metrics::Direction;
use crate::net::Io;
use crate::proxy::cut_frame::MessageTail;
use crate::proxy::frames::{self, FrameTracker, Header, Step};
use crate::session::{QlikSession, SessionId};
use crate::sockets::{CloseReason, SocketGuard};
use crate::state::AppState;

/// Both legs of a settled engine socket, with the bytes each tap had read but not passed on.
pub(super) struct Legs {
    pub(super) client: TokioIo<hyper::upgrade::Upgraded>,
    pub(super) client_rest: Vec<u8>,
    pub(super) upstream: Pin<Box<dyn Io>>,
    pub(super) upstream_rest: Vec<u8>,
    /// The side whose close frame the settle phase has passed on already.
    pub(super) closed: Option<Side>,
}

/// What the byte relay keeps of a settled socket.
pub(super) struct Relay {
    pub(super) state: Arc<AppState>,
    pub(super) sid: SessionId,
    pub(super) qlik: QlikSession,
    pub(super) guard: SocketGuard,
    pub(super) fatal: FatalWatch,
}

/// Why the gateway ends a socket in the byte relay; acted on at the next frame boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Gateway(CloseReason),
    TooBig,
}

/// Relays both directions until the socket ends.
pub(super) async fn run(relay: Relay, legs: Legs) {
    let Relay {
        state,
        sid,
        qlik,
        mut guard,
        mut fatal,
    } = relay;
    let closed = legs.closed;
    let (mut c_rx, mut c_tx) = tokio::io::split(legs.client);
    let (mut u_rx, mut u_tx) = tokio::io::split(legs.upstream);
    let (client_rest, upstream_rest) = (legs.client_rest, legs.upstream_rest);
    // The client's half cannot write its 1009; the other direction does it, on a boundary.
    let (too_big_tx, too_big_rx) = oneshot::channel::<()>();
    let mut to_client = QlikToClient {
        state: &state,
        sid: &sid,
        qlik: &qlik,
        fatal: &mut fatal,
        guard: &mut guard,
        too_big: Some(too_big_rx),
        rx: &mut u_rx,
        tx: &mut c_tx,
        tracker: FrameTracker::default(),
        tail: MessageTail::default(),
        frame: QlikFrame::Pass,
        leg: QlikLeg::Open,
        spare: Vec::new(),
        carry: Vec::new(),
    };
    {
        let client_to_upstream = async {
            if closed == Some(Side::Client) {
                return;
            }
            client_to_qlik(&state, &sid, &mut c_rx, &mut u_tx, client_rest, too_big_tx).await;
        };
        let upstream_to_client = async {
            if closed == Some(Side::Qlik) {
                return;
            }
            to_client.run(upstream_rest).await;
        };
        // When one direction ends, give the other a moment to finish the close handshake.
        tokio::pin!(client_to_upstream, upstream_to_client);
        tokio::select! {
            _ = &mut client_to_upstream => { let _ = tokio::time::timeout(CLOSE_WAIT, upstream_to_client).await; }
            _ = &mut upstream_to_client => { let _ = tokio::time::timeout(CLOSE_WAIT, client_to_upstream).await; }
        }
    }
    let lingering = matches!(to_client.leg, QlikLeg::Stopped(Stop::TooBig));
    drop(to_client);
    if lingering {
        drop((u_tx, u_rx));
        let mut client = c_rx.unsplit(c_tx);
        linger(&mut client).await;
    }
}

/// Where the client → Qlik direction is in the client's frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientFrames {
    /// Passing frames on; `message`: the payload bytes of the current data message so far.
    Pass { message: u64 },
    /// Inside the client's close frame: passed on, and the direction ends with its last byte.
    InClose,
    /// The client's close frame has been passed on whole.
    Closed,
    /// The header just read took its message over the size limit: it is not passed on.
    TooBig,
}

impl ClientFrames {
    /// After a frame header. A control frame between the fragments of a message leaves the
    /// message's count as it was.
    fn header(self, h: &Header, max: u64) -> Self {
        match self {
            ClientFrames::Pass { message } if h.is_data() => {
                let message = if h.opcode == frames::OP_CONTINUATION {
                    message + h.len
                } else {
                    h.len
                };
                if message > max {
                    ClientFrames::TooBig
                } else {
                    ClientFrames::Pass { message }
                }
            }
            ClientFrames::Pass { .. } if h.opcode == frames::OP_CLOSE && h.len == 0 => {
                ClientFrames::Closed
            }
            ClientFrames::Pass { .. } if h.opcode == frames::OP_CLOSE => ClientFrames::InClose,
            other => other,
        }
    }

    /// After payload bytes; `end`: the frame ends with them.
    fn payload(self, end: bool) -> Self {
        match self {
            ClientFrames::InClose if end => ClientFrames::Closed,
            other => other,
        }
    }
}

/// The client → Qlik direction: passes the client's frames on as they come, a frame header only
/// once it is complete (so that a frame refused on its header never reaches Qlik).
async fn client_to_qlik<R, W>(
    state: &Arc<AppState>,
    sid: &SessionId,
    rx: &mut R,
    tx: &mut W,
    mut pending: Vec<u8>,
    too_big: oneshot::Sender<()>,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let max = state.cfg.security.max_websocket_message as u64;
    let mut activity = Activity::new(state, sid);
    let mut t = FrameTracker::default();
    let mut at = ClientFrames::Pass { message: 0 };
    let (mut spare, mut carry) = (Vec::new(), Vec::new());
    loop {
        let chunk = if pending.is_empty() {
            match frames::read_chunk(rx, &mut spare).await {
                Ok(Some(c)) => c,
                Ok(None) | Err(_) => {
                    if t.at_boundary() {
                        let f = Frame::close(Some(going_away("client connection failed")));
                        let _ = write_flush(tx, &frames::encode(f, true)).await;
                    }
                    return;
                }
            }
        } else {
            std::mem::take(&mut pending)
        };
        let chunk = after_carry(&mut carry, chunk);
        let mut i = 0;
        while i < chunk.len() {
            let step = match t.step(&chunk[i..]) {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(session = %sid.log_tag(), error = %e, "client sent bytes that are not websocket frames; closing");
                    return;
                }
            };
            match step {
                Step::Partial => {
                    carry.extend_from_slice(&chunk[i..]);
                    break;
                }
                Step::Header { header, used } => {
                    at = at.header(&header, max);
                    if at == ClientFrames::TooBig {
                        let _ = write_all(tx, &chunk[..i]).await;
                        warn_too_big("client", state);
                        let f = Frame::close(Some(going_away("client connection failed")));
                        let _ = write_flush(tx, &frames::encode(f, true)).await;
                        let _ = too_big.send(());
                        return;
                    }
                    if header.is_data() {
                        activity.seen();
                        state
                            .metrics
                            .ws_frame(Direction::ClientToQlik, header.len as usize);
                    }
                    i += used;
                }
                Step::Payload { n, end } => {
                    i += n;
                    at = at.payload(end);
                }
            }
            if at == ClientFrames::Closed {
                let _ = write_flush(tx, &chunk[..i]).await;
                return;
            }
        }
        if write_flush(tx, &chunk[..i]).await.is_err() {
            return;
        }
        frames::keep_for_next_read(chunk, &mut spare);
    }
}

/// What the Qlik → client direction does with the frame it is in.
#[derive(Debug, PartialEq, Eq)]
enum QlikFrame {
    /// Passes it on unread.
    Pass,
    /// A small text frame, passed on as it comes and read for the fatal watch: its payload so
    /// far (empty while the whole payload comes in one read: no copy then).
    Watch(Vec<u8>),
    /// Qlik's close frame, held back until it is complete: its header and payload so far.
    Hold { header: Header, bytes: Vec<u8> },
}

impl QlikFrame {
    /// The state a frame with this header starts in.
    fn starting(h: &Header, bytes: &[u8]) -> Self {
        if h.opcode == frames::OP_CLOSE {
            let mut held = Vec::with_capacity(bytes.len() + h.len as usize);
            held.extend_from_slice(bytes);
            QlikFrame::Hold {
                header: *h,
                bytes: held,
            }
        } else if h.opcode == frames::OP_TEXT
            && h.fin
            && h.mask.is_none()
            && (1..=FATAL_NOTICE_MAX as u64).contains(&h.len)
        {
            QlikFrame::Watch(Vec::new())
        } else {
            QlikFrame::Pass
        }
    }

    /// After payload bytes were passed on (`end`: the frame ends with them); `read` gets a
    /// watched frame's whole payload.
    fn payload(&mut self, part: &[u8], end: bool, read: impl FnOnce(&[u8])) {
        match self {
            QlikFrame::Hold { bytes, .. } => bytes.extend_from_slice(part),
            QlikFrame::Watch(buf) => {
                if end && buf.is_empty() {
                    read(part);
                } else {
                    buf.extend_from_slice(part);
                    if end {
                        read(buf);
                    }
                }
                if end {
                    *self = QlikFrame::Pass;
                }
            }
            QlikFrame::Pass => {}
        }
    }
}

/// Whether the gateway is ending the socket (the Qlik → client direction writes its close).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QlikLeg {
    /// Relaying.
    Open,
    /// The gateway's close goes out at the next frame boundary; at `give_up` without one, the
    /// socket is dropped.
    Stopping { stop: Stop, give_up: Instant },
    /// The gateway's close has been written (or tried): the direction is over.
    Stopped(Stop),
}

/// What the Qlik → client direction waited for.
enum Event {
    /// Bytes from Qlik.
    Chunk(Vec<u8>),
    /// Qlik's connection ended.
    QlikGone,
    /// A signal that changed [`QlikLeg`] (or nothing): look again.
    Again,
    /// The socket is dropped without a close.
    Drop,
}

/// Whether a direction goes on after a chunk.
enum Flow {
    More,
    Over,
}

/// The Qlik → client direction.
struct QlikToClient<'a, R, W> {
    state: &'a AppState,
    sid: &'a SessionId,
    qlik: &'a QlikSession,
    fatal: &'a mut FatalWatch,
    guard: &'a mut SocketGuard,
    /// The client direction's word that its message went over the limit, until it has come
    /// (or that direction ended without one).
    too_big: Option<oneshot::Receiver<()>>,
    rx: &'a mut R,
    tx: &'a mut W,
    tracker: FrameTracker,
    tail: MessageTail,
    frame: QlikFrame,
    leg: QlikLeg,
    spare: Vec<u8>,
    carry: Vec<u8>,
}

impl<R, W> QlikToClient<'_, R, W>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    async fn run(&mut self, mut pending: Vec<u8>) {
        loop {
            if let QlikLeg::Stopping { stop, .. } = self.leg {
                if self.tracker.at_boundary() {
                    self.leg = QlikLeg::Stopped(stop);
                    let _ = write_flush(self.tx, &stop_frames(stop, self.state)).await;
                    return;
                }
            }
            let chunk = if pending.is_empty() {
                match self.next_event().await {
                    Event::Chunk(c) => c,
                    Event::QlikGone => return self.qlik_gone().await,
                    Event::Again => continue,
                    Event::Drop => return,
                }
            } else {
                std::mem::take(&mut pending)
            };
            let chunk = after_carry(&mut self.carry, chunk);
            if let Flow::Over = self.pass(&chunk).await {
                return;
            }
            frames::keep_for_next_read(chunk, &mut self.spare);
        }
    }

    /// Waits for Qlik's next bytes, or for the gateway to end the socket.
    async fn next_event(&mut self) -> Event {
        let open = self.leg == QlikLeg::Open;
        let give_up = match self.leg {
            QlikLeg::Stopping { give_up, .. } => Some(give_up),
            QlikLeg::Open | QlikLeg::Stopped(_) => None,
        };
        tokio::select! {
            r = frames::read_chunk(self.rx, &mut self.spare) => match r {
                Ok(Some(c)) => Event::Chunk(c),
                Ok(None) | Err(_) => Event::QlikGone,
            },
            r = fired(&mut self.too_big), if self.too_big.is_some() && open => {
                self.too_big = None;
                if r.is_ok() {
                    self.stop(Stop::TooBig);
                }
                Event::Again
            }
            r = self.guard.closed(), if open => {
                self.stop(Stop::Gateway(r));
                Event::Again
            }
            // A frame boundary that does not come in time: the socket is dropped.
            _ = tokio::time::sleep_until(give_up.unwrap_or_else(Instant::now)), if give_up.is_some() => Event::Drop,
        }
    }

    fn stop(&mut self, stop: Stop) {
        self.leg = QlikLeg::Stopping {
            stop,
            give_up: Instant::now() + CLOSE_WAIT,
        };
    }

    /// Passes a chunk's frames on; Qlik's close frame, once complete, ends the direction.
    async fn pass(&mut self, chunk: &[u8]) -> Flow {
        // `chunk[from..i]` is passed on, but not yet written.
        let (mut i, mut from) = (0, 0);
        while i < chunk.len() {
            let step = match self.tracker.step(&chunk[i..]) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(session = %self.sid.log_tag(), error = %e, "Qlik sent bytes that are not websocket frames; closing the socket");
                    return Flow::Over;
                }
            };
            match step {
                Step::Partial => {
                    self.carry.extend_from_slice(&chunk[i..]);
                    break;
                }
                Step::Header { header, used } => {
                    self.tail.header(&header);
                    self.frame = QlikFrame::starting(&header, &chunk[i..i + used]);
                    if let QlikFrame::Hold { .. } = self.frame {
                        if write_all(self.tx, &chunk[from..i]).await.is_err() {
                            return Flow::Over;
                        }
                        from = i + used;
                    } else if header.is_data() {
                        self.state
                            .metrics
                            .ws_frame(Direction::QlikToClient, header.len as usize);
                    }
                    i += used;
                    if header.len == 0 && matches!(self.frame, QlikFrame::Hold { .. }) {
                        break;
                    }
                }
                Step::Payload { n, end } => {
                    let part = &chunk[i..i + n];
                    i += n;
                    self.tail.payload(part);
                    let (fatal, qlik) = (&mut *self.fatal, self.qlik);
                    self.frame
                        .payload(part, end, |text| observe_bytes(fatal, text, qlik));
                    if let QlikFrame::Hold { .. } = self.frame {
                        from = i;
                        if end {
                            break;
                        }
                    }
                }
            }
        }
        if self.tracker.at_boundary() {
            if let QlikFrame::Hold { header, bytes } =
                std::mem::replace(&mut self.frame, QlikFrame::Pass)
            {
                self.qlik_close(header, bytes).await;
                return Flow::Over;
            }
        }
        if write_flush(self.tx, &chunk[from..i]).await.is_err() {
            return Flow::Over;
        }
        Flow::More
    }

    /// Qlik's close, complete: passed on as is, or as the watch decides.
    async fn qlik_close(&mut self, header: Header, held: Vec<u8>) {
        let mut payload = held[held.len() - header.len as usize..].to_vec();
        if let Some(m) = header.mask {
            frames::apply_mask(&mut payload, m, 0);
        }
        let f = frames::parse_close(&payload);
        let out = match self.fatal.ending(&f).await {
            Some((notice, cf)) => ending_frames(notice, cf),
            None => held,
        };
        let _ = write_flush(self.tx, &out).await;
    }

    /// Qlik dropped the connection. Inside a frame the client has part of (a held close frame it
    /// has none of), so the frame is finished first: a close it can read beats a reset.
    async fn qlik_gone(&mut self) {
        let cut = !self.tracker.at_boundary() && !matches!(self.frame, QlikFrame::Hold { .. });
        let ending = self.fatal.ending(&None).await;
        let (notice, cf) = match ending {
            Some(e) => e,
            None if cut => (
                None,
                CloseFrame {
                    code: CloseCode::Error,
                    reason: "Qlik closed the connection mid-message".into(),
                },
            ),
            None => (None, going_away("Qlik closed the connection")),
        };
        if cut {
            let missing = self.tracker.remaining();
            tracing::warn!(session = %self.sid.log_tag(), missing, "Qlik closed the engine connection in the middle of a frame; the client gets the frame finished with filler and a close 1011");
            let filler = self.tail.filler(missing);
            if finish_cut_frame(self.tx, filler).await.is_err() {
                return;
            }
        }
        let _ = write_flush(self.tx, &ending_frames(notice, cf)).await;
    }
}

/// The receiver's result once it has one; never while there is no receiver.
async fn fired(rx: &mut Option<oneshot::Receiver<()>>) -> Result<(), oneshot::error::RecvError> {
    match rx {
        Some(rx) => rx.await,
        None => std::future::pending().await,
    }
}

/// Frames the client gets when the gateway ends its socket.
fn stop_frames(s: Stop, state: &AppState) -> Vec<u8> {
    match s {
        Stop::TooBig => frames::encode(Frame::close(Some(too_big_frame())), false),
        Stop::Gateway(r) => ending_frames(notification_for(r, state), close_frame_for(r)),
    }
}

/// `chunk` behind the start of a header the previous chunk ended with (rare: a copy then).
fn after_carry(carry: &mut Vec<u8>, chunk: Vec<u8>) -> Vec<u8> {
    if carry.is_empty() {
        return chunk;
    }
    let mut joined = std::mem::take(carry);
    joined.extend_from_slice(&chunk);
    joined
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(opcode: u8, fin: bool, len: u64) -> Header {
        Header {
            fin,
            opcode,
            mask: Some([1, 2, 3, 4]),
            len,
        }
    }

    #[test]
    fn client_messages_are_counted_across_fragments() {
        let pass = ClientFrames::Pass { message: 0 };
        let at = pass.header(&header(frames::OP_TEXT, false, 6), 10);
        assert_eq!(at, ClientFrames::Pass { message: 6 });
        // A ping between fragments leaves the count as it was.
        let at = at.header(&header(0x9, true, 2), 10);
        assert_eq!(at, ClientFrames::Pass { message: 6 });
        let at = at.header(&header(frames::OP_CONTINUATION, true, 4), 10);
        assert_eq!(at, ClientFrames::Pass { message: 10 });
        assert_eq!(
            at.header(&header(frames::OP_CONTINUATION, true, 1), 10),
            ClientFrames::TooBig
        );
        // A new message starts its own count.
        assert_eq!(
            at.header(&header(frames::OP_BINARY, true, 9), 10),
            ClientFrames::Pass { message: 9 }
        );
    }

    #[test]
    fn the_clients_close_ends_with_its_last_byte() {
        let pass = ClientFrames::Pass { message: 3 };
        assert_eq!(
            pass.header(&header(frames::OP_CLOSE, true, 0), 10),
            ClientFrames::Closed
        );
        let at = pass.header(&header(frames::OP_CLOSE, true, 2), 10);
        assert_eq!(at, ClientFrames::InClose);
        assert_eq!(at.payload(false), ClientFrames::InClose);
        assert_eq!(at.payload(true), ClientFrames::Closed);
        assert_eq!(pass.payload(true), pass);
    }

    #[test]
    fn qlik_frames_are_held_watched_or_passed() {
        let unmasked = |opcode, fin, len| Header {
            mask: None,
            ..header(opcode, fin, len)
        };
        let close = unmasked(frames::OP_CLOSE, true, 2);
        assert_eq!(
            QlikFrame::starting(&close, &[0x88, 2]),
            QlikFrame::Hold {
                header: close,
                bytes: vec![0x88, 2]
            }
        );
        let small = unmasked(frames::OP_TEXT, true, 100);
        assert_eq!(
            QlikFrame::starting(&small, &[]),
            QlikFrame::Watch(Vec::new())
        );
        for passed in [
            unmasked(frames::OP_TEXT, false, 100),
            unmasked(frames::OP_TEXT, true, 0),
            unmasked(frames::OP_TEXT, true, FATAL_NOTICE_MAX as u64 + 1),
            unmasked(frames::OP_BINARY, true, 100),
            header(frames::OP_TEXT, true, 100),
        ] {
            assert_eq!(
                QlikFrame::starting(&passed, &[]),
                QlikFrame::Pass,
                "{passed:?}"
            );
        }
    }

    #[test]
    fn a_watched_frame_is_read_whole_once() {
        let mut read = Vec::new();
        let mut frame = QlikFrame::Watch(Vec::new());
        frame.payload(b"{\"a\"", false, |t| read.push(t.to_vec()));
        assert!(read.is_empty());
        frame.payload(b":1}", true, |t| read.push(t.to_vec()));
        assert_eq!(read, [b"{\"a\":1}".to_vec()]);
        assert_eq!(frame, QlikFrame::Pass);
        // In one read: the payload as it came.
        let mut frame = QlikFrame::Watch(Vec::new());
        frame.payload(b"{}", true, |t| read.push(t.to_vec()));
        assert_eq!(read[1], b"{}");
        assert_eq!(frame, QlikFrame::Pass);
        // A held close keeps its bytes, complete or not.
        let close = Header {
            fin: true,
            opcode: frames::OP_CLOSE,
            mask: None,
            len: 2,
        };
        let mut frame = QlikFrame::starting(&close, &[0x88, 2]);
        frame.payload(&[3], false, |_| unreachable!());
        frame.payload(&[0xe8], true, |_| unreachable!());
        assert_eq!(
            frame,
            QlikFrame::Hold {
                header: close,
                bytes: vec![0x88, 2, 3, 0xe8]
            }
        );
    }
}
