//! A real Docker Swarm of three nodes on this machine: three `dockerd`s,
//! each in a network namespace of its own (so each has its own addresses,
//! bridges and iptables, as another machine would), joined by one Linux
//! bridge in this namespace. The first node is the manager, the others
//! workers. Every node reaches the test registry at 127.0.0.1:5000 (a
//! forwarder in its namespace), as the images' names say, and loopback
//! registries need no `--insecure-registry`. The host reaches every node's
//! address on the bridge, which is how nap's router reaches the tasks'
//! host-mode ports.
//!
//! This host's FORWARD policy is DROP with bridge netfilter on, so frames
//! between the nodes need a FORWARD accept rule for the bridge: it is added
//! first and removed when the swarm drops. The overlay network needs the
//! kernel's `vxlan` module (`scripts/services.sh` checks it).

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::Run;
use crate::dockerhost::forward_into_netns;
use crate::subnet::ip;

/// One node: a dockerd in namespace `netns`, at `address` on the bridge.
pub struct SwarmNode {
    dir: TempDir,
    pub netns: String,
    veth: String,
    pub address: String,
    /// Its swarm node ID, once it joined.
    pub id: String,
    cgroup: String,
    /// With TLS: the directory of `ca.pem`, `server-cert.pem` and
    /// `server-key.pem`; the node then also listens on `ADDRESS:2376`.
    tls: Option<PathBuf>,
    dockerd: Option<Child>,
}

pub struct Swarm {
    bridge: String,
    pub nodes: Vec<SwarmNode>,
}

fn iptables(op: &str, bridge: &str) -> Run {
    Command::new("iptables")
        .args([op, "FORWARD"])
        .args(if op == "-I" { &["1"][..] } else { &[][..] })
        .args(["-i", bridge, "-o", bridge, "-j", "ACCEPT"])
        .output()
        .expect("run iptables")
        .into()
}

impl Swarm {
    /// Three nodes, in one swarm, each answering; the first is the manager.
    pub fn start() -> Swarm {
        Self::start_with(3)
    }

    pub fn start_with(count: usize) -> Swarm {
        Self::start_nodes(count, false)
    }

    /// Three nodes, the manager also listening with TLS (`tcp://ADDRESS:2376`,
    /// client certificates required); [`Swarm::client_certs`] is what a
    /// client needs.
    pub fn start_tls() -> Swarm {
        Self::start_nodes(3, true)
    }

    fn start_nodes(count: usize, tls: bool) -> Swarm {
        let id = rand::random::<u32>() & 0xff_ffff;
        let octet = crate::subnet::claim(|octet| vec![format!("nsw{octet}"), "type".into(), "bridge".into()]);
        let (bridge, subnet) = (format!("nsw{octet}"), format!("10.233.{octet}"));
        let mut swarm = Swarm { bridge: bridge.clone(), nodes: Vec::new() };
        ip(&["addr", "add", &format!("{subnet}.1/24"), "dev", &bridge]);
        ip(&["link", "set", &bridge, "up"]);
        iptables("-I", &bridge).assert_ok();
        for n in 1..=count {
            let address = format!("{subnet}.{}", n + 1);
            swarm.nodes.push(SwarmNode::start(&bridge, &format!("{id:06x}{n}"), &address, tls && n == 1));
        }
        let manager = &swarm.nodes[0];
        let init = manager.docker(&[
            "swarm",
            "init",
            "--advertise-addr",
            &manager.address,
            "--listen-addr",
            &format!("{}:2377", manager.address),
        ]);
        init.assert_ok();
        let token = manager.docker(&["swarm", "join-token", "-q", "worker"]);
        token.assert_ok();
        let (token, join) = (token.stdout.trim().to_owned(), format!("{}:2377", manager.address));
        for node in &swarm.nodes[1..] {
            node.docker(&["swarm", "join", "--token", &token, "--advertise-addr", &node.address, &join]).assert_ok();
        }
        for node in &mut swarm.nodes {
            let info = node.docker(&["info", "--format", "{{.Swarm.NodeID}}"]);
            info.assert_ok();
            info.stdout.trim().clone_into(&mut node.id);
        }
        // Every node is Ready before a test schedules on it.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = swarm.manager().docker(&["node", "ls", "--format", "{{.Status}}"]);
            if ready.stdout.lines().filter(|status| *status == "Ready").count() == count {
                break;
            }
            assert!(Instant::now() < deadline, "the swarm's nodes are not ready:\n{}", ready.stdout);
            std::thread::sleep(Duration::from_millis(200));
        }
        swarm
    }

    pub fn manager(&self) -> &SwarmNode {
        &self.nodes[0]
    }

    /// The manager's TLS address, `tcp://ADDRESS:2376`, and the directory
    /// with `ca.pem`, `cert.pem` and `key.pem` a client presents (as
    /// `DOCKER_CERT_PATH`); `None` without TLS.
    pub fn client_certs(&self) -> Option<(String, PathBuf)> {
        let manager = self.manager();
        let dir = manager.tls.clone()?;
        Some((format!("tcp://{}:2376", manager.address), dir.join("client")))
    }

    /// `swarm_host` for nap: the manager's socket.
    pub fn manager_host(&self) -> String {
        self.manager().docker_host()
    }

    /// The node whose swarm ID is `id`.
    pub fn node(&self, id: &str) -> Option<&SwarmNode> {
        self.nodes.iter().find(|node| node.id == id)
    }

    /// Makes 127.0.0.1:`port` inside every node reach 127.0.0.1:`port`
    /// here (a registry of a test's own).
    pub fn forward(&self, port: u16) {
        for node in &self.nodes {
            forward_into_netns(&node.netns, port, &format!("127.0.0.1:{port}"));
        }
    }

    /// `docker ARGS` against the manager.
    pub fn docker(&self, args: &[&str]) -> Run {
        self.manager().docker(args)
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        // Services first, while the manager answers: their tasks go with them.
        let services = self.docker(&["service", "ls", "-q"]);
        for service in services.stdout.split_whitespace() {
            self.docker(&["service", "rm", service]);
        }
        for node in self.nodes.iter_mut().rev() {
            node.stop();
            node.remove();
        }
        let _ = iptables("-D", &self.bridge);
        let _ = Command::new("ip").args(["link", "del", &self.bridge]).output();
    }
}

