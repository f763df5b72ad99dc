//! The README's walkthrough, run as its reader runs it: the commands of the
//! shell blocks under "## Walkthrough: the first push" (before its first
//! subsection), in order, as one
//! `sh -e` script, against a real `nap serve`. A README change that breaks
//! the walkthrough fails here.
//!
//! Only what differs on a test machine is substituted: `nap` and `ssh` are
//! wrappers first on `PATH` (nap with this gateway's settings file, ssh with
//! the test's key), `host:2222` is the gateway's address, `~/.ssh/...` and
//! `bob.pub` are keys made here, `/tmp/hello` is a temporary directory, and
//! the app `hello` gets a name no other test uses.

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nap_tests::{Gateway, Key, Run, containers_of, nap_bin, ssh_options, unique};

/// The shell blocks of the README's walkthrough, in order.
fn walkthrough_blocks(readme: &str) -> Vec<String> {
    let section = readme
        .split("\n## ")
        .find(|section| section.starts_with("Walkthrough: the first push"))
        .expect("the README has a walkthrough");
    // Its own text, before its subsections (which show output, not commands).
    let section = section.split("\n### ").next().unwrap_or_default();
    let mut blocks = Vec::new();
    let mut block: Option<String> = None;
    for line in section.lines() {
        match (&mut block, line.trim_end()) {
            (None, "```") => block = Some(String::new()),
            (Some(_), "```") => blocks.extend(block.take()),
            (Some(text), line) => {
                text.push_str(line);
                text.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

/// A script on `PATH` that runs `program` with `args` before its own.
fn wrapper(dir: &Path, name: &str, program: &Path, args: &[String]) {
    let quoted: Vec<String> = args.iter().map(|arg| format!("'{arg}'")).collect();
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\nexec '{}' {} \"$@\"\n", program.display(), quoted.join(" ")))
        .expect("write wrapper");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod wrapper");
}

#[test]
fn the_readme_walkthrough_runs_as_written() {
    let gateway = Gateway::start();
    let app = unique("hello");
    gateway.cleanup().app(&app);
    let alice = Key::generate();
    let bob = Key::generate();
    let work = tempfile::tempdir().expect("temp dir");
    let bin = work.path().join("bin");
    std::fs::create_dir(&bin).expect("bin dir");
    wrapper(&bin, "nap", &nap_bin(), &["--config".to_owned(), gateway.config_path().display().to_string()]);
    wrapper(&bin, "ssh", Path::new("/usr/bin/ssh"), &ssh_options(&alice.private));
    std::fs::copy(&bob.public, work.path().join("bob.pub")).expect("bob.pub");
    let examples: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/hello");
    let app_dir = work.path().join("app");

    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).expect("README");
    let blocks = walkthrough_blocks(&readme);
    assert!(blocks.len() >= 4, "the walkthrough's blocks: {blocks:#?}");
    let port = gateway.port.to_string();
    let mut script = String::new();
    for line in blocks.iter().flat_map(|block| block.lines()) {
        // The paths first, out of the way of the app's name.
        let line = line
            .replace("examples/hello", "\u{1}examples")
            .replace("/tmp/hello", "\u{1}app")
            .replace("hello", &app)
            .replace("\u{1}examples", &examples.display().to_string())
            .replace("\u{1}app", &app_dir.display().to_string())
            .replace("~/.ssh/id_ed25519.pub", &alice.public.display().to_string())
            .replace("@host:2222", &format!("@127.0.0.1:{port}"))
            .replace("-p 2222 nap@host", &format!("-p {port} nap@127.0.0.1"));
        let _ = writeln!(script, "echo '+ {}'\n{line}", line.replace('\'', ""));
    }
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let run: Run = Command::new("sh")
        .arg("-ec")
        .arg(&script)
        .current_dir(work.path())
        .env("PATH", path)
        .env("GIT_AUTHOR_NAME", "reader")
        .env("GIT_AUTHOR_EMAIL", "reader@example.com")
        .env("GIT_COMMITTER_NAME", "reader")
        .env("GIT_COMMITTER_EMAIL", "reader@example.com")
        .output()
        .expect("run the walkthrough")
        .into();
    run.assert_ok();
    let said = format!("{}{}", run.stdout, run.stderr);
    for expected in [
        "added key alice (SHA256:".to_owned(),
        "added key bob (SHA256:".to_owned(),
        format!("key bob may use apps {app},shop"),
        "key bob may use apps shop\n".to_owned(),
        "key bob is an admin key".to_owned(),
        "removed key bob".to_owned(),
        "=====> http://".to_owned(),
        format!("{app} v2: config set GREETING"),
        "v2*".to_owned(),
        format!("{app} v3: rollback to v1"),
        "config: drops GREETING, which v1 did not have".to_owned(),
        format!("destroyed {app}"),
    ] {
        assert!(said.contains(&expected), "the walkthrough did not say {expected:?}:\n{said}");
    }
    assert!(containers_of(&app).is_empty(), "apps destroy left containers");
    assert!(!gateway.repo_path(&app).exists(), "apps destroy left the repo");
}
