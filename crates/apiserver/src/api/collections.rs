//! Lists and watches: selectors, continue tokens, and the watch event stream.

use super::*;

/// The selectors this slice understands: `metadata.name=` and `metadata.namespace=`.
pub(super) struct FieldSelector {
    name: Option<String>,
    namespace: Option<String>,
}

impl FieldSelector {
    fn parse(selector: Option<&str>) -> Result<FieldSelector, ApiError> {
        let mut parsed = FieldSelector { name: None, namespace: None };
        for term in selector.unwrap_or("").split(',').filter(|t| !t.is_empty()) {
            let (field, value) = term
                .split_once("==")
                .or_else(|| term.split_once('='))
                .ok_or_else(|| ApiError::BadRequest(format!("invalid field selector {term:?}")))?;
            match field {
                "metadata.name" => parsed.name = Some(value.to_owned()),
                "metadata.namespace" => parsed.namespace = Some(value.to_owned()),
                other => return Err(ApiError::BadRequest(format!("field label not supported: {other}"))),
            }
        }
        Ok(parsed)
    }

    fn matches(&self, object: &Value) -> bool {
        let meta = &object["metadata"];
        self.name.as_deref().is_none_or(|n| meta["name"].as_str() == Some(n))
            && self.namespace.as_deref().is_none_or(|n| meta["namespace"].as_str().unwrap_or("") == n)
    }
}

/// What a list or watch selects: field and label selectors together.
pub(super) struct Filter {
    fields: FieldSelector,
    labels: LabelSelector,
}

impl Filter {
    fn parse(params: &ListParams) -> Result<Filter, ApiError> {
        Ok(Filter {
            fields: FieldSelector::parse(params.field_selector.as_deref())?,
            labels: LabelSelector::parse(params.label_selector.as_deref().unwrap_or(""))
                .map_err(ApiError::BadRequest)?,
        })
    }

    fn matches(&self, object: &Value) -> bool {
        if !self.fields.matches(object) {
            return false;
        }
        if self.labels.is_empty() {
            return true;
        }
        let labels = object["metadata"]["labels"]
            .as_object()
            .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned()))).collect())
            .unwrap_or_default();
        self.labels.matches(&labels)
    }
}

pub(super) async fn read_collection(
    state: &State,
    kind: &'static Kind,
    namespace: Option<String>,
    params: ListParams,
    as_table: bool,
) -> Result<Response, ApiError> {
    let selector = Filter::parse(&params)?;
    let prefix = collection_prefix(kind, namespace.as_deref());
    if matches!(params.watch.as_deref(), Some("true" | "1")) {
        return watch_collection(state, kind, prefix, selector, params, as_table).await;
    }
    let mut options = ListOptions { prefix, limit: params.limit, ..Default::default() };
    if let Some(token) = params.continue_token.as_deref().filter(|t| !t.is_empty()) {
        let (revision, after) = decode_continue(token)?;
        if !after.starts_with(&options.prefix) {
            return Err(ApiError::BadRequest("the continue token was issued for another collection".into()));
        }
        options.revision = Some(revision);
        options.after = Some(after);
    }
    let page = state.store.list(&options).await.map_err(|e| match e {
        rkube_store::StoreError::Compacted { .. } => ApiError::Gone(
            "The provided continue parameter is too old to display a consistent list result. \
             You can start a new list without the continue parameter."
                .into(),
        ),
        other => ApiError::from_store(other, kind.resource, ""),
    })?;
    let mut items = Vec::with_capacity(page.items.len());
    for kv in &page.items {
        let object = with_revision(kv)?;
        if selector.matches(&object) {
            items.push(object);
        }
    }
    let mut metadata = json!({"resourceVersion": page.revision.to_string()});
    if page.more {
        let last = page.items.last().map(|kv| kv.key.as_str()).unwrap_or_default();
        metadata["continue"] = json!(encode_continue(page.revision, last));
    }
    if as_table {
        let include = Include::parse(params.include_object.as_deref());
        let now = time::OffsetDateTime::now_utc();
        return Ok(axum::Json(table::table(kind.columns, &items, include, metadata, now)).into_response());
    }
    Ok(axum::Json(
        json!({"kind": kind.list_kind, "apiVersion": kind.api_version, "metadata": metadata, "items": items}),
    )
    .into_response())
}

