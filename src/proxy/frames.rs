//! Websocket framing without buffering payloads (RFC 6455 §5.2), for the engine relay.
//!
//! Once authentication on an engine socket has settled, the relay passes bytes through as they
//! arrive and only follows where frames begin and end: an idle socket then holds no buffers at
//! all (a frame parser holds a read buffer per leg, which made a parked engine socket cost more
//! than nginx's). [`FrameTracker`] follows the frame boundaries of a byte stream; [`Tap`] lets
//! tungstenite handle the settle phase and then hands back every byte it has not yet consumed;
//! [`read_chunk`] reads without a buffer of its own while the socket is idle.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

/// Opcodes (RFC 6455 §5.2).
pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;

/// Control frames carry at most 125 payload bytes (RFC 6455 §5.5).
const MAX_CONTROL_PAYLOAD: u64 = 125;

/// One frame's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub fin: bool,
    pub opcode: u8,
    pub mask: Option<[u8; 4]>,
    /// Payload length.
    pub len: u64,
}

impl Header {
    /// Control frames (close, ping, pong) may come between the fragments of a message.
    pub fn is_control(&self) -> bool {
        self.opcode & 0x8 != 0
    }

    /// Text, binary and continuation frames: the application's messages.
    pub fn is_data(&self) -> bool {
        matches!(self.opcode, OP_CONTINUATION | OP_TEXT | OP_BINARY)
    }
}

/// A byte stream that is not websocket framing the relay can follow.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("websocket frame with reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    #[error("websocket control frame with {0} payload bytes (at most 125 allowed)")]
    ControlTooLong(u64),
    #[error("websocket frame length with the most significant bit set")]
    BadLength,
}

/// What the next bytes of the stream are.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// A complete header, the first `used` bytes of the input. A frame with an empty payload ends
    /// here.
    Header { header: Header, used: usize },
    /// `n` payload bytes of the current frame; `end`: the frame ends with them.
    Payload { n: usize, end: bool },
    /// The input starts with a header that is not complete: nothing was consumed. The caller keeps
    /// these bytes and steps again once more have arrived behind them.
    Partial,
}

/// Follows frame boundaries through a byte stream, payloads unseen.
#[derive(Debug, Default, Clone)]
pub struct FrameTracker {
    /// Payload bytes of the current frame still to come.
    remaining: u64,
}

impl FrameTracker {
    /// Between two frames (the next bytes start a header).
    pub fn at_boundary(&self) -> bool {
        self.remaining == 0
    }

    /// Advances over the start of `input` (not empty).
    pub fn step(&mut self, input: &[u8]) -> Result<Step, FrameError> {
        if self.remaining > 0 {
            let n = usize::try_from(self.remaining).map_or(input.len(), |r| r.min(input.len()));
            self.remaining -= n as u64;
            return Ok(Step::Payload {
                n,
                end: self.remaining == 0,
            });
        }
        if input.len() < 2 || input.len() < header_len(input[1]) {
            return Ok(Step::Partial);
        }
        let used = header_len(input[1]);
        let header = parse_header(&input[..used])?;
        self.remaining = header.len;
        Ok(Step::Header { header, used })
    }
}

/// Header length from its second byte.
fn header_len(second: u8) -> usize {
    2 + match second & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    } + if second & 0x80 != 0 { 4 } else { 0 }
}

/// Parses a complete header (`h.len() == header_len(h[1])`).
fn parse_header(h: &[u8]) -> Result<Header, FrameError> {
    let opcode = h[0] & 0x0f;
    if matches!(opcode, 0x3..=0x7 | 0xb..=0xf) {
        return Err(FrameError::ReservedOpcode(opcode));
    }
    let (len, at) = match h[1] & 0x7f {
        126 => (u64::from(u16::from_be_bytes([h[2], h[3]])), 4),
        127 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&h[2..10]);
            let len = u64::from_be_bytes(b);
            if len >> 63 != 0 {
                return Err(FrameError::BadLength);
            }
            (len, 10)
        }
        n => (u64::from(n), 2),
    };
    let mask = (h[1] & 0x80 != 0).then(|| [h[at], h[at + 1], h[at + 2], h[at + 3]]);
    let header = Header {
        fin: h[0] & 0x80 != 0,
        opcode,
        mask,
        len,
    };
    if header.is_control() && len > MAX_CONTROL_PAYLOAD {
        return Err(FrameError::ControlTooLong(len));
    }
    Ok(header)
}

