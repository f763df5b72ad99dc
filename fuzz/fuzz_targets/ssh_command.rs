//! The SSH command line, as a client sends it: parsed without a shell into
//! a command or one error, and shown (values masked) for the log.
#![no_main]

libfuzzer_sys::fuzz_target!(|line: &str| {
    let _ = nap::remote::parse(line, "ssh://nap@host:2222");
    let shown = nap::remote::shown(line);
    // The log shows the command word for word, each `KEY=VALUE` as
    // `KEY=***`, and each word after the first of those as `***`. Only `placement`'s constraints (`node.role==worker`) are no
    // values, and show whole.
    let Some(words) = shlex::split(line) else {
        assert_eq!(shown, "(a malformed command)");
        return;
    };
    if shown == "(a command)" {
        // A NUL cannot be shell-quoted; only then is the line left out.
        assert!(words.iter().any(|word| word.contains('\0')), "{line:?}");
        return;
    }
    let shown_words = shlex::split(&shown).unwrap_or_else(|| panic!("{line:?} shown unquotable: {shown:?}"));
    assert_eq!(words.len(), shown_words.len(), "{line:?} shown as {shown:?}");
    let placement = words.first().is_some_and(|verb| verb == "placement");
    // After the first value, every word may be the rest of a value split
    // at an unquoted space: none shows.
    let mut values = false;
    for (word, shown_word) in words.iter().zip(&shown_words) {
        let constraint = placement && (word.contains("==") || word.contains("!="));
        match word.split_once('=') {
            Some((key, _)) if !constraint => {
                values = true;
                assert_eq!(shown_word, &format!("{key}=***"), "{line:?}");
            }
            Some(_) => assert_eq!(shown_word, word, "{line:?}"),
            None if values => assert_eq!(shown_word, "***", "{line:?}"),
            None => assert_eq!(shown_word, word, "{line:?}"),
        }
    }
});