/// Every object of a collection that a list's selectors select, read at one revision.
pub(super) async fn list_all(
    state: &State,
    kind: &'static Kind,
    namespace: Option<&str>,
    params: &ListParams,
) -> Result<Vec<Value>, ApiError> {
    let selector = Filter::parse(params)?;
    let options = ListOptions { prefix: collection_prefix(kind, namespace), ..Default::default() };
    let page = state.store.list(&options).await.map_err(|e| ApiError::from_store(e, kind.resource, ""))?;
    let mut items = Vec::new();
    for kv in &page.items {
        let object = with_revision(kv)?;
        if selector.matches(&object) {
            items.push(object);
        }
    }
    Ok(items)
}

pub(super) fn encode_continue(revision: i64, last_key: &str) -> String {
    let token = json!({"v": "meta.k8s.io/v1", "rv": revision, "start": last_key});
    base64::engine::general_purpose::URL_SAFE.encode(token.to_string())
}

pub(super) fn decode_continue(token: &str) -> Result<(i64, String), ApiError> {
    let invalid = || ApiError::BadRequest("invalid continue token".into());
    let bytes = base64::engine::general_purpose::URL_SAFE.decode(token).map_err(|_| invalid())?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    let revision = value["rv"].as_i64().filter(|r| *r > 0).ok_or_else(invalid)?;
    let start = value["start"].as_str().filter(|s| s.starts_with("/registry/")).ok_or_else(invalid)?;
    Ok((revision, start.to_owned()))
}

/// How long a watch lasts when the client does not say, as upstream's default.
pub(super) const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);
/// How often an idle watch gets a bookmark, if it asked for them.
pub(super) const BOOKMARK_INTERVAL: Duration = Duration::from_secs(60);

