//! SPDY/3.1 framing, as far as Kubernetes streaming uses it: the container runtime's
//! streaming server (exec, attach, port-forward) speaks SPDY, and the node API translates
//! kubectl's WebSocket `v5.channel.k8s.io` into it, as upstream's API server does. No crate
//! implements SPDY, so this is our own: frames, and header blocks compressed with zlib and the
//! protocol's fixed dictionary, one compression context per direction per connection.
//!
//! Flow control (WINDOW_UPDATE) is accepted and ignored, as the Go implementation the runtimes
//! use (spdystream) ignores it.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        id: u32,
        fin: bool,
        headers: Vec<(String, String)>,
    },
    SynReply {
        id: u32,
        fin: bool,
        headers: Vec<(String, String)>,
    },
    Headers {
        id: u32,
        fin: bool,
        headers: Vec<(String, String)>,
    },
    Data {
        id: u32,
        fin: bool,
        data: Bytes,
    },
    RstStream {
        id: u32,
        status: u32,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good: u32,
        status: u32,
    },
    /// SETTINGS, WINDOW_UPDATE and anything newer: read and ignored.
    Ignored {
        kind: u16,
    },
}

const VERSION: u16 = 3;
const FLAG_FIN: u8 = 0x01;
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
/// A frame longer than this is refused rather than buffered (the length field allows 16 MiB).
const MAX_FRAME: usize = 1 << 24;

enum Kind {
    Headers,
    Other,
}

/// RST_STREAM status for a stream the receiver cannot handle.
pub const REFUSED_STREAM: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("SPDY: {0}")]
    Protocol(String),
    #[error("SPDY: {0}")]
    Io(#[from] std::io::Error),
}

/// SPDY/3's zlib dictionary: the words below, each with a 32-bit big-endian length, then
/// the text that follows them (status lines, dates, media types).
fn dictionary() -> &'static [u8] {
    static DICT: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    DICT.get_or_init(|| {
        const WORDS: &[&str] = &[
            "options",
            "head",
            "post",
            "put",
            "delete",
            "trace",
            "accept",
            "accept-charset",
            "accept-encoding",
            "accept-language",
            "accept-ranges",
            "age",
            "allow",
            "authorization",
            "cache-control",
            "connection",
            "content-base",
            "content-encoding",
            "content-language",
            "content-length",
            "content-location",
            "content-md5",
            "content-range",
            "content-type",
            "date",
            "etag",
            "expect",
            "expires",
            "from",
            "host",
            "if-match",
            "if-modified-since",
            "if-none-match",
            "if-range",
            "if-unmodified-since",
            "last-modified",
            "location",
            "max-forwards",
            "pragma",
            "proxy-authenticate",
            "proxy-authorization",
            "range",
            "referer",
            "retry-after",
            "server",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "user-agent",
            "vary",
            "via",
            "warning",
            "www-authenticate",
            "method",
            "get",
            "status",
            "200 OK",
            "version",
            "HTTP/1.1",
            "url",
            "public",
            "set-cookie",
            "keep-alive",
            "origin",
        ];
        const TAIL: &str = concat!(
            "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
            "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request",
            "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented",
            "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
            "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,",
            "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=",
            "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
        );
        let mut dict = Vec::with_capacity(1423);
        for word in WORDS {
            dict.extend_from_slice(&(word.len() as u32).to_be_bytes());
            dict.extend_from_slice(word.as_bytes());
        }
        dict.extend_from_slice(TAIL.as_bytes());
        dict
    })
}

/// Encodes and decodes one connection's frames; it holds that connection's two zlib streams,
/// so one codec serves exactly one connection.
pub struct Codec {
    deflate: Compress,
    inflate: Decompress,
}

impl Default for Codec {
    fn default() -> Codec {
        let mut deflate = Compress::new(Compression::default(), true);
        deflate.set_dictionary(dictionary()).expect("a fresh zlib stream takes a dictionary");
        Codec { deflate, inflate: Decompress::new(true) }
    }
}

