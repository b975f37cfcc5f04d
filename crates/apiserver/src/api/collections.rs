//! Lists and watches: selectors, continue tokens, and the watch event stream.

use super::*;

/// A field selector: `field=value`, `field==value` and `field!=value` terms over the fields
/// upstream lets each kind select on (`metadata.name` and `metadata.namespace` for every kind).
pub(super) struct FieldSelector {
    terms: Vec<(String, bool, String)>,
}

impl FieldSelector {
    fn parse(kind: &Kind, selector: Option<&str>) -> Result<FieldSelector, ApiError> {
        let mut terms = Vec::new();
        for term in selector.unwrap_or("").split(',').filter(|t| !t.is_empty()) {
            let (field, equal, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (f, true, v)
            } else {
                return Err(ApiError::BadRequest(format!("invalid selector: '{term}'; can't understand '{term}'")));
            };
            let field = field.trim();
            if !matches!(field, "metadata.name" | "metadata.namespace") && !kind.field_labels.contains(&field) {
                return Err(ApiError::BadRequest(format!("field label not supported: {field}")));
            }
            terms.push((field.to_owned(), equal, value.trim().to_owned()));
        }
        Ok(FieldSelector { terms })
    }

    fn matches(&self, object: &Value) -> bool {
        self.terms.iter().all(|(field, equal, value)| (field_value(object, field) == *value) == *equal)
    }
}

