//! Template hooks: the real `nap watch` against a real etcd (the shared one,
//! under a prefix of each test's own, or a private one where the test stops
//! or compacts it), the embedded store and the environment.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nap_tests::{Cleanup, PrivateEtcd, Run, etcd_endpoint, etcdctl, nap_bin};

/// A conf.d directory with its templates/ beside it, and the files they make.
struct Confd {
    dir: tempfile::TempDir,
}

impl Confd {
    fn new() -> Confd {
        let dir = tempfile::tempdir().expect("temp dir");
        for sub in ["conf.d", "templates", "out"] {
            std::fs::create_dir(dir.path().join(sub)).expect("mkdir");
        }
        Confd { dir }
    }

    fn out(&self, name: &str) -> PathBuf {
        self.dir.path().join("out").join(name)
    }

    fn confdir(&self) -> PathBuf {
        self.dir.path().join("conf.d")
    }

    /// Adds resource `name`: `[template]` lines, and its template text.
    fn resource(&self, name: &str, settings: &str, template: &str) -> PathBuf {
        let dest = self.out(name);
        std::fs::write(
            self.confdir().join(format!("{name}.toml")),
            format!("[template]\nsrc = \"{name}.tera\"\ndest = \"{}\"\n{settings}", dest.display()),
        )
        .expect("write conf.d");
        std::fs::write(self.dir.path().join("templates").join(format!("{name}.tera")), template).expect("template");
        dest
    }

    fn command(&self, store: &str) -> Command {
        let mut command = Command::new(nap_bin());
        command.args(["--store", store, "watch", "--confdir"]).arg(self.confdir());
        command
    }

    fn onetime(&self, store: &str) -> Run {
        self.command(store).arg("--onetime").output().expect("nap watch").into()
    }

    fn watch(&self, store: &str, extra: &[&str]) -> Watching {
        let log = std::fs::File::create(self.dir.path().join("watch.log")).expect("log");
        let child = self.command(store).args(extra).stdout(Stdio::null()).stderr(log).spawn().expect("nap watch");
        Watching { child, log: self.dir.path().join("watch.log") }
    }
}

/// A running `nap watch`, stopped when dropped.
struct Watching {
    child: Child,
    log: PathBuf,
}

