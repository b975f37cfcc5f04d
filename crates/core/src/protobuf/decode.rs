//! Schema-driven protobuf → JSON decoding.
//!
//! Decoding is two-phase per message: `parse` collects each field into a
//! [`Slot`], then `finish` renders the slots as JSON. Singular message fields
//! are kept as raw chunks until `finish`, because protobuf merges repeated
//! occurrences of a singular message field (decoding the concatenation), and
//! Go does the same.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Number, Value};

use crate::protobuf::DecodeError;
use crate::protobuf::schema::{Card, DROP_ZERO, Field, INLINE, KEEP_EMPTY, MESSAGES, Msg, Special, Ty};
use crate::protobuf::special;
use crate::protobuf::wire::{FIXED64, LEN, Reader, VARINT};

/// Deepest message nesting accepted (Kubernetes objects need ~15; this only
/// bounds recursion on hostile input).
pub const MAX_DEPTH: usize = 100;

/// One field's accumulated value(s) while parsing a message.
pub(crate) enum Slot<'a> {
    Empty,
    /// Last occurrence of a singular scalar (protobuf: last one wins).
    Value(Value),
    /// Singular bytes, kept raw (specials need the bytes, not base64).
    Raw(&'a [u8]),
    List(Vec<Value>),
    Map(Map<String, Value>),
    /// Every occurrence of a singular message field, merged at `finish`.
    Chunks(Vec<&'a [u8]>),
}

/// Decodes message `idx` from the concatenation of `chunks`. `None` means
/// "no JSON value" (e.g. a zero meta.v1.Time, which Go renders as null); the
/// caller omits the field or, inside lists and maps, uses `null`.
pub(crate) fn message(idx: u16, chunks: &[&[u8]], depth: usize) -> Result<Option<Value>, DecodeError> {
    let m = &MESSAGES[usize::from(idx)];
    let slots = parse(m, chunks, depth)?;
    if m.special != Special::None {
        return special::finish(m, slots, depth);
    }
    let mut obj = Map::new();
    finish(m, slots, &mut obj, depth)?;
    Ok(Some(Value::Object(obj)))
}

pub(crate) fn parse<'a>(m: &'static Msg, chunks: &[&'a [u8]], depth: usize) -> Result<Vec<Slot<'a>>, DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError::TooDeep(MAX_DEPTH));
    }
    let mut slots: Vec<Slot<'a>> = m.fields.iter().map(|_| Slot::Empty).collect();
    for chunk in chunks {
        parse_chunk(m, chunk, &mut slots, depth)?;
    }
    Ok(slots)
}

fn parse_chunk<'a>(m: &'static Msg, buf: &'a [u8], slots: &mut [Slot<'a>], depth: usize) -> Result<(), DecodeError> {
    let mut r = Reader::new(buf, m.name);
    while !r.is_empty() {
        let (tag, wt) = r.key()?;
        let Some(i) = m.field_index(tag) else {
            r.skip(wt)?;
            continue;
        };
        let f = &m.fields[i];
        let wrong = || DecodeError::WrongWireType { field: f.json, message: m.name, wire_type: wt };
        match (f.card, f.ty) {
            (Card::Single, Ty::Message(_)) => {
                if wt != LEN {
                    return Err(wrong());
                }
                let chunk = r.len_delimited()?;
                match &mut slots[i] {
                    Slot::Chunks(v) => v.push(chunk),
                    s => *s = Slot::Chunks(vec![chunk]),
                }
            }
            (Card::Single, Ty::Bytes) if wt == LEN => slots[i] = Slot::Raw(r.len_delimited()?),
            (Card::Single, _) => slots[i] = Slot::Value(scalar(&mut r, f, m, wt)?),
            (Card::Repeated, ty) => {
                if !matches!(slots[i], Slot::List(_)) {
                    slots[i] = Slot::List(Vec::new());
                }
                let Slot::List(list) = &mut slots[i] else { unreachable!("just set") };
                match ty {
                    Ty::Message(c) => {
                        if wt != LEN {
                            return Err(wrong());
                        }
                        let chunk = r.len_delimited()?;
                        list.push(message(c, &[chunk], depth + 1)?.unwrap_or(Value::Null));
                    }
                    // Packed encoding of numeric fields: decoders must accept
                    // it even though Kubernetes writes `packed = false`.
                    Ty::Bool | Ty::Int32 | Ty::Int64 | Ty::Double if wt == LEN => {
                        let mut packed = Reader::new(r.len_delimited()?, m.name);
                        let natural = if ty == Ty::Double { FIXED64 } else { VARINT };
                        while !packed.is_empty() {
                            list.push(scalar(&mut packed, f, m, natural)?);
                        }
                    }
                    _ => list.push(scalar(&mut r, f, m, wt)?),
                }
            }
            (Card::Map, _) => {
                if wt != LEN {
                    return Err(wrong());
                }
                let (k, v) = map_entry(m, f, r.len_delimited()?, depth)?;
                if !matches!(slots[i], Slot::Map(_)) {
                    slots[i] = Slot::Map(Map::new());
                }
                let Slot::Map(map) = &mut slots[i] else { unreachable!("just set") };
                map.insert(k, v);
            }
        }
    }
    Ok(())
}

