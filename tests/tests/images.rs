//! Images belong to their apps: a key that may use only app A cannot build
//! A from app B's image by any path (by name, digest, image ID or a short
//! one, a re-tagged copy, an `ARG`, a second stage, `COPY --from`, `RUN
//! --mount=from=`, an `ADD` from the registry, a base's `ONBUILD`), and B's
//! files never reach A's push output; base images and A's own images
//! still build. Real pushes into a real `nap serve` on dockerd.

use std::time::Duration;

use nap_tests::{AppKind, AppRepo, Gateway, REGISTRY, Run, containers_of, docker, unique, wait_for_body};

const ANSWER: Duration = Duration::from_secs(10);

/// Checks that `push` was refused with `reason` on one line of its own,
/// and that `secret` (B's page) is nowhere in its output.
#[track_caller]
fn refused(push: &Run, reason: &str, secret: &str) {
    push.assert_failed_with("pre-receive hook declined");
    let line = push.stderr.lines().find(|line| line.contains(reason));
    assert!(line.is_some(), "no line says {reason:?}:\n{}", push.stderr);
    assert!(!push.stderr.contains(secret) && !push.stdout.contains(secret), "B's file leaked:\n{}", push.stderr);
    assert!(!push.stderr.contains("Step 1/"), "the build started:\n{}", push.stderr);
}

fn inspect(format: &str, image: &str) -> String {
    let run = docker(&["image", "inspect", "-f", format, image]);
    run.assert_ok();
    run.stdout.trim().to_owned()
}