impl Codec {
    fn header_block(&mut self, headers: &[(String, String)]) -> Result<Vec<u8>, Error> {
        let mut plain = Vec::new();
        plain.put_u32(headers.len() as u32);
        for (name, value) in headers {
            plain.put_u32(name.len() as u32);
            plain.extend_from_slice(name.to_ascii_lowercase().as_bytes());
            plain.put_u32(value.len() as u32);
            plain.extend_from_slice(value.as_bytes());
        }
        let mut out = Vec::with_capacity(plain.len() + 64);
        let mut input = &plain[..];
        loop {
            out.reserve(256);
            let before = self.deflate.total_in();
            self.deflate
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .map_err(|e| Error::Protocol(format!("compressing headers: {e}")))?;
            input = &input[(self.deflate.total_in() - before) as usize..];
            // A sync flush is complete when input is used up and zlib had room to spare.
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }

    fn parse_header_block(&mut self, compressed: &[u8]) -> Result<Vec<(String, String)>, Error> {
        let mut plain = Vec::with_capacity(compressed.len() * 4 + 64);
        let mut input = compressed;
        loop {
            plain.reserve(1024);
            let before = self.inflate.total_in();
            let result = self.inflate.decompress_vec(input, &mut plain, FlushDecompress::Sync);
            input = &input[(self.inflate.total_in() - before) as usize..];
            match result {
                Ok(Status::StreamEnd) => break,
                Ok(_) if input.is_empty() && plain.len() < plain.capacity() => break,
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(dictionary())
                        .map_err(|e| Error::Protocol(format!("header dictionary: {e}")))?;
                }
                Err(e) => return Err(Error::Protocol(format!("decompressing headers: {e}"))),
            }
            if plain.len() > MAX_FRAME {
                return Err(Error::Protocol("header block too large".into()));
            }
        }
        let mut block = &plain[..];
        let take = |block: &mut &[u8]| -> Result<String, Error> {
            if block.remaining() < 4 {
                return Err(Error::Protocol("truncated header block".into()));
            }
            let len = block.get_u32() as usize;
            if block.remaining() < len {
                return Err(Error::Protocol("truncated header block".into()));
            }
            let text = String::from_utf8_lossy(&block[..len]).into_owned();
            block.advance(len);
            Ok(text)
        };
        if block.remaining() < 4 {
            return Err(Error::Protocol("truncated header block".into()));
        }
        let count = block.get_u32() as usize;
        let mut headers = Vec::with_capacity(count.min(64));
        for _ in 0..count {
            let name = take(&mut block)?;
            let value = take(&mut block)?;
            headers.push((name, value));
        }
        Ok(headers)
    }
}

fn control(out: &mut BytesMut, kind: u16, flags: u8, payload: &[u8]) {
    out.put_u16(0x8000 | VERSION);
    out.put_u16(kind);
    out.put_u32((u32::from(flags) << 24) | payload.len() as u32);
    out.extend_from_slice(payload);
}

impl tokio_util::codec::Encoder<Frame> for Codec {
    type Error = Error;

    fn encode(&mut self, frame: Frame, out: &mut BytesMut) -> Result<(), Error> {
        let fin = |fin: bool| if fin { FLAG_FIN } else { 0 };
        let frame_kind = if matches!(frame, Frame::Headers { .. }) { Kind::Headers } else { Kind::Other };
        match frame {
            Frame::SynStream { id, fin: f, headers } => {
                let mut payload = Vec::new();
                payload.put_u32(id & 0x7fff_ffff);
                payload.put_u32(0); // associated-to stream
                payload.put_u16(0); // priority and slot
                payload.extend(self.header_block(&headers)?);
                control(out, SYN_STREAM, fin(f), &payload);
            }
            Frame::SynReply { id, fin: f, headers } | Frame::Headers { id, fin: f, headers } => {
                let kind = if matches!(frame_kind, Kind::Headers) { HEADERS } else { SYN_REPLY };
                let mut payload = Vec::new();
                payload.put_u32(id & 0x7fff_ffff);
                payload.extend(self.header_block(&headers)?);
                control(out, kind, fin(f), &payload);
            }
            Frame::Data { id, fin: f, data } => {
                if data.len() >= MAX_FRAME {
                    return Err(Error::Protocol(format!("{} bytes is too long for one frame", data.len())));
                }
                out.put_u32(id & 0x7fff_ffff);
                out.put_u32((u32::from(fin(f)) << 24) | data.len() as u32);
                out.extend_from_slice(&data);
            }
            Frame::RstStream { id, status } => {
                control(out, RST_STREAM, 0, &[(id & 0x7fff_ffff).to_be_bytes(), status.to_be_bytes()].concat())
            }
            Frame::Ping { id } => control(out, PING, 0, &id.to_be_bytes()),
            Frame::GoAway { last_good, status } => {
                control(out, GOAWAY, 0, &[last_good.to_be_bytes(), status.to_be_bytes()].concat())
            }
            Frame::Ignored { kind } => return Err(Error::Protocol(format!("cannot send control frame type {kind}"))),
        }
        Ok(())
    }
}

