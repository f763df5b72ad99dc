use super::{Base, Dockerfile, Rules};

const RULES: Rules<'static> = Rules { app: "sec-a", registry: Some("127.0.0.1:5000") };

/// The images a Dockerfile's build would use (bases, then the rest), or
/// its refusal; `base` tells what the daemon knows of a base.
fn check_with(text: &str, base: &dyn Fn(&str) -> Option<Base>) -> Result<Vec<String>, String> {
    let file = Dockerfile::parse(text).map_err(|err| err.to_string())?;
    let bases = file.bases(RULES).map_err(|err| err.to_string())?;
    let uses = file.uses(RULES, base).map_err(|err| err.to_string())?;
    Ok(bases.into_iter().chain(uses).map(|used| format!("{}: {}", used.site.line, used.image)).collect())
}

fn check(text: &str) -> Result<Vec<String>, String> {
    check_with(text, &|_| None)
}

fn refusal(text: &str) -> String {
    match check(text) {
        Ok(uses) => panic!("not refused: {text:?} uses {uses:?}"),
        Err(line) => {
            assert!(!line.contains('\n'), "{line}");
            line
        }
    }
}

#[test]
fn every_path_to_another_apps_repository_is_refused_in_one_line() {
    let b = "127.0.0.1:5000/sec-b";
    let digest = format!("sha256:{}", "0123456789abcdef".repeat(4));
    let cases = [
        format!("FROM {b}:v1\nRUN cat /www/index.html\n"),
        format!("FROM {b}@{digest}\n"),
        format!("FROM {b}\n"),
        format!("ARG BASE={b}:v1\nFROM $BASE\n"),
        "ARG REGISTRY=127.0.0.1:5000\nARG APP=sec-b\nFROM ${REGISTRY}/${APP}:v1\n".to_owned(),
        format!("ARG TAG\nFROM ${{IMG:-{b}}}:${{TAG:-v1}}\n"),
        format!("FROM nap/busybox AS build\nRUN true\n\nFROM {b}:v1 AS final\n"),
        format!("FROM nap/busybox\nCOPY --from={b}:v1 /www /www\n"),
        format!("FROM nap/busybox\nARG IMG={b}:v1\nCOPY --from=$IMG /www /www\n"),
        format!("FROM nap/busybox\nENV IMG={b}:v1\nCOPY --chown=1 --from=${{IMG}} /www /www\n"),
        format!(
            "FROM nap/busybox AS one\nFROM one\nRUN --mount=type=bind,from={b}:v1,target=/b cat /b/www/index.html\n"
        ),
        format!("FROM nap/busybox\nRUN --mount=type=cache,target=/c --mount=FROM={b} true\n"),
        format!("FROM nap/busybox AS one\nONBUILD COPY --from={b}:v1 /www /www\nFROM nap/busybox AS two\nFROM one\n"),
        "FROM nap/busybox\nADD http://127.0.0.1:5000/v2/sec-b/manifests/v1 /m\n".to_owned(),
        "FROM nap/busybox\nARG R=localhost:5000\nADD https://$R/v2/sec-b/blobs/x /b\n".to_owned(),
        "FROM nap/busybox\nADD https://example.com/redirects-to-the-registry /b\n".to_owned(),
        "FROM nap/busybox\nRUN <<CMD\nFROM 127.0.0.1:5000/sec-b:v1\nCMD\n".to_owned(),
        "FROM nap/busybox\nCOPY <<EOF /x\nhi\nEOF\n".to_owned(),
        "FROM \"nap/busybox\"\n".to_owned(),
        "FROM ${BASE%:*}\n".to_owned(),
        "ARG IMG=nap/busybox\nFROM nap/busybox\nCOPY --from=$IMG /a /a\n".to_owned(),
        "FROM nap/busybox\nENV IMG=\"nap/busybox\"\nCOPY --from=$IMG /a /a\n".to_owned(),
        "FROM nap/busybox\nCOPY --from=../containers/x /a /a\n".to_owned(),
        "ARG E\nFROM $E\n".to_owned(),
        "FROM nap/busybox\nBOGUS x\n".to_owned(),
        "\u{feff}FROM nap/busybox\nRUN true\nCOPY --from=\u{1b}[31m /a /a\n".to_owned(),
    ];
    let lines: Vec<String> = cases.iter().map(|text| refusal(text)).collect();
    insta::assert_snapshot!("refusals", lines.join("\n"));
}

