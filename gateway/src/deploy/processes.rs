//! What a release runs: its process types and their commands (its
//! Procfile), how many instances of each (the app's formation over its
//! app.json's) and when a `web` instance is ready (its app.json's check).

use nap_runner::{AppJson, AppNetwork, Formation, InstanceId, Limits, Procfile, RunRequest};
use nap_state::Release;

use super::DeployError;
use crate::context::Context;

/// A release's Procfile and app.json, read, and where its app runs.
pub struct Processes {
    pub procfile: Procfile,
    pub app_json: AppJson,
    /// The runner's own counts, under app.json's (Kubernetes: `k8s_replicas`).
    pub defaults: Formation,
    /// Where the swarm may place the app's tasks (`placement APP`).
    pub placement: Vec<String>,
    /// The app's own network, which its instances and one-offs join.
    pub network: AppNetwork,
}

impl Processes {
    /// Reads the files the release keeps (a push refuses them first, so an
    /// error here means a record from elsewhere), for an app on `network`.
    pub fn of(release: &Release, network: AppNetwork) -> Result<Processes, DeployError> {
        Ok(Processes {
            procfile: Procfile::of(release.procfile.as_deref())?,
            app_json: AppJson::of(release.app_json.as_deref())?,
            defaults: Formation::default(),
            placement: Vec::new(),
            network,
        })
    }

    /// What `release` of `app` runs on `runner`: its files, the runner's
    /// default counts, the app's placement, and its network, made on the
    /// runner if need be.
    pub async fn of_app(
        ctx: &Context,
        app: &str,
        release: &Release,
        runner: &nap_runner::Runner,
    ) -> Result<Processes, DeployError> {
        let placement: Vec<nap_runner::Constraint> = ctx.store.placement(app).await?;
        let network = crate::networks::of_app(ctx, runner, app).await?;
        Ok(Processes {
            placement: placement.into_iter().map(String::from).collect(),
            ..Processes::of(release, network)?.on(runner)
        })
    }

    /// With `runner`'s default counts.
    pub fn on(self, runner: &nap_runner::Runner) -> Processes {
        Processes { defaults: runner.default_formation(), ..self }
    }

    /// How many instances of each type run: `formation` (from `ps scale`)
    /// where it says, else app.json's, else the runner's, else one `web`
    /// and none of the rest.
    pub fn counts(&self, formation: &Formation) -> Vec<(nap_runner::ProcessType, u32)> {
        formation.over(&self.app_json.formation.over(&self.defaults)).of(&self.procfile)
    }

    /// Every instance of `release` that `formation` asks for, in order.
    pub fn instances(&self, release: &Release, formation: &Formation) -> Vec<InstanceId> {
        let (version, restarts) = (release.version, release.restarts);
        self.counts(formation)
            .into_iter()
            .flat_map(|(process, count)| {
                (1..=count).map(move |index| InstanceId { release: version, restarts, process: process.clone(), index })
            })
            .collect()
    }

    /// What the runner is asked to start for instance `id`.
    pub fn request<'a>(
        &'a self,
        app: &'a str,
        release: &'a Release,
        env: &'a [(String, String)],
        limits: Limits,
        id: InstanceId,
    ) -> RunRequest<'a> {
        RunRequest {
            app,
            command: self.procfile.argv(id.process.as_str()),
            check: if id.process.is_web() { self.app_json.web_check() } else { None },
            id,
            image: &release.image,
            port: release.port,
            env,
            limits,
            placement: &self.placement,
            network: &self.network,
        }
    }
}

/// A release's environment as instances get it (besides `PORT`).
pub fn env_of(release: &Release) -> Vec<(String, String)> {
    release.config.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}
