//! What a pod needs next and what its status is, as pure functions of the pod and what the
//! runtime reports: upstream's `computePodActions` and `generateAPIPodStatus`, with no IO, so
//! every rule is tested on fixtures. `pods.rs` carries the steps out through CRI.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Container as SpecContainer, ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// The runtime's view of one pod sandbox.
#[derive(Clone, Debug, PartialEq)]
pub struct Sandbox {
    pub id: String,
    pub attempt: u32,
    pub ready: bool,
    pub ip: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Created,
    Running,
    Exited,
    Unknown,
}

/// The runtime's view of one container; times are nanoseconds since the epoch (0: not yet).
#[derive(Clone, Debug, PartialEq)]
pub struct Container {
    pub id: String,
    pub name: String,
    pub attempt: u32,
    pub sandbox_id: String,
    pub state: State,
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
    pub image_ref: String,
}

/// Everything the runtime holds for one pod.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    pub sandboxes: Vec<Sandbox>,
    pub containers: Vec<Container>,
}

impl Observed {
    /// The newest sandbox.
    pub fn sandbox(&self) -> Option<&Sandbox> {
        self.sandboxes.iter().max_by_key(|s| s.attempt)
    }

    /// The newest container named `name`, in any sandbox.
    pub fn latest(&self, name: &str) -> Option<&Container> {
        self.containers.iter().filter(|c| c.name == name).max_by_key(|c| c.attempt)
    }

    /// The container before the newest one, for `lastState`.
    fn previous(&self, name: &str) -> Option<&Container> {
        let latest = self.latest(name)?;
        self.containers.iter().filter(|c| c.name == name && c.attempt < latest.attempt).max_by_key(|c| c.attempt)
    }

    /// The newest container named `name` in the sandbox `sandbox`.
    fn in_sandbox(&self, name: &str, sandbox: &str) -> Option<&Container> {
        self.containers.iter().filter(|c| c.name == name && c.sandbox_id == sandbox).max_by_key(|c| c.attempt)
    }

    /// The attempt number the next container named `name` gets: its restart count.
    pub fn next_attempt(&self, name: &str) -> u32 {
        self.latest(name).map_or(0, |c| c.attempt + 1)
    }
}

/// One thing to do for a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Stops a running container (its sandbox is being replaced, or the pod has ended).
    StopContainer { id: String },
    /// Stops the pod's sandbox: the pod has ended, or the sandbox is being replaced.
    StopSandbox { id: String },
    /// Makes a new sandbox.
    CreateSandbox { attempt: u32 },
    /// Creates and starts a container in the current sandbox.
    Start { name: String, init: bool },
}

/// Restart delays: upstream's 10 s, doubling to 5 minutes; reset after 10 minutes of running.
pub const BACKOFF_START: Duration = Duration::from_secs(10);
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
pub const BACKOFF_RESET: Duration = Duration::from_secs(600);

/// The restart delay for a container whose `restarts` earlier runs each crashed.
pub fn backoff(restarts: u32) -> Duration {
    if restarts == 0 {
        return Duration::ZERO;
    }
    BACKOFF_START.saturating_mul(1 << (restarts - 1).min(8)).min(BACKOFF_MAX)
}

fn restart_policy(pod: &Pod) -> &str {
    pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()).unwrap_or("Always")
}

fn spec_containers(pod: &Pod) -> &[SpecContainer] {
    pod.spec.as_ref().map_or(&[], |s| &s.containers)
}

fn init_containers(pod: &Pod) -> &[SpecContainer] {
    pod.spec.as_ref().and_then(|s| s.init_containers.as_deref()).unwrap_or(&[])
}

/// Whether an exited container runs again under the pod's restart policy.
fn restarts(policy: &str, c: &Container) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => c.exit_code != 0,
        _ => true,
    }
}

/// An init container restarts on failure unless the pod's policy is Never.
fn init_restarts(policy: &str, c: &Container) -> bool {
    policy != "Never" && c.exit_code != 0
}

