//! The release flow in process: `nap::deploy` driven through nap's library,
//! against the real dockerd, registry and etcd (no SSH, no git hook), so a
//! step's outcome is checked where it happens.

use std::sync::Arc;

use nap::app_name::AppName;
use nap::context::Context;
use nap::deploy::{self, ConfigChange, Deploy, DeployError, LimitsChange, Source};
use nap::report::Reporter;
use nap::settings::{RouterSettings, Settings};
use nap_state::{ReleaseCause, ReleaseStatus, StoreSettings};
use nap_tests::{AppKind, AppRepo};
use nap_tests::{REGISTRY, etcd_endpoint, etcdctl, remove_app_containers, unique};

/// One app's release flow on etcd; its keys and containers go when it
/// drops, whether the test passed or not.
struct Flow {
    ctx: Arc<Context>,
    app: AppName,
    _data: tempfile::TempDir,
}

impl Flow {
    async fn new() -> Flow {
        let data = tempfile::tempdir().expect("data dir");
        let settings = Settings {
            store: StoreSettings {
                data_dir: Some(data.path().into()),
                store: Some(format!("etcd://{}", etcd_endpoint())),
                ..StoreSettings::default()
            },
            registry: Some(REGISTRY.into()),
            runner: Some(nap_runner::RunnerKind::Docker),
            public_host: Some("127.0.0.1".into()),
            check_timeout: Some(20),
            // No router here: the release's own URL is what the tests read.
            router: RouterSettings { http_listen: Some("off".into()), ..RouterSettings::default() },
            ..Settings::default()
        };
        let ctx = Context::open(settings).await.expect("context");
        let app = AppName::parse(&unique("flow")).expect("app name");
        Flow { ctx, app, _data: data }
    }

    fn push(&self, repo: &AppRepo) -> Deploy {
        Deploy {
            app: self.app.clone(),
            who: "tester".into(),
            cause: ReleaseCause::Push { key: "tester".into() },
            // The work tree's git directory, as a bare repo is to the hook.
            source: Source::Push { commit: repo.head(), repo: repo.path.join(".git"), gateway: None },
            config: ConfigChange::Keep,
            limits: LimitsChange::Keep,
        }
    }

    /// Runs the flow; its outcome, and what it reported.
    async fn deploy(&self, plan: Deploy) -> (Result<nap_state::Release, DeployError>, String) {
        let (report, writer) = Reporter::spawn(Vec::<u8>::new());
        let result = deploy::deploy(&self.ctx, plan, &report).await;
        if let Err(err) = &result {
            err.report(&report);
        }
        drop(report);
        let output = writer.await.expect("report writer");
        (result, String::from_utf8_lossy(&output).into_owned())
    }
}

impl Drop for Flow {
    fn drop(&mut self) {
        remove_app_containers(self.app.as_str());
        etcdctl(&["del", "--prefix", &format!("/nap/apps/{}/", self.app)]);
        etcdctl(&["del", &format!("/nap/locks/{}", self.app)]);
        // The app's network and its subnet claim go as this drops.
        let network = format!("nap-{}", self.app);
        nap_tests::Cleanup::new().subnet_claims(self.app.as_str()).command(&["docker", "network", "rm", &network]);
    }
}

