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
}

impl PrivateEtcd {
    pub fn start() -> PrivateEtcd {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut etcd = PrivateEtcd { dir, client_port: free_port(), peer_port: free_port(), child: None };
        etcd.start_again();
        etcd
    }

    /// Starts the killed etcd again, on its data and ports.
    pub fn start_again(&mut self) {
        self.kill();
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new("etcd")
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
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &format!("127.0.0.1:{}", self.client_port)])
            .args(args)
            .output()
            .expect("etcdctl")
            .into()
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
