//! The ref updates git hands the pre-receive hook on its standard input.
#![no_main]

libfuzzer_sys::fuzz_target!(|text: &str| {
    if let Ok(updates) = nap::hook::git::parse_ref_updates(text) {
        for update in updates {
            let _ = (update.branch(), update.is_delete(), update.deploys());
        }
    }
});
