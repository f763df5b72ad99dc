//! A private, real `etcd` on free loopback ports, for tests that stop it.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::free_port;

pub struct PrivateEtcd {
    _dir: TempDir,
    pub client_port: u16,
    child: Option<Child>,
}

impl PrivateEtcd {
    pub fn start() -> PrivateEtcd {
        let dir = tempfile::tempdir().expect("temp dir");
        let (client_port, peer_port) = (free_port(), free_port());
        let client = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let child = Command::new("etcd")
            .args(["--name", "private", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("private={peer}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", client_port)).is_err() {
            assert!(Instant::now() < deadline, "etcd did not listen on {client_port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        PrivateEtcd { _dir: dir, client_port, child: Some(child) }
    }

    pub fn url(&self) -> String {
        format!("etcd://127.0.0.1:{}", self.client_port)
    }

    /// Turns on authentication with a `root` user of `password`.
    pub fn enable_auth(&self, password: &str) {
        let endpoint = format!("127.0.0.1:{}", self.client_port);
        for args in [vec!["user", "add", &format!("root:{password}")], vec!["auth", "enable"]] {
            let run: crate::Run = Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .args(["--endpoints", &endpoint])
                .args(&args)
                .output()
                .expect("etcdctl")
                .into();
            run.assert_ok();
        }
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
