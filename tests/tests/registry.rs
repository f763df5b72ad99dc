//! Registry credentials from `nap.toml` reach the registry and nowhere else.

use std::time::Duration;

use nap_tests::{AppKind, AppRepo, AuthRegistry, Deployed, Gateway, unique, wait_for_body};

const PASSWORD: &str = "s3cret-Pa55-do-not-print";

fn gateway_for(registry: &AuthRegistry, password: &str) -> Gateway {
    Gateway::builder()
        .settings(&format!(
            "registry = \"{}\"\nregistry_username = \"deployer\"\nregistry_password = \"{password}\"\n",
            registry.address
        ))
        .start()
}

#[test]
fn pushes_to_a_private_registry_without_showing_the_password() {
    let registry = AuthRegistry::start("deployer", PASSWORD);
    let Deployed { gateway, key: _, app, repo: _, push } =
        Deployed::push_as(gateway_for(&registry, PASSWORD), "alice", AppKind::Web, "private");
    assert!(push.stderr.contains(&format!("Pushing {}/{app}:v1", registry.address)), "{}", push.stderr);
    assert!(push.stderr.contains("v1: digest: sha256:"), "{}", push.stderr);
    assert!(wait_for_body(&push.url().expect("url"), "hello from web", Duration::from_secs(10)));

    let hook_log = std::fs::read_to_string(gateway.data_dir().join("logs/nap.log")).unwrap_or_default();
    for (what, text) in [("push output", &push.stderr), ("gateway log", &gateway.log()), ("hook log", &hook_log)] {
        assert!(!text.contains(PASSWORD), "the password shows in the {what}");
    }
}

#[test]
fn a_wrong_password_refuses_the_push_with_one_clear_reason() {
    let registry = AuthRegistry::start("deployer", PASSWORD);
    let gateway = gateway_for(&registry, "wrong-password");
    let alice = gateway.user("alice");
    let app = unique("badauth");
    let repo = AppRepo::new(AppKind::Web);
    let push = repo.push(&gateway, &alice, &app, "master");
    push.assert_failed_with(&format!("remote:  !     pushing {}/{app}:v1 to the registry failed:", registry.address));
    push.assert_failed_with("pre-receive hook declined");
    assert!(!push.stderr.contains("wrong-password"));
    assert!(!gateway.repo_path(&app).exists());
}