/// A field as a field selector sees it: a string, `true`/`false`, a number, or empty when
/// absent.
fn field_value(object: &Value, field: &str) -> String {
    // An event's `source` is its source's component.
    let field = if field == "source" { "source.component" } else { field };
    let found = field.split('.').fold(object, |v, part| &v[part]);
    match found {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

/// What a list or watch selects: field and label selectors together.
pub(super) struct Filter {
    fields: FieldSelector,
    labels: LabelSelector,
}

impl Filter {
    fn is_empty(&self) -> bool {
        self.fields.terms.is_empty() && self.labels.is_empty()
    }

    pub(super) fn parse(kind: &Kind, params: &ListParams) -> Result<Filter, ApiError> {
        Ok(Filter {
            fields: FieldSelector::parse(kind, params.field_selector.as_deref())?,
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
    shape: Shape,
) -> Result<Response, ApiError> {
    let selector = Filter::parse(kind, &params)?;
    let prefix = collection_prefix(kind, namespace.as_deref());
    if matches!(params.watch.as_deref(), Some("true" | "1")) {
        return watch_collection(state, kind, kind, prefix, selector, params, shape, None).await;
    }
    let mut options = ListOptions { prefix, limit: params.limit, ..Default::default() };
    options.revision = list_revision(state, &params).await?;
    let filtering = !selector.is_empty();
    if let Some(freshness) = cache_freshness(state, &params).await? {
        // At any revision (`resourceVersion=0`) the list is whole and the limit ignored, as
        // upstream's watch cache serves it: a client-go informer's first list is then one
        // request, not pages whose continuations read the store at an old revision.
        let wanted = params.limit.filter(|l| *l > 0 && freshness != Freshness::Any);
        // Unfiltered, the cache hands over only the page; filtered, everything under the
        // prefix, since the limit counts selected objects.
        let take = wanted.filter(|_| !filtering);
        if let Some(listing) = state.watches.list(&state.store, kind, &options.prefix, freshness, take).await {
            state.metrics.count_list(kind.plural, metrics::ListSource::Cache);
            let mut chosen: Vec<&Entry> = Vec::new();
            let mut more = listing.more;
            for (i, entry) in listing.entries.iter().enumerate() {
                if filtering && !selector.matches(entry.selectable(kind)) {
                    continue;
                }
                chosen.push(entry);
                if wanted.is_some_and(|w| chosen.len() >= w) {
                    more |= i + 1 < listing.entries.len();
                    break;
                }
            }
            // The next page comes from the store, at this page's revision.
            let continue_after = chosen.last().filter(|_| more).map(|last| last.key.as_str());
            let objects: Vec<&[u8]> = chosen.iter().map(|e| &e.json[..]).collect();
            return list_answer(kind, &params, shape, listing.revision, continue_after, &objects);
        }
    }
    let wanted = params.limit.filter(|l| *l > 0);
    state.metrics.count_list(kind.plural, metrics::ListSource::Store);
    if let Some(token) = params.continue_token.as_deref().filter(|t| !t.is_empty()) {
        let (revision, after) = decode_continue(token)?;
        if !after.starts_with(&options.prefix) {
            return Err(ApiError::BadRequest("the continue token was issued for another collection".into()));
        }
        options.revision = Some(revision);
        options.after = Some(after);
    }
    // The limit counts selected objects, as upstream's: pages of the store are read until
    // enough match, and the continue token resumes after the last key examined.
    // Each stored JSON is spliced into the response as it is, which is most of the cost of a
    // big list avoided; objects are parsed only to be selected.
    let mut raw: Vec<Vec<u8>> = Vec::new();
    let (revision, last_key, more) = loop {
        let page = state.store.list(&options).await.map_err(|e| match e {
            rkube_store::StoreError::Compacted { .. } => ApiError::Gone(
                "The provided continue parameter is too old to display a consistent list result. \
                 You can start a new list without the continue parameter."
                    .into(),
            ),
            other => ApiError::from_store(other, kind.resource, ""),
        })?;
        let mut examined = None;
        let mut filled = false;
        for (i, kv) in page.items.iter().enumerate() {
            examined = Some(i);
            if filtering && !selector.matches(&with_revision(kv)?) {
                continue;
            }
            raw.push(with_revision_bytes(kv)?);
            if wanted.is_some_and(|w| raw.len() >= w) {
                filled = true;
                break;
            }
        }
        let last = examined.map(|i| page.items[i].key.clone());
        let more_here = examined.is_some_and(|i| i + 1 < page.items.len()) || page.more;
        if filled || !page.more || last.is_none() {
            break (page.revision, last, more_here);
        }
        options.revision = Some(page.revision);
        options.after = last;
        options.limit = wanted.map(|w| (w - raw.len()).max(64));
    };
    let continue_after = last_key.as_deref().filter(|_| more);
    let objects: Vec<&[u8]> = raw.iter().map(Vec::as_slice).collect();
    list_answer(kind, &params, shape, revision, continue_after, &objects)
}

/// One page of a list, read from the cache or the store, in the shape the client asked for:
/// the objects' JSON, the revision they are all at, and the key the next page starts after.
fn list_answer(
    kind: &Kind,
    params: &ListParams,
    shape: Shape,
    revision: i64,
    continue_after: Option<&str>,
    objects: &[&[u8]],
) -> Result<Response, ApiError> {
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if let Some(last) = continue_after {
        metadata["continue"] = json!(encode_continue(revision, last));
    }
    match shape {
        Shape::Table => {
            let parse = |o: &&[u8]| serde_json::from_slice(o).map_err(|e| ApiError::Internal(e.to_string()));
            let items = objects.iter().map(parse).collect::<Result<Vec<Value>, _>>()?;
            let include = Include::parse(params.include_object.as_deref());
            let now = time::OffsetDateTime::now_utc();
            Ok(axum::Json(table::table(kind.columns, &items, include, metadata, now)).into_response())
        }
        Shape::Metadata => {
            let items = objects.iter().map(|o| partial_json(o)).collect::<Result<Vec<_>, _>>()?;
            let list = ("PartialObjectMetadataList", "meta.k8s.io/v1");
            Ok(list_response(list, metadata, items.iter().map(Vec::as_slice)))
        }
        Shape::Full => Ok(list_response((kind.list_kind, kind.api_version), metadata, objects.iter().copied())),
    }
}

/// A list's JSON, with each object's JSON spliced in as it is.
fn list_response<'a>(
    (list_kind, api_version): (&str, &str),
    metadata: Value,
    objects: impl Iterator<Item = &'a [u8]> + Clone,
) -> Response {
    let head = json!({"kind": list_kind, "apiVersion": api_version, "metadata": metadata}).to_string();
    let mut body = Vec::with_capacity(head.len() + 16 + objects.clone().map(|r| r.len() + 1).sum::<usize>());
    body.extend_from_slice(&head.as_bytes()[..head.len() - 1]);
    body.extend_from_slice(br#","items":["#);
    for (i, object) in objects.enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(object);
    }
    body.extend_from_slice(b"]}");
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .expect("static response parts")
}

/// Whether a list is served from the watch cache, and how fresh the cache must be for it, as
/// upstream decides (`shouldDelegateList`): a continued list, an exact revision (asked for
/// with `resourceVersionMatch=Exact`, or the legacy way, a resourceVersion with a limit) reads
/// the store; `0` takes the cache as it is; anything else needs the cache at least as new as
/// the asked-for revision, or, without one, as the store's current revision (a consistent
/// read).
async fn cache_freshness(state: &State, params: &ListParams) -> Result<Option<Freshness>, ApiError> {
    let matching = params.resource_version_match.as_deref().filter(|m| !m.is_empty());
    if params.continue_token.as_deref().is_some_and(|c| !c.is_empty()) || matching == Some("Exact") {
        return Ok(None);
    }
    Ok(match params.resource_version.as_deref().filter(|rv| !rv.is_empty()) {
        None => {
            Some(Freshness::AtLeast(state.store.current_revision().await.map_err(|e| ApiError::from_store(e, "", ""))?))
        }
        Some("0") => Some(Freshness::Any),
        Some(_) if params.limit.is_some_and(|l| l > 0) && matching.is_none() => None,
        Some(rv) => Some(Freshness::AtLeast(parse_revision(rv)?)),
    })
}

/// The revision a list reads at, from `resourceVersion` and `resourceVersionMatch` as upstream
/// reads them: unset or `0` is the latest; `Exact` is that revision (410 once compacted);
/// otherwise the latest, which must not be older than the one asked for.
async fn list_revision(state: &State, params: &ListParams) -> Result<Option<i64>, ApiError> {
    let rv = params.resource_version.as_deref().filter(|rv| !rv.is_empty());
    let exact = match params.resource_version_match.as_deref().filter(|m| !m.is_empty()) {
        // The legacy form of an exact read: a resourceVersion with a limit.
        None => params.limit.is_some_and(|l| l > 0),
        Some("NotOlderThan") => false,
        Some("Exact") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "resourceVersionMatch: Unsupported value: {other:?}: supported values: \"Exact\", \"NotOlderThan\""
            )));
        }
    };
    let Some(rv) = rv else {
        if params.resource_version_match.as_deref().is_some_and(|m| !m.is_empty()) {
            return Err(ApiError::BadRequest(
                "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided"
                    .into(),
            ));
        }
        return Ok(None);
    };
    if params.continue_token.as_deref().is_some_and(|c| !c.is_empty()) && rv != "0" {
        return Err(ApiError::BadRequest("specifying resource version is not allowed when using continue".into()));
    }
    let revision = parse_revision(rv)?;
    if revision == 0 {
        // `0` with a limit is any revision, not the legacy exact read.
        if exact && params.resource_version_match.as_deref().is_some_and(|m| !m.is_empty()) {
            return Err(ApiError::BadRequest(
                "resourceVersionMatch: Forbidden: resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\""
                    .into(),
            ));
        }
        return Ok(None);
    }
    let current = state.store.current_revision().await.map_err(|e| ApiError::from_store(e, "", ""))?;
    if revision > current {
        return Err(ApiError::Timeout(format!("Too large resource version: {revision}, current: {current}")));
    }
    Ok(exact.then_some(revision))
}

