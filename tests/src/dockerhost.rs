//! A second Docker host on this machine: a real `dockerd` with its own
//! data-root, exec-root and socket, in a network namespace of its own (so
//! its networks and container IPs are its own, as another machine's would
//! be). It shares the registry (reached at the same 127.0.0.1:5000 inside
//! its namespace, through a forwarder) and etcd (through nap, which talks to
//! it over its socket).

use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::{Child, Command};

use tempfile::TempDir;

use crate::Run;
use crate::subnet::ip;

pub struct DockerHost {
    dir: TempDir,
    /// The network namespace's name (`ip netns`).
    pub netns: String,
    veth: String,
    dockerd: Option<Child>,
}

impl DockerHost {
    pub fn start() -> DockerHost {
        let id = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
        let subnet = crate::subnet::claim(|octet| {
            [&format!("nh{octet}a"), "type", "veth", "peer", "name", &format!("nh{octet}b")].map(str::to_owned).to_vec()
        });
        let (netns, veth, peer) = (format!("nap-host-{id}"), format!("nh{subnet}a"), format!("nh{subnet}b"));
        let (outer, inner) = (format!("10.232.{subnet}.1"), format!("10.232.{subnet}.2"));
        ip(&["netns", "add", &netns]);
        let dir = tempfile::Builder::new().prefix("nap-host").tempdir().expect("temp dir");
        let mut host = DockerHost { dir, netns: netns.clone(), veth: veth.clone(), dockerd: None };
        ip(&["link", "set", &peer, "netns", &netns]);
        ip(&["addr", "add", &format!("{outer}/30"), "dev", &veth]);
        ip(&["link", "set", &veth, "up"]);
        for args in [
            vec!["addr", "add", &format!("{inner}/30"), "dev", &peer],
            vec!["link", "set", &peer, "up"],
            vec!["link", "set", "lo", "up"],
            vec!["route", "add", "default", "via", &outer],
        ] {
            ip(&[&["netns", "exec", &netns, "ip"][..], &args[..]].concat());
        }
        forward_into_netns(&netns, 5000, "127.0.0.1:5000");

        host.dockerd = Some(crate::dockerd::start_in_netns(&netns, host.dir.path(), &[]));
        host
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("docker.sock")
    }

    /// `DOCKER_HOST` for a nap (or a docker CLI) that works on this host.
    pub fn docker_host(&self) -> String {
        crate::dockerd::docker_host(self.dir.path())
    }

    /// `docker ARGS` against this host.
    pub fn docker(&self, args: &[&str]) -> Run {
        crate::dockerd::docker_at(self.dir.path(), args)
    }

    /// `COMMAND` run inside this host's network namespace.
    pub fn exec(&self, command: &[&str]) -> Run {
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.netns))
            .args(command)
            .output()
            .expect("nsenter")
            .into()
    }
}

impl Drop for DockerHost {
    fn drop(&mut self) {
        let running = self.docker(&["ps", "-aq"]);
        for id in running.stdout.split_whitespace() {
            self.docker(&["rm", "-f", id]);
        }
        if let Some(dockerd) = self.dockerd.take() {
            crate::dockerd::terminate(dockerd);
        }
        let _ = Command::new("ip").args(["link", "del", &self.veth]).output();
        let _ = Command::new("ip").args(["netns", "del", &self.netns]).output();
        // Overlay mounts may outlive dockerd for a moment; what stays is in /tmp.
        let _ = Command::new("umount").arg("-R").arg(self.dir.path().join("data")).output();
    }
}

/// Listens on 127.0.0.1:`port` inside `netns` and forwards each connection
/// to `target` in this process's namespace: the registry's address is then
/// the same on both hosts, as the images' names say.
pub(crate) fn forward_into_netns(netns: &str, port: u16, target: &str) {
    let target = target.to_owned();
    let path = format!("/run/netns/{netns}");
    // setns changes only the calling thread's namespace, and a socket stays
    // in the namespace it was made in: bind on a thread that moves, then
    // serve from threads that did not.
    let listener = std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open the netns");
        nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        TcpListener::bind(("127.0.0.1", port)).expect("listen in the netns")
    })
    .join()
    .expect("bind thread");
    std::thread::spawn(move || {
        for inbound in listener.incoming().map_while(Result::ok) {
            let Ok(outbound) = TcpStream::connect(&target) else { continue };
            let (Ok(mut inbound_read), Ok(mut outbound_read)) = (inbound.try_clone(), outbound.try_clone()) else {
                continue;
            };
            let (mut inbound_write, mut outbound_write) = (inbound, outbound);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut inbound_read, &mut outbound_write);
                let _ = outbound_write.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut outbound_read, &mut inbound_write);
                let _ = inbound_write.shutdown(std::net::Shutdown::Write);
            });
        }
    });
}