pub(super) async fn watch_collection(
    state: &State,
    kind: &'static Kind,
    prefix: String,
    selector: Filter,
    params: ListParams,
    as_table: bool,
) -> Result<Response, ApiError> {
    let from: i64 = match params.resource_version.as_deref() {
        None | Some("") | Some("0") => 0,
        Some(rv) => rv.parse().map_err(|_| ApiError::BadRequest(format!("invalid resourceVersion {rv:?}")))?,
    };
    // Without a resourceVersion a watch starts with the current state, as ADDED events.
    let mut initial = Vec::new();
    let start_revision = if from == 0 {
        let page = state
            .store
            .list(&ListOptions { prefix: prefix.clone(), ..Default::default() })
            .await
            .map_err(|e| ApiError::from_store(e, kind.resource, ""))?;
        for kv in &page.items {
            let object = with_revision(kv)?;
            if selector.matches(&object) {
                initial.push(json!({"type": "ADDED", "object": object}));
            }
        }
        page.revision + 1
    } else {
        from.checked_add(1).ok_or_else(|| ApiError::BadRequest(format!("invalid resourceVersion {from}")))?
    };
    let bookmarks = params.allow_watch_bookmarks.unwrap_or(false);
    let opened = state
        .store
        .watch(WatchOptions {
            prefix: prefix.clone(),
            start_revision,
            progress_interval: bookmarks.then_some(BOOKMARK_INTERVAL),
        })
        .await;
    let watch = match opened {
        Ok(watch) => watch,
        // A watch from a compacted resourceVersion is a 200 with a 410 ERROR event, as
        // upstream answers, so clients relist.
        Err(e @ rkube_store::StoreError::Compacted { .. }) => {
            let event = json!({"type": "ERROR", "object": ApiError::from_store(e, kind.resource, "").status()});
            return Ok(Response::builder()
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(format!("{event}\n")))
                .expect("static response parts"));
        }
        Err(e) => return Err(ApiError::from_store(e, kind.resource, "")),
    };
    // 0 means the default, as upstream; a day at most keeps the deadline representable.
    let timeout = params
        .timeout_seconds
        .filter(|&t| t > 0)
        .map(|t| Duration::from_secs(t.min(86_400)))
        .unwrap_or(DEFAULT_WATCH_TIMEOUT);
    let deadline = tokio::time::Instant::now() + timeout;

    let live = watch.filter_map(move |event| {
        let line = match event {
            Ok(WatchEvent::Put { kv, prev }) => {
                // An object entering the selection is ADDED, one leaving it DELETED (its old
                // state at the new resourceVersion), as upstream's watch cache reports them.
                let now = with_revision(&kv).ok().filter(|o| selector.matches(o));
                let before = match prev {
                    Some(p) => serde_json::from_slice::<Value>(&p.value).ok().filter(|o| selector.matches(o)),
                    // History compacted away: only the version tells a create from an update.
                    None if kv.version > 1 => now.clone(),
                    None => None,
                };
                match (before, now) {
                    (None, Some(object)) => Some(json!({"type": "ADDED", "object": object})),
                    (Some(_), Some(object)) => Some(json!({"type": "MODIFIED", "object": object})),
                    (Some(mut old), None) => {
                        old["metadata"]["resourceVersion"] = json!(kv.mod_revision.to_string());
                        Some(json!({"type": "DELETED", "object": old}))
                    }
                    (None, None) => None,
                }
            }
            Ok(WatchEvent::Delete { revision, prev: Some(prev), .. }) => {
                let mut object: Value = serde_json::from_slice(&prev.value).unwrap_or(Value::Null);
                object["metadata"]["resourceVersion"] = json!(revision.to_string());
                selector.matches(&object).then(|| json!({"type": "DELETED", "object": object}))
            }
            // The deleted value was compacted away: name the object from its key, so clients
            // still drop it.
            Ok(WatchEvent::Delete { key, revision, prev: None }) => {
                let mut parts = key.strip_prefix(&prefix).unwrap_or_default().splitn(2, '/');
                let (first, second) = (parts.next().unwrap_or_default(), parts.next());
                let (namespace, name) = match second {
                    Some(name) => (Some(first), name),
                    None => (None, first),
                };
                let mut metadata = json!({"name": name, "resourceVersion": revision.to_string()});
                if let Some(ns) = namespace.filter(|_| kind.namespaced) {
                    metadata["namespace"] = json!(ns);
                }
                Some(
                    json!({"type": "DELETED", "object": {"kind": kind.kind, "apiVersion": kind.api_version, "metadata": metadata}}),
                )
            }
            Ok(WatchEvent::Progress { revision }) => bookmarks.then(|| {
                json!({"type": "BOOKMARK", "object": {
                    "kind": kind.kind, "apiVersion": kind.api_version, "metadata": {"resourceVersion": revision.to_string()}
                }})
            }),
            Err(e) => Some(json!({"type": "ERROR", "object": ApiError::from_store(e, kind.resource, "").status()})),
        };
        std::future::ready(line)
    });
    // Asked for as a Table, each event's object is a one-row Table of that object.
    let include = Include::parse(params.include_object.as_deref());
    let events = futures::stream::iter(initial)
        .chain(live)
        .map(move |mut event| {
            if as_table && matches!(event["type"].as_str(), Some("ADDED" | "MODIFIED" | "DELETED")) {
                let object = event["object"].take();
                let metadata = json!({"resourceVersion": object["metadata"]["resourceVersion"]});
                event["object"] =
                    table::table(kind.columns, &[object], include, metadata, time::OffsetDateTime::now_utc());
            }
            Ok::<_, std::io::Error>(Bytes::from(format!("{event}\n")))
        })
        .take_until(tokio::time::sleep_until(deadline));
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(events))
        .expect("static response parts"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip_and_reject_garbage() {
        let token = encode_continue(42, "/registry/configmaps/default/b");
        assert_eq!(decode_continue(&token).unwrap(), (42, "/registry/configmaps/default/b".into()));
        assert!(decode_continue("not-base64!").is_err());
        let outside = base64::engine::general_purpose::URL_SAFE.encode(r#"{"rv":3,"start":"/elsewhere"}"#);
        assert!(decode_continue(&outside).is_err());
    }

    #[test]
    fn field_selectors_match_name_and_namespace() {
        let selector = FieldSelector::parse(Some("metadata.name=a,metadata.namespace==ns")).unwrap();
        assert!(selector.matches(&json!({"metadata": {"name": "a", "namespace": "ns"}})));
        assert!(!selector.matches(&json!({"metadata": {"name": "b", "namespace": "ns"}})));
        assert!(FieldSelector::parse(Some("spec.unknown=x")).is_err());
    }
}
