//! The etcd backend: the same contract over a real etcd v3 cluster, the way the Kubernetes API
//! server uses it. Conditional writes are transactions comparing `create_revision` or
//! `mod_revision`, whose else-branch reads the key so a conflict returns the current value.

use async_trait::async_trait;
use bytes::Bytes;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    TxnOpResponse, WatchOptions as EtcdWatchOptions,
};
use tokio::sync::mpsc;

use crate::watch::{IdleTimer, WATCH_BUFFER};
use crate::{
    Deleted, KeyValue, ListOptions, ListPage, MAX_VALUE_BYTES, Result, StoreBackend, StoreError, Watch, WatchEvent,
    WatchOptions, Write, Written, prefix_end,
};

pub(crate) struct EtcdStore {
    client: Client,
}

/// A request carries at most one full-size value plus framing.
const MAX_REQUEST_BYTES: usize = 2 * MAX_VALUE_BYTES + (64 << 10);
/// A response may hold a whole unpaginated list; the Kubernetes API server allows MaxInt32 too.
const MAX_RESPONSE_BYTES: usize = i32::MAX as usize;

impl EtcdStore {
    pub(crate) async fn connect(endpoints: &[String]) -> Result<EtcdStore> {
        if endpoints.is_empty() {
            return Err(StoreError::Etcd("no etcd endpoints given".into()));
        }
        let options = ConnectOptions::new()
            .with_connect_timeout(std::time::Duration::from_secs(5))
            .with_keep_alive(std::time::Duration::from_secs(30), std::time::Duration::from_secs(10));
        let client = Client::connect(endpoints, Some(options))
            .await
            .map_err(|e| StoreError::Etcd(format!("cannot connect to {}: {e}", endpoints.join(","))))?;
        Ok(EtcdStore { client })
    }

    fn kv(&self) -> etcd_client::KvClient {
        self.client
            .kv_client()
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
            .max_encoding_message_size(MAX_REQUEST_BYTES)
    }

    fn watch_client(&self) -> etcd_client::WatchClient {
        self.client.watch_client().max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    async fn txn(&self, txn: Txn, key: &str, size: usize) -> Result<etcd_client::TxnResponse> {
        with_retries(Retry::Unsent, || {
            let (mut kv, txn) = (self.kv(), txn.clone());
            async move { kv.txn(txn).await }
        })
        .await
        .map_err(|e| match map_error(e) {
            StoreError::Etcd(text) if text.contains("request is too large") => {
                StoreError::ValueTooLarge { key: key.to_owned(), size, limit: MAX_VALUE_BYTES }
            }
            other => other,
        })
    }

    /// Fills in the revisions etcd's error text leaves out.
    async fn with_revisions(&self, e: StoreError, requested: Option<i64>) -> StoreError {
        let requested = requested.unwrap_or_default();
        match e {
            StoreError::Compacted { .. } => {
                let compacted = self.compacted_revision().await.unwrap_or(-1);
                StoreError::Compacted { requested, compacted }
            }
            StoreError::FutureRevision { .. } => {
                let current = self.current_revision().await.unwrap_or(-1);
                StoreError::FutureRevision { requested, current }
            }
            other => other,
        }
    }
}

/// Which failed requests may be sent again to another member.
#[derive(Clone, Copy, PartialEq)]
enum Retry {
    /// Reads, watches, compaction: any unavailable member.
    Idempotent,
    /// Writes: only when the request never left (the connection was refused). Sending a
    /// write that may have been applied could turn its success into a false conflict.
    Unsent,
}

const RETRIES: u32 = 6;

/// Sends a request, and again to the cluster's other members when one is down, as etcd's own
/// client does. Waits 50 ms, 100 ms, ... between tries (3 s in all).
async fn with_retries<T, F, Fut>(retry: Retry, mut request: F) -> std::result::Result<T, etcd_client::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
{
    let mut attempt = 0;
    loop {
        match request().await {
            Err(e) if attempt + 1 < RETRIES && retryable(&e, retry) => {
                tokio::time::sleep(std::time::Duration::from_millis(50 << attempt)).await;
                attempt += 1;
            }
            result => return result,
        }
    }
}

fn retryable(e: &etcd_client::Error, retry: Retry) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(status) if status.code() == tonic::Code::Unavailable => {
            retry == Retry::Idempotent || status.message().contains("tcp connect error")
        }
        etcd_client::Error::TransportError(_) => retry == Retry::Idempotent,
        _ => false,
    }
}