/// A close frame's code and reason from its (unmasked) payload.
pub fn parse_close(payload: &[u8]) -> Option<CloseFrame> {
    if payload.len() < 2 {
        return None;
    }
    let code = u16::from_be_bytes([payload[0], payload[1]]);
    let reason = std::str::from_utf8(&payload[2..]).ok()?;
    Some(CloseFrame {
        code: code.into(),
        reason: reason.to_owned().into(),
    })
}

/// Unmasks (or masks) `data` in place; `offset` is the position of `data[0]` in the payload.
pub fn apply_mask(data: &mut [u8], mask: [u8; 4], offset: usize) {
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= mask[(offset + i) % 4];
    }
}

/// The bytes of a frame the gateway sends itself: unmasked towards a client, masked (as a
/// client must) towards Qlik.
pub fn encode(frame: Frame, masked: bool) -> Vec<u8> {
    let mut frame = frame;
    if masked {
        frame.header_mut().mask = Some(rand::random());
    }
    let mut out = Vec::with_capacity(frame.len());
    // Writing into a Vec cannot fail.
    let _ = frame.format(&mut out);
    out
}

/// A text frame.
pub fn text_frame(text: impl Into<tokio_tungstenite::tungstenite::Bytes>) -> Frame {
    Frame::message(text, OpCode::Data(Data::Text), true)
}

/// How much one read takes at most. On the stack only while a read is being tried, so an idle
/// socket pays nothing for it; large enough that a 1 MiB frame takes few system calls.
pub const CHUNK: usize = 64 * 1024;

/// Reads what is there, into a buffer of just that size; `None` at the end of the stream.
/// Cancel-safe: bytes are only taken from the stream when the call returns them.
///
/// `spare` is a buffer kept from the last read when that read filled a whole [`CHUNK`] (more
/// is almost certainly waiting: a large frame is streaming): then the read goes straight into
/// it, without the copy from the stack. See [`keep_for_next_read`].
pub async fn read_chunk<R: AsyncRead + Unpin + ?Sized>(
    r: &mut R,
    spare: &mut Vec<u8>,
) -> io::Result<Option<Vec<u8>>> {
    if spare.capacity() >= CHUNK {
        use tokio::io::AsyncReadExt;
        spare.clear();
        return match r.read_buf(spare).await? {
            0 => Ok(None),
            _ => Ok(Some(std::mem::take(spare))),
        };
    }
    std::future::poll_fn(|cx| {
        let mut scratch = [std::mem::MaybeUninit::<u8>::uninit(); CHUNK];
        let mut buf = ReadBuf::uninit(&mut scratch);
        match Pin::new(&mut *r).poll_read(cx, &mut buf) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) if buf.filled().is_empty() => Poll::Ready(Ok(None)),
            Poll::Ready(Ok(())) => Poll::Ready(Ok(Some(buf.filled().to_vec()))),
        }
    })
    .await
}

/// After a chunk has been passed on: kept as the next read's buffer when it was a full one,
/// dropped otherwise (an idle socket holds no buffer).
pub fn keep_for_next_read(chunk: Vec<u8>, spare: &mut Vec<u8>) {
    if chunk.len() >= CHUNK {
        *spare = chunk;
    }
}

/// What a [`Tap`] is reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TapMode {
    /// An HTTP response head (the upstream handshake): passed on up to its blank line.
    Head,
    /// Websocket frames: passed on one complete message at a time.
    Frames,
    /// Anything else (a refused handshake's body, a stream that is not websocket framing):
    /// passed on as it comes.
    Plain,
}

