//! The SSH command line, as a client sends it: parsed without a shell into
//! a command or one error, and shown (values masked) for the log.
#![no_main]

libfuzzer_sys::fuzz_target!(|line: &str| {
    let _ = nap::remote::parse(line, "ssh://nap@host:2222");
    let shown = nap::remote::shown(line);
    // A value never reaches the log (`placement`'s constraints are no values).
    let placement = line.contains("placement");
    for word in line.split_whitespace() {
        if placement && (word.contains("==") || word.contains("!=")) {
            continue;
        }
        if let Some((key, value)) = word.split_once('=') {
            if value.len() > 3 && !key.contains(['\'', '"', '\\']) && !value.contains(['\'', '"', '\\', '=', '*']) {
                assert!(!shown.contains(&format!("{key}={value}")), "{line:?} shown as {shown:?}");
            }
        }
    }
});
