//! The service a process type of a release runs as on a swarm: every field
//! nap relies on is set here, explicitly, because the Engine API's zero
//! values differ from the docker CLI's defaults (an update config left out
//! means parallelism 0, all at once, stop-first, no monitor).

use std::time::Duration;

use bollard::models::{
    EndpointPortConfig, EndpointPortConfigProtocolEnum, EndpointPortConfigPublishModeEnum, EndpointSpec,
    EndpointSpecModeEnum, HealthConfig, Limit, NetworkAttachmentConfig, ServiceSpec, ServiceSpecMode,
    ServiceSpecModeReplicated, ServiceSpecRollbackConfig, ServiceSpecRollbackConfigFailureActionEnum,
    ServiceSpecRollbackConfigOrderEnum, ServiceSpecUpdateConfig, ServiceSpecUpdateConfigFailureActionEnum,
    ServiceSpecUpdateConfigOrderEnum, TaskSpec, TaskSpecContainerSpec, TaskSpecPlacement, TaskSpecResources,
    TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum,
};

use crate::check::HealthCheck;
use crate::labels;
use crate::release::RunRequest;

/// How a service rolls from one release to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rollout {
    /// How long the swarm watches each updated task for a failure
    /// (`swarm_monitor`).
    pub monitor: Duration,
    /// How long a task has between SIGTERM and SIGKILL.
    pub stop_grace: Duration,
}

fn nanos(duration: Duration) -> i64 {
    i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX)
}

/// `nap-APP-TYPE`: the service that runs process type `kind` of `app`.
pub fn service_name(app: &str, kind: &str) -> String {
    format!("nap-{app}-{kind}")
}

/// The service of `req`'s process type with `replicas` tasks, on
/// `network`, placed by `constraints`.
pub fn service(
    req: &RunRequest<'_>,
    replicas: u32,
    network: &str,
    constraints: &[String],
    rollout: Rollout,
) -> ServiceSpec {
    let web = req.id.process.is_web();
    let mut labels = req.labels();
    // Tasks of every index: the slot says which.
    labels.remove(labels::INDEX);
    let mut env: Vec<String> = Vec::with_capacity(req.env.len() + 1);
    if web {
        env.push(format!("PORT={}", req.port));
    }
    env.extend(req.env.iter().map(|(name, value)| format!("{name}={value}")));
    let container = TaskSpecContainerSpec {
        image: Some(req.image.to_owned()),
        labels: Some(labels.clone()),
        args: req.command.clone(),
        env: Some(env),
        stop_grace_period: Some(nanos(rollout.stop_grace)),
        health_check: Some(health(req.check.filter(|_| web), req.port)),
        ..TaskSpecContainerSpec::default()
    };
    let limits = req.limits;
    let resources = TaskSpecResources {
        limits: Some(Limit {
            nano_cpus: limits.cpus.map(|c| i64::from(c.millis()) * 1_000_000),
            memory_bytes: limits.memory.and_then(|m| i64::try_from(m.0).ok()),
            pids: limits.pids.map(i64::from),
        }),
        ..TaskSpecResources::default()
    };
    let task = TaskSpec {
        container_spec: Some(container),
        resources: Some(resources),
        restart_policy: Some(TaskSpecRestartPolicy {
            condition: Some(TaskSpecRestartPolicyConditionEnum::ANY),
            delay: Some(nanos(Duration::from_secs(1))),
            max_attempts: Some(0),
            window: Some(0),
        }),
        placement: Some(TaskSpecPlacement { constraints: Some(constraints.to_vec()), ..TaskSpecPlacement::default() }),
        force_update: Some(u64::from(req.id.restarts)),
        networks: Some(vec![NetworkAttachmentConfig { target: Some(network.to_owned()), ..Default::default() }]),
        ..TaskSpec::default()
    };
    // No VIP and no routing mesh (neither needs IPVS to be missing): each
    // web task publishes PORT on a port of its node, which the node picks,
    // so that an old and a new task can share a node during a start-first
    // update. nap's router reads it from the task list.
    let ports = web.then(|| {
        vec![EndpointPortConfig {
            name: Some("web".into()),
            protocol: Some(EndpointPortConfigProtocolEnum::TCP),
            target_port: Some(i64::from(req.port)),
            published_port: None,
            publish_mode: Some(EndpointPortConfigPublishModeEnum::HOST),
        }]
    });
    ServiceSpec {
        name: Some(service_name(req.app, req.id.process.as_str())),
        labels: Some(labels),
        task_template: Some(task),
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated { replicas: Some(i64::from(replicas)) }),
            ..ServiceSpecMode::default()
        }),
        update_config: Some(ServiceSpecUpdateConfig {
            parallelism: Some(1),
            delay: Some(0),
            failure_action: Some(ServiceSpecUpdateConfigFailureActionEnum::ROLLBACK),
            monitor: Some(nanos(rollout.monitor)),
            max_failure_ratio: Some(0.0),
            order: Some(ServiceSpecUpdateConfigOrderEnum::START_FIRST),
        }),
        rollback_config: Some(ServiceSpecRollbackConfig {
            parallelism: Some(1),
            delay: Some(0),
            failure_action: Some(ServiceSpecRollbackConfigFailureActionEnum::PAUSE),
            monitor: Some(nanos(rollout.monitor)),
            max_failure_ratio: Some(0.0),
            order: Some(ServiceSpecRollbackConfigOrderEnum::START_FIRST),
        }),
        networks: None,
        endpoint_spec: Some(EndpointSpec { mode: Some(EndpointSpecModeEnum::DNSRR), ports }),
    }
}

/// The container's health check: app.json's web check as a `wget` run
/// inside the task (no shell: the words are passed as they are; Docker's
/// own timeout ends a slow one, as busybox's `wget -T` crashes), so that a
/// task counts as running only once it answers; none without one. The
/// image's own HEALTHCHECK is switched off either way (`NONE`): nap's
/// check decides.
fn health(check: Option<&HealthCheck>, port: u16) -> HealthConfig {
    let Some(check) = check.filter(|check| check.decides_start()) else {
        return HealthConfig { test: Some(vec!["NONE".into()]), ..HealthConfig::default() };
    };
    let path = check.path.as_deref().unwrap_or("/");
    let url = format!("http://127.0.0.1:{}{path}", check.port.unwrap_or(port));
    let timeout = check.timeout();
    HealthConfig {
        test: Some(vec!["CMD".into(), "wget".into(), "-q".into(), "-O".into(), "/dev/null".into(), url]),
        interval: Some(nanos(check.wait().max(Duration::from_secs(1)))),
        timeout: Some(nanos(timeout)),
        retries: Some(i64::from(check.attempts())),
        start_period: Some(nanos(check.initial_delay())),
        start_interval: None,
    }
}