#[test]
fn another_apps_image_is_refused_by_every_path() {
    let gateway = Gateway::start();
    let admin = gateway.user("admin");
    let (a, b) = (unique("sec-a"), unique("sec-b"));
    let secret = format!("secret-of-{b}");

    let b_repo = AppRepo::new(AppKind::Web);
    b_repo.commit("index.html", &format!("{secret}\n"));
    b_repo.push(&gateway, &admin, &b, "master").assert_ok();
    let a_repo = AppRepo::new(AppKind::Web);
    let first = a_repo.push(&gateway, &admin, &a, "master");
    first.assert_ok();
    let url = first.url().expect("url");
    let good = a_repo.head();
    let dev = gateway.user_for("dev", &[&a]);

    // B's image, and the ways to name it.
    let b_image = format!("{REGISTRY}/{b}:v1");
    let id = inspect("{{.Id}}", &b_image);
    let short = id.trim_start_matches("sha256:")[..12].to_owned();
    let digest = inspect("{{index .RepoDigests 0}}", &b_image);
    let digest = digest.split_once('@').expect("repo digest").1.to_owned();
    let copy = format!("{}:1", unique("copy"));
    gateway.cleanup().images(&copy).images(format!("localhost:5000/{b}"));
    docker(&["tag", &b_image, &copy]).assert_ok();
    // A step of B's build before its last: B's files, and no label.
    let history = docker(&["history", "-q", &b_image]);
    let step = history
        .stdout
        .lines()
        .find(|id| !id.starts_with('<') && inspect("{{index .Config.Labels \"nap.app\"}}", id).is_empty())
        .expect("an unlabelled step")
        .to_owned();

    let by_name = format!("names the repository of app {b}; build from a base image or from {a}'s own images");
    let by_label = format!("is an image of app {b}; build from a base image or from {a}'s own images");
    let cat = "RUN cat /www/index.html";
    let cases = [
        // The review's repro.
        (format!("FROM {b_image}\n{cat}\n"), format!("Dockerfile line 1, stage 1: FROM {b_image} {by_name}")),
        (
            format!("FROM {REGISTRY}/{b}@{digest}\n{cat}\n"),
            format!("Dockerfile line 1, stage 1: FROM {REGISTRY}/{b}@{digest} {by_name}"),
        ),
        (format!("FROM {id}\n{cat}\n"), format!("Dockerfile line 1, stage 1: FROM {id} {by_label}")),
        (format!("FROM {short}\n{cat}\n"), format!("Dockerfile line 1, stage 1: FROM {short} {by_label}")),
        (format!("FROM {copy}\n{cat}\n"), format!("Dockerfile line 1, stage 1: FROM {copy} {by_label}")),
        // Another name of the registry: pulled as the build would, then judged by label.
        (
            format!("ARG BASE=localhost:5000/{b}@{digest}\nFROM $BASE\n{cat}\n"),
            format!("Dockerfile line 2, stage 1: FROM $BASE (that is localhost:5000/{b}@{digest}) {by_label}"),
        ),
        (
            format!("FROM nap/busybox AS one\nRUN true\nFROM {short} AS two\n{cat}\n"),
            format!("Dockerfile line 3, stage 2 (two): FROM {short} {by_label}"),
        ),
        (
            format!("FROM nap/busybox\nARG FROM={copy}\nCOPY --from=$FROM /www/index.html /x\nRUN cat /x\n"),
            format!("Dockerfile line 3, stage 1: COPY --from=$FROM (that is {copy}) {by_label}"),
        ),
        (
            format!("FROM nap/busybox\nRUN --mount=type=bind,from={copy},target=/b cat /b/www/index.html\n"),
            format!("Dockerfile line 2, stage 1: RUN --mount=type=bind,from={copy},target=/b {by_label}"),
        ),
        (
            format!("FROM {step}\n{cat}\n"),
            format!("Dockerfile line 1, stage 1: FROM {step} is image {step}, an untagged step of some build"),
        ),
        (
            format!("FROM nap/busybox\nADD http://{REGISTRY}/v2/{b}/manifests/v1 /m\nRUN cat /m\n"),
            format!(
                "Dockerfile line 2, stage 1: ADD http://{REGISTRY}/v2/{b}/manifests/v1 fetches a URL from the Docker \
                 daemon's own network"
            ),
        ),
    ];
    for (dockerfile, reason) in &cases {
        a_repo.commit("Dockerfile", dockerfile);
        let push = a_repo.push_to(&dev, &gateway.remote(&a), "master");
        refused(&push, reason, &secret);
        push.assert_failed_with(&format!("{a} keeps serving v1 at {url}"));
    }

    // A Dockerfile that is a link: Docker would build the file it names.
    std::fs::write(a_repo.path.join("real"), format!("FROM {b_image}\n{cat}\n")).expect("write");
    std::fs::remove_file(a_repo.path.join("Dockerfile")).expect("remove");
    std::os::unix::fs::symlink("real", a_repo.path.join("Dockerfile")).expect("link");
    a_repo.git_with_input(&["add", "-A"], b"").assert_ok();
    a_repo.git_with_input(&["commit", "-qm", "a linked Dockerfile"], b"").assert_ok();
    let push = a_repo.push_to(&dev, &gateway.remote(&a), "master");
    refused(&push, "is not a plain file (a link or a directory)", &secret);

    // A's v1 never stopped, and the ref never moved.
    assert_eq!(gateway.branch_sha(&a, "master"), Some(good));
    assert!(wait_for_body(&url, "hello from web", ANSWER), "v1 stopped answering");
    assert_eq!(containers_of(&a), vec![format!("nap-{a}-v1-web.1")]);
}