pub fn is_terminal(pod: &Pod) -> bool {
    matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

/// What to do next. `due(name)` says whether a crashed container's restart delay has passed.
pub fn plan(pod: &Pod, observed: &Observed, due: impl Fn(&str) -> bool) -> Vec<Step> {
    let policy = restart_policy(pod);
    let running = |sandbox: Option<&str>| -> Vec<Step> {
        observed
            .containers
            .iter()
            .filter(|c| matches!(c.state, State::Running | State::Created) && sandbox.is_none_or(|s| c.sandbox_id != s))
            .map(|c| Step::StopContainer { id: c.id.clone() })
            .collect()
    };
    let stop_all = |observed: &Observed| -> Vec<Step> {
        let mut steps = running(None);
        steps.extend(observed.sandboxes.iter().filter(|s| s.ready).map(|s| Step::StopSandbox { id: s.id.clone() }));
        steps
    };
    if is_terminal(pod) || pod_phase(pod, observed).is_some_and(|p| p == "Succeeded" || p == "Failed") {
        return stop_all(observed);
    }
    let sandbox = match observed.sandbox() {
        Some(s) if s.ready => s,
        latest => {
            // A pod that never restarts and whose containers already ran is done: its sandbox
            // is not made again.
            let ran = spec_containers(pod).iter().any(|c| observed.latest(&c.name).is_some());
            if latest.is_some() && policy == "Never" && ran {
                return stop_all(observed);
            }
            let mut steps = stop_all(observed);
            steps.push(Step::CreateSandbox { attempt: latest.map_or(0, |s| s.attempt + 1) });
            return steps;
        }
    };
    // Containers left running in older sandboxes are stopped.
    let mut steps = running(Some(&sandbox.id));
    for spec in init_containers(pod) {
        match observed.in_sandbox(&spec.name, &sandbox.id) {
            None => {
                steps.push(Step::Start { name: spec.name.clone(), init: true });
                return steps;
            }
            Some(c) if c.state == State::Exited && c.exit_code == 0 => continue,
            Some(c) if c.state == State::Exited => {
                if init_restarts(policy, c) && due(&spec.name) {
                    steps.push(Step::Start { name: spec.name.clone(), init: true });
                }
                return steps;
            }
            Some(_) => return steps,
        }
    }
    for spec in spec_containers(pod) {
        match observed.in_sandbox(&spec.name, &sandbox.id) {
            None => steps.push(Step::Start { name: spec.name.clone(), init: false }),
            Some(c) if c.state == State::Exited && restarts(policy, c) && due(&spec.name) => {
                steps.push(Step::Start { name: spec.name.clone(), init: false })
            }
            Some(_) => {}
        }
    }
    steps
}

/// The phase the containers put the pod in, per upstream's `getPhase`; None while there is
/// nothing to judge by.
pub fn pod_phase(pod: &Pod, observed: &Observed) -> Option<&'static str> {
    let policy = restart_policy(pod);
    for spec in init_containers(pod) {
        match observed.latest(&spec.name) {
            Some(c) if c.state == State::Exited && c.exit_code == 0 => {}
            Some(c) if c.state == State::Exited && !init_restarts(policy, c) => return Some("Failed"),
            _ => return Some("Pending"),
        }
    }
    let specs = spec_containers(pod);
    let (mut waiting, mut running, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for spec in specs {
        match observed.latest(&spec.name).map(|c| (c.state, c.exit_code)) {
            None | Some((State::Created | State::Unknown, _)) => waiting += 1,
            Some((State::Running, _)) => running += 1,
            Some((State::Exited, code)) => {
                stopped += 1;
                if code == 0 {
                    succeeded += 1;
                }
            }
        }
    }
    Some(if waiting > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if stopped == specs.len() && stopped > 0 {
        match policy {
            "Always" => "Running",
            _ if succeeded == stopped => "Succeeded",
            "OnFailure" => "Running",
            _ => "Failed",
        }
    } else {
        "Pending"
    })
}

/// Why a container is waiting, as the worker saw it (`ErrImagePull` and its message).
pub type Waiting = BTreeMap<String, (String, String)>;

/// What the status is built from beyond the pod and the runtime.
pub struct Facts<'a> {
    pub node_ip: &'a str,
    pub waiting: &'a Waiting,
    /// Containers in their restart delay, with the delay.
    pub backing_off: &'a BTreeMap<String, Duration>,
    /// Probe results of running containers that have probes.
    pub probes: &'a BTreeMap<String, crate::probe::Found>,
    pub now: Timestamp,
}

