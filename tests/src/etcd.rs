//! A private, real `etcd` on free loopback ports, for tests that stop it.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::free_port;

pub struct PrivateEtcd {
    dir: TempDir,
    pub client_port: u16,
    peer_port: u16,
    child: Option<Child>,
    tls: Option<EtcdTls>,
}

/// The PEM files of an etcd that wants TLS: a CA, and a client certificate
/// and key signed by it.
/// etcd's certificates: a CA, the server's for 127.0.0.1 and a client's.
pub type EtcdTls = crate::tls::MutualTls;

impl PrivateEtcd {
    pub fn start() -> PrivateEtcd {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut etcd = PrivateEtcd { dir, client_port: free_port(), peer_port: free_port(), child: None, tls: None };
        etcd.start_again();
        etcd
    }

    /// An etcd that takes only TLS clients with a certificate of its CA
    /// (made here with the `openssl` CLI).
    pub fn start_tls() -> PrivateEtcd {
        let dir = tempfile::tempdir().expect("temp dir");
        let tls = crate::tls::mutual_tls(dir.path(), "127.0.0.1");
        let mut etcd =
            PrivateEtcd { dir, client_port: free_port(), peer_port: free_port(), child: None, tls: Some(tls) };
        etcd.start_again();
        etcd
    }

    pub fn tls(&self) -> Option<&EtcdTls> {
        self.tls.as_ref()
    }

    /// Starts the killed etcd again, on its data and ports.
    pub fn start_again(&mut self) {
        self.kill();
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut command = Command::new("etcd");
        if let Some(tls) = &self.tls {
            command
                .arg(format!("--cert-file={}", tls.server_cert.display()))
                .arg(format!("--key-file={}", tls.server_key.display()))
                .arg(format!("--trusted-ca-file={}", tls.ca.display()))
                .arg("--client-cert-auth");
        }
        let child = command
            .args(["--name", "private", "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("private={peer}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.client_port)).is_err() {
            assert!(Instant::now() < deadline, "etcd did not listen on {}", self.client_port);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs the real `etcdctl` (v3 API) against this etcd.
    pub fn etcdctl(&self, args: &[&str]) -> crate::Run {
        let mut command = Command::new("etcdctl");
        command.env("ETCDCTL_API", "3").args(["--endpoints", &format!("127.0.0.1:{}", self.client_port)]);
        if let Some(tls) = &self.tls {
            command
                .arg(format!("--cacert={}", tls.ca.display()))
                .arg(format!("--cert={}", tls.cert.display()))
                .arg(format!("--key={}", tls.key.display()));
        }
        command.args(args).output().expect("etcdctl").into()
    }

    pub fn url(&self) -> String {
        format!("etcd://127.0.0.1:{}", self.client_port)
    }

    /// Turns on authentication with a `root` user of `password`.
    pub fn enable_auth(&self, password: &str) {
        self.etcdctl(&["user", "add", &format!("root:{password}")]).assert_ok();
        self.etcdctl(&["auth", "enable"]).assert_ok();
    }

    /// kill -9: the cluster is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateEtcd {
    fn drop(&mut self) {
        self.kill();
    }
}
