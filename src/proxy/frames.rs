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
pub(crate) const OP_CONTINUATION: u8 = 0x0;
pub(crate) const OP_TEXT: u8 = 0x1;
pub(crate) const OP_BINARY: u8 = 0x2;
pub(crate) const OP_CLOSE: u8 = 0x8;

/// Control frames carry at most 125 payload bytes (RFC 6455 §5.5).
const MAX_CONTROL_PAYLOAD: u64 = 125;

/// One frame's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub fin: bool,
    pub opcode: u8,
    pub mask: Option<[u8; 4]>,
    /// Payload length.
    pub len: u64,
}

impl Header {
    /// Control frames (close, ping, pong) may come between the fragments of a message.
    pub(crate) fn is_control(&self) -> bool {
        self.opcode & 0x8 != 0
    }

    /// Text, binary and continuation frames: the application's messages.
    pub(crate) fn is_data(&self) -> bool {
        matches!(self.opcode, OP_CONTINUATION | OP_TEXT | OP_BINARY)
    }
}

/// A byte stream that is not websocket framing the relay can follow.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    #[error("websocket frame with reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    #[error("websocket control frame with {0} payload bytes (at most 125 allowed)")]
    ControlTooLong(u64),
    #[error("websocket frame length with the most significant bit set")]
    BadLength,
}

/// What the next bytes of the stream are.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
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
pub(crate) struct FrameTracker {
    /// Payload bytes of the current frame still to come.
    remaining: u64,
}

impl FrameTracker {
    /// Between two frames (the next bytes start a header).
    pub(crate) fn at_boundary(&self) -> bool {
        self.remaining == 0
    }

