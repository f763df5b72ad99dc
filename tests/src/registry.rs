//! A private registry (the real `docker-registry`) that wants a password.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::free_port;

pub struct AuthRegistry {
    dir: TempDir,
    pub address: String,
    child: Child,
}

impl AuthRegistry {
    pub fn start(user: &str, password: &str) -> AuthRegistry {
        let dir = tempfile::tempdir().expect("temp dir");
        let htpasswd = dir.path().join("htpasswd");
        let status = Command::new("htpasswd")
            .args(["-Bbc"])
            .arg(&htpasswd)
            .args([user, password])
            .stderr(Stdio::null())
            .status()
            .expect("htpasswd (apache2-utils)");
        assert!(status.success());
        let address = format!("127.0.0.1:{}", free_port());
        let config = format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {address}\n\
             auth:\n  htpasswd:\n    realm: nap-tests\n    path: {}\n",
            dir.path().join("data").display(),
            htpasswd.display()
        );
        std::fs::write(dir.path().join("config.yml"), config).expect("registry config");
        let child = serve(&dir, &address);
        AuthRegistry { dir, address, child }
    }

    /// Stops the registry (`kill -9`), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the killed registry again, on its data and address.
    pub fn start_again(&mut self) {
        self.kill();
        self.child = serve(&self.dir, &self.address);
    }
}

/// Runs `docker-registry serve` with the config in `dir`; waits until it listens.
fn serve(dir: &TempDir, address: &str) -> Child {
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(dir.path().join("config.yml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start docker-registry");
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(address).is_err() {
        assert!(Instant::now() < deadline, "the registry did not listen on {address}");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

impl Drop for AuthRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