fn map_error(e: etcd_client::Error) -> StoreError {
    let text = e.to_string();
    if text.contains("required revision has been compacted") {
        // etcd does not say which revision it compacted to; the caller learns it on retry.
        StoreError::Compacted { requested: -1, compacted: -1 }
    } else if text.contains("future revision") {
        StoreError::FutureRevision { requested: -1, current: -1 }
    } else {
        StoreError::Etcd(text)
    }
}

fn convert(kv: &etcd_client::KeyValue) -> Result<KeyValue> {
    Ok(KeyValue {
        key: String::from_utf8(kv.key().to_vec())
            .map_err(|_| StoreError::Etcd("etcd returned a non-UTF-8 key".into()))?,
        value: Bytes::copy_from_slice(kv.value()),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
    })
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Result<i64> {
    header.map(|h| h.revision()).ok_or_else(|| StoreError::Etcd("response without a header".into()))
}

/// Why a conditional write's transaction failed, from its else-branch `get`: the key is gone,
/// or it holds another revision (returned, so the caller need not read it again).
fn rejected(responses: &[TxnOpResponse], key: String, expected: i64) -> StoreError {
    let current = match responses.first() {
        Some(TxnOpResponse::Get(get)) => get.kvs().first().map(convert).transpose(),
        _ => Err(StoreError::Etcd("transaction returned no read".into())),
    };
    match current {
        Err(e) => e,
        Ok(None) => StoreError::NotFound { key },
        Ok(Some(current)) => StoreError::Conflict { key, expected, current: Some(Box::new(current)) },
    }
}

#[async_trait]
impl StoreBackend for EtcdStore {
    async fn get(&self, key: &str, revision: Option<i64>) -> Result<Option<KeyValue>> {
        let options = GetOptions::new().with_revision(revision.unwrap_or(0));
        let response = match with_retries(Retry::Idempotent, || {
            let (mut kv, options) = (self.kv(), options.clone());
            async move { kv.get(key, Some(options)).await }
        })
        .await
        {
            Ok(r) => r,
            Err(e) => return Err(self.with_revisions(map_error(e), revision).await),
        };
        response.kvs().first().map(convert).transpose()
    }

    async fn list(&self, options: &ListOptions) -> Result<ListPage> {
        let prefix = options.prefix.as_bytes();
        let start = match &options.after {
            // The smallest key after `after`.
            Some(after) if after.as_bytes() >= prefix => [after.as_bytes(), &[0]].concat(),
            _ => prefix.to_vec(),
        };
        let mut get = GetOptions::new()
            .with_range(prefix_end(prefix).unwrap_or_else(|| vec![0]))
            .with_revision(options.revision.unwrap_or(0));
        if let Some(limit) = options.limit.filter(|&l| l > 0) {
            get = get.with_limit(limit as i64);
        }
        let response = match with_retries(Retry::Idempotent, || {
            let (mut kv, start, get) = (self.kv(), start.clone(), get.clone());
            async move { kv.get(start, Some(get)).await }
        })
        .await
        {
            Ok(r) => r,
            Err(e) => return Err(self.with_revisions(map_error(e), options.revision).await),
        };
        Ok(ListPage {
            items: response.kvs().iter().map(convert).collect::<Result<_>>()?,
            // The header carries etcd's current revision; the page was read at the requested one.
            revision: match options.revision {
                Some(r) if r > 0 => r,
                _ => header_revision(response.header())?,
            },
            more: response.more(),
        })
    }

    async fn write(&self, write: Write) -> Result<Written> {
        match write {
            Write::Create { key, value } => {
                let txn = Txn::new()
                    .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(key.as_str(), value.to_vec(), None)]);
                let response = self.txn(txn, &key, value.len()).await?;
                if !response.succeeded() {
                    return Err(StoreError::AlreadyExists { key });
                }
                let revision = header_revision(response.header())?;
                Ok(Written::Put(KeyValue { key, value, create_revision: revision, mod_revision: revision, version: 1 }))
            }
            Write::Update { key, value, expected_mod_revision } => {
                let txn = Txn::new()
                    .when([Compare::mod_revision(key.as_str(), CompareOp::Equal, expected_mod_revision)])
                    .and_then([TxnOp::put(key.as_str(), value.to_vec(), Some(PutOptions::new().with_prev_key()))])
                    .or_else([TxnOp::get(key.as_str(), None)]);
                let response = self.txn(txn, &key, value.len()).await?;
                let responses = response.op_responses();
                if !response.succeeded() {
                    return Err(rejected(&responses, key, expected_mod_revision));
                }
                let prev = match responses.first() {
                    Some(TxnOpResponse::Put(put)) => put.prev_key().map(convert).transpose()?,
                    _ => None,
                };
                // mod_revision 0 compares equal only for a missing key: a put then creates it.
                let Some(prev) = prev else {
                    return Err(StoreError::NotFound { key });
                };
                let revision = header_revision(response.header())?;
                Ok(Written::Put(KeyValue {
                    key,
                    value,
                    create_revision: prev.create_revision,
                    mod_revision: revision,
                    version: prev.version + 1,
                }))
            }
            Write::Delete { key, expected_mod_revision } => {
                let delete = TxnOp::delete(key.as_str(), Some(DeleteOptions::new().with_prev_key()));
                let txn = match expected_mod_revision {
                    Some(expected) => Txn::new()
                        .when([Compare::mod_revision(key.as_str(), CompareOp::Equal, expected)])
                        .and_then([delete])
                        .or_else([TxnOp::get(key.as_str(), None)]),
                    None => Txn::new().and_then([delete]),
                };
                let response = self.txn(txn, &key, 0).await?;
                let responses = response.op_responses();
                if !response.succeeded() {
                    return Err(rejected(&responses, key, expected_mod_revision.unwrap_or_default()));
                }
                let prev = match responses.first() {
                    Some(TxnOpResponse::Delete(d)) => d.prev_kvs().first().map(convert).transpose()?,
                    _ => None,
                };
                let Some(prev) = prev else {
                    return Err(StoreError::NotFound { key });
                };
                Ok(Written::Deleted(Deleted { prev, revision: header_revision(response.header())? }))
            }
        }
    }

    async fn watch(&self, options: WatchOptions) -> Result<Watch> {
        if options.start_revision > 0 {
            // etcd confirms a watch before cancelling it for a compacted start; a read at the
            // start revision reports that up front, as an error rather than a dead stream.
            let probe = GetOptions::new().with_count_only().with_revision(options.start_revision);
            let read = with_retries(Retry::Idempotent, || {
                let (mut kv, probe, prefix) = (self.kv(), probe.clone(), options.prefix.clone());
                async move { kv.get(prefix, Some(probe)).await }
            });
            if let Err(e) = read.await {
                match self.with_revisions(map_error(e), Some(options.start_revision)).await {
                    StoreError::FutureRevision { .. } => {}
                    other => return Err(other),
                }
            }
        }
        let prefix = options.prefix.as_bytes().to_vec();
        let source = WatchSource { client: self.watch_client(), prefix };
        let (stream, created_at) = source.open(options.start_revision).await?;
        let next = if options.start_revision > 0 { options.start_revision } else { created_at + 1 };
        let (events, rx) = mpsc::channel(WATCH_BUFFER);
        let (progress, progress_rx) = mpsc::unbounded_channel();
        let idle = IdleTimer::new(options.progress_interval);
        let task = tokio::spawn(forward(source, stream, next, events, progress_rx, idle));
        Ok(Watch::new(rx, progress, task))
    }

    async fn current_revision(&self) -> Result<i64> {
        let response = with_retries(Retry::Idempotent, || {
            let mut kv = self.kv();
            async move { kv.get("/", Some(GetOptions::new().with_count_only())).await }
        })
        .await
        .map_err(map_error)?;
        header_revision(response.header())
    }

    async fn compact(&self, revision: i64) -> Result<()> {
        match with_retries(Retry::Idempotent, || {
            let mut kv = self.kv();
            async move { kv.compact(revision, None).await }
        })
        .await
        {
            Ok(_) => Ok(()),
            Err(e) => Err(self.with_revisions(map_error(e), Some(revision)).await),
        }
    }

    async fn compacted_revision(&self) -> Result<i64> {
        // etcd reports its compacted revision only asynchronously, to a watch. Reads below it
        // fail, so the oldest readable revision is found by bisection: ~20 count-only reads,
        // and this is asked only on error paths.
        let readable = |revision: i64| async move {
            let options = GetOptions::new().with_count_only().with_revision(revision);
            match with_retries(Retry::Idempotent, || {
                let (mut kv, options) = (self.kv(), options.clone());
                async move { kv.get("/", Some(options)).await }
            })
            .await
            {
                Ok(_) => Ok(true),
                Err(e) => match map_error(e) {
                    StoreError::Compacted { .. } => Ok(false),
                    other => Err(other),
                },
            }
        };
        if readable(1).await? {
            return Ok(0);
        }
        let (mut unreadable, mut read_ok) = (1, self.current_revision().await?);
        while read_ok - unreadable > 1 {
            let mid = unreadable + (read_ok - unreadable) / 2;
            if readable(mid).await? {
                read_ok = mid;
            } else {
                unreadable = mid;
            }
        }
        Ok(read_ok)
    }
}

