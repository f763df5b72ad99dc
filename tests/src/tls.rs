//! HTTPS for the router's tests: certificates made by the real `openssl`,
//! requests made by the real `curl`, and Let's Encrypt's own test ACME
//! server, `pebble`, with `pebble-challtestsrv` as its DNS (every name is
//! 127.0.0.1), on loopback ports of their own.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::{Run, free_port};

/// A self-signed certificate for `names` (the first is its subject), with
/// its key, as PEM files in `dir`; answers (certificate, key).
pub fn self_signed(dir: &Path, label: &str, names: &[&str]) -> (PathBuf, PathBuf) {
    make_self_signed(dir, label, names, &[])
}

/// [`self_signed`], marked as no CA: clients that verify as browsers do
/// (rustls, webpki) take it as a server's own certificate.
pub fn self_signed_leaf(dir: &Path, label: &str, names: &[&str]) -> (PathBuf, PathBuf) {
    make_self_signed(dir, label, names, &["-addext", "basicConstraints=critical,CA:FALSE"])
}

fn make_self_signed(dir: &Path, label: &str, names: &[&str], extra: &[&str]) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join(format!("{label}.crt")), dir.join(format!("{label}.key")));
    let san: Vec<String> = names.iter().map(|name| format!("DNS:{name}")).collect();
    let run: Run = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "30"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .args(["-subj", &format!("/CN={}", names[0]), "-addext", &format!("subjectAltName={}", san.join(","))])
        .args(extra)
        .output()
        .expect("run openssl")
        .into();
    run.assert_ok();
    (cert, key)
}

/// The certificate and key as one PEM text, as `certs add` reads it.
pub fn pem_bundle(cert: &Path, key: &Path) -> String {
    let read = |path: &Path| std::fs::read_to_string(path).expect("read PEM");
    format!("{}{}", read(cert), read(key))
}

/// `curl` over HTTPS to `host` at the router's `addr` (`127.0.0.1:PORT`),
/// trusting only `ca`; `extra` are more curl arguments. Answers curl's run:
/// stdout is the body, then `\n` and the HTTP version and status.
pub fn curl_https(addr: &str, host: &str, path: &str, ca: &Path, extra: &[&str]) -> Run {
    let port = addr.rsplit_once(':').map(|(_, port)| port).expect("a port");
    Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "10", "--resolve", &format!("{host}:{port}:127.0.0.1")])
        .arg("--cacert")
        .arg(ca)
        .args(["--write-out", "\n%{http_version} %{http_code}"])
        .args(extra)
        .arg(format!("https://{host}:{port}{path}"))
        .output()
        .expect("run curl")
        .into()
}

