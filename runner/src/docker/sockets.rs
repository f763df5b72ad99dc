//! The TCP ports a container listens on, read from the host's view of its
//! network namespace (`/proc/PID/net/tcp` and `tcp6` of its main process):
//! no tool has to be in the image. Shown when a release does not answer
//! on `PORT`, because an app listening on a port of its own is the most
//! common reason.

/// A listening socket: its port, and whether only the container itself
/// can reach it (bound to a loopback address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Listener {
    pub port: u16,
    pub loopback: bool,
}

/// The listening sockets in the text of a `/proc/net/tcp` or `tcp6` file,
/// but Docker's own DNS resolver (127.0.0.11, in every container on a
/// user-defined network).
pub(crate) fn listening(table: &str) -> Vec<Listener> {
    /// `st` of a socket in state LISTEN.
    const LISTEN: &str = "0A";
    /// 127.0.0.11 as the kernel prints it (little-endian hex).
    const DOCKER_DNS: &str = "0B00007F";
    /// ::1.
    const LOOPBACK6: &str = "00000000000000000000000001000000";
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_ascii_whitespace();
            let local = fields.nth(1)?;
            let state = fields.nth(1)?;
            let (address, port) = local.rsplit_once(':')?;
            if state != LISTEN || address == DOCKER_DNS {
                return None;
            }
            let loopback = (address.len() == 8 && address.ends_with("7F")) || address == LOOPBACK6;
            Some(Listener { port: u16::from_str_radix(port, 16).ok()?, loopback })
        })
        .collect()
}

/// Where process `pid` (in its network namespace) listens, sorted; `None`
/// where the host's `/proc` does not show it.
pub(crate) fn listening_ports_of(pid: i64) -> Option<Vec<Listener>> {
    let mut ports = Vec::new();
    let mut read_any = false;
    for table in ["tcp", "tcp6"] {
        if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) {
            read_any = true;
            ports.extend(listening(&text));
        }
    }
    ports.sort_unstable();
    ports.dedup();
    read_any.then_some(ports)
}

/// What to add to "did not answer HTTP on port PORT": where the app
/// listens instead, when that is known and is not `port` on an address
/// nap can reach.
pub fn hint(port: u16, listening: Option<&[Listener]>) -> String {
    let Some(listening) = listening else { return String::new() };
    if listening.iter().any(|l| l.port == port && !l.loopback) {
        return String::new();
    }
    if listening.iter().any(|l| l.port == port) {
        return format!("; it listens on port {port} on 127.0.0.1 only: listen on 0.0.0.0 (all addresses)");
    }
    if listening.is_empty() {
        return format!("; it listens on no TCP port: it must listen on PORT={port}");
    }
    let mut ports: Vec<String> = listening.iter().map(|l| l.port.to_string()).collect();
    ports.dedup();
    format!("; it listens on {}, not on PORT={port}: read PORT from the environment", ports.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1234 1 0000000000000000 100 0 0 10 0
   1: 0100007F:0CEA 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1235 1 0000000000000000 100 0 0 10 0
   2: 0B00007F:96FD 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1237 1 0000000000000000 100 0 0 10 0
   3: 0A00000B:1F90 0A000001:D431 01 00000000:00000000 00:00000000 00000000     0        0 1236 1 0000000000000000 20 4 30 10 -1
";

    fn on(port: u16) -> Listener {
        Listener { port, loopback: false }
    }

    #[test]
    fn only_listening_sockets_count_and_not_dockers_dns() {
        assert_eq!(listening(TCP), [on(8080), Listener { port: 3306, loopback: true }]);
        assert_eq!(listening("  sl  local_address rem_address   st\n"), []);
        assert_eq!(listening("garbage\nmore garbage here\n"), []);
    }

    #[test]
    fn the_hint_says_where_the_app_listens_instead() {
        let hinted = |listening: &[Listener]| hint(5000, Some(listening));
        assert_eq!(hinted(&[on(8080)]), "; it listens on 8080, not on PORT=5000: read PORT from the environment");
        assert_eq!(hinted(&[]), "; it listens on no TCP port: it must listen on PORT=5000");
        assert_eq!(
            hinted(&[Listener { port: 5000, loopback: true }]),
            "; it listens on port 5000 on 127.0.0.1 only: listen on 0.0.0.0 (all addresses)"
        );
        assert_eq!(hinted(&[on(5000), on(9000)]), "");
        assert_eq!(hint(5000, None), "");
    }
}