/// Every object of a collection that a list's selectors select, and the revision they were
/// all read at (a list's resourceVersion, from which a watch misses nothing).
pub(super) async fn list_all(
    state: &State,
    kind: &'static Kind,
    namespace: Option<&str>,
    params: &ListParams,
) -> Result<(Vec<Value>, i64), ApiError> {
    let selector = Filter::parse(kind, params)?;
    let options = ListOptions { prefix: collection_prefix(kind, namespace), ..Default::default() };
    let page = state.store.list(&options).await.map_err(|e| ApiError::from_store(e, kind.resource, ""))?;
    let mut items = Vec::new();
    for kv in &page.items {
        let object = with_revision(kv)?;
        if selector.matches(&object) {
            items.push(object);
        }
    }
    Ok((items, page.revision))
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

/// A watch of `stored`'s objects under `prefix`, shown as `kind` (the same kind, or a version
/// converted from it by `convert`).
#[allow(clippy::too_many_arguments)]
pub(super) async fn watch_collection(
    state: &State,
    kind: &'static Kind,
    stored: &'static Kind,
    prefix: String,
    selector: Filter,
    params: ListParams,
    shape: Shape,
    convert: Option<fn(Value) -> Value>,
) -> Result<Response, ApiError> {
    let as_table = shape == Shape::Table;
    let metadata_only = shape == Shape::Metadata;
    let from: i64 = match params.resource_version.as_deref() {
        None | Some("") | Some("0") => 0,
        Some(rv) => rv.parse().map_err(|_| ApiError::BadRequest(format!("invalid resourceVersion {rv:?}")))?,
    };
    // Without a resourceVersion a watch starts with the current state, as ADDED events: from
    // the cache if it has the kind (current as of now for an unset resourceVersion, as it is
    // for `0`), otherwise from the store.
    let mut initial: Vec<Line> = Vec::new();
    let mut from_cache = None;
    let start_revision = if from == 0 {
        let freshness = match params.resource_version.as_deref() {
            Some("0") => Freshness::Any,
            _ => Freshness::AtLeast(state.store.current_revision().await.map_err(|e| ApiError::from_store(e, "", ""))?),
        };
        if let Some((listing, stream)) =
            state.watches.watch_with_state(&state.store, stored, prefix.clone(), freshness).await
        {
            for entry in &listing.entries {
                if convert.is_none() && !selector.is_empty() && !selector.matches(entry.selectable(stored)) {
                    continue;
                }
                if convert.is_none() && !as_table {
                    let line = if metadata_only {
                        watch_line("ADDED", &partial_json(&entry.json)?)
                    } else {
                        watch_line("ADDED", &entry.json)
                    };
                    initial.push(Line::Text(line));
                    continue;
                }
                let object = entry.object()?;
                if selector.matches(&object) {
                    initial.push(Line::Value(json!({"type": "ADDED", "object": shown(kind, convert, object)})));
                }
            }
            from_cache = Some(stream);
            listing.revision + 1
        } else {
            let page = state
                .store
                .list(&ListOptions { prefix: prefix.clone(), ..Default::default() })
                .await
                .map_err(|e| ApiError::from_store(e, kind.resource, ""))?;
            for kv in &page.items {
                let object = with_revision(kv)?;
                if selector.matches(&object) {
                    let object = shown(kind, convert, object);
                    initial.push(Line::Value(json!({"type": "ADDED", "object": object})));
                }
            }
            page.revision + 1
        }
    } else {
        from.checked_add(1).ok_or_else(|| ApiError::BadRequest(format!("invalid resourceVersion {from}")))?
    };
    let bookmarks = params.allow_watch_bookmarks.unwrap_or(false);
    let gone = |message: String| ApiError::Gone(message).status();
    let too_slow = move |served: Served| match served {
        Served::Event(cached) => Ok(cached),
        Served::TooSlow => {
            Err(gone(format!("the watch fell too far behind; relist {} and watch again", kind.resource)))
        }
    };
    // Served from the watch cache when it holds what is asked for; otherwise from the store.
    let cached = match from_cache {
        Some(stream) => Some(stream.map(too_slow).boxed()),
        None => state
            .watches
            .watch(&state.store, stored, prefix.clone(), start_revision)
            .await
            .map(|s| s.map(too_slow).boxed()),
    };
    let events: futures::stream::BoxStream<'static, Result<Arc<Cached>, Value>> = match cached {
        Some(cached) => cached,
        None => {
            let opened = state
                .store
                .watch(WatchOptions {
                    prefix: prefix.clone(),
                    start_revision,
                    progress_interval: bookmarks.then_some(BOOKMARK_INTERVAL),
                })
                .await;
            match opened {
                Ok(watch) => watch
                    .map(move |event| match event {
                        Ok(event) => Ok(Arc::new(Cached::new(event))),
                        Err(e) => Err(ApiError::from_store(e, kind.resource, "").status()),
                    })
                    .boxed(),
                // A watch from a compacted resourceVersion is a 200 with a 410 ERROR event,
                // as upstream answers, so clients relist.
                Err(e @ rkube_store::StoreError::Compacted { .. }) => {
                    let event = json!({"type": "ERROR", "object": ApiError::from_store(e, kind.resource, "").status()});
                    return Ok(Response::builder()
                        .header(header::CONTENT_TYPE, "application/json")
                        .body(Body::from(format!("{event}\n")))
                        .expect("static response parts"));
                }
                Err(e) => return Err(ApiError::from_store(e, kind.resource, "")),
            }
        }
    };
    // 0 means the default, as upstream; a day at most keeps the deadline representable.
    let timeout = params
        .timeout_seconds
        .filter(|&t| t > 0)
        .map(|t| Duration::from_secs(t.min(86_400)))
        .unwrap_or(DEFAULT_WATCH_TIMEOUT);
    let deadline = tokio::time::Instant::now() + timeout;

    let live = events.filter_map(move |event| {
        let line = match event {
            Ok(cached) => event_line(kind, &prefix, &selector, bookmarks, &cached, convert, metadata_only),
            Err(status) => Some(Line::Value(json!({"type": "ERROR", "object": status}))),
        };
        std::future::ready(line)
    });
    // Asked for as a Table, each event's object is a one-row Table of that object.
    let include = Include::parse(params.include_object.as_deref());
    let events = futures::stream::iter(initial)
        .chain(live)
        .map(move |line| {
            let text = match line {
                Line::Text(text) => return Ok::<_, std::io::Error>(text),
                Line::Value(mut event) => {
                    let changed = matches!(event["type"].as_str(), Some("ADDED" | "MODIFIED" | "DELETED"));
                    if as_table && changed {
                        let object = event["object"].take();
                        let metadata = json!({"resourceVersion": object["metadata"]["resourceVersion"]});
                        event["object"] =
                            table::table(kind.columns, &[object], include, metadata, time::OffsetDateTime::now_utc());
                    }
                    if metadata_only && changed {
                        event["object"] = partial(&event["object"]);
                    }
                    format!("{event}\n")
                }
            };
            Ok::<_, std::io::Error>(Bytes::from(text))
        })
        .take_until(tokio::time::sleep_until(deadline));
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(events))
        .expect("static response parts"))
}