/// A stream under tungstenite that never lets it read past the end of a message.
///
/// tungstenite reads ahead into its own buffer and drops that buffer with the socket. Behind a
/// tap, it only ever gets bytes up to the end of the next complete message (or of the HTTP head
/// of the handshake), and always gets a whole message without waiting: so whenever tungstenite
/// has returned a message and waits for the next, it holds no bytes, and [`Tap::into_parts`]
/// has all of them.
#[derive(Debug)]
pub struct Tap<S> {
    inner: S,
    mode: TapMode,
    /// Read from `inner`, not yet passed on: `buf[pos..]`.
    buf: Vec<u8>,
    pos: usize,
    /// End of the message being passed on (an index into `buf`), once it is complete.
    ready: Option<usize>,
    /// How far `buf` has been examined; `tracker` (or the head scan) is at this point.
    scanned: usize,
    tracker: FrameTracker,
    /// Inside a fragmented message (its first frame seen, its final frame not yet).
    fragmented: bool,
    /// Above this many bytes without a complete message, bytes are passed on as they come
    /// (tungstenite then enforces its own size limit).
    limit: usize,
    eof: bool,
}

impl<S> Tap<S> {
    /// A tap on a stream that starts with an HTTP response head (the client side of a handshake).
    pub fn after_head(inner: S, limit: usize) -> Self {
        Self::new(inner, TapMode::Head, limit)
    }

    /// A tap on a stream of websocket frames.
    pub fn frames(inner: S, limit: usize) -> Self {
        Self::new(inner, TapMode::Frames, limit)
    }

    fn new(inner: S, mode: TapMode, limit: usize) -> Self {
        Tap {
            inner,
            mode,
            buf: Vec::new(),
            pos: 0,
            ready: None,
            scanned: 0,
            tracker: FrameTracker::default(),
            fragmented: false,
            limit,
            eof: false,
        }
    }

    /// The stream and the bytes read from it that the reader has not had. Starts at a message
    /// boundary whenever the reader has consumed everything it was given.
    pub fn into_parts(mut self) -> (S, Vec<u8>) {
        let rest = self.buf.split_off(self.pos);
        (self.inner, rest)
    }

