//! Server-side `Table` output (`meta.k8s.io/v1`), which `kubectl get` asks for and prints as
//! columns. Columns follow upstream's printers. Pure: objects in, JSON out.

use axum::http::HeaderMap;
use serde_json::{Value, json};

/// A column of `kubectl get`, with its value for an object. Priority 0 columns always show;
/// priority 1 columns show with `-o wide`.
pub struct Column {
    pub name: &'static str,
    pub kind: &'static str,
    pub format: &'static str,
    pub description: &'static str,
    pub priority: u8,
    pub cell: fn(&Value) -> Value,
}

impl Column {
    /// A plain column: a string, always shown.
    pub const fn new(name: &'static str, description: &'static str, cell: fn(&Value) -> Value) -> Column {
        Column { name, kind: "string", format: "", description, priority: 0, cell }
    }

    pub const fn integer(self) -> Column {
        Column { kind: "integer", ..self }
    }

    pub const fn wide(self) -> Column {
        Column { priority: 1, ..self }
    }
}

/// The NAME column, first in most tables.
pub const NAME: Column = Column {
    name: "Name",
    kind: "string",
    format: "name",
    description: "Name must be unique within a namespace.",
    priority: 0,
    cell: |o| o["metadata"]["name"].clone(),
};

/// The AGE column, from the creation timestamp.
pub const AGE: Column = Column::new(
    "Age",
    "CreationTimestamp is a timestamp representing the server time when this object was created.",
    |o| json!(age(o, time::OffsetDateTime::now_utc())),
);

/// How much of each object a row carries (`includeObject`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Include {
    None,
    Metadata,
    Object,
}

impl Include {
    pub fn parse(value: Option<&str>) -> Include {
        match value {
            Some("None") => Include::None,
            Some("Object") => Include::Object,
            _ => Include::Metadata,
        }
    }
}

/// What form a read answers in, from the client's Accept header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    Full,
    Table,
    /// `PartialObjectMetadata` (and `...List`): metadata only, as metadata informers ask.
    Metadata,
}

pub fn shape(headers: &HeaderMap) -> Shape {
    if requested(headers) {
        Shape::Table
    } else if accepts_as(headers, &["PartialObjectMetadata", "PartialObjectMetadataList"]) {
        Shape::Metadata
    } else {
        Shape::Full
    }
}

/// Whether the client asked for a Table (kubectl's Accept lists it first).
pub fn requested(headers: &HeaderMap) -> bool {
    accepts_as(headers, &["Table"])
}

/// Whether an Accept header lists a `meta.k8s.io/v1` (or `v1beta1`) media type `as=` one of
/// `kinds`.
fn accepts_as(headers: &HeaderMap, kinds: &[&str]) -> bool {
    headers.get_all(axum::http::header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).any(|accept| {
        accept.split(',').any(|media| {
            let params: Vec<&str> = media.split(';').map(str::trim).collect();
            params.iter().any(|p| p.strip_prefix("as=").is_some_and(|k| kinds.contains(&k)))
                && params.contains(&"g=meta.k8s.io")
                && (params.contains(&"v=v1") || params.contains(&"v=v1beta1"))
        })
    })
}

/// A Table of `objects`. `list_metadata` is the list's metadata (resourceVersion, continue).
pub fn table(
    columns: &[Column],
    objects: &[Value],
    include: Include,
    list_metadata: Value,
    now: time::OffsetDateTime,
) -> Value {
    let definitions: Vec<Value> = columns
        .iter()
        .map(|c| {
            json!({"name": c.name, "type": c.kind, "format": c.format, "description": c.description,
                   "priority": c.priority})
        })
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|object| {
            let cells: Vec<Value> = columns
                .iter()
                .map(|c| if c.name == "Age" { json!(age(object, now)) } else { (c.cell)(object) })
                .collect();
            let mut row = json!({"cells": cells});
            match include {
                Include::None => {}
                Include::Metadata => {
                    row["object"] = json!({
                        "kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": object["metadata"],
                    });
                }
                Include::Object => row["object"] = object.clone(),
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_metadata,
        "columnDefinitions": definitions,
        "rows": rows,
    })
}

fn age(object: &Value, now: time::OffsetDateTime) -> String {
    let created = object["metadata"]["creationTimestamp"]
        .as_str()
        .and_then(|t| time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok());
    match created {
        Some(created) => human_duration((now - created).whole_seconds()),
        None => "<unknown>".into(),
    }
}

/// A duration the way kubectl shows ages: `45s`, `5m3s`, `3h`, `2d4h`, `3y`.
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    let seconds = seconds.max(0);
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        return match seconds % 60 {
            0 => format!("{minutes}m"),
            s => format!("{minutes}m{s}s"),
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        return match minutes % 60 {
            0 => format!("{hours}h"),
            m => format!("{hours}h{m}m"),
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        return match hours % 24 {
            0 => format!("{}d", hours / 24),
            h => format!("{}d{h}h", hours / 24),
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        return match (hours / 24) % 365 {
            0 => format!("{}y", hours / 24 / 365),
            d => format!("{}y{d}d", hours / 24 / 365),
        };
    }
    format!("{}y", hours / 24 / 365)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_as_kubectl_prints_them() {
        for (seconds, shown) in [
            (0, "0s"),
            (119, "119s"),
            (120, "2m"),
            (303, "5m3s"),
            (600, "10m"),
            (179 * 60, "179m"),
            (3 * 3600 + 60 * 5, "3h5m"),
            (8 * 3600, "8h"),
            (47 * 3600, "47h"),
            (2 * 86400 + 4 * 3600, "2d4h"),
            (10 * 86400, "10d"),
            (3 * 365 * 86400 + 5 * 86400, "3y5d"),
            (9 * 365 * 86400, "9y"),
            (-5, "<invalid>"),
        ] {
            assert_eq!(human_duration(seconds), shown, "{seconds}s");
        }
    }

    #[test]
    fn kubectl_accept_headers_ask_for_tables() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "accept",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
                .parse()
                .unwrap(),
        );
        assert!(requested(&headers));
        headers.insert("accept", "application/json".parse().unwrap());
        assert!(!requested(&headers));
    }

    #[test]
    fn rows_hold_name_columns_age_and_metadata() {
        let data = Column::new("Data", "", |o| json!(o["data"].as_object().map_or(0, |d| d.len()))).integer();
        let columns = [NAME, data, AGE];
        let object = json!({"metadata": {"name": "app", "creationTimestamp": "2026-01-01T00:00:00Z"}, "data": {"a": "1", "b": "2"}});
        let now = time::OffsetDateTime::parse("2026-01-01T00:05:03Z", &time::format_description::well_known::Rfc3339)
            .unwrap();
        let t = table(&columns, &[object], Include::Metadata, json!({"resourceVersion": "9"}), now);
        assert_eq!(t["rows"][0]["cells"], json!(["app", 2, "5m3s"]));
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        let names: Vec<_> = t["columnDefinitions"].as_array().unwrap().iter().map(|c| c["name"].clone()).collect();
        assert_eq!(names, [json!("Name"), json!("Data"), json!("Age")]);
    }
}
