//! Events, as upstream's event recorder writes them (core/v1 `Event`): for `kubectl describe`
//! and `kubectl events`. Recording never blocks a control loop: events go through a bounded
//! queue to one writer, and are dropped when it is full, as upstream's broadcaster drops them.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::{Api, PostParams};
use kube::{Client, Resource, ResourceExt};
use tokio::sync::mpsc;

/// How many events may wait to be written before new ones are dropped.
const BACKLOG: usize = 4096;
/// Events written at once.
const WRITERS: usize = 32;

#[derive(Clone)]
pub struct Recorder {
    component: &'static str,
    queue: mpsc::Sender<Event>,
}

/// `Normal` or `Warning`.
#[derive(Clone, Copy)]
pub enum Type {
    Normal,
    Warning,
}

impl Recorder {
    /// A recorder for `component` (`default-scheduler`, `replicaset-controller`, ...), with its
    /// writer task; the task ends when every clone of the recorder is dropped.
    pub fn start(client: Client, component: &'static str) -> Recorder {
        let (queue, mut rx) = mpsc::channel::<Event>(BACKLOG);
        tokio::spawn(async move {
            let writes = async_stream(&mut rx);
            use futures::StreamExt;
            writes
                .for_each_concurrent(WRITERS, |event| {
                    let client = client.clone();
                    async move {
                        let namespace = event.metadata.namespace.clone().unwrap_or_else(|| "default".into());
                        let api: Api<Event> = Api::namespaced(client, &namespace);
                        if let Err(e) = api.create(&PostParams::default(), &event).await {
                            tracing::debug!("event not recorded: {e}");
                        }
                    }
                })
                .await;
        });
        Recorder { component, queue }
    }

    /// Records an event about `object`; `action` is what was being done (`Scheduling`).
    pub fn record<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        kind: Type,
        reason: &str,
        action: &str,
        message: String,
    ) {
        let now = k8s_openapi::jiff::Timestamp::now();
        let object_ref = object.object_ref(&());
        // Events about cluster-scoped objects live in `default`, as upstream records them.
        let namespace = object.namespace().unwrap_or_else(|| "default".into());
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!("{}.{:x}", object.name_any(), now.as_nanosecond())),
                namespace: Some(namespace),
                ..Default::default()
            },
            involved_object: ObjectReference { field_path: None, ..object_ref },
            reason: Some(reason.to_owned()),
            message: Some(message),
            type_: Some(match kind {
                Type::Normal => "Normal".into(),
                Type::Warning => "Warning".into(),
            }),
            action: Some(action.to_owned()),
            source: Some(EventSource { component: Some(self.component.to_owned()), host: None }),
            reporting_component: Some(self.component.to_owned()),
            reporting_instance: Some(self.component.to_owned()),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            event_time: Some(MicroTime(now)),
            count: Some(1),
            ..Default::default()
        };
        if self.queue.try_send(event).is_err() {
            tracing::debug!("event dropped: the recorder is behind");
        }
    }
}

fn async_stream(rx: &mut mpsc::Receiver<Event>) -> impl futures::Stream<Item = Event> + '_ {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