impl Watching {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `path` holds `expected`.
    fn until(&self, path: &Path, expected: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let content = std::fs::read_to_string(path).unwrap_or_default();
            if content == expected {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} never became {expected:?}; it is {content:?}\nwatch log:\n{}",
                path.display(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn shared_store() -> String {
    format!("etcd://{}", etcd_endpoint())
}

fn put(prefix: &str, pairs: &[(&str, &str)]) {
    for (key, value) in pairs {
        etcdctl(&["put", &format!("{prefix}{key}"), value]).assert_ok();
    }
}

const EVERY_FUNCTION: &str = r#"getv={{ getv(key="/db/host") }} default={{ getv(key="/db/none", default="fallback") }} empty=[{{ getv(key="/db/none", default="") }}]
getvs={{ getvs(key="/hosts/*/ip") | join(sep=",") }}
{% set kv = get(key="/db/host") %}get={{ kv.key }}:{{ kv.value }}
gets={% for kv in gets(key="/hosts/*/ip") %}{{ kv.key }}={{ kv.value }};{% endfor %}
ls={{ ls(key="/hosts") | join(sep=",") }} lsdir={{ lsdir(key="/hosts") | join(sep=",") }}
exists={{ exists(key="/db/host") }},{{ exists(key="/db/none") }}
{% set d = json(value=getv(key="/rollout")) %}json={{ d.imageLatest }} json_array={{ json_array(value=getv(key="/list")) | join(sep="+") }}
base={{ base(path="/hosts/a/ip") }} dir={{ dir(path="/hosts/a/ip") }}
split={{ split(value="a,b,c", sep=",") | join(sep="|") }} join={{ join(values=["x", "y"], sep="-") }}
getenv={{ getenv(name="NAP_TEST_WATCH_ENV") }},{{ getenv(name="NAP_TEST_NOT_SET", default="unset") }}
datetime={{ datetime(format="[year]") | length }}
lookup_ip={{ lookup_ip(name="127.0.0.1") | join(sep=",") }} v4={{ lookup_ipv4(name="127.0.0.1") | join(sep=",") }} v6={{ lookup_ipv6(name="127.0.0.1") | length }}
file_exists={{ file_exists(path="/") }},{{ file_exists(path="/no/such/file") }}
base64={{ base64_encode(value="nap") }},{{ base64_decode(value="bmFw") }}
parse_bool={{ parse_bool(value="true") }},{{ parse_bool(value="0") }} atoi={{ atoi(value="41") + 1 }}
seq={{ seq(first=1, last=3) | join(sep=",") }} contains={{ contains(value="abc", substr="b") }}
replace={{ replace(value="a.b.c", old=".", new="-") }},{{ replace(value="a.b.c", old=".", new="-", n=1) }} trim_suffix={{ trim_suffix(value="a.com", suffix=".com") }}
case={{ to_upper(value="ab") }}{{ to_lower(value="CD") }}
reverse={{ reverse(values=["1", "2", "3"]) | join(sep="") }} sort_by_length={{ sort_by_length(values=["ccc", "a", "bb"]) | join(sep=",") }}
sort_kv_by_length={% for kv in sort_kv_by_length(values=gets(key="/hosts/*/ip")) %}{{ kv.key }};{% endfor %}
"#;

const EVERY_FUNCTION_RENDERED: &str = "getv=db.local default=fallback empty=[]
getvs=10.0.0.1,10.0.0.2
get=/db/host:db.local
gets=/hosts/a/ip=10.0.0.1;/hosts/bb/ip=10.0.0.2;
ls=a,bb,count lsdir=a,bb
exists=true,false
json=registry/s1:e1234a5 json_array=1+2
base=ip dir=/hosts/a
split=a|b|c join=x-y
getenv=from the environment,unset
datetime=4
lookup_ip=127.0.0.1 v4=127.0.0.1 v6=0
file_exists=true,false
base64=bmFw,nap
parse_bool=true,false atoi=42
seq=1,2,3 contains=true
replace=a-b-c,a-b.c trim_suffix=a
case=ABcd
reverse=321 sort_by_length=a,bb,ccc
sort_kv_by_length=/hosts/a/ip;/hosts/bb/ip;
";

#[test]
fn every_function_reads_etcd_through_the_resources_prefix() {
    let (prefix, _cleanup) = Cleanup::etcd_root("watch");
    put(
        &prefix,
        &[
            ("/db/host", "db.local"),
            ("/hosts/a/ip", "10.0.0.1"),
            ("/hosts/bb/ip", "10.0.0.2"),
            ("/hosts/count", "2"),
            ("/rollout", r#"{"imageLatest":"registry/s1:e1234a5"}"#),
            ("/list", "[1,2]"),
        ],
    );
    let confd = Confd::new();
    let dest = confd.resource("all", &format!("prefix = \"{prefix}\"\nkeys = [\"/\"]\n"), EVERY_FUNCTION);
    let run: Run = confd
        .command(&shared_store())
        .arg("--onetime")
        .env("NAP_TEST_WATCH_ENV", "from the environment")
        .output()
        .expect("nap watch")
        .into();
    run.assert_ok();
    assert_eq!(std::fs::read_to_string(dest).expect("dest"), EVERY_FUNCTION_RENDERED);
}

#[test]
fn a_function_that_fails_names_its_key_template_and_resource_writes_nothing_and_onetime_exits_1() {
    let (prefix, _cleanup) = Cleanup::etcd_root("watch");
    put(&prefix, &[("/text", "not json"), ("/object", "{}"), ("/word", "maybe")]);
    let confd = Confd::new();
    let settings = format!("prefix = \"{prefix}\"\n");
    let cases = [
        ("getv", r#"{{ getv(key="/missing") }}"#, format!("key /missing ({prefix}/missing) not found")),
        (
            "get",
            r#"{% set kv = get(key="/missing") %}{{ kv.value }}"#,
            format!("key /missing ({prefix}/missing) not found"),
        ),
        ("json", r#"{{ json(value=getv(key="/text")) }}"#, "json: not JSON".to_owned()),
        ("json_array", r#"{{ json_array(value=getv(key="/object")) }}"#, "json_array: not a JSON array".to_owned()),
        ("base64", r#"{{ base64_decode(value="***") }}"#, "base64_decode: ".to_owned()),
        ("bool", r#"{{ parse_bool(value=getv(key="/word")) }}"#, "parse_bool: not a boolean: \"maybe\"".to_owned()),
        ("atoi", r#"{{ atoi(value=getv(key="/word")) }}"#, "atoi: not an integer: \"maybe\"".to_owned()),
        (
            "getenv",
            r#"{{ getenv(name="NAP_TEST_NOT_SET") }}"#,
            "environment variable NAP_TEST_NOT_SET is not set".to_owned(),
        ),
        ("datetime", r#"{{ datetime(format="[nonsense]") }}"#, "datetime: bad format".to_owned()),
        ("glob", r#"{{ getvs(key="/[") | length }}"#, "bad key pattern".to_owned()),
        (
            "lookup",
            r#"{{ lookup_ip(name="no-such-host.invalid") | length }}"#,
            "lookup of \"no-such-host.invalid\" failed".to_owned(),
        ),
    ];
    let ok = confd.resource("fine", &settings, r#"{{ getv(key="/word") }}"#);
    for (name, template, _) in &cases {
        confd.resource(name, &settings, template);
    }
    let run = confd.onetime(&shared_store());
    assert_eq!(run.code, Some(1), "{run:?}");
    for (name, _, expected) in &cases {
        let line = run.stderr.lines().find(|l| l.contains(&format!("resource {name}: template {name}.tera: ")));
        let line = line.unwrap_or_else(|| panic!("no error for {name}:\n{}", run.stderr));
        assert!(line.contains(expected.as_str()), "{name}: {line}");
        assert!(!confd.out(name).exists(), "{name} was written");
    }
    assert!(run.stderr.contains(&format!("error: {} of {} template resources failed", cases.len(), cases.len() + 1)));
    assert_eq!(std::fs::read_to_string(ok).expect("the good one is written"), "maybe");
}

#[test]
fn a_confd_conf_d_file_works_unchanged_and_a_failing_check_keeps_dest() {
    let (prefix, _cleanup) = Cleanup::etcd_root("k8s-deploy");
    let confd = Confd::new();
    // The write-up's file, as it is (its owner key included), but for paths.
    let dest = confd.out("demoproject-rollout");
    std::fs::write(
        confd.confdir().join("demoproject-rollout.toml"),
        format!(
            "[template]\nprefix = \"{prefix}/demoproject/rollout\"\nsrc = \"demoproject-rollout.tmpl\"\ndest = \"{}\"\n\
             owner = \"root\"\nmode = \"0640\"\nkeys = [\n  \"/dev\",\n]\n\
             check_cmd = \"grep -q kubectl {{{{.src}}}}\"\nreload_cmd = \"echo reloaded >> {}\"\n",
            dest.display(),
            confd.out("reloads").display()
        ),
    )
    .expect("conf.d");
    std::fs::write(
        confd.dir.path().join("templates/demoproject-rollout.tmpl"),
        "{% if exists(key=\"/dev\") %}{% set d = json(value=getv(key=\"/dev\")) %}kubectl -n {{ d.k8sNamespace }} set image \
         deployments/{{ d.appParent }}-{{ d.appName }} {{ d.appName }}={{ d.imageLatest }}{% else %}no rollout{% endif %}\n",
    )
    .expect("template");
    let rollout =
        r#"{"k8sNamespace":"ns-demo-dev","appParent":"demoproject","appName":"s1","imageLatest":"r/s1:e1234a5"}"#;
    put(&prefix, &[("/demoproject/rollout/dev", rollout)]);
    confd.onetime(&shared_store()).assert_ok();
    let expected = "kubectl -n ns-demo-dev set image deployments/demoproject-s1 s1=r/s1:e1234a5\n";
    assert_eq!(std::fs::read_to_string(&dest).expect("dest"), expected);
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&dest).expect("meta").permissions()) & 0o777,
        0o640
    );
    assert_eq!(std::fs::read_to_string(confd.out("reloads")).expect("reloaded"), "reloaded\n");

    // Unchanged keys: nothing is checked, replaced or reloaded.
    confd.onetime(&shared_store()).assert_ok();
    assert_eq!(std::fs::read_to_string(confd.out("reloads")).expect("reloads"), "reloaded\n");

    // The key goes: the render says "no rollout", which the check refuses.
    etcdctl(&["del", &format!("{prefix}/demoproject/rollout/dev")]);
    let refused = confd.onetime(&shared_store());
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(
        refused.stderr.contains(&format!(
            "resource demoproject-rollout: check_cmd failed (exit status: 1), {} is unchanged",
            dest.display()
        )),
        "{refused:?}"
    );
    assert_eq!(std::fs::read_to_string(&dest).expect("dest"), expected, "dest changed");
    let staged: Vec<_> = std::fs::read_dir(confd.dir.path().join("out"))
        .expect("out")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".stage"))
        .collect();
    assert!(staged.is_empty(), "stage files left: {staged:?}");
}

#[test]
fn a_burst_of_ten_thousand_puts_ends_with_the_file_at_the_final_state_and_replaces_are_atomic() {
    let (prefix, _cleanup) = Cleanup::etcd_root("burst");
    let confd = Confd::new();
    let template =
        "BEGIN\n{% for name in ls(key=\"/k\") %}{{ name }}={{ getv(key=\"/k/\" ~ name) }}\n{% endfor %}END\n";
    let dest = confd.resource("burst", &format!("prefix = \"{prefix}\"\nkeys = [\"/k\"]\n"), template);
    let watching = confd.watch(&shared_store(), &["--debounce", "0"]);
    watching.until(&dest, "BEGIN\nEND\n", Duration::from_secs(10));

    // A reader that never may see a half-written file.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (stop, dest) = (stop.clone(), dest.clone());
        std::thread::spawn(move || {
            let mut reads = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let content = std::fs::read_to_string(&dest).expect("dest is always there");
                assert!(content.starts_with("BEGIN\n") && content.ends_with("END\n"), "a partial file: {content:?}");
                reads += 1;
            }
            reads
        })
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let options = nap_state::EtcdOptions::from_url(&shared_store()).expect("url");
        let store = nap_state::Store::open_etcd(&options).await.expect("etcd");
        let writers = (0..10).map(|writer| {
            let (store, prefix) = (store.clone(), prefix.clone());
            tokio::spawn(async move {
                for round in 0..1000 {
                    let key = format!("{prefix}/k/key{:02}", (writer * 10) + (round % 10));
                    store.put(&key, format!("{round}").as_bytes()).await.expect("put");
                }
            })
        });
        for writer in writers.collect::<Vec<_>>() {
            writer.await.expect("writer");
        }
    });
    let expected = (0..100).fold(String::new(), |mut text, k| {
        let _ = writeln!(text, "key{k:02}={}", 990 + k % 10);
        text
    });
    watching.until(&dest, &format!("BEGIN\n{expected}END\n"), Duration::from_secs(30));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(reader.join().expect("the reader saw only whole files") > 0);
}

#[test]
fn the_watch_survives_an_etcd_restart_and_a_compaction_and_a_failed_reload() {
    let mut etcd = PrivateEtcd::start();
    let store = etcd.url();
    let confd = Confd::new();
    let reloads = confd.out("reloads");
    let settings =
        format!("keys = [\"/app\"]\nreload_cmd = \"echo x >> {0}; test $(wc -l < {0}) -ne 2\"\n", reloads.display());
    let dest = confd.resource("app", &settings, "{{ getv(key=\"/app/version\", default=\"none\") }}\n");
    let watching = confd.watch(&store, &["--debounce", "50"]);
    watching.until(&dest, "none\n", Duration::from_secs(10));
    etcd.etcdctl(&["put", "/app/version", "1"]).assert_ok();
    watching.until(&dest, "1\n", Duration::from_secs(10));
    // The second reload fails (see reload_cmd); the watch goes on.
    etcd.etcdctl(&["put", "/app/version", "2"]).assert_ok();
    watching.until(&dest, "2\n", Duration::from_secs(10));
    etcd.etcdctl(&["put", "/app/version", "3"]).assert_ok();
    watching.until(&dest, "3\n", Duration::from_secs(10));
    assert!(watching.log().contains("reload_cmd failed"), "{}", watching.log());

    etcd.kill();
    std::thread::sleep(Duration::from_secs(1));
    etcd.start_again();
    etcd.etcdctl(&["put", "/app/version", "4"]).assert_ok();
    watching.until(&dest, "4\n", Duration::from_secs(20));

    // Many revisions, then a compaction past all of them, while watching.
    for n in 5..=50 {
        etcd.etcdctl(&["put", "/app/version", &n.to_string()]).assert_ok();
    }
    let status = etcd.etcdctl(&["endpoint", "status", "--write-out=json"]);
    let status: serde_json::Value = serde_json::from_str(&status.assert_ok().stdout).expect("json");
    let revision = status[0]["Status"]["header"]["revision"].as_i64().expect("revision");
    etcd.etcdctl(&["compact", &revision.to_string()]).assert_ok();
    etcd.etcdctl(&["put", "/app/version", "final"]).assert_ok();
    watching.until(&dest, "final\n", Duration::from_secs(20));
}

#[test]
fn the_embedded_store_and_the_environment_are_backends_too() {
    let data = tempfile::tempdir().expect("data dir");
    let confd = Confd::new();
    let dest =
        confd.resource("env", "prefix = \"/naptest\"\nkeys = [\"/greeting\"]\n", "{{ getv(key=\"/greeting\") }}");
    let run: Run = confd
        .command("embedded")
        .arg("--onetime")
        .arg("--env")
        .env("NAPTEST_GREETING", "hello from the environment")
        .output()
        .expect("nap watch")
        .into();
    run.assert_ok();
    assert_eq!(std::fs::read_to_string(&dest).expect("dest"), "hello from the environment");

    // The embedded store: nap's own state, e.g. an app's record.
    let nap = |args: &[&str]| -> Run {
        Command::new(nap_bin()).arg("--data-dir").arg(data.path()).args(args).output().expect("nap").into()
    };
    nap(&["apps", "create", "embedded-app"]).assert_ok();
    let confd = Confd::new();
    let apps = confd.resource("apps", "prefix = \"/nap/apps\"\n", "{{ ls(key=\"/\") | join(sep=\",\") }}");
    let run = nap(&["watch", "--confdir", &confd.confdir().display().to_string(), "--onetime"]);
    run.assert_ok();
    assert_eq!(std::fs::read_to_string(apps).expect("apps"), "embedded-app");
}

#[test]
fn interval_polls_instead_of_watching() {
    let (prefix, _cleanup) = Cleanup::etcd_root("interval");
    let confd = Confd::new();
    let dest = confd.resource("poll", &format!("prefix = \"{prefix}\"\n"), "{{ getv(key=\"/v\", default=\"none\") }}");
    let watching = confd.watch(&shared_store(), &["--interval", "1"]);
    watching.until(&dest, "none", Duration::from_secs(10));
    put(&prefix, &[("/v", "polled")]);
    watching.until(&dest, "polled", Duration::from_secs(10));
    assert!(!watching.log().contains("watching"), "it watched: {}", watching.log());
}
