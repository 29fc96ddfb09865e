//! Finishing a frame that Qlik cut off in the byte relay.
//!
//! The relay passes Qlik's frames on as their bytes arrive, so when Qlik's connection ends inside
//! a frame the client already has that frame's header and part of its payload. A websocket client
//! reads a close frame only after the announced payload length: without the rest it can only see
//! the TCP connection end (a "1006", no reason). The gateway therefore completes the frame with
//! filler, and then sends a close frame that says what happened. For a text frame the filler
//! first completes a character cut in half, so the client does not fail the socket on invalid
//! UTF-8 before it reads the close. The client gets one message that is not what Qlik meant
//! (the alternative, holding whole messages back, would buffer every large frame).

use super::frames::{Header, OP_BINARY, OP_TEXT};

/// What the relay has passed on of Qlik's current data message: its kind and, for text, the
/// start of a character the last payload bytes left open.
#[derive(Debug, Default, Clone)]
pub(crate) struct MessageTail {
    text: bool,
    /// The current frame is a data frame (text, binary or a continuation).
    in_data: bool,
    /// Up to 3 bytes of an unfinished UTF-8 sequence at the end of what was passed on.
    open: Vec<u8>,
}

impl MessageTail {
    /// A frame header was passed on.
    pub(crate) fn header(&mut self, h: &Header) {
        self.in_data = h.is_data();
        match h.opcode {
            OP_TEXT => {
                self.text = true;
                self.open.clear();
            }
            OP_BINARY => {
                self.text = false;
                self.open.clear();
            }
            // A continuation goes on with the message; a control frame between fragments
            // leaves it as it was.
            _ => {}
        }
    }

    /// Payload bytes of the current frame were passed on.
    pub(crate) fn payload(&mut self, part: &[u8]) {
        if !(self.in_data && self.text) || part.is_empty() {
            return;
        }
        // Only the last 3 bytes can hold the start of an unfinished character.
        let keep = part.len().min(3);
        self.open.extend_from_slice(&part[part.len() - keep..]);
        let from = self.open.len().saturating_sub(3);
        self.open.drain(..from);
        let unfinished = unfinished_suffix(&self.open);
        let cut = self.open.len() - unfinished;
        self.open.drain(..cut);
    }

    /// The `remaining` payload bytes that finish the current frame.
    pub(crate) fn filler(&self, remaining: u64) -> Filler {
        let completion = if self.in_data && self.text {
            completion(&self.open)
        } else {
            Vec::new()
        };
        let n = usize::try_from(remaining).map_or(completion.len(), |r| r.min(completion.len()));
        Filler {
            head: completion[..n].to_vec(),
            fill: if self.text { b' ' } else { 0 },
            rest: remaining - n as u64,
        }
    }
}

/// Bytes that finish a cut frame: `head`, then `rest` copies of `fill`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Filler {
    pub head: Vec<u8>,
    pub fill: u8,
    pub rest: u64,
}

/// How many bytes at the end of `b` (at most 3) start a UTF-8 sequence that is not complete.
fn unfinished_suffix(b: &[u8]) -> usize {
    for back in 1..=b.len().min(3) {
        let byte = b[b.len() - back];
        if byte & 0xc0 == 0x80 {
            continue; // a continuation byte: the lead is further back
        }
        let need = sequence_len(byte);
        return if need > back { back } else { 0 };
    }
    0
}

/// Length of the sequence a lead byte starts (1 for ASCII and for bytes that start none).
fn sequence_len(lead: u8) -> usize {
    match lead {
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => 1,
    }
}

/// Continuation bytes that make `open` (an unfinished sequence) a valid character.
fn completion(open: &[u8]) -> Vec<u8> {
    let Some(&lead) = open.first() else {
        return Vec::new();
    };
    let missing = sequence_len(lead).saturating_sub(open.len());
    (0..missing)
        .map(|i| {
            // The second byte's range is narrower after some leads (RFC 3629 §4).
            if i == 0 && open.len() == 1 {
                match lead {
                    0xe0 => 0xa0,
                    0xf0 => 0x90,
                    _ => 0x80,
                }
            } else {
                0x80
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::frames::OP_CONTINUATION;
    use proptest::prelude::*;

    fn text_header(len: u64) -> Header {
        Header {
            fin: true,
            opcode: OP_TEXT,
            mask: None,
            len,
        }
    }

    /// What the client holds after the cut and the filler.
    fn finished(s: &str, cut: usize, splits: &[usize]) -> Vec<u8> {
        let bytes = s.as_bytes();
        let mut t = MessageTail::default();
        t.header(&text_header(bytes.len() as u64));
        let mut at = 0;
        for &n in splits {
            let end = (at + n).min(cut);
            t.payload(&bytes[at..end]);
            at = end;
        }
        t.payload(&bytes[at..cut]);
        let f = t.filler((bytes.len() - cut) as u64);
        let mut out = bytes[..cut].to_vec();
        out.extend(&f.head);
        out.extend(std::iter::repeat_n(f.fill, f.rest as usize));
        out
    }

    #[test]
    fn a_character_cut_at_any_byte_is_completed() {
        for s in ["a€b", "€", "x\u{10348}", "\u{800}", "\u{10000}é"] {
            for cut in 0..=s.len() {
                let out = finished(s, cut, &[1]);
                assert_eq!(out.len(), s.len());
                assert!(
                    std::str::from_utf8(&out).is_ok(),
                    "{s:?} cut at {cut}: {out:x?}"
                );
                assert!(out.starts_with(&s.as_bytes()[..cut]));
            }
        }
    }

    #[test]
    fn binary_frames_are_filled_with_zeros_and_control_frames_leave_the_tail() {
        let mut t = MessageTail::default();
        t.header(&Header {
            opcode: OP_BINARY,
            ..text_header(10)
        });
        t.payload(&[0xe2, 0x82]);
        assert_eq!(
            t.filler(8),
            Filler {
                head: vec![],
                fill: 0,
                rest: 8
            }
        );

        let mut t = MessageTail::default();
        t.header(&Header {
            fin: false,
            ..text_header(2)
        });
        t.payload(&[0xe2, 0x82]);
        // A ping between fragments: its payload is not the message's.
        t.header(&Header {
            opcode: 0x9,
            ..text_header(1)
        });
        t.payload(&[0xff]);
        t.header(&Header {
            opcode: OP_CONTINUATION,
            ..text_header(5)
        });
        assert_eq!(t.filler(5).head, vec![0x80]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn any_text_cut_anywhere_finishes_as_valid_utf8(
            s in "\\PC{0,40}",
            cut in any::<prop::sample::Index>(),
            splits in prop::collection::vec(1usize..6, 0..10),
        ) {
            let cut = cut.index(s.len() + 1);
            let out = finished(&s, cut, &splits);
            prop_assert_eq!(out.len(), s.len());
            prop_assert!(std::str::from_utf8(&out).is_ok());
        }
    }
}