impl tokio_util::codec::Decoder for Codec {
    type Item = Frame;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, Error> {
        if src.len() < 8 {
            return Ok(None);
        }
        let length = (u32::from_be_bytes([0, src[5], src[6], src[7]])) as usize;
        if src.len() < 8 + length {
            src.reserve(8 + length - src.len());
            return Ok(None);
        }
        let first = u32::from_be_bytes([src[0], src[1], src[2], src[3]]);
        let flags = src[4];
        let fin = flags & FLAG_FIN != 0;
        src.advance(8);
        let mut payload = src.split_to(length).freeze();
        if first & 0x8000_0000 == 0 {
            return Ok(Some(Frame::Data { id: first, fin, data: payload }));
        }
        let (version, kind) = ((first >> 16) as u16 & 0x7fff, first as u16);
        if version != VERSION {
            return Err(Error::Protocol(format!("version {version} frames, not 3")));
        }
        let short = || Error::Protocol(format!("control frame {kind} is too short"));
        let frame = match kind {
            SYN_STREAM => {
                if payload.len() < 10 {
                    return Err(short());
                }
                let id = payload.get_u32() & 0x7fff_ffff;
                payload.advance(6);
                Frame::SynStream { id, fin, headers: self.parse_header_block(&payload)? }
            }
            SYN_REPLY | HEADERS => {
                if payload.len() < 4 {
                    return Err(short());
                }
                let id = payload.get_u32() & 0x7fff_ffff;
                let headers = self.parse_header_block(&payload)?;
                if kind == SYN_REPLY {
                    Frame::SynReply { id, fin, headers }
                } else {
                    Frame::Headers { id, fin, headers }
                }
            }
            RST_STREAM if payload.len() >= 8 => {
                Frame::RstStream { id: payload.get_u32() & 0x7fff_ffff, status: payload.get_u32() }
            }
            PING if payload.len() >= 4 => Frame::Ping { id: payload.get_u32() },
            GOAWAY if payload.len() >= 8 => {
                Frame::GoAway { last_good: payload.get_u32() & 0x7fff_ffff, status: payload.get_u32() }
            }
            RST_STREAM | PING | GOAWAY => return Err(short()),
            other => Frame::Ignored { kind: other },
        };
        Ok(Some(frame))
    }
}

#[cfg(test)]
mod tests {
    use tokio_util::codec::{Decoder, Encoder};

    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_dictionary_is_the_protocols() {
        let dict = dictionary();
        assert_eq!(dict.len(), 1423);
        assert_eq!(&dict[..11], b"\0\0\0\x07options");
        assert!(dict.ends_with(b",*,enq=0."));
        // zlib names a dictionary by its Adler-32, which the peer checks.
        let (mut a, mut b) = (1u32, 0u32);
        for byte in dict {
            a = (a + u32::from(*byte)) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!((b << 16) | a, 0xe3c6_a7c2);
    }

    #[test]
    fn frames_round_trip_through_one_connections_contexts() {
        // Two codecs stand for the two ends: each end's deflate feeds the other's inflate.
        let (mut client, mut server) = (Codec::default(), Codec::default());
        let frames = vec![
            Frame::SynStream { id: 1, fin: false, headers: headers(&[("streamtype", "error")]) },
            Frame::SynStream { id: 3, fin: false, headers: headers(&[("streamtype", "stdin"), ("port", "80")]) },
            Frame::Data { id: 3, fin: false, data: Bytes::from_static(b"hello") },
            Frame::Data { id: 3, fin: true, data: Bytes::new() },
            Frame::Headers { id: 3, fin: false, headers: headers(&[("x", "y")]) },
            Frame::Ping { id: 7 },
            Frame::RstStream { id: 5, status: REFUSED_STREAM },
            Frame::GoAway { last_good: 3, status: 0 },
        ];
        let mut wire = BytesMut::new();
        for f in frames.clone() {
            client.encode(f, &mut wire).unwrap();
        }
        // Fed a byte at a time, the decoder still finds every frame whole.
        let mut got = Vec::new();
        let mut buf = BytesMut::new();
        for byte in wire {
            buf.put_u8(byte);
            while let Some(f) = server.decode(&mut buf).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, frames);
    }

    #[test]
    fn replies_and_unknown_control_frames() {
        let (mut a, mut b) = (Codec::default(), Codec::default());
        let mut wire = BytesMut::new();
        a.encode(Frame::SynReply { id: 1, fin: false, headers: vec![] }, &mut wire).unwrap();
        control(&mut wire, 9, 0, &[0, 0, 0, 1, 0, 0, 16, 0]); // WINDOW_UPDATE
        control(&mut wire, 4, 0, &[0, 0, 0, 0]); // SETTINGS, no entries
        assert_eq!(b.decode(&mut wire).unwrap(), Some(Frame::SynReply { id: 1, fin: false, headers: vec![] }));
        assert_eq!(b.decode(&mut wire).unwrap(), Some(Frame::Ignored { kind: 9 }));
        assert_eq!(b.decode(&mut wire).unwrap(), Some(Frame::Ignored { kind: 4 }));
        assert_eq!(b.decode(&mut wire).unwrap(), None);
    }

    #[test]
    fn bad_frames_are_errors_not_panics() {
        for bytes in [
            &[0x80, 0x02, 0, 1, 0, 0, 0, 0][..],                                // version 2
            &[0x80, 0x03, 0, 6, 0, 0, 0, 2, 0, 0][..],                          // short PING
            &[0x80, 0x03, 0, 1, 0, 0, 0, 10, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0][..], // headers not zlib
            &[0x80, 0x03, 0, 2, 0, 0, 0, 6, 0, 0, 0, 1, 0x78, 0xbb][..],        // dictionary id, no block
        ] {
            let mut codec = Codec::default();
            let mut buf = BytesMut::from(bytes);
            assert!(codec.decode(&mut buf).is_err(), "{bytes:?}");
        }
    }

    #[test]
    fn many_header_blocks_share_the_stream() {
        let (mut a, mut b) = (Codec::default(), Codec::default());
        let mut wire = BytesMut::new();
        let long = "x".repeat(10_000);
        for id in 0..50u32 {
            let h = headers(&[("streamtype", "data"), ("port", &id.to_string()), ("requestid", &long)]);
            a.encode(Frame::SynStream { id: id * 2 + 1, fin: false, headers: h }, &mut wire).unwrap();
        }
        for id in 0..50u32 {
            let Some(Frame::SynStream { id: got, headers, .. }) = b.decode(&mut wire).unwrap() else { panic!() };
            assert_eq!(got, id * 2 + 1);
            assert_eq!(headers[1].1, id.to_string());
            assert_eq!(headers[2].1.len(), 10_000);
        }
    }

    /// A small deterministic generator: the fuzz cases below are the same on every run.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
        fn bytes(&mut self, max: u64) -> Vec<u8> {
            (0..self.below(max)).map(|_| self.next() as u8).collect()
        }
        fn word(&mut self) -> String {
            (0..1 + self.below(12)).map(|_| (b'a' + self.below(26) as u8) as char).collect()
        }
    }

