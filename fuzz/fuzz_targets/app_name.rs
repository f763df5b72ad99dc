//! App names and the repo paths git asks for: what is accepted is a name
//! that parses again to itself and names a path inside the repos directory.
#![no_main]

use nap::app_name::AppName;

libfuzzer_sys::fuzz_target!(|text: &str| {
    for app in [AppName::parse(text), AppName::from_repo_path(text)].into_iter().flatten() {
        let name = app.as_str();
        assert!(!name.is_empty() && !name.contains(['/', '.', '\0']) && name != "..", "{text:?} gave {name:?}");
        assert_eq!(AppName::parse(name).ok().as_ref().map(AppName::as_str), Some(name));
    }
});
