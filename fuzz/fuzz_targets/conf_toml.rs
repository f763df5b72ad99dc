//! A conf.d TOML file and its template, as `nap watch` loads them.
#![no_main]

use nap_hooks::resource::Resource;

libfuzzer_sys::fuzz_target!(|input: (&str, &str)| {
    let (conf, template) = input;
    if let Err(err) = Resource::from_texts("fuzz", conf, template) {
        assert!(!err.to_string().contains('\n'), "{err}");
    }
});