    fn drain(codec: &mut Codec, buf: &mut BytesMut) {
        // Every call either takes bytes, answers None, or fails: the loop always ends.
        for _ in 0..10_000 {
            match codec.decode(buf) {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return,
            }
        }
        panic!("the decoder made no progress");
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..3000 {
            let mut codec = Codec::default();
            let mut buf = BytesMut::from(&rng.bytes(300)[..]);
            drain(&mut codec, &mut buf);
        }
        // Control-frame headers with random bodies reach every frame parser.
        for _ in 0..3000 {
            let kind = rng.below(12) as u16;
            let body = rng.bytes(64);
            let mut buf = BytesMut::new();
            control(&mut buf, kind, rng.next() as u8, &body);
            drain(&mut Codec::default(), &mut buf);
        }
    }

    #[test]
    fn random_frames_round_trip_in_random_pieces_and_survive_corruption() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        for _ in 0..200 {
            let (mut a, mut b) = (Codec::default(), Codec::default());
            let mut frames = Vec::new();
            for _ in 0..1 + rng.below(20) {
                let id = 1 + 2 * rng.below(1000) as u32;
                let fin = rng.below(2) == 1;
                let headers: Vec<(String, String)> = (0..rng.below(5)).map(|_| (rng.word(), rng.word())).collect();
                frames.push(match rng.below(6) {
                    0 => Frame::SynStream { id, fin, headers },
                    1 => Frame::SynReply { id, fin, headers },
                    2 => Frame::Data { id, fin, data: Bytes::from(rng.bytes(5000)) },
                    3 => Frame::RstStream { id, status: rng.below(12) as u32 },
                    4 => Frame::Ping { id: rng.next() as u32 },
                    _ => Frame::GoAway { last_good: id, status: rng.below(3) as u32 },
                });
            }
            let mut wire = BytesMut::new();
            for f in frames.clone() {
                a.encode(f, &mut wire).unwrap();
            }
            let wire = wire.freeze();
            let (mut got, mut buf, mut at) = (Vec::new(), BytesMut::new(), 0);
            while at < wire.len() {
                let n = (1 + rng.below(700) as usize).min(wire.len() - at);
                buf.extend_from_slice(&wire[at..at + n]);
                at += n;
                while let Some(f) = b.decode(&mut buf).unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got, frames);
            // The same bytes with a few flipped never panic a fresh decoder.
            let mut bad = wire.to_vec();
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(bad.len() as u64) as usize;
                bad[i] ^= 1 << rng.below(8);
            }
            drain(&mut Codec::default(), &mut BytesMut::from(&bad[..]));
        }
    }
}