fn answers(url: &str) -> bool {
    nap_tests::get(url).is_some_and(|(status, _)| status == 200)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_then_a_config_change_each_become_current_and_retire_the_one_before() {
    let flow = Flow::new().await;
    let repo = AppRepo::new(AppKind::Web);
    let (v1, output) = flow.deploy(flow.push(&repo)).await;
    let v1 = v1.unwrap_or_else(|err| panic!("push: {err}\n{output}"));
    assert_eq!((v1.version, v1.status), (1, ReleaseStatus::Succeeded), "{output}");
    assert!(v1.image.starts_with(&format!("{REGISTRY}/{}:v1", flow.app)), "{}", v1.image);
    let url = v1.url.clone().expect("url");
    assert!(answers(&url), "v1 answers at {url}");
    let store = &flow.ctx.store;
    assert!(store.app(flow.app.as_str()).await.expect("app").is_some(), "a first push makes the app");

    let change = Deploy {
        cause: ReleaseCause::Config { key: "tester".into(), change: "set GREETING".into() },
        source: Source::Current,
        config: ConfigChange::Set(vec![("GREETING".to_owned(), "hello".to_owned())]),
        ..flow.push(&repo)
    };
    let (v2, output) = flow.deploy(change).await;
    let v2 = v2.unwrap_or_else(|err| panic!("config: {err}\n{output}"));
    assert_eq!(v2.version, 2);
    assert!(output.contains("Retired nap-"), "{output}");
    let current = store.current_release(flow.app.as_str()).await.expect("current").expect("a current release");
    assert_eq!(current.version, 2);
    assert_eq!(
        store.config(flow.app.as_str()).await.expect("config").get("GREETING").map(String::as_str),
        Some("hello")
    );
    let served = nap_tests::get(&format!("{}cgi-bin/env", v2.url.clone().expect("url"))).expect("v2 answers");
    assert!(served.1.contains("GREETING=hello"), "{served:?}");
    assert!(!answers(&url) || url == v2.url.clone().unwrap_or_default(), "v1 is retired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_release_is_recorded_and_the_previous_one_keeps_serving() {
    let flow = Flow::new().await;
    let repo = AppRepo::new(AppKind::Web);
    let (v1, output) = flow.deploy(flow.push(&repo)).await;
    let v1 = v1.unwrap_or_else(|err| panic!("push: {err}\n{output}"));
    repo.become_kind(AppKind::Exits);
    let (v2, output) = flow.deploy(flow.push(&repo)).await;
    let err = v2.expect_err("an app that exits at once is refused");
    assert!(matches!(err, DeployError::Refused { .. }), "{err:?}");
    assert!(output.contains("crashing on purpose"), "the log tail is reported: {output}");
    assert!(output.contains(&format!("keeps serving v1 at {}", v1.url.clone().unwrap_or_default())), "{output}");
    let store = &flow.ctx.store;
    let releases = store.releases(flow.app.as_str()).await.expect("releases");
    let statuses: Vec<_> = releases.iter().map(|r| (r.version, r.status)).collect();
    assert_eq!(statuses, [(1, ReleaseStatus::Succeeded), (2, ReleaseStatus::Failed)]);
    assert_eq!(store.current_release(flow.app.as_str()).await.expect("current").map(|r| r.version), Some(1));
    assert!(answers(&v1.url.clone().unwrap_or_default()), "v1 still answers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_first_push_leaves_no_app_and_a_held_lock_refuses_at_once() {
    let flow = Flow::new().await;
    let broken = AppRepo::new(AppKind::BrokenBuild);
    let (result, output) = flow.deploy(flow.push(&broken)).await;
    assert!(matches!(result, Err(DeployError::Refused { .. })), "{output}");
    assert!(output.contains("about to fail"), "the build's last lines: {output}");
    assert!(flow.ctx.store.app(flow.app.as_str()).await.expect("app").is_none(), "no app after a refused first push");

    // A second deploy while the first holds the app's lock is refused at
    // once, naming the holder.
    let web = AppRepo::new(AppKind::Web);
    let (first, second) = tokio::join!(flow.deploy(flow.push(&web)), async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        flow.deploy(flow.push(&web)).await
    });
    let (first, output) = first;
    first.unwrap_or_else(|err| panic!("first deploy: {err}\n{output}"));
    let (second, _) = second;
    match second {
        Err(DeployError::Lock(err)) => assert!(err.to_string().contains("already deploying"), "{err}"),
        other => panic!("the second deploy should be refused while the first holds the lock: {other:?}"),
    }
}