/// Waits (up to 10 s) until [`curl_https`] to `host`'s `/` gets a body
/// that starts with `body`; answers curl's last run.
pub fn https_answers(addr: &str, host: &str, ca: &Path, body: &str, extra: &[&str]) -> Run {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let run = curl_https(addr, host, "/", ca, extra);
        if (run.ok() && run.stdout.starts_with(body)) || Instant::now() > deadline {
            return run;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// pebble and its DNS, until dropped. Validation is immediate
/// (`PEBBLE_VA_NOSLEEP`) and every nonce good (`PEBBLE_WFE_NONCEREJECT=0`).
pub struct Pebble {
    dir: TempDir,
    children: Vec<Child>,
    /// The ACME directory's URL.
    pub directory: String,
    /// The CA file that verifies pebble's own HTTPS.
    pub directory_ca: PathBuf,
    /// pebble's management address (its issuing roots, `/roots/0`).
    management: String,
    /// challtestsrv's management address (the DNS records it answers).
    dns_management: String,
}

impl Pebble {
    /// Starts pebble, checking HTTP-01 challenges on `http_port` (where the
    /// router listens).
    pub fn start(http_port: u16) -> Pebble {
        let dir = tempfile::tempdir().expect("temp dir");
        // pebble's own HTTPS: a CA of the test's, and a certificate it
        // signed for localhost and 127.0.0.1.
        let (cert, key) = (dir.path().join("pebble.crt"), dir.path().join("pebble.key"));
        let (ca_cert, _) = self_signed(dir.path(), "ca", &["nap-test-ca"]);
        let openssl = |args: &[&str]| {
            let run: Run = Command::new("openssl").current_dir(dir.path()).args(args).output().expect("openssl").into();
            run.assert_ok();
        };
        std::fs::write(
            dir.path().join("leaf.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .expect("write extensions");
        openssl(
            &["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=localhost"]
                .into_iter()
                .chain(["-keyout", "pebble.key", "-out", "pebble.csr"])
                .collect::<Vec<_>>(),
        );
        openssl(
            &["x509", "-req", "-in", "pebble.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial"]
                .into_iter()
                .chain(["-days", "30", "-extfile", "leaf.ext", "-out", "pebble.crt"])
                .collect::<Vec<_>>(),
        );
        let (listen, management, dns, dns_management) = (free_port(), free_port(), free_port(), free_port());
        let config = dir.path().join("pebble.json");
        let json = serde_json::json!({ "pebble": {
            "listenAddress": format!("127.0.0.1:{listen}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": cert, "privateKey": key,
            "httpPort": http_port, "tlsPort": free_port(),
            "ocspResponderURL": "", "externalAccountBindingRequired": false,
        }});
        std::fs::write(&config, json.to_string()).expect("write pebble config");
        let log = |name: &str| std::fs::File::create(dir.path().join(name)).expect("log file");
        let dns_server = Command::new("pebble-challtestsrv")
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-dns01", &format!("127.0.0.1:{dns}"), "-management", &format!("127.0.0.1:{dns_management}")])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .stdout(Stdio::from(log("challtestsrv.log")))
            .stderr(Stdio::from(log("challtestsrv.err")))
            .spawn()
            .expect("start pebble-challtestsrv (apt-get install pebble)");
        let pebble = Command::new("pebble")
            .arg("-config")
            .arg(&config)
            .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(Stdio::from(log("pebble.log")))
            .stderr(Stdio::from(log("pebble.err")))
            .spawn()
            .expect("start pebble (apt-get install pebble)");
        let pebble = Pebble {
            dir,
            children: vec![dns_server, pebble],
            directory: format!("https://127.0.0.1:{listen}/dir"),
            directory_ca: ca_cert,
            management: format!("127.0.0.1:{management}"),
            dns_management: format!("127.0.0.1:{dns_management}"),
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while !pebble.get_ok(&pebble.directory) {
            assert!(Instant::now() < deadline, "pebble did not start: {}", pebble.logs());
            std::thread::sleep(Duration::from_millis(100));
        }
        pebble
    }

    fn get_ok(&self, url: &str) -> bool {
        Command::new("curl")
            .args(["--silent", "--fail", "--max-time", "2", "--cacert"])
            .arg(&self.directory_ca)
            .arg(url)
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    }

    /// The root that signs what pebble issues, as a PEM file in `dir`.
    pub fn issuing_root(&self, dir: &Path) -> PathBuf {
        let path = dir.join("pebble-root.pem");
        let run: Run = Command::new("curl")
            .args(["--silent", "--fail", "--cacert"])
            .arg(&self.directory_ca)
            .arg(format!("https://{}/roots/0", self.management))
            .output()
            .expect("run curl")
            .into();
        run.assert_ok();
        std::fs::write(&path, run.stdout).expect("write root");
        path
    }

    /// Makes pebble-challtestsrv, pebble's DNS server, answer `host` with `ip`.
    pub fn resolve(&self, host: &str, ip: &str) {
        let body = serde_json::json!({ "host": format!("{host}."), "addresses": [ip] }).to_string();
        let run: Run = Command::new("curl")
            .args(["--silent", "--fail", "--data", &body])
            .arg(format!("http://{}/add-a", self.dns_management))
            .output()
            .expect("run curl")
            .into();
        run.assert_ok();
    }

    /// pebble's logs, for a failed assert.
    pub fn logs(&self) -> String {
        ["pebble.log", "pebble.err", "challtestsrv.err"]
            .iter()
            .map(|name| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Certificates for TLS with client certificates, made by the real
/// `openssl`: a CA, a server certificate for `ip` and a client certificate.
#[derive(Debug, Clone)]
pub struct MutualTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

/// A CA, a server certificate for `ip` and a client certificate, in `dir`.
pub fn mutual_tls(dir: &Path, ip: &str) -> MutualTls {
    let path = |name: &str| dir.join(name);
    let openssl = |args: &[&str]| {
        let run: Run = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl").into();
        run.assert_ok();
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=nap test CA"],
        ]
        .concat(),
    );
    for (name, usage) in [("server", "serverAuth"), ("client", "clientAuth")] {
        let (key, csr, pem, ext) =
            (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"), format!("{name}.ext"));
        std::fs::write(
            path(&ext),
            format!("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage={usage}\nsubjectAltName=IP:{ip}\n"),
        )
        .expect("write extensions");
        openssl(&[&["req"][..], &ec, &["-keyout", &key, "-out", &csr, "-subj", &format!("/CN={name}")]].concat());
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &ext,
        ]);
    }
    MutualTls {
        ca: path("ca.pem"),
        cert: path("client.pem"),
        key: path("client.key"),
        server_cert: path("server.pem"),
        server_key: path("server.key"),
    }
}
