//! JSON forms of messages whose Go types implement custom (un)marshalling:
//! `Quantity`, `Time`, `MicroTime`, `Duration`, `IntOrString`, `RawExtension`,
//! `FieldsV1`, `[]string` wrappers and the apiextensions `JSONSchemaProps` unions.

use serde_json::Value;

use crate::protobuf::DecodeError;
use crate::protobuf::decode::{Slot, message};
use crate::protobuf::schema::{Msg, Special, Ty};

/// Unix seconds of Go's zero `time.Time` (0001-01-01T00:00:00Z).
const GO_ZERO_TIME: i64 = -62_135_596_800;

pub(crate) fn finish(m: &'static Msg, mut slots: Vec<Slot<'_>>, depth: usize) -> Result<Option<Value>, DecodeError> {
    // Takes the slot of field `tag` (build.rs checked each special's layout).
    let mut take = |tag: u32| m.field_index(tag).map_or(Slot::Empty, |i| std::mem::replace(&mut slots[i], Slot::Empty));
    let invalid = |tag: u32, reason: String| DecodeError::InvalidValue {
        field: m.field_index(tag).map_or("?", |i| m.fields[i].json),
        message: m.name,
        reason,
    };
    let value = match m.special {
        Special::None => unreachable!("plain messages are rendered by decode::finish"),
        // A Quantity without its string is Go's zero Quantity.
        Special::Quantity => match take(1) {
            Slot::Value(v) => v,
            _ => Value::from("0"),
        },
        Special::Time | Special::MicroTime => {
            let (secs, nanos) = (take(1), take(2));
            // Go encodes a zero Time as an empty message and renders it as
            // JSON null; treat an explicit 0001-01-01 the same way.
            if matches!((&secs, &nanos), (Slot::Empty, Slot::Empty)) {
                return Ok(None);
            }
            let (secs, nanos) = (int(&secs), int(&nanos));
            if secs == GO_ZERO_TIME && nanos == 0 {
                return Ok(None);
            }
            let micro = m.special == Special::MicroTime;
            let s = format_time(secs, nanos, micro).ok_or_else(|| invalid(1, "timestamp out of range".into()))?;
            Value::String(s)
        }
        Special::Duration => Value::String(go_duration(int(&take(1)))),
        Special::IntOrString => match int(&take(1)) {
            0 => Value::from(int(&take(2))),
            1 => match take(3) {
                Slot::Value(v) => v,
                _ => Value::from(""),
            },
            t => return Err(invalid(1, format!("unknown IntOrString type {t}"))),
        },
        Special::RawExtension | Special::RawJson => match take(1) {
            // Empty Raw is `null` in Go, i.e. absent for us.
            Slot::Raw([]) | Slot::Empty => return Ok(None),
            // Objects embedded in protobuf-encoded objects (e.g. WatchEvent)
            // carry their own `k8s\0` envelope.
            Slot::Raw(b) if m.special == Special::RawExtension && b.starts_with(crate::protobuf::MAGIC) => {
                crate::protobuf::decode_at(b, depth + 1)?
            }
            Slot::Raw(b) => serde_json::from_slice(b).map_err(|e| invalid(1, format!("embedded JSON: {e}")))?,
            _ => unreachable!("bytes field"),
        },
        Special::StringList => list_or_empty(take(1)),
        // Go's MarshalJSON: the list/strings if non-empty, else the schema
        // (or null when neither is set).
        Special::SchemaOrArray | Special::SchemaOrStringArray => match take(2) {
            Slot::List(l) if !l.is_empty() => Value::Array(l),
            _ => return schema(m, take(1), depth),
        },
        // Go's MarshalJSON: the schema if set, else the bool.
        Special::SchemaOrBool => match take(2) {
            s @ Slot::Chunks(_) => return schema(m, s, depth),
            _ => Value::Bool(int(&take(1)) != 0),
        },
    };
    Ok(Some(value))
}

