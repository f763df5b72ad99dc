//! A real OpenSSH `sshd` on a loopback port, for the forced-command mode.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::free_port;

pub struct Sshd {
    dir: TempDir,
    pub port: u16,
    child: Child,
}

impl Sshd {
    /// Starts sshd with `authorized_keys` as root's only keys.
    pub fn start(authorized_keys: &str) -> Sshd {
        Sshd::start_with(authorized_keys, "")
    }

    /// Likewise, with more `sshd_config` lines.
    pub fn start_with(authorized_keys: &str, extra_config: &str) -> Sshd {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = |name: &str| dir.path().join(name);
        let status = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(path("host_key"))
            .status()
            .expect("ssh-keygen");
        assert!(status.success());
        std::fs::write(path("authorized_keys"), authorized_keys).expect("authorized_keys");
        let port = free_port();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\nStrictModes no\nPidFile {}\n\
             UsePAM no\nPermitRootLogin forced-commands-only\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             {extra_config}",
            path("host_key").display(),
            path("authorized_keys").display(),
            path("sshd.pid").display(),
        );
        std::fs::write(path("sshd_config"), config).expect("sshd_config");
        std::fs::create_dir_all("/run/sshd").expect("/run/sshd");
        let log = std::fs::File::create(path("sshd.log")).expect("sshd log");
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(path("sshd_config"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start sshd");
        let sshd = Sshd { dir, port, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "sshd did not listen:\n{}", sshd.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        sshd
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("sshd.log")
    }

    pub fn remote(&self, app: &str) -> String {
        format!("ssh://root@127.0.0.1:{}/{app}", self.port)
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