    /// Payload bytes of the current frame still to come (0 on a boundary).
    pub(crate) fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Advances over the start of `input` (not empty).
    pub(crate) fn step(&mut self, input: &[u8]) -> Result<Step, FrameError> {
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
pub(crate) fn parse_close(payload: &[u8]) -> Option<CloseFrame> {
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
pub(crate) fn apply_mask(data: &mut [u8], mask: [u8; 4], offset: usize) {
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= mask[(offset + i) % 4];
    }
}

/// The bytes of a frame the gateway sends itself: unmasked towards a client, masked (as a
/// client must) towards Qlik.
pub(crate) fn encode(frame: Frame, masked: bool) -> Vec<u8> {
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
pub(crate) fn text_frame(text: impl Into<tokio_tungstenite::tungstenite::Bytes>) -> Frame {
    Frame::message(text, OpCode::Data(Data::Text), true)
}

/// How much one read takes at most. On the stack only while a read is being tried, so an idle
/// socket pays nothing for it; large enough that a 1 MiB frame takes few system calls.
pub(crate) const CHUNK: usize = 64 * 1024;

/// Reads what is there, into a buffer of just that size; `None` at the end of the stream.
/// Cancel-safe: bytes are only taken from the stream when the call returns them.
///
/// `spare` is a buffer kept from the last read when that read filled a whole [`CHUNK`] (more
/// is almost certainly waiting: a large frame is streaming): then the read goes straight into
/// it, without the copy from the stack. See [`keep_for_next_read`].
pub(crate) async fn read_chunk<R: AsyncRead + Unpin + ?Sized>(
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
pub(crate) fn keep_for_next_read(chunk: Vec<u8>, spare: &mut Vec<u8>) {
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
pub(crate) struct Tap<S> {
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
    pub(crate) fn after_head(inner: S, limit: usize) -> Self {
        Self::new(inner, TapMode::Head, limit)
    }

    /// A tap on a stream of websocket frames of which `read` (starting at a frame boundary)
    /// has been read already: the reader gets those bytes first.
    pub(crate) fn frames_after(inner: S, read: Vec<u8>, limit: usize) -> Self {
        let mut tap = Self::new(inner, TapMode::Frames, limit);
        tap.buf = read;
        tap
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
    pub(crate) fn into_parts(mut self) -> (S, Vec<u8>) {
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

/// Property tests (`PROPTEST_CASES` sets the case count; see the README's long run).
#[cfg(test)]
mod proptests {
    use super::*;
    use futures_util::FutureExt;
    use proptest::prelude::*;
    use std::collections::VecDeque;
    use tokio::io::AsyncReadExt;

    /// The longest header: 2 bytes, a 64-bit length, a mask.
    const MAX_HEADER: usize = 14;

    /// A frame as a test writes it, with the length in its shortest or any longer form.
    #[derive(Debug, Clone)]
    struct F {
        fin: bool,
        opcode: u8,
        mask: Option<[u8; 4]>,
        len: usize,
        /// 0: shortest length form; 1: 16-bit; 2: 64-bit (where the length fits).
        form: u8,
    }

    fn write(f: &F, out: &mut Vec<u8>) {
        out.push(u8::from(f.fin) << 7 | f.opcode);
        let m = if f.mask.is_some() { 0x80 } else { 0 };
        match (f.form, f.len) {
            (0, n @ 0..=125) => out.push(m | n as u8),
            (0 | 1, n @ 0..=0xffff) => {
                out.push(m | 126);
                out.extend((n as u16).to_be_bytes());
            }
            (_, n) => {
                out.push(m | 127);
                out.extend((n as u64).to_be_bytes());
            }
        }
        if let Some(k) = f.mask {
            out.extend(k);
        }
        out.extend((0..f.len).map(|i| (i % 251) as u8));
    }

    /// A valid frame; `masked`: client → Qlik (every frame masked), else Qlik → client.
    fn frame(masked: bool) -> impl Strategy<Value = F> {
        let data = (
            prop::sample::select(vec![OP_CONTINUATION, OP_TEXT, OP_BINARY]),
            prop_oneof![0usize..130, 120usize..300, 65_530usize..65_540],
        );
        let control = (prop::sample::select(vec![OP_CLOSE, 0x9, 0xa]), 0usize..=125);
        (
            prop_oneof![data, control],
            any::<bool>(),
            any::<[u8; 4]>(),
            0u8..3,
        )
            .prop_map(move |((opcode, len), fin, key, form)| F {
                fin: fin || opcode & 0x8 != 0,
                opcode,
                mask: masked.then_some(key),
                len,
                form,
            })
    }

    fn frames() -> impl Strategy<Value = (bool, Vec<F>)> {
        any::<bool>()
            .prop_flat_map(|masked| (Just(masked), prop::collection::vec(frame(masked), 0..8)))
    }

    /// Where a byte stream is cut into reads.
    fn splits() -> impl Strategy<Value = Vec<usize>> {
        prop::collection::vec(prop_oneof![1usize..4, 1usize..20, 1usize..70_000], 0..30)
    }

    fn chunks(bytes: &[u8], splits: &[usize]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut at = 0;
        for s in splits {
            if at >= bytes.len() {
                break;
            }
            let end = (at + s).min(bytes.len());
            out.push(bytes[at..end].to_vec());
            at = end;
        }
        if at < bytes.len() {
            out.push(bytes[at..].to_vec());
        }
        out
    }

    /// What the relay sees of a stream read in `chunks`, driven as the relay drives the tracker
    /// (a partial header carried over to the next read): every header and payload byte count,
    /// or the error and how many headers came before it.
    /// Every header with its payload byte count; the error and the headers before it.
    type Tracked = (Vec<(Header, u64)>, Option<(String, usize)>);

    fn track(chunks: &[Vec<u8>]) -> Tracked {
        let mut t = FrameTracker::default();
        let mut seen: Vec<(Header, u64)> = Vec::new();
        let mut carry: Vec<u8> = Vec::new();
        for chunk in chunks {
            let mut joined = std::mem::take(&mut carry);
            joined.extend_from_slice(chunk);
            let mut i = 0;
            while i < joined.len() {
                match t.step(&joined[i..]) {
                    Err(e) => return (seen.clone(), Some((e.to_string(), seen.len()))),
                    Ok(Step::Partial) => {
                        carry.extend_from_slice(&joined[i..]);
                        break;
                    }
                    Ok(Step::Header { header, used }) => {
                        seen.push((header, 0));
                        i += used;
                    }
                    Ok(Step::Payload { n, .. }) => {
                        assert!(n > 0);
                        if let Some(last) = seen.last_mut() {
                            last.1 += n as u64;
                        }
                        i += n;
                    }
                }
            }
            // The only state kept between reads: less than one header.
            assert!(carry.len() < MAX_HEADER, "carry of {} bytes", carry.len());
        }
        (seen, None)
    }

    /// A stream that hands out `chunks` one read at a time, then waits (or ends).
    struct Chunks {
        chunks: VecDeque<Vec<u8>>,
        eof: bool,
    }

    impl AsyncRead for Chunks {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            out: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let Some(front) = self.chunks.front_mut() else {
                return if self.eof {
                    Poll::Ready(Ok(()))
                } else {
                    Poll::Pending
                };
            };
            let n = front.len().min(out.remaining());
            out.put_slice(&front[..n]);
            front.drain(..n);
            if front.is_empty() {
                self.chunks.pop_front();
            }
            Poll::Ready(Ok(()))
        }
    }

    /// Complete messages: data frames from a first (text or binary) to a final one, control
    /// frames between fragments.
    fn messages(masked: bool, fs: &[F]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut open = false;
        for f in fs {
            let mut f = f.clone();
            if f.opcode & 0x8 == 0 {
                f.opcode = if open {
                    OP_CONTINUATION
                } else {
                    OP_TEXT.max(f.opcode)
                };
                open = !f.fin;
            }
            write(&f, &mut out);
        }
        if open {
            let end = F {
                fin: true,
                opcode: OP_CONTINUATION,
                mask: masked.then_some([1, 2, 3, 4]),
                len: 3,
                form: 0,
            };
            write(&end, &mut out);
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Valid frames, both directions: every split gives what one read gives.
        #[test]
        fn splits_do_not_change_what_is_tracked((_, fs) in frames(), splits in splits()) {
            let mut bytes = Vec::new();
            for f in &fs {
                write(f, &mut bytes);
            }
            let whole = track(&[bytes.clone()]);
            prop_assert!(whole.1.is_none());
            prop_assert_eq!(whole.0.len(), fs.len());
            for ((h, n), f) in whole.0.iter().zip(&fs) {
                prop_assert_eq!((h.fin, h.opcode, h.mask, h.len), (f.fin, f.opcode, f.mask, f.len as u64));
                prop_assert_eq!(*n, f.len as u64);
            }
            prop_assert_eq!(track(&chunks(&bytes, &splits)), whole);
        }

        /// An invalid header after valid frames is found at the same frame whatever the split.
        #[test]
        fn invalid_frames_are_found_whatever_the_split(
            (masked, fs) in frames(),
            bad in prop_oneof![
                (prop::sample::select(vec![3u8, 4, 5, 6, 7, 0xb, 0xc, 0xf]), 0usize..10).prop_map(|(op, len)| (op, len as u64, 0u8)),
                (prop::sample::select(vec![OP_CLOSE, 0x9, 0xa]), 126usize..70_000).prop_map(|(op, len)| (op, len as u64, 1)),
                (1u64 << 63..u64::MAX).prop_map(|len| (OP_BINARY, len, 2)),
            ],
            tail in prop::collection::vec(any::<u8>(), 0..20),
            splits in splits(),
        ) {
            let mut bytes = Vec::new();
            for f in &fs {
                write(f, &mut bytes);
            }
            let (op, len, form) = bad;
            let m = if masked { 0x80 } else { 0 };
            bytes.push(0x80 | op);
            match form {
                0 => bytes.push(m | len as u8),
                1 if len <= 0xffff => {
                    bytes.push(m | 126);
                    bytes.extend((len as u16).to_be_bytes());
                }
                _ => {
                    bytes.push(m | 127);
                    bytes.extend(len.to_be_bytes());
                }
            }
            if masked {
                bytes.extend([9, 9, 9, 9]);
            }
            bytes.extend(&tail);
            let whole = track(&[bytes.clone()]);
            prop_assert_eq!(whole.1.as_ref().map(|e| e.1), Some(fs.len()));
            prop_assert_eq!(track(&chunks(&bytes, &splits)), whole);
        }

        /// Arbitrary bytes in arbitrary reads: no panic, less than a header kept between reads.
        #[test]
        fn arbitrary_bytes_are_tracked_without_panic(bytes in prop::collection::vec(any::<u8>(), 0..400), splits in splits()) {
            let _ = track(&chunks(&bytes, &splits));
        }

        /// The tap, both sides of the settle phase: a reader gets the handshake head, then whole
        /// messages, however the bytes arrive and whatever its buffer; the incomplete rest is
        /// what `into_parts` hands back; the tap never holds more than its limit and one read.
        /// Without a head, the first bytes may have been read before the tap (a parked socket).
        #[test]
        fn the_tap_passes_whole_messages((masked, fs) in frames(), cut in any::<prop::sample::Index>(),
            splits in splits(), reads in prop::collection::vec(1usize..5000, 1..20), head in any::<bool>(), limit in prop_oneof![Just(1usize << 20), 1usize..200], pre in any::<prop::sample::Index>()) {
            let complete = messages(masked, &fs);
            let next = messages(masked, &[F { fin: true, opcode: OP_BINARY, mask: masked.then_some([5, 6, 7, 8]), len: 40, form: 0 }]);
            let partial = &next[..cut.index(next.len())];
            let head_bytes: &[u8] = if head { b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n" } else { b"" };
            let mut wire = head_bytes.to_vec();
            wire.extend(&complete);
            wire.extend(partial);
            let pre = if head { 0 } else { pre.index(wire.len() + 1) };
            let source = Chunks { chunks: chunks(&wire[pre..], &splits).into(), eof: false };
            let mut tap = if head { Tap::after_head(source, limit) } else { Tap::frames_after(source, wire[..pre].to_vec(), limit) };
            let mut got = Vec::new();
            let mut buf = vec![0u8; 5000];
            let mut r = 0;
            let mut head_seen = !head;
            while let Some(n) = tap.read(&mut buf[..reads[r % reads.len()]]).now_or_never() {
                let n = n.unwrap();
                prop_assert!(n > 0);
                got.extend_from_slice(&buf[..n]);
                if !head_seen && got.len() >= head_bytes.len() {
                    prop_assert_eq!(&got[..head_bytes.len()], head_bytes);
                    head_seen = true;
                }
                prop_assert!(tap.buf.len() - tap.pos <= (limit + 8192).max(pre), "tap holds {} bytes", tap.buf.len() - tap.pos);
                r += 1;
            }
            let (_, rest) = tap.into_parts();
            let mut all = got.clone();
            all.extend(&rest);
            prop_assert_eq!(&all, &wire);
            if limit >= wire.len() {
                prop_assert_eq!(got.len(), head_bytes.len() + complete.len());
            }
        }
    }
}
