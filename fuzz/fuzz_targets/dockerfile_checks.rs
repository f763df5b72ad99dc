//! A pushed Dockerfile, as the builder checks it before a build: parsed,
//! every image it would use collected (with a base's environment and
//! `ONBUILD` triggers, here from the input too), and refused in one line.
#![no_main]

use nap_builder::{Base, Dockerfile, Rules};

const RULES: Rules<'static> = Rules { app: "sec-a", registry: Some("127.0.0.1:5000") };

libfuzzer_sys::fuzz_target!(|input: (&str, &str, &str)| {
    let (text, env, triggers) = input;
    let file = match Dockerfile::parse(text) {
        Ok(file) => file,
        Err(err) => {
            assert!(!err.to_string().contains('\n'), "{err}");
            return;
        }
    };
    let _ = file.exposed_ports();
    let base =
        Base { env: env.lines().map(str::to_owned).collect(), triggers: triggers.lines().map(str::to_owned).collect() };
    let uses =
        file.bases(RULES).and_then(|bases| Ok(bases.into_iter().chain(file.uses(RULES, &|_| Some(base.clone()))?)));
    match uses {
        Err(err) => assert!(!err.to_string().contains('\n'), "{err}"),
        // Whatever is let through names no other app's repository (a
        // reference Docker would not read is left to the daemon, which
        // refuses it).
        Ok(uses) => {
            for used in uses {
                let Some(rest) = used.image.strip_prefix("127.0.0.1:5000/") else { continue };
                let (repository, tag) = rest.split_once(':').unwrap_or((rest, "latest"));
                let plain = |text: &str, extra: &[u8]| {
                    !text.is_empty()
                        && text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || extra.contains(&b))
                };
                let tag_ok =
                    plain(&tag.to_ascii_lowercase(), b"_.-") && !tag.starts_with(['.', '-']) && tag.len() <= 128;
                let edges = |text: &str| {
                    text.starts_with(|c: char| c.is_ascii_alphanumeric())
                        && text.ends_with(|c: char| c.is_ascii_alphanumeric())
                };
                if plain(repository, b"-") && edges(repository) && tag_ok {
                    assert_eq!(repository, "sec-a", "{text:?} uses {}", used.image);
                }
            }
        }
    }
});