#[test]
fn base_images_and_the_apps_own_images_still_build() {
    let gateway = Gateway::start();
    let admin = gateway.user("admin");
    let a = unique("own-a");
    let b = unique("own-b");
    let repo = AppRepo::new(AppKind::Web);
    repo.push(&gateway, &admin, &a, "master").assert_ok();
    let dev = gateway.user_for("dev", &[&a]);

    // A base image on the registry, not an app's, and not on this host:
    // pulled before the build, as the build would pull it.
    let base = format!("{REGISTRY}/{}/busybox:1", unique("bases"));
    gateway.cleanup().images(&base);
    docker(&["tag", "nap/busybox", &base]).assert_ok();
    docker(&["push", &base]).assert_ok();
    docker(&["rmi", &base]).assert_ok();

    // Built from its own v1, with a stage of its own, by the key of A; the
    // image leaves a trigger that names B's repository.
    let own = format!("{REGISTRY}/{a}:v1");
    repo.commit(
        "Dockerfile",
        &format!(
            "ARG BASE={own}\nFROM {base} AS tools\nRUN echo built on busybox > /tools\n\
             FROM $BASE\nCOPY --from=tools /tools /www/tools\nCOPY --from={own} /www/index.html /www/copy.html\n\
             ONBUILD COPY --from={REGISTRY}/{b}:v1 /www /b\n"
        ),
    );
    let second = repo.push_to(&dev, &gateway.remote(&a), "master");
    second.assert_ok();
    assert!(second.stderr.contains(&format!("Pulling {base} to check it")), "{}", second.stderr);
    assert!(second.stderr.contains(&format!("{a} v2 is live")), "{}", second.stderr);
    let url = second.url().expect("url");
    assert!(wait_for_body(&format!("{url}tools"), "built on busybox", ANSWER));
    assert!(wait_for_body(&format!("{url}copy.html"), "hello from web", ANSWER));

    // v2's trigger runs in a build from it: refused, whoever B is.
    repo.commit("Dockerfile", &format!("FROM {REGISTRY}/{a}:v2\n"));
    let third = repo.push_to(&dev, &gateway.remote(&a), "master");
    refused(
        &third,
        &format!(
            "Dockerfile line 1, stage 1: ONBUILD COPY --from={REGISTRY}/{b}:v1 (a trigger of {REGISTRY}/{a}:v2) \
             names the repository of app {b}"
        ),
        "no secret here",
    );
    assert!(wait_for_body(&format!("{url}tools"), "built on busybox", ANSWER), "v2 stopped answering");
}

#[test]
fn a_build_reuses_its_own_apps_cached_steps_and_never_another_apps() {
    let gateway = Gateway::start();
    let admin = gateway.user("admin");
    let (a, b) = (unique("cache-a"), unique("cache-b"));
    // A step whose output only running it can know: B's secret.
    let dockerfile = "FROM nap/busybox\nRUN head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \\n' > /secret\n\
                      COPY index.html /www/index.html\nRUN cp /secret /www/secret\n\
                      CMD [\"sh\",\"-c\",\"exec httpd -f -p $PORT -h /www\"]\n";
    let secret_of = |push: &Run| {
        let url = push.url().expect("url");
        let body = nap_tests::get(&format!("{url}secret")).expect("an answer").1;
        assert_eq!(body.len(), 24, "{body}");
        body
    };
    let b_repo = AppRepo::new(AppKind::Web);
    b_repo.commit("Dockerfile", dockerfile);
    let b_push = b_repo.push(&gateway, &admin, &b, "master");
    let b_secret = secret_of(b_push.assert_ok());

    // The same steps on the same base: built anew for A.
    let a_repo = AppRepo::new(AppKind::Web);
    a_repo.commit("Dockerfile", dockerfile);
    let a_push = a_repo.push(&gateway, &admin, &a, "master");
    assert!(!a_push.assert_ok().stderr.contains("Using cache"), "A used a cached step:\n{}", a_push.stderr);
    let a_secret = secret_of(&a_push);
    assert_ne!(a_secret, b_secret, "A's build got B's layer");

    // A's next push reuses A's own steps up to the changed file.
    a_repo.commit("index.html", "changed\n");
    let again = a_repo.push(&gateway, &admin, &a, "master");
    assert!(again.assert_ok().stderr.contains("Using cache"), "{}", again.stderr);
    assert_eq!(secret_of(&again), a_secret, "the cached step is A's own");
}