fn time(nanos: i64) -> Option<Time> {
    (nanos > 0).then(|| Time(Timestamp::from_nanosecond(i128::from(nanos)).unwrap_or(Timestamp::UNIX_EPOCH)))
}

fn terminated(c: &Container) -> ContainerStateTerminated {
    let reason = if !c.reason.is_empty() {
        c.reason.clone()
    } else if c.exit_code == 0 {
        "Completed".into()
    } else {
        "Error".into()
    };
    ContainerStateTerminated {
        exit_code: c.exit_code,
        reason: Some(reason),
        message: (!c.message.is_empty()).then(|| c.message.clone()),
        started_at: time(c.started_at),
        finished_at: time(c.finished_at),
        container_id: Some(format!("containerd://{}", c.id)),
        signal: None,
    }
}

fn waiting(reason: &str, message: Option<String>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting { reason: Some(reason.into()), message }),
        ..Default::default()
    }
}

fn container_status(
    pod: &Pod,
    spec: &SpecContainer,
    observed: &Observed,
    facts: &Facts,
    initializing: bool,
) -> ContainerStatus {
    let latest = observed.latest(&spec.name);
    let last_state = observed.previous(&spec.name).filter(|c| c.state == State::Exited);
    let mut last_state = last_state.map(|c| ContainerState { terminated: Some(terminated(c)), ..Default::default() });
    let state = match latest {
        None => match facts.waiting.get(&spec.name) {
            Some((reason, message)) => waiting(reason, Some(message.clone())),
            None if initializing => waiting("PodInitializing", None),
            None => waiting("ContainerCreating", None),
        },
        Some(c) => match c.state {
            State::Running => ContainerState {
                running: Some(ContainerStateRunning { started_at: time(c.started_at) }),
                ..Default::default()
            },
            State::Exited => match facts.backing_off.get(&spec.name) {
                Some(delay) => {
                    last_state = Some(ContainerState { terminated: Some(terminated(c)), ..Default::default() });
                    let meta = &pod.metadata;
                    waiting(
                        "CrashLoopBackOff",
                        Some(format!(
                            "back-off {}s restarting failed container={} pod={}_{}({})",
                            delay.as_secs(),
                            spec.name,
                            meta.name.as_deref().unwrap_or_default(),
                            meta.namespace.as_deref().unwrap_or_default(),
                            meta.uid.as_deref().unwrap_or_default()
                        )),
                    )
                }
                None => ContainerState { terminated: Some(terminated(c)), ..Default::default() },
            },
            State::Created | State::Unknown => match facts.waiting.get(&spec.name) {
                Some((reason, message)) => waiting(reason, Some(message.clone())),
                None => waiting("ContainerCreating", None),
            },
        },
    };
    let running = latest.is_some_and(|c| c.state == State::Running);
    let found = facts.probes.get(&spec.name).copied().unwrap_or(crate::probe::Found { ready: true, started: true });
    ContainerStatus {
        name: spec.name.clone(),
        image: spec.image.clone().unwrap_or_default(),
        image_id: latest.map(|c| c.image_ref.clone()).unwrap_or_default(),
        container_id: latest.map(|c| format!("containerd://{}", c.id)),
        ready: running && found.ready && found.started,
        started: Some(running && found.started),
        restart_count: latest.map_or(0, |c| c.attempt as i32),
        state: Some(state),
        last_state: Some(last_state.unwrap_or_default()),
        ..Default::default()
    }
}