    /// Looks for the end of the next message in `buf[scanned..]`.
    fn scan(&mut self) {
        while self.ready.is_none() && self.scanned < self.buf.len() {
            match self.mode {
                TapMode::Plain => {
                    self.ready = Some(self.buf.len());
                    self.scanned = self.buf.len();
                }
                TapMode::Head => {
                    let from = self.scanned.saturating_sub(3).max(self.pos);
                    match find(&self.buf[from..], b"\r\n\r\n") {
                        Some(i) => {
                            let end = from + i + 4;
                            let switching = self.buf[self.pos..end].starts_with(b"HTTP/1.1 101 ");
                            self.mode = if switching {
                                TapMode::Frames
                            } else {
                                TapMode::Plain
                            };
                            self.ready = Some(end);
                            self.scanned = end;
                        }
                        None => self.scanned = self.buf.len(),
                    }
                }
                TapMode::Frames => match self.tracker.step(&self.buf[self.scanned..]) {
                    Err(_) => self.mode = TapMode::Plain,
                    // Scanned again from the header's start once more bytes are in.
                    Ok(Step::Partial) => break,
                    Ok(Step::Header { header, used }) => {
                        self.scanned += used;
                        if header.is_data() {
                            self.fragmented = !header.fin;
                        }
                        if header.len == 0 && !self.fragmented {
                            self.ready = Some(self.scanned);
                        }
                    }
                    Ok(Step::Payload { n, end }) => {
                        self.scanned += n;
                        if end && !self.fragmented {
                            self.ready = Some(self.scanned);
                        }
                    }
                },
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl<S: AsyncRead + Unpin> AsyncRead for Tap<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            this.scan();
            let end = match this.ready {
                Some(end) => Some(end),
                // No complete message, and none coming: pass on what there is.
                None if this.eof || this.buf.len() - this.pos > this.limit => Some(this.buf.len()),
                None => None,
            };
            if let Some(end) = end {
                if end == this.pos && this.eof {
                    return Poll::Ready(Ok(()));
                }
                if end > this.pos {
                    let n = (end - this.pos).min(out.remaining());
                    out.put_slice(&this.buf[this.pos..this.pos + n]);
                    this.pos += n;
                    if this.pos == end {
                        this.ready = None;
                    }
                    if this.pos == this.buf.len() {
                        this.buf.clear();
                        this.scanned = 0;
                        this.pos = 0;
                    }
                    return Poll::Ready(Ok(()));
                }
                this.ready = None;
            }
            let mut scratch = [std::mem::MaybeUninit::<u8>::uninit(); 8192];
            let mut rb = ReadBuf::uninit(&mut scratch);
            match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) if rb.filled().is_empty() => this.eof = true,
                Poll::Ready(Ok(())) => this.buf.extend_from_slice(rb.filled()),
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tap<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    fn frames_of(bytes: &[u8]) -> Vec<Header> {
        let mut t = FrameTracker::default();
        let mut out = Vec::new();
        // One byte at a time, a partial header carried over as the relay does: every split
        // point of every header is exercised.
        let mut carry: Vec<u8> = Vec::new();
        for b in bytes {
            carry.push(*b);
            let mut at = 0;
            while at < carry.len() {
                match t.step(&carry[at..]).unwrap() {
                    Step::Header { header, used } => {
                        out.push(header);
                        at += used;
                    }
                    Step::Payload { n, .. } => at += n,
                    Step::Partial => break,
                }
            }
            carry.drain(..at);
        }
        assert!(carry.is_empty() && t.at_boundary());
        out
    }

    #[test]
    fn follows_frames_split_anywhere() {
        let mut s = encode(text_frame("hello"), false);
        s.extend(encode(
            Frame::message(vec![7u8; 300], OpCode::Data(Data::Binary), true),
            true,
        ));
        s.extend(encode(
            Frame::message(vec![1u8; 70_000], OpCode::Data(Data::Binary), false),
            false,
        ));
        s.extend(encode(Frame::close(None), true));
        let h = frames_of(&s);
        assert_eq!(h.len(), 4);
        assert_eq!(
            (h[0].opcode, h[0].len, h[0].fin, h[0].mask),
            (OP_TEXT, 5, true, None)
        );
        assert_eq!((h[1].opcode, h[1].len), (OP_BINARY, 300));
        assert!(h[1].mask.is_some());
        assert_eq!((h[2].len, h[2].fin), (70_000, false));
        assert_eq!((h[3].opcode, h[3].len), (OP_CLOSE, 0));
    }

    #[test]
    fn an_incomplete_header_is_not_consumed() {
        let s = encode(
            Frame::message(vec![0u8; 200], OpCode::Data(Data::Binary), true),
            true,
        );
        let mut t = FrameTracker::default();
        assert_eq!(t.step(&s[..3]).unwrap(), Step::Partial);
        assert!(t.at_boundary());
        match t.step(&s).unwrap() {
            Step::Header { header, used } => assert_eq!((used, header.len), (8, 200)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refuses_what_is_not_websocket_framing() {
        let mut t = FrameTracker::default();
        assert!(matches!(
            t.step(b"GET / HTTP/1.1"),
            Err(FrameError::ReservedOpcode(7))
        ));
        let mut t = FrameTracker::default();
        assert!(matches!(
            t.step(&[0x89, 126, 0, 200]),
            Err(FrameError::ControlTooLong(200))
        ));
    }

    #[test]
    fn masks_roundtrip_and_close_frames_parse() {
        let bytes = encode(
            Frame::close(Some(CloseFrame {
                code: CloseCode::Away,
                reason: "bye".into(),
            })),
            true,
        );
        let mut t = FrameTracker::default();
        let Step::Header { header, used } = t.step(&bytes).unwrap() else {
            panic!()
        };
        let mut payload = bytes[used..].to_vec();
        apply_mask(&mut payload[..1], header.mask.unwrap(), 0);
        apply_mask(&mut payload[1..], header.mask.unwrap(), 1);
        let f = parse_close(&payload).unwrap();
        assert_eq!((f.code, f.reason.as_str()), (CloseCode::Away, "bye"));
    }

    /// Whatever the reader has had ends at a message boundary, and what it has not had comes
    /// back from `into_parts`.
    #[tokio::test]
    async fn tap_passes_one_whole_message_at_a_time() {
        use futures_util::FutureExt;
        let (mut w, r) = tokio::io::duplex(1 << 20);
        let head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";
        let one = encode(text_frame("one"), false);
        let mut fragmented = encode(
            Frame::message(vec![5u8; 3000], OpCode::Data(Data::Binary), false),
            false,
        );
        fragmented.extend(encode(Frame::ping(vec![1u8]), false));
        fragmented.extend(encode(
            Frame::message(vec![6u8; 10], OpCode::Data(Data::Continue), true),
            false,
        ));
        let next = encode(text_frame("two"), false);
        let mut wire = head.to_vec();
        wire.extend(&one);
        wire.extend(&fragmented);
        wire.extend(&next[..3]);
        w.write_all(&wire).await.unwrap();

        let mut tap = Tap::after_head(r, 1 << 20);
        let mut got = vec![0u8; 4096];
        let n = tap.read(&mut got).await.unwrap();
        assert_eq!(&got[..n], head);
        let n = tap.read(&mut got).await.unwrap();
        assert_eq!(&got[..n], &one[..]);
        // A small reader gets the whole fragmented message without waiting.
        let mut all = Vec::new();
        while all.len() < fragmented.len() {
            let n = tap.read(&mut got[..100]).now_or_never().unwrap().unwrap();
            all.extend_from_slice(&got[..n]);
        }
        assert_eq!(all, fragmented);
        // The next message is incomplete: nothing of it is passed on.
        assert!(tap.read(&mut got).now_or_never().is_none());
        let (_, rest) = tap.into_parts();
        assert_eq!(rest, &next[..3]);
    }

    #[tokio::test]
    async fn chunks_keep_a_buffer_only_while_full_reads_come() {
        let (mut w, mut r) = tokio::io::duplex(1 << 20);
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        w.write_all(&data).await.unwrap();
        drop(w);
        let (mut spare, mut got, mut kept) = (Vec::new(), Vec::new(), 0);
        while let Some(chunk) = read_chunk(&mut r, &mut spare).await.unwrap() {
            got.extend_from_slice(&chunk);
            keep_for_next_read(chunk, &mut spare);
            kept += usize::from(spare.capacity() >= CHUNK);
        }
        assert_eq!(got, data);
        assert!(kept >= 2, "full reads keep their buffer");
        // The last, short read let it go: an idle socket holds nothing.
        let (_w, mut r) = tokio::io::duplex(64);
        let mut spare = Vec::new();
        keep_for_next_read(vec![0u8; 10], &mut spare);
        assert_eq!(spare.capacity(), 0);
        assert!(futures_util::FutureExt::now_or_never(read_chunk(&mut r, &mut spare)).is_none());
    }

    #[tokio::test]
    async fn tap_passes_a_refused_handshake_as_it_comes() {
        let (mut w, r) = tokio::io::duplex(1 << 16);
        w.write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 7\r\n\r\nGET nop")
            .await
            .unwrap();
        drop(w);
        let mut tap = Tap::after_head(r, 1 << 20);
        let mut all = Vec::new();
        tap.read_to_end(&mut all).await.unwrap();
        assert!(all.ends_with(b"GET nop"));
    }
}
