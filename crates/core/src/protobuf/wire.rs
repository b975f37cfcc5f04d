//! Minimal protobuf wire-format reader. Every read is bounds-checked and
//! returns an error instead of panicking; nothing allocates.

use crate::protobuf::DecodeError;

pub(crate) const VARINT: u8 = 0;
pub(crate) const FIXED64: u8 = 1;
pub(crate) const LEN: u8 = 2;
pub(crate) const FIXED32: u8 = 5;

pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Message being read, for error messages.
    msg: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], msg: &'static str) -> Self {
        Reader { buf, pos: 0, msg }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    pub(crate) fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut value = 0u64;
        for i in 0..10 {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(DecodeError::TruncatedVarint(self.msg));
            };
            self.pos += 1;
            // The 10th byte may only contribute bit 63.
            if i == 9 && b > 1 {
                return Err(DecodeError::VarintOverflow(self.msg));
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(value);
            }
        }
        Err(DecodeError::VarintOverflow(self.msg))
    }

    /// Reads a field key, returning (field number, wire type).
    pub(crate) fn key(&mut self) -> Result<(u32, u8), DecodeError> {
        let key = self.varint()?;
        let number = key >> 3;
        let invalid = DecodeError::InvalidFieldNumber { message: self.msg, number };
        // Field numbers are 1..=2^29-1 in protobuf.
        let tag = u32::try_from(number).ok().filter(|t| (1..1 << 29).contains(t)).ok_or(invalid)?;
        Ok((tag, (key & 7) as u8))
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], DecodeError> {
        let available = self.buf.len() - self.pos;
        match usize::try_from(n) {
            Ok(n) if n <= available => {
                let s = &self.buf[self.pos..self.pos + n];
                self.pos += n;
                Ok(s)
            }
            _ => Err(DecodeError::Truncated { message: self.msg, needed: n, available }),
        }
    }

    /// Reads a length-delimited payload.
    pub(crate) fn len_delimited(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.varint()?;
        self.take(n)
    }

    pub(crate) fn fixed64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    /// Skips an unknown field (Go's generated code also ignores them).
    pub(crate) fn skip(&mut self, wire_type: u8) -> Result<(), DecodeError> {
        match wire_type {
            VARINT => self.varint().map(drop),
            FIXED64 => self.take(8).map(drop),
            LEN => self.len_delimited().map(drop),
            FIXED32 => self.take(4).map(drop),
            // Groups (3, 4) are deprecated and unused by Kubernetes; 6 and 7
            // are invalid.
            wire_type => Err(DecodeError::UnsupportedWireType { message: self.msg, wire_type }),
        }
    }
}