/// The pod's status as the agent reports it; fields it does not own are kept.
pub fn pod_status(pod: &Pod, observed: &Observed, facts: &Facts) -> PodStatus {
    let old = pod.status.clone().unwrap_or_default();
    let terminal = is_terminal(pod);
    let phase = if terminal {
        old.phase.clone().unwrap_or_default()
    } else {
        pod_phase(pod, observed).unwrap_or("Pending").to_owned()
    };
    let inits = init_containers(pod);
    let incomplete: Vec<&str> = inits
        .iter()
        .filter(|s| !observed.latest(&s.name).is_some_and(|c| c.state == State::Exited && c.exit_code == 0))
        .map(|s| s.name.as_str())
        .collect();
    let initializing = !incomplete.is_empty();
    let statuses: Vec<ContainerStatus> =
        spec_containers(pod).iter().map(|s| container_status(pod, s, observed, facts, initializing)).collect();
    let init_statuses: Vec<ContainerStatus> =
        inits.iter().map(|s| container_status(pod, s, observed, facts, false)).collect();
    let unready: Vec<&str> = statuses.iter().filter(|s| !s.ready).map(|s| s.name.as_str()).collect();
    let sandbox = observed.sandbox();
    let sandbox_ready = sandbox.is_some_and(|s| s.ready);

    let mut conditions: Vec<PodCondition> = Vec::new();
    let mut set = |type_: &str, ok: bool, reason: Option<&str>, message: Option<String>| {
        let status = if ok { "True" } else { "False" };
        let since = old
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == type_ && c.status == status)
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or(Time(facts.now));
        conditions.push(PodCondition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.map(Into::into),
            message,
            last_transition_time: Some(since),
            ..Default::default()
        });
    };
    let completed = phase == "Succeeded" || phase == "Failed";
    set("PodReadyToStartContainers", sandbox_ready && !completed, None, None);
    if initializing {
        let message = format!("containers with incomplete status: [{}]", incomplete.join(" "));
        set("Initialized", false, Some("ContainersNotInitialized"), Some(message));
    } else {
        set("Initialized", true, None, None);
    }
    let ready = unready.is_empty() && !completed;
    let (reason, message) = if completed {
        (Some("PodCompleted"), None)
    } else if ready {
        (None, None)
    } else {
        (Some("ContainersNotReady"), Some(format!("containers with unready status: [{}]", unready.join(" "))))
    };
    set("ContainersReady", ready, reason, message.clone());
    set("Ready", ready, reason, message);
    // Conditions others own (PodScheduled, DisruptionTarget) are kept as they are.
    let ours = ["PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready"];
    let mut kept: Vec<PodCondition> =
        old.conditions.iter().flatten().filter(|c| !ours.contains(&c.type_.as_str())).cloned().collect();
    kept.extend(conditions);

    let host_network = pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false);
    let pod_ip = if host_network {
        Some(facts.node_ip.to_owned())
    } else {
        sandbox.and_then(|s| s.ip.clone()).or(old.pod_ip.clone())
    };
    PodStatus {
        phase: Some(phase),
        conditions: Some(kept),
        host_ip: Some(facts.node_ip.to_owned()),
        host_ips: Some(vec![k8s_openapi::api::core::v1::HostIP { ip: facts.node_ip.to_owned() }]),
        pod_ips: pod_ip.clone().map(|ip| vec![PodIP { ip }]),
        pod_ip,
        start_time: old.start_time.clone().or(Some(Time(facts.now))),
        container_statuses: Some(statuses),
        init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
        ..old
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
            "spec": spec,
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}]},
        }))
        .unwrap()
    }

    fn two() -> Pod {
        pod(json!({"containers": [{"name": "a", "image": "busybox:1.35"}, {"name": "b", "image": "busybox:1.35"}]}))
    }

    fn sandbox(attempt: u32, ready: bool) -> Sandbox {
        Sandbox { id: format!("s{attempt}"), attempt, ready, ip: Some(format!("10.42.0.{}", attempt + 2)) }
    }

    fn container(name: &str, attempt: u32, sandbox: &str, state: State, exit_code: i32) -> Container {
        Container {
            id: format!("{name}{attempt}"),
            name: name.into(),
            attempt,
            sandbox_id: sandbox.into(),
            state,
            started_at: 1_000_000_000,
            finished_at: if state == State::Exited { 2_000_000_000 } else { 0 },
            exit_code,
            reason: String::new(),
            message: String::new(),
            image_ref: "sha256:abc".into(),
        }
    }

    static NO_PROBES: BTreeMap<String, crate::probe::Found> = BTreeMap::new();

    fn facts<'a>(waiting: &'a Waiting, backing_off: &'a BTreeMap<String, Duration>) -> Facts<'a> {
        Facts { node_ip: "192.0.2.1", waiting, backing_off, probes: &NO_PROBES, now: Timestamp::UNIX_EPOCH }
    }

    #[test]
    fn a_new_pod_gets_a_sandbox_then_its_containers() {
        let p = two();
        assert_eq!(plan(&p, &Observed::default(), |_| true), vec![Step::CreateSandbox { attempt: 0 }]);
        let o = Observed { sandboxes: vec![sandbox(0, true)], containers: vec![] };
        assert_eq!(
            plan(&p, &o, |_| true),
            vec![Step::Start { name: "a".into(), init: false }, Step::Start { name: "b".into(), init: false }]
        );
    }

    #[test]
    fn init_containers_run_one_at_a_time_in_order() {
        let p = pod(json!({
            "initContainers": [{"name": "i1"}, {"name": "i2"}],
            "containers": [{"name": "a"}],
        }));
        let mut o = Observed { sandboxes: vec![sandbox(0, true)], containers: vec![] };
        assert_eq!(plan(&p, &o, |_| true), vec![Step::Start { name: "i1".into(), init: true }]);
        o.containers.push(container("i1", 0, "s0", State::Running, 0));
        assert_eq!(plan(&p, &o, |_| true), vec![]);
        o.containers[0].state = State::Exited;
        assert_eq!(plan(&p, &o, |_| true), vec![Step::Start { name: "i2".into(), init: true }]);
        o.containers.push(container("i2", 0, "s0", State::Exited, 0));
        assert_eq!(plan(&p, &o, |_| true), vec![Step::Start { name: "a".into(), init: false }]);
        let status = pod_status(&p, &o, &facts(&Waiting::new(), &BTreeMap::new()));
        let init = status.conditions.unwrap().into_iter().find(|c| c.type_ == "Initialized").unwrap();
        assert_eq!(init.status, "True");
    }

    #[test]
    fn a_failed_init_container_fails_a_never_pod_and_is_retried_otherwise() {
        let failing = |policy: &str| {
            let p =
                pod(json!({"restartPolicy": policy, "initContainers": [{"name": "i"}], "containers": [{"name": "a"}]}));
            let o = Observed {
                sandboxes: vec![sandbox(0, true)],
                containers: vec![container("i", 0, "s0", State::Exited, 1)],
            };
            (pod_phase(&p, &o), plan(&p, &o, |_| true))
        };
        assert_eq!(failing("Never").0, Some("Failed"));
        assert_eq!(failing("Never").1, vec![Step::StopSandbox { id: "s0".into() }]);
        assert_eq!(failing("Always").0, Some("Pending"));
        assert_eq!(failing("Always").1, vec![Step::Start { name: "i".into(), init: true }]);
    }

    #[test]
    fn restart_policy_decides_what_runs_again() {
        let cases = [
            ("Always", 0, true, "Running"),
            ("Always", 1, true, "Running"),
            ("OnFailure", 0, false, "Succeeded"),
            ("OnFailure", 1, true, "Running"),
            ("Never", 0, false, "Succeeded"),
            ("Never", 1, false, "Failed"),
        ];
        for (policy, code, again, phase) in cases {
            let p = pod(json!({"restartPolicy": policy, "containers": [{"name": "a"}]}));
            let o = Observed {
                sandboxes: vec![sandbox(0, true)],
                containers: vec![container("a", 0, "s0", State::Exited, code)],
            };
            let steps = plan(&p, &o, |_| true);
            assert_eq!(steps.contains(&Step::Start { name: "a".into(), init: false }), again, "{policy} exit {code}");
            assert_eq!(pod_phase(&p, &o), Some(phase), "{policy} exit {code}");
            if !again {
                assert_eq!(steps, vec![Step::StopSandbox { id: "s0".into() }], "a finished pod releases its sandbox");
            }
        }
    }

    #[test]
    fn a_crashing_container_waits_out_its_backoff_as_crash_loop_back_off() {
        let p = pod(json!({"containers": [{"name": "a"}]}));
        let o = Observed {
            sandboxes: vec![sandbox(0, true)],
            containers: vec![container("a", 0, "s0", State::Exited, 1), container("a", 1, "s0", State::Exited, 2)],
        };
        assert_eq!(plan(&p, &o, |_| false), vec![]);
        let backing_off = BTreeMap::from([("a".to_owned(), Duration::from_secs(20))]);
        let status = pod_status(&p, &o, &facts(&Waiting::new(), &backing_off));
        let a = &status.container_statuses.unwrap()[0];
        assert_eq!(a.restart_count, 1);
        let waiting = a.state.as_ref().unwrap().waiting.as_ref().unwrap();
        assert_eq!(waiting.reason.as_deref(), Some("CrashLoopBackOff"));
        assert_eq!(waiting.message.as_deref(), Some("back-off 20s restarting failed container=a pod=p_ns(u1)"));
        let last = a.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!((last.exit_code, last.reason.as_deref()), (2, Some("Error")));
        assert_eq!(status.phase.as_deref(), Some("Running"));
    }

    #[test]
    fn backoff_doubles_to_five_minutes() {
        let delays: Vec<u64> = (0..8).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(delays, vec![0, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }

    #[test]
    fn a_dead_sandbox_is_replaced_and_its_containers_stopped() {
        let p = two();
        let o = Observed {
            sandboxes: vec![sandbox(0, false)],
            containers: vec![container("a", 0, "s0", State::Running, 0)],
        };
        assert_eq!(
            plan(&p, &o, |_| true),
            vec![Step::StopContainer { id: "a0".into() }, Step::CreateSandbox { attempt: 1 }]
        );
        let o = Observed {
            sandboxes: vec![sandbox(0, false), sandbox(1, true)],
            containers: vec![container("a", 0, "s0", State::Exited, 137)],
        };
        assert_eq!(
            plan(&p, &o, |_| true),
            vec![Step::Start { name: "a".into(), init: false }, Step::Start { name: "b".into(), init: false }]
        );
        assert_eq!(o.next_attempt("a"), 1);
        assert_eq!(o.next_attempt("b"), 0);
    }

    #[test]
    fn a_terminal_pod_only_stops_things() {
        let mut p = two();
        p.status.as_mut().unwrap().phase = Some("Succeeded".into());
        let o = Observed {
            sandboxes: vec![sandbox(0, true)],
            containers: vec![container("a", 0, "s0", State::Running, 0)],
        };
        assert_eq!(
            plan(&p, &o, |_| true),
            vec![Step::StopContainer { id: "a0".into() }, Step::StopSandbox { id: "s0".into() }]
        );
        assert_eq!(pod_status(&p, &o, &facts(&Waiting::new(), &BTreeMap::new())).phase.as_deref(), Some("Succeeded"));
    }

    #[test]
    fn status_reports_ip_conditions_and_waiting_reasons() {
        let p = two();
        let o = Observed {
            sandboxes: vec![sandbox(0, true)],
            containers: vec![container("a", 0, "s0", State::Running, 0)],
        };
        let waiting = Waiting::from([("b".to_owned(), ("ErrImagePull".to_owned(), "no such image".to_owned()))]);
        let status = pod_status(&p, &o, &facts(&waiting, &BTreeMap::new()));
        assert_eq!(status.phase.as_deref(), Some("Pending"));
        assert_eq!(status.pod_ip.as_deref(), Some("10.42.0.2"));
        assert_eq!(status.host_ip.as_deref(), Some("192.0.2.1"));
        let cs = status.container_statuses.unwrap();
        assert!(cs[0].ready);
        assert_eq!(cs[0].container_id.as_deref(), Some("containerd://a0"));
        assert_eq!(cs[1].state.as_ref().unwrap().waiting.as_ref().unwrap().reason.as_deref(), Some("ErrImagePull"));
        let conditions = status.conditions.unwrap();
        let kinds: Vec<(&str, &str)> = conditions.iter().map(|c| (c.type_.as_str(), c.status.as_str())).collect();
        assert_eq!(
            kinds,
            vec![
                ("PodScheduled", "True"),
                ("PodReadyToStartContainers", "True"),
                ("Initialized", "True"),
                ("ContainersReady", "False"),
                ("Ready", "False"),
            ]
        );
        assert_eq!(conditions[4].message.as_deref(), Some("containers with unready status: [b]"));
    }
}