/// An object as the watched kind shows it: converted if it is another version of the stored
/// kind, and stamped with that version.
fn shown(kind: &Kind, convert: Option<fn(Value) -> Value>, object: Value) -> Value {
    match convert {
        Some(convert) => {
            let mut object = convert(object);
            object["apiVersion"] = json!(kind.api_version);
            object["kind"] = json!(kind.kind);
            object
        }
        None => object,
    }
}

/// A line of a watch: already serialized, or a value still to be (tables, converted
/// versions, bookmarks).
enum Line {
    Text(Bytes),
    Value(Value),
}

/// The line one store event makes for one watcher, or none if its selector excludes it. An
/// object entering the selection is ADDED, one leaving it DELETED (its old state at the new
/// resourceVersion), as upstream's watch cache reports them. The objects' JSON is shared by
/// every watcher of the event.
fn event_line(
    kind: &Kind,
    prefix: &str,
    selector: &Filter,
    bookmarks: bool,
    cached: &Cached,
    convert: Option<fn(Value) -> Value>,
    metadata_only: bool,
) -> Option<Line> {
    let line = |event: EventType| match convert {
        // A converted version has its own JSON; the shared form is the stored version's.
        Some(convert) => {
            let object = match event {
                EventType::Added | EventType::Modified => cached.now()?,
                EventType::Deleted => cached.before()?,
            };
            Some(Line::Value(json!({"type": event.as_str(), "object": shown(kind, Some(convert), object.clone())})))
        }
        None => cached.line(event, metadata_only).map(Line::Text),
    };
    // Without a selector every object matches, and nothing need be parsed.
    let everything = selector.is_empty();
    match &cached.event {
        WatchEvent::Put { kv, prev } => {
            let now = everything || cached.now().is_some_and(|o| selector.matches(o));
            let before = match prev {
                Some(_) => everything || cached.before().is_some_and(|o| selector.matches(o)),
                // History compacted away: only the version tells a create from an update.
                None => kv.version > 1 && now,
            };
            match (before, now) {
                (false, true) => line(EventType::Added),
                (true, true) => line(EventType::Modified),
                (true, false) => line(EventType::Deleted),
                (false, false) => None,
            }
        }
        WatchEvent::Delete { prev: Some(_), .. } => {
            if everything || selector.matches(cached.before()?) {
                line(EventType::Deleted)
            } else {
                None
            }
        }
        // The deleted value was compacted away: name the object from its key, so clients
        // still drop it.
        WatchEvent::Delete { key, revision, prev: None } => {
            let mut parts = key.strip_prefix(prefix).unwrap_or_default().splitn(2, '/');
            let (first, second) = (parts.next().unwrap_or_default(), parts.next());
            let (namespace, name) = match second {
                Some(name) => (Some(first), name),
                None => (None, first),
            };
            let mut metadata = json!({"name": name, "resourceVersion": revision.to_string()});
            if let Some(ns) = namespace.filter(|_| kind.namespaced) {
                metadata["namespace"] = json!(ns);
            }
            Some(Line::Value(
                json!({"type": "DELETED", "object": {"kind": kind.kind, "apiVersion": kind.api_version, "metadata": metadata}}),
            ))
        }
        WatchEvent::Progress { revision } => bookmarks.then(|| {
            Line::Value(json!({"type": "BOOKMARK", "object": {
                "kind": kind.kind, "apiVersion": kind.api_version, "metadata": {"resourceVersion": revision.to_string()}
            }}))
        }),
    }
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
    fn field_selectors_match_the_fields_each_kind_offers() {
        let configmaps = kinds::core("configmaps");
        let selector = FieldSelector::parse(configmaps, Some("metadata.name=a,metadata.namespace==ns")).unwrap();
        assert!(selector.matches(&json!({"metadata": {"name": "a", "namespace": "ns"}})));
        assert!(!selector.matches(&json!({"metadata": {"name": "b", "namespace": "ns"}})));
        assert!(FieldSelector::parse(configmaps, Some("spec.nodeName=x")).is_err());

        let pods = kinds::core("pods");
        let unscheduled = FieldSelector::parse(pods, Some("spec.nodeName=,status.phase!=Succeeded")).unwrap();
        assert!(unscheduled.matches(&json!({"spec": {}, "status": {"phase": "Pending"}})));
        assert!(!unscheduled.matches(&json!({"spec": {"nodeName": "n1"}, "status": {"phase": "Pending"}})));
        let on_node = FieldSelector::parse(pods, Some("spec.nodeName=n1")).unwrap();
        assert!(on_node.matches(&json!({"spec": {"nodeName": "n1"}})));
        let nodes = FieldSelector::parse(kinds::core("nodes"), Some("spec.unschedulable=false")).unwrap();
        assert!(nodes.matches(&json!({"spec": {"unschedulable": false}})));
        let events = FieldSelector::parse(kinds::core("events"), Some("involvedObject.name=web,type=Warning")).unwrap();
        assert!(events.matches(&json!({"involvedObject": {"name": "web"}, "type": "Warning"})));
    }
}