impl SwarmNode {
    fn start(bridge: &str, id: &str, address: &str, tls: bool) -> SwarmNode {
        let (netns, veth, peer) = (format!("nap-swarm-{id}"), format!("nsv{id}a"), format!("nsv{id}b"));
        ip(&["netns", "add", &netns]);
        // containerd's socket lives under the exec-root: keep the path short.
        let dir = tempfile::Builder::new().prefix("nsw").tempdir_in("/tmp").expect("temp dir");
        let gateway = address.rsplit_once('.').map(|(subnet, _)| format!("{subnet}.1")).expect("an IPv4 address");
        let mut node = SwarmNode {
            dir,
            netns: netns.clone(),
            veth: veth.clone(),
            address: address.to_owned(),
            id: String::new(),
            cgroup: format!("/nap-swarm-{id}"),
            tls: None,
            dockerd: None,
        };
        if tls {
            node.tls = Some(make_certs(node.dir.path(), address));
        }
        ip(&["link", "add", &veth, "type", "veth", "peer", "name", &peer]);
        ip(&["link", "set", &peer, "netns", &netns]);
        ip(&["link", "set", &veth, "master", bridge]);
        ip(&["link", "set", &veth, "up"]);
        for args in [
            vec!["addr", "add", &format!("{address}/24"), "dev", &peer],
            vec!["link", "set", &peer, "up"],
            vec!["link", "set", "lo", "up"],
            vec!["route", "add", "default", "via", &gateway],
        ] {
            ip(&[&["netns", "exec", &netns, "ip"][..], &args[..]].concat());
        }
        forward_into_netns(&netns, 5000, "127.0.0.1:5000");
        node.start_again();
        node
    }

    /// Starts this node's dockerd (again, after [`SwarmNode::stop`]) and
    /// waits until it answers.
    pub fn start_again(&mut self) {
        let mut extra = vec![format!("--cgroup-parent={}", self.cgroup)];
        if let Some(dir) = &self.tls {
            extra.extend([
                format!("--host=tcp://{}:2376", self.address),
                "--tlsverify".to_owned(),
                format!("--tlscacert={}", dir.join("ca.pem").display()),
                format!("--tlscert={}", dir.join("server-cert.pem").display()),
                format!("--tlskey={}", dir.join("server-key.pem").display()),
            ]);
        }
        self.dockerd = Some(crate::dockerd::start_in_netns(&self.netns, self.dir.path(), &extra));
    }

    /// Stops this node's dockerd (its containers stop with it), as a node
    /// that goes down.
    pub fn stop(&mut self) {
        if let Some(dockerd) = self.dockerd.take() {
            crate::dockerd::terminate(dockerd);
        }
    }

    /// `DOCKER_HOST` for this node.
    pub fn docker_host(&self) -> String {
        crate::dockerd::docker_host(self.dir.path())
    }

    /// `docker ARGS` against this node.
    pub fn docker(&self, args: &[&str]) -> Run {
        crate::dockerd::docker_at(self.dir.path(), args)
    }

    fn remove(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.veth]).output();
        let _ = Command::new("ip").args(["netns", "del", &self.netns]).output();
        let _ = Command::new("umount").arg("-R").arg(self.dir.path().join("data")).output();
        let _ = Command::new("umount").arg("-R").arg(self.dir.path().join("exec")).output();
        let _ = Command::new("rmdir").arg(format!("/sys/fs/cgroup{}", self.cgroup)).output();
    }
}

/// A CA, a server certificate for `address` and a client certificate, in
/// `DIR/tls`, the client's also as `client/` holds them for a Docker client
/// (`ca.pem`, `cert.pem`, `key.pem`); answers `DIR/tls`.
fn make_certs(dir: &std::path::Path, address: &str) -> PathBuf {
    let tls = dir.join("tls");
    std::fs::create_dir_all(tls.join("client")).expect("tls dir");
    let certs = crate::tls::mutual_tls(&tls, address);
    for (from, to) in [(&certs.ca, "ca.pem"), (&certs.cert, "cert.pem"), (&certs.key, "key.pem")] {
        std::fs::copy(from, tls.join("client").join(to)).expect("copy a certificate");
    }
    std::fs::copy(&certs.server_cert, tls.join("server-cert.pem")).expect("copy the server's certificate");
    std::fs::copy(&certs.server_key, tls.join("server-key.pem")).expect("copy the server's key");
    tls
}
