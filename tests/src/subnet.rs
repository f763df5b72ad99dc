//! A /24 of its own for each test that puts links on this host. Two tests
//! running at once that picked one subnet at random would both route it,
//! and this host would reach only one of them (the other's instances would
//! "not answer"). So the subnet is claimed with the link that carries it:
//! the link's name holds the subnet's octet, and the kernel refuses a second
//! link of one name. A link a crashed test left keeps its subnet taken, as
//! its route does. [`ip`] is how every harness runs `ip`.

use std::process::Command;

use crate::Run;

/// `ip ARGS`, which must succeed.
#[track_caller]
pub(crate) fn ip(args: &[&str]) -> Run {
    let run = run_ip(args);
    run.assert_ok();
    run
}

fn run_ip(args: &[&str]) -> Run {
    Command::new("ip").args(args).output().expect("run ip").into()
}

/// The octet N of a free `PREFIX.N.0/24`, with the link made: `ip link add`
/// runs with the words `link(N)` gives (the link's name first, made from N)
/// for N from a random start until a name is new.
pub(crate) fn claim(link: impl Fn(u8) -> Vec<String>) -> u8 {
    let start = u16::from(rand::random::<u8>());
    for step in 0..250u16 {
        let octet = u8::try_from((start + step) % 250 + 1).expect("below 251");
        let words = link(octet);
        let mut args = vec!["link", "add"];
        args.extend(words.iter().map(String::as_str));
        let run = run_ip(&args);
        if run.ok() {
            return octet;
        }
        assert!(run.stderr.contains("File exists"), "ip link add {}: {}", words.join(" "), run.stderr);
    }
    panic!("every subnet has a link on this host: delete the test links `ip link` lists");
}