/// Renders the `JSONSchemaProps` held in a union's `schema` slot, if any.
fn schema(m: &'static Msg, slot: Slot<'_>, depth: usize) -> Result<Option<Value>, DecodeError> {
    let Slot::Chunks(chunks) = slot else { return Ok(None) };
    let idx = m.fields.iter().find_map(|f| match f.ty {
        Ty::Message(c) => Some(c),
        _ => None,
    });
    message(idx.expect("union has a schema field"), &chunks, depth + 1)
}

fn list_or_empty(slot: Slot<'_>) -> Value {
    match slot {
        Slot::List(l) => Value::Array(l),
        _ => Value::Array(Vec::new()),
    }
}

/// Integer (or bool) scalar of a slot, protobuf default 0 when absent.
fn int(slot: &Slot<'_>) -> i64 {
    match slot {
        Slot::Value(Value::Number(n)) => n.as_i64().unwrap_or(0),
        Slot::Value(Value::Bool(b)) => i64::from(*b),
        _ => 0,
    }
}

/// RFC 3339 in UTC like Go's metav1.Time (`2006-01-02T15:04:05Z`, nanos
/// dropped) or metav1.MicroTime (`…05.000000Z`, truncated to µs). Like Go's
/// `time.Unix`, nanos outside [0, 1e9) carry into the seconds. Years outside
/// 0..=9999 are rejected (not valid RFC 3339).
pub(crate) fn format_time(secs: i64, nanos: i64, micro: bool) -> Option<String> {
    let secs = secs.checked_add(nanos.div_euclid(1_000_000_000))?;
    let nanos = nanos.rem_euclid(1_000_000_000);
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, mo, d) = civil_from_days(days);
    if !(0..=9999).contains(&y) {
        return None;
    }
    let (h, mi, s) = (sod / 3600, sod / 60 % 60, sod % 60);
    let frac = if micro { format!(".{:06}", nanos / 1000) } else { String::new() };
    Some(format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{frac}Z"))
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian
/// (Howard Hinnant's algorithm; no overflow for any `i64 / 86400`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Go's `time.Duration.String()` (what metav1.Duration marshals to):
/// "0s", "1.5µs", "250ms", "1m0s", "1h2m3.5s", "-2s".
pub(crate) fn go_duration(d: i64) -> String {
    if d == 0 {
        return "0s".into();
    }
    // Built back to front, like Go's implementation.
    let mut buf: Vec<u8> = vec![b's'];
    let mut u = d.unsigned_abs();
    if u < 1_000_000_000 {
        let prec = if u < 1_000 {
            buf.push(b'n');
            0
        } else if u < 1_000_000 {
            buf.extend("µ".bytes().rev());
            3
        } else {
            buf.push(b'm');
            6
        };
        u = push_frac(&mut buf, u, prec);
        push_int(&mut buf, u);
    } else {
        u = push_frac(&mut buf, u, 9);
        push_int(&mut buf, u % 60);
        u /= 60;
        if u > 0 {
            buf.push(b'm');
            push_int(&mut buf, u % 60);
            u /= 60;
            if u > 0 {
                buf.push(b'h');
                push_int(&mut buf, u);
            }
        }
    }
    if d < 0 {
        buf.push(b'-');
    }
    buf.reverse();
    String::from_utf8(buf).expect("ascii and µ")
}

/// Pushes (reversed) the `prec` fractional digits of `v`, without trailing
/// zeros and without the dot when all are zero; returns the integer part.
fn push_frac(buf: &mut Vec<u8>, mut v: u64, prec: u32) -> u64 {
    let mut print = false;
    for _ in 0..prec {
        let digit = (v % 10) as u8;
        print |= digit != 0;
        if print {
            buf.push(b'0' + digit);
        }
        v /= 10;
    }
    if print {
        buf.push(b'.');
    }
    v
}

fn push_int(buf: &mut Vec<u8>, mut v: u64) {
    loop {
        buf.push(b'0' + (v % 10) as u8);
        v /= 10;
        if v == 0 {
            break;
        }
    }
}
