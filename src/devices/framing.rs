//! Cutting a scanner's byte stream into frames (one frame = one scan).
//!
//! [`Framer`] is pure and synchronous: the caller feeds whatever `read`
//! returned and gets complete frames back; it tells the framer when the idle
//! timeout elapsed. Rules (see `FramingConfig` and domain-standards §2.1):
//!
//! - a frame ends at the configured suffix (any byte sequence; CR LF split
//!   across reads is fine) or, when the caller reports an idle gap, at the last
//!   byte received;
//! - the prefix is stripped when the frame starts with it, else kept;
//! - frame bytes are kept exactly: AIM identifiers (`]d2`), GS 0x1D and bytes
//!   ≥ 0x80 (not necessarily UTF-8) all pass unchanged;
//! - a frame longer than `max_len` is discarded whole and reported once as
//!   [`RejectReason::TooLong`]: bytes are dropped until the next suffix (or
//!   idle gap), so memory stays bounded by `prefix + max_len + suffix`;
//! - a frame containing a C0 control byte other than GS, RS, FS, EOT and TAB
//!   (the ISO 15434 / GS1 separators) is rejected as
//!   [`RejectReason::ControlByte`] — NUL, and CR/LF when they are not the
//!   suffix, are never scanned data;
//! - empty frames (a stray CR LF, a prefix alone) are ignored silently.

use std::fmt;

use crate::config::FramingConfig;

/// Control bytes that may appear inside scanned data: EOT, TAB, FS, GS, RS.
const ALLOWED_CONTROLS: [u8; 5] = [0x04, 0x09, 0x1C, 0x1D, 0x1E];

/// What the framer produced for one completed frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameOutcome {
    /// A scan: prefix and suffix removed, bytes exactly as received.
    Frame(Vec<u8>),
    /// A frame that is not a scan; counted and logged, never delivered.
    Rejected(RejectReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// Longer than `max_len`; the whole frame was discarded.
    TooLong,
    /// Contained this control byte (the first offending one).
    ControlByte(u8),
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RejectReason::TooLong => f.write_str("frame too long, discarded"),
            RejectReason::ControlByte(b) => {
                write!(f, "frame contains control byte 0x{b:02X}, discarded")
            }
        }
    }
}

/// Stateful splitter of one device's byte stream into [`FrameOutcome`]s.
#[derive(Debug, Clone)]
pub struct Framer {
    prefix: Vec<u8>,
    suffix: Vec<u8>,
    max_len: usize,
    /// Raw bytes of the frame in progress (prefix and a partial suffix
    /// included); while discarding, only the last `suffix.len() - 1` bytes, to
    /// spot a suffix split across reads.
    buf: Vec<u8>,
    /// Dropping an over-long frame until its end (already reported).
    discarding: bool,
}

impl Framer {
    pub fn new(cfg: &FramingConfig) -> Self {
        Self {
            prefix: cfg.prefix.clone(),
            suffix: cfg.suffix.clone(),
            max_len: cfg.max_len,
            buf: Vec::new(),
            discarding: false,
        }
    }

    /// Most raw bytes ever buffered: beyond this a frame is certainly too long.
    fn buffer_limit(&self) -> usize {
        self.max_len
            .saturating_add(self.prefix.len())
            .saturating_add(self.suffix.len().saturating_sub(1))
    }

