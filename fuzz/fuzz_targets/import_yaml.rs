//! The commiter flow's import YAML, as `import` reads it from a client.
#![no_main]

libfuzzer_sys::fuzz_target!(|text: &str| {
    if let Err(err) = nap::commands::check_import(text) {
        // Every refusal is one line.
        assert!(!err.to_string().contains('\n'), "{err}");
    }
});