fn cancel_error(response: &etcd_client::WatchResponse, requested: i64) -> StoreError {
    if response.compact_revision() > 0 {
        StoreError::Compacted { requested, compacted: response.compact_revision() }
    } else {
        StoreError::Etcd(format!("watch canceled: {}", response.cancel_reason()))
    }
}

/// Where a watch's events come from, so it can be opened again on another member.
struct WatchSource {
    client: etcd_client::WatchClient,
    prefix: Vec<u8>,
}

impl WatchSource {
    /// Opens the watch from `start_revision` (0: from now). Returns the stream and the
    /// revision etcd was at when it confirmed the watch.
    async fn open(&self, start_revision: i64) -> Result<(etcd_client::WatchStream, i64)> {
        let options = EtcdWatchOptions::new()
            .with_range(prefix_end(&self.prefix).unwrap_or_else(|| vec![0]))
            .with_prev_key()
            .with_start_revision(start_revision);
        let mut stream = with_retries(Retry::Idempotent, || {
            let (mut client, prefix, options) = (self.client.clone(), self.prefix.clone(), options.clone());
            async move { client.watch(prefix, Some(options)).await }
        })
        .await
        .map_err(map_error)?;
        // The first response confirms the watch, or cancels it because the start was compacted.
        match stream.message().await.map_err(map_error)? {
            Some(r) if r.canceled() || r.compact_revision() > 0 => Err(cancel_error(&r, start_revision)),
            Some(r) if r.created() => Ok((stream, header_revision(r.header())?)),
            _ => Err(StoreError::Etcd("watch was not created".into())),
        }
    }
}