    /// Feeds bytes as read from the device; appends completed frames to `out`.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<FrameOutcome>) {
        for &b in bytes {
            self.push(b, out);
        }
    }

    fn push(&mut self, b: u8, out: &mut Vec<FrameOutcome>) {
        self.buf.push(b);
        let at_suffix = !self.suffix.is_empty() && self.buf.ends_with(&self.suffix);
        if self.discarding {
            if at_suffix {
                self.discarding = false;
                self.buf.clear();
            } else if self.buf.len() >= self.suffix.len() {
                // Keep only what could still start a suffix.
                let drop = self.buf.len() + 1 - self.suffix.len().max(1);
                self.buf.drain(..drop);
            }
            return;
        }
        if at_suffix {
            let end = self.buf.len() - self.suffix.len();
            self.buf.truncate(end);
            self.complete(out);
        } else if self.buf.len() > self.buffer_limit() {
            out.push(FrameOutcome::Rejected(RejectReason::TooLong));
            self.discarding = true;
            let keep = self.suffix.len().saturating_sub(1);
            let drop = self.buf.len().saturating_sub(keep);
            self.buf.drain(..drop);
        }
    }

    /// The caller saw no byte for the idle timeout: the frame in progress (if
    /// any) is complete. An over-long frame being discarded ends here too.
    pub fn idle(&mut self) -> Option<FrameOutcome> {
        if self.discarding {
            self.discarding = false;
            self.buf.clear();
            return None;
        }
        let mut out = Vec::new();
        self.complete(&mut out);
        out.pop()
    }

    /// True while a frame is in progress, i.e. an idle timeout would end one.
    pub fn has_pending(&self) -> bool {
        self.discarding || !self.buf.is_empty()
    }

    /// Bytes of an unfinished frame (lost if the device goes away now).
    pub fn pending_len(&self) -> usize {
        if self.discarding { 0 } else { self.buf.len() }
    }

    /// Turns `buf` (suffix already removed) into an outcome and clears it.
    fn complete(&mut self, out: &mut Vec<FrameOutcome>) {
        let start = if self.buf.starts_with(&self.prefix) {
            self.prefix.len()
        } else {
            0
        };
        let body = self.buf.get(start..).unwrap_or_default();
        let outcome = if body.is_empty() {
            None
        } else if body.len() > self.max_len {
            Some(FrameOutcome::Rejected(RejectReason::TooLong))
        } else if let Some(&c) = body
            .iter()
            .find(|&&c| c < 0x20 && !ALLOWED_CONTROLS.contains(&c))
        {
            Some(FrameOutcome::Rejected(RejectReason::ControlByte(c)))
        } else {
            Some(FrameOutcome::Frame(body.to_vec()))
        };
        out.extend(outcome);
        self.buf.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use FrameOutcome::{Frame, Rejected};
    use RejectReason::{ControlByte, TooLong};

    fn cfg(prefix: &[u8], suffix: &[u8], max_len: usize) -> FramingConfig {
        FramingConfig {
            prefix: prefix.to_vec(),
            suffix: suffix.to_vec(),
            idle_timeout: None,
            max_len,
        }
    }

    /// A step fed to the framer: bytes, or "the idle timeout elapsed".
    #[derive(Clone, Copy)]
    enum Step<'a> {
        Bytes(&'a [u8]),
        Idle,
    }
    use Step::{Bytes, Idle};

    fn run(framer: &mut Framer, steps: &[Step<'_>]) -> Vec<FrameOutcome> {
        let mut out = Vec::new();
        for step in steps {
            match step {
                Bytes(b) => framer.feed(b, &mut out),
                Idle => out.extend(framer.idle()),
            }
        }
        out
    }

    fn f(bytes: &[u8]) -> FrameOutcome {
        Frame(bytes.to_vec())
    }

    const GS1_DM: &[u8] = b"]d201095060001343521726123110L24A0173\x1d21SN000123";

    #[test]
    fn table() {
        struct Case<'a> {
            name: &'a str,
            cfg: FramingConfig,
            steps: &'a [Step<'a>],
            expect: Vec<FrameOutcome>,
        }
        let crlf = || cfg(b"", b"\r\n", 64);
        let cases = [
            Case {
                name: "single CRLF frame",
                cfg: crlf(),
                steps: &[Bytes(b"ABC123\r\n")],
                expect: vec![f(b"ABC123")],
            },
            Case {
                name: "GS1 DataMatrix with AIM id and GS kept exactly",
                cfg: crlf(),
                steps: &[
                    Bytes(b"]d201095060001343521726123110L24A0173\x1d21SN"),
                    Bytes(b"000123\r\n"),
                ],
                expect: vec![f(GS1_DM)],
            },
            Case {
                name: "CRLF split across reads",
                cfg: crlf(),
                steps: &[Bytes(b"A1\r"), Bytes(b"\nB2\r"), Bytes(b"\n")],
                expect: vec![f(b"A1"), f(b"B2")],
            },
            Case {
                name: "several frames in one read, trailing partial kept",
                cfg: crlf(),
                steps: &[Bytes(b"A\r\nB\r\nC"), Bytes(b"\r\n")],
                expect: vec![f(b"A"), f(b"B"), f(b"C")],
            },
            Case {
                name: "non-UTF-8 bytes survive",
                cfg: crlf(),
                steps: &[Bytes(b"\xff\xfe\x80caf\xe9\r\n")],
                expect: vec![f(b"\xff\xfe\x80caf\xe9")],
            },
            Case {
                name: "ISO 15434 separators allowed",
                cfg: crlf(),
                steps: &[Bytes(b"[)>\x1e06\x1dP123\x1cX\x09Y\x1e\x04\r\n")],
                expect: vec![f(b"[)>\x1e06\x1dP123\x1cX\x09Y\x1e\x04")],
            },
            Case {
                name: "empty frames ignored",
                cfg: crlf(),
                steps: &[Bytes(b"\r\n\r\nA\r\n\r\n")],
                expect: vec![f(b"A")],
            },
            Case {
                name: "NUL rejected, next frame fine",
                cfg: crlf(),
                steps: &[Bytes(b"AB\x00CD\r\nOK\r\n")],
                expect: vec![Rejected(ControlByte(0x00)), f(b"OK")],
            },
            Case {
                name: "bare CR inside a CRLF frame rejected",
                cfg: crlf(),
                steps: &[Bytes(b"AB\rCD\r\n")],
                expect: vec![Rejected(ControlByte(0x0D))],
            },
            Case {
                name: "LF before CR suffix rejected (scanner sends CRLF, config says CR)",
                cfg: cfg(b"", b"\r", 64),
                steps: &[Bytes(b"A\r\nB\r")],
                expect: vec![f(b"A"), Rejected(ControlByte(0x0A))],
            },
            Case {
                name: "first offending control byte reported",
                cfg: crlf(),
                steps: &[Bytes(b"\x1dA\x07B\x1b\r\n")],
                expect: vec![Rejected(ControlByte(0x07))],
            },
            Case {
                name: "DEL and printable high bytes are not C0",
                cfg: crlf(),
                steps: &[Bytes(b"A\x7fB\r\n")],
                expect: vec![f(b"A\x7fB")],
            },
            Case {
                name: "prefix stripped when present, kept when absent",
                cfg: cfg(b"\x02", b"\x03", 64),
                steps: &[Bytes(b"\x02ABC\x03XYZ\x03\x02\x03")],
                expect: vec![f(b"ABC"), f(b"XYZ")],
            },
            Case {
                name: "multi-byte prefix and suffix split everywhere",
                cfg: cfg(b"<S>", b"<E>", 64),
                steps: &[
                    Bytes(b"<"),
                    Bytes(b"S"),
                    Bytes(b">12"),
                    Bytes(b"3<"),
                    Bytes(b"E"),
                    Bytes(b">"),
                ],
                expect: vec![f(b"123")],
            },
            Case {
                name: "exactly max_len accepted, max_len + 1 rejected",
                cfg: cfg(b"", b"\r\n", 4),
                steps: &[Bytes(b"1234\r\n12345\r\nOK\r\n")],
                expect: vec![f(b"1234"), Rejected(TooLong), f(b"OK")],
            },
            Case {
                name: "max_len counts without the prefix",
                cfg: cfg(b"]d2", b"\r", 4),
                steps: &[Bytes(b"]d21234\r]d212345\r")],
                expect: vec![f(b"1234"), Rejected(TooLong)],
            },
            Case {
                name: "long frame without prefix caught at completion",
                cfg: cfg(b"PRE", b"\r", 4),
                steps: &[Bytes(b"123456\rOK\r")],
                expect: vec![Rejected(TooLong), f(b"OK")],
            },
            Case {
                name: "over-long frame reported once, dropped until suffix",
                cfg: cfg(b"", b"\r\n", 8),
                steps: &[
                    Bytes(b"0123456789"),
                    Bytes(b"0123456789"),
                    Bytes(b"0123456789\r"),
                    Bytes(b"\nNEXT\r\n"),
                ],
                expect: vec![Rejected(TooLong), f(b"NEXT")],
            },
            Case {
                name: "over-long garbage with control bytes is one TooLong",
                cfg: cfg(b"", b"\r\n", 4),
                steps: &[Bytes(b"\x00\x00\x00\x00\x00\x00\x00\r\nOK\r\n")],
                expect: vec![Rejected(TooLong), f(b"OK")],
            },
            Case {
                name: "idle flushes a frame when there is no suffix",
                cfg: cfg(b"", b"", 64),
                steps: &[Bytes(b"AB"), Bytes(b"C"), Idle, Idle, Bytes(b"D"), Idle],
                expect: vec![f(b"ABC"), f(b"D")],
            },
            Case {
                name: "idle ends a frame even with a suffix configured",
                cfg: crlf(),
                steps: &[Bytes(b"AB"), Idle, Bytes(b"CD\r\n")],
                expect: vec![f(b"AB"), f(b"CD")],
            },
            Case {
                name: "idle with prefix only pending is ignored",
                cfg: cfg(b"]C1", b"", 64),
                steps: &[Bytes(b"]C1"), Idle, Bytes(b"]C1X"), Idle],
                expect: vec![f(b"X")],
            },
            Case {
                name: "idle framing over-long: one reject, then recovers",
                cfg: cfg(b"", b"", 3),
                steps: &[Bytes(b"ABCDEFGH"), Bytes(b"IJ"), Idle, Bytes(b"OK"), Idle],
                expect: vec![Rejected(TooLong), f(b"OK")],
            },
            Case {
                name: "idle framing rejects control bytes",
                cfg: cfg(b"", b"", 16),
                steps: &[Bytes(b"A\nB"), Idle],
                expect: vec![Rejected(ControlByte(0x0A))],
            },
            Case {
                name: "over-long frame whose suffix straddles the discard start",
                cfg: cfg(b"", b"\r\n", 3),
                steps: &[Bytes(b"ABCD\r"), Bytes(b"\nOK\r\n")],
                expect: vec![Rejected(TooLong), f(b"OK")],
            },
        ];
        for case in cases {
            let mut framer = Framer::new(&case.cfg);
            let got = run(&mut framer, case.steps);
            assert_eq!(got, case.expect, "case: {}", case.name);
        }
    }

    #[test]
    fn has_pending_tracks_partial_frames() {
        let mut framer = Framer::new(&cfg(b"", b"\r\n", 4));
        let mut out = Vec::new();
        assert!(!framer.has_pending());
        framer.feed(b"AB", &mut out);
        assert!(framer.has_pending());
        assert_eq!(framer.pending_len(), 2);
        framer.feed(b"\r\n", &mut out);
        assert!(!framer.has_pending());
        framer.feed(b"TOOLONG", &mut out);
        assert!(framer.has_pending());
        assert_eq!(framer.pending_len(), 0);
        assert_eq!(framer.idle(), None);
        assert!(!framer.has_pending());
    }

    #[test]
    fn idle_timeout_is_not_the_framers_business() {
        // The framer never looks at `idle_timeout`; the scanner task does.
        let mut c = cfg(b"", b"", 8);
        c.idle_timeout = Some(Duration::from_millis(50));
        let mut framer = Framer::new(&c);
        let mut out = Vec::new();
        framer.feed(b"AB", &mut out);
        assert!(out.is_empty());
        assert_eq!(framer.idle(), Some(f(b"AB")));
    }

    /// A random stream of valid scans, too-long frames, garbage and stray
    /// suffixes, together with the outcomes it must produce.
    fn random_stream(rng: &mut fastrand::Rng, c: &FramingConfig) -> (Vec<u8>, Vec<FrameOutcome>) {
        let mut stream = Vec::new();
        let mut expect = Vec::new();
        for _ in 0..rng.usize(1..40) {
            match rng.u8(0..10) {
                0 => {
                    // Over-long frame of printable bytes.
                    let len = rng.usize(c.max_len + 1..c.max_len * 3 + 2);
                    stream.extend((0..len).map(|_| rng.u8(b'!'..=b'~')));
                    expect.push(Rejected(TooLong));
                }
                1 => {
                    // Frame with a forbidden control byte.
                    let bad = loop {
                        let b = rng.u8(0..0x20);
                        if !ALLOWED_CONTROLS.contains(&b) && !c.suffix.contains(&b) {
                            break b;
                        }
                    };
                    stream.extend_from_slice(b"AB");
                    stream.push(bad);
                    expect.push(Rejected(ControlByte(bad)));
                }
                2 => {} // stray suffix: empty frame, ignored
                _ => {
                    // Valid scan: printable, high bytes, allowed separators.
                    let len = rng.usize(1..=c.max_len);
                    let body: Vec<u8> = (0..len)
                        .map(|_| match rng.u8(0..20) {
                            0 => ALLOWED_CONTROLS[rng.usize(0..ALLOWED_CONTROLS.len())],
                            1 => rng.u8(0x80..=0xFF),
                            _ => rng.u8(b'0'..=b'Z'),
                        })
                        .collect();
                    if rng.bool() {
                        stream.extend_from_slice(&c.prefix);
                    }
                    stream.extend_from_slice(&body);
                    expect.push(Frame(body));
                }
            }
            stream.extend_from_slice(&c.suffix);
        }
        (stream, expect)
    }

    #[test]
    fn random_chunking_yields_the_same_frames() {
        let configs = [
            cfg(b"", b"\r\n", 16),
            cfg(b"]d2", b"\r", 32),
            cfg(b"\x02", b"\x03", 8),
            cfg(b"", b"<END>", 12),
        ];
        let mut rng = fastrand::Rng::with_seed(0x5CA7);
        for c in &configs {
            for _ in 0..300 {
                let (stream, expect) = random_stream(&mut rng, c);
                let mut framer = Framer::new(c);
                let mut out = Vec::new();
                let mut rest = stream.as_slice();
                while !rest.is_empty() {
                    let n = rng.usize(1..=rest.len().min(40));
                    let (chunk, tail) = rest.split_at(n);
                    framer.feed(chunk, &mut out);
                    assert!(framer.buf.len() <= framer.buffer_limit());
                    rest = tail;
                }
                assert_eq!(out, expect, "config {c:?}, stream {stream:?}");
                assert!(!framer.has_pending());
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_stay_bounded() {
        let mut rng = fastrand::Rng::with_seed(42);
        for _ in 0..500 {
            let c = cfg(
                &[b'\x02'][..rng.usize(0..=1)],
                &b"\r\n"[..rng.usize(0..=2)],
                rng.usize(0..64),
            );
            let mut framer = Framer::new(&c);
            let mut out = Vec::new();
            for _ in 0..rng.usize(0..50) {
                let chunk: Vec<u8> = (0..rng.usize(0..100)).map(|_| rng.u8(..)).collect();
                framer.feed(&chunk, &mut out);
                assert!(framer.buf.len() <= framer.buffer_limit().max(1));
                if rng.u8(0..8) == 0 {
                    out.extend(framer.idle());
                }
            }
            for o in &out {
                if let Frame(b) = o {
                    assert!(!b.is_empty() && b.len() <= c.max_len);
                }
            }
        }
    }
}