#[test]
fn base_images_stages_and_the_apps_own_images_are_allowed() {
    let text = "ARG BASE=nap/busybox\n\
                FROM $BASE AS build\n\
                RUN echo hi > /hi\n\
                FROM 127.0.0.1:5000/sec-a:v1\n\
                COPY --from=build /hi /hi\n\
                COPY --from=0 /hi /hi0\n\
                COPY --from=BUILD /hi /hi1\n\
                RUN --mount=type=bind,from=build,target=/b true\n\
                COPY --from=127.0.0.1:5000/base/tools:1 /bin/x /bin/x\n\
                ADD file.tar /f\n\
                FROM scratch\n\
                COPY --from=nap/busybox /bin/busybox /bin/busybox\n";
    assert_eq!(
        check(text).unwrap(),
        ["2: nap/busybox", "4: 127.0.0.1:5000/sec-a:v1", "9: 127.0.0.1:5000/base/tools:1", "12: nap/busybox"]
    );
    // A stage is one only once it is defined: later, the name is an image.
    assert_eq!(
        check("FROM nap/busybox\nCOPY --from=later /a /a\nFROM nap/busybox AS later\n").unwrap(),
        ["1: nap/busybox", "3: nap/busybox", "2: later"]
    );
    // An index is a stage only when it is an earlier one.
    assert_eq!(check("FROM nap/busybox\nCOPY --from=0 /a /a\n").unwrap(), ["1: nap/busybox", "2: 0"]);
    // Without a registry there are no app repositories by name; the
    // daemon judges `nap/APP` images by their label.
    let file = Dockerfile::parse("FROM nap/sec-b:v1\n").unwrap();
    assert_eq!(file.bases(Rules { app: "sec-a", registry: None }).unwrap()[0].image, "nap/sec-b:v1");
}

#[test]
fn a_bases_environment_and_triggers_are_followed() {
    let base = |image: &str| match image {
        "nap/onbuild" => Some(Base {
            env: vec!["IMG=127.0.0.1:5000/sec-b:v1".to_owned(), "PATH=/bin".to_owned()],
            triggers: vec!["COPY --from=$IMG /www /www".to_owned()],
        }),
        "nap/env" => Some(Base { env: vec!["IMG=127.0.0.1:5000/sec-b:v1".to_owned()], triggers: vec![] }),
        "nap/broken" => Some(Base { env: vec![], triggers: vec!["BOGUS".to_owned()] }),
        _ => None,
    };
    insta::assert_snapshot!(check_with("FROM nap/busybox\nRUN true\nFROM nap/onbuild\n", &base).unwrap_err(), @"Dockerfile line 3, stage 2: ONBUILD COPY --from=$IMG (a trigger of nap/onbuild) (that is 127.0.0.1:5000/sec-b:v1) names the repository of app sec-b; build from a base image or from sec-a's own images");
    // The base's ENV wins over the stage's ARG of the same name, as in Docker.
    insta::assert_snapshot!(check_with("FROM nap/env\nARG IMG=nap/busybox\nCOPY --from=$IMG /a /a\n", &base).unwrap_err(), @"Dockerfile line 3, stage 1: COPY --from=$IMG (that is 127.0.0.1:5000/sec-b:v1) names the repository of app sec-b; build from a base image or from sec-a's own images");
    insta::assert_snapshot!(check_with("FROM nap/broken\n", &base).unwrap_err(), @"Dockerfile line 1, stage 1: FROM nap/broken cannot be checked: an ONBUILD trigger of it does not parse: unknown instruction 'BOGUS'");
    // A stage's own ENV reaches a stage built from it.
    let text = "FROM nap/busybox AS one\nENV IMG=127.0.0.1:5000/sec-b:v1\nFROM one\nCOPY --from=$IMG /a /a\n";
    assert!(check(text).unwrap_err().contains("line 4, stage 2: COPY --from=$IMG (that is 127.0.0.1:5000/sec-b:v1)"));
}

#[test]
fn exposed_ports_are_the_tcp_ones_across_continuations() {
    let file =
        Dockerfile::parse("FROM x\n# EXPOSE 1\nexpose 8080/tcp \\\n  9090\nEXPOSE 53/udp $PORT 7000-7001\n").unwrap();
    assert_eq!(file.exposed_ports(), vec![8080, 9090]);
    assert_eq!(Dockerfile::parse("FROM x\nCMD y\n").unwrap().exposed_ports(), Vec::<u16>::new());
}

#[test]
fn what_would_take_too_long_to_read_is_refused() {
    // Stages from a stage of many triggers run them each again.
    let text =
        format!("FROM nap/busybox AS zero\n{}FROM zero\nFROM zero\nFROM zero\n", "ONBUILD RUN x\n".repeat(40_000));
    insta::assert_snapshot!(refusal(&text), @"Dockerfile line 40003, stage 3: FROM zero cannot be checked: the build would run over 100000 instructions");
    // A value that doubles at each line.
    let text = format!("FROM nap/busybox\nENV A=x\n{}COPY --from=$A /a /a\n", "ENV A=$A$A\n".repeat(40));
    insta::assert_snapshot!(refusal(&text), @"Dockerfile line 43, stage 1: COPY --from=$A cannot be checked: the value of $A is not known before the build");
}