/// Forwards events from `next` on. When the member serving the watch fails, the watch is
/// opened again from the next undelivered revision, as etcd's own client does, so a
/// consumer sees neither a gap nor an error.
async fn forward(
    source: WatchSource,
    mut stream: etcd_client::WatchStream,
    mut next: i64,
    events: mpsc::Sender<Result<WatchEvent>>,
    mut progress: mpsc::UnboundedReceiver<()>,
    mut idle: IdleTimer,
) {
    loop {
        let response = tokio::select! {
            response = stream.message() => response,
            Some(()) = progress.recv() => {
                let _ = stream.request_progress().await;
                continue;
            }
            () = idle.fired() => {
                let _ = stream.request_progress().await;
                idle.reset();
                continue;
            }
            () = events.closed() => return,
        };
        let response = match response {
            Ok(Some(r)) => r,
            Ok(None) | Err(_) => match reopen(&source, next, &events).await {
                Ok(reopened) => {
                    stream = reopened;
                    continue;
                }
                Err(e) => {
                    let _ = events.send(Err(e)).await;
                    return;
                }
            },
        };
        if response.canceled() || response.compact_revision() > 0 {
            let _ = events.send(Err(cancel_error(&response, next))).await;
            return;
        }
        if response.events().is_empty() {
            if let Ok(revision) = header_revision(response.header()) {
                next = next.max(revision + 1);
                if events.send(Ok(WatchEvent::Progress { revision })).await.is_err() {
                    return;
                }
            }
            continue;
        }
        idle.reset();
        for event in response.events() {
            let converted = convert_event(event);
            let failed = converted.is_err();
            if let Ok(e) = &converted {
                next = e.revision() + 1;
            }
            if events.send(converted).await.is_err() || failed {
                return;
            }
        }
    }
}

/// Opens the watch again from `next`. The client's channel may still route the first tries
/// to the member that just died, so it tries for a while (the other members answer within
/// moments) before the watch fails; a compacted revision fails at once.
async fn reopen(
    source: &WatchSource,
    next: i64,
    events: &mpsc::Sender<Result<WatchEvent>>,
) -> Result<etcd_client::WatchStream> {
    const ATTEMPTS: u32 = 50;
    let mut attempt = 0;
    loop {
        match source.open(next).await {
            Ok((reopened, _)) => return Ok(reopened),
            Err(e @ StoreError::Compacted { .. }) => return Err(e),
            Err(e) if attempt + 1 >= ATTEMPTS || events.is_closed() => return Err(e),
            Err(_) => {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    }
}

fn convert_event(event: &etcd_client::Event) -> Result<WatchEvent> {
    let kv = event.kv().ok_or_else(|| StoreError::Etcd("watch event without a key".into()))?;
    let prev = event.prev_kv().map(convert).transpose()?;
    let kv = convert(kv)?;
    Ok(match event.event_type() {
        EventType::Put => WatchEvent::Put { kv, prev },
        EventType::Delete => WatchEvent::Delete { key: kv.key, revision: kv.mod_revision, prev },
    })
}
