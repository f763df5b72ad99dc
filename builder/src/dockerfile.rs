//! The little nap needs to know about a Dockerfile before building it.

/// The TCP ports a Dockerfile `EXPOSE`s, in order of appearance.
/// Variables and ranges cannot be known before the build, so they are skipped.
pub(crate) fn exposed_ports(dockerfile: &str) -> Vec<u16> {
    let mut ports = Vec::new();
    for line in logical_lines(dockerfile) {
        let mut words = line.split_whitespace();
        let Some(instruction) = words.next() else { continue };
        if !instruction.eq_ignore_ascii_case("EXPOSE") {
            continue;
        }
        for word in words {
            let (port, proto) = word.split_once('/').unwrap_or((word, "tcp"));
            if proto.eq_ignore_ascii_case("tcp")
                && let Ok(port) = port.parse::<u16>()
                && !ports.contains(&port)
            {
                ports.push(port);
            }
        }
    }
    ports
}

/// Joins backslash-continued lines and drops comments.
fn logical_lines(text: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for raw in text.lines() {
        let trimmed = raw.trim();
        if current.is_empty() && trimmed.starts_with('#') {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
        } else {
            current.push_str(trimmed);
            lines.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        lines.push(current);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::exposed_ports;

    #[test]
    fn finds_tcp_ports_across_continuations_and_skips_the_rest() {
        let text = "FROM x\n# EXPOSE 1\nexpose 8080/tcp \\\n  9090\nEXPOSE 53/udp $PORT 7000-7001\n";
        assert_eq!(exposed_ports(text), vec![8080, 9090]);
        assert_eq!(exposed_ports("FROM x\nCMD y\n"), Vec::<u16>::new());
    }
}