/// Reads one scalar of `f`'s type, checking the wire type first. Integer
/// narrowing mirrors Go's generated code (`int32(v)` truncates).
fn scalar(r: &mut Reader<'_>, f: &'static Field, m: &'static Msg, wt: u8) -> Result<Value, DecodeError> {
    let expected = match f.ty {
        Ty::String | Ty::Bytes | Ty::Message(_) => LEN,
        Ty::Bool | Ty::Int32 | Ty::Int64 => VARINT,
        Ty::Double => FIXED64,
    };
    if wt != expected {
        return Err(DecodeError::WrongWireType { field: f.json, message: m.name, wire_type: wt });
    }
    Ok(match f.ty {
        // Go never validates UTF-8 in these proto2 strings, and encoding/json
        // replaces invalid bytes with U+FFFD: from_utf8_lossy does the same.
        Ty::String => Value::String(String::from_utf8_lossy(r.len_delimited()?).into_owned()),
        // []byte is base64 (standard, padded) in Kubernetes JSON.
        Ty::Bytes => Value::String(STANDARD.encode(r.len_delimited()?)),
        Ty::Bool => Value::Bool(r.varint()? != 0),
        #[allow(clippy::cast_possible_truncation)] // Go: int32(v), negatives are sign-extended.
        Ty::Int32 => Value::from(r.varint()? as i32),
        Ty::Int64 => Value::from(r.varint()?.cast_signed()),
        Ty::Double => {
            let x = f64::from_bits(r.fixed64()?);
            // JSON has no NaN/Inf; Go's encoder would fail as well.
            Value::Number(Number::from_f64(x).ok_or_else(|| DecodeError::InvalidValue {
                field: f.json,
                message: m.name,
                reason: format!("{x} is not representable in JSON"),
            })?)
        }
        Ty::Message(_) => unreachable!("messages are not scalars"),
    })
}

/// Decodes one map entry message {1: key, 2: value}. Missing parts take
/// their protobuf defaults, as in Go.
fn map_entry(m: &'static Msg, f: &'static Field, buf: &[u8], depth: usize) -> Result<(String, Value), DecodeError> {
    let mut r = Reader::new(buf, m.name);
    let (mut key, mut value, mut chunks) = (String::new(), None, Vec::new());
    while !r.is_empty() {
        match r.key()? {
            (1, LEN) => key = String::from_utf8_lossy(r.len_delimited()?).into_owned(),
            (2, LEN) if matches!(f.ty, Ty::Message(_)) => chunks.push(r.len_delimited()?),
            (2, wt) => value = Some(scalar(&mut r, f, m, wt)?),
            (1, wt) => return Err(DecodeError::WrongWireType { field: f.json, message: m.name, wire_type: wt }),
            (_, wt) => r.skip(wt)?,
        }
    }
    let value = match (f.ty, value) {
        (Ty::Message(c), _) => message(c, &chunks, depth + 1)?.unwrap_or(Value::Null),
        (_, Some(v)) => v,
        (Ty::String | Ty::Bytes, None) => Value::String(String::new()),
        (Ty::Bool, None) => Value::Bool(false),
        (Ty::Int32 | Ty::Int64 | Ty::Double, None) => Value::from(0),
    };
    Ok((key, value))
}

/// Renders parsed slots into `obj` (also used for inline children, which
/// share the parent's object).
///
/// Empty-value rule: Go's protobuf encoder writes every non-pointer field,
/// so unset strings arrive as `""`. A singular `""` string/bytes is dropped
/// (Go JSON's `omitempty` would drop it, and `"namespace": ""` must not look
/// set), except `KEEP_EMPTY` fields. Numbers and bools are kept — `0`/`false`
/// are meaningful for pointer fields like `replicas` — except `DROP_ZERO`
/// fields. Empty messages stay `{}` (`emptyDir: {}` is meaningful).
pub(crate) fn finish(
    m: &'static Msg,
    slots: Vec<Slot<'_>>,
    obj: &mut Map<String, Value>,
    depth: usize,
) -> Result<(), DecodeError> {
    for (f, slot) in m.fields.iter().zip(slots) {
        let keep_empty = f.flags & KEEP_EMPTY != 0;
        let value = match slot {
            Slot::Empty => continue,
            Slot::Value(Value::String(s)) if s.is_empty() && !keep_empty => continue,
            Slot::Value(Value::Number(n)) if f.flags & DROP_ZERO != 0 && n.as_i64() == Some(0) => continue,
            Slot::Value(v) => v,
            Slot::Raw(b) if b.is_empty() && !keep_empty => continue,
            Slot::Raw(b) => Value::String(STANDARD.encode(b)),
            Slot::List(l) => Value::Array(l),
            Slot::Map(map) => Value::Object(map),
            Slot::Chunks(chunks) => {
                let Ty::Message(c) = f.ty else { unreachable!("chunks are messages") };
                let child = &MESSAGES[usize::from(c)];
                if f.flags & INLINE != 0 && child.special == Special::None {
                    let slots = parse(child, &chunks, depth + 1)?;
                    finish(child, slots, obj, depth + 1)?;
                    continue;
                }
                match message(c, &chunks, depth + 1)? {
                    Some(v) => v,
                    None => continue,
                }
            }
        };
        obj.insert(f.json.to_owned(), value);
    }
    Ok(())
}
