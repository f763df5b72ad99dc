//! `rollout set` and `rollout undo`: the CI side of the CI/CD write-up's
//! deploy flow. CI writes a request key; template hooks on a deploy host
//! (`examples/k8s-deploy/`) turn it into `kubectl`.

use clap::{Args, Subcommand};
use nap_state::layout::k8s_deploy;
use nap_state::{Rollout, Undo};
use serde_json::json;

use super::{CommandError, Reply};
use crate::caller::Caller;
use crate::context::Context;

#[derive(Debug, Args)]
pub struct RolloutArgs {
    #[command(subcommand)]
    command: RolloutCommand,
}

#[derive(Debug, Subcommand)]
enum RolloutCommand {
    /// Ask the deploy hosts to run IMAGE as Deployment PROJECT-APP's container APP
    Set {
        #[command(flatten)]
        target: Target,
        /// The image to roll out, e.g. registry:5000/s1:e1234a5
        #[arg(long, value_name = "IMAGE")]
        image: String,
    },
    /// Ask the deploy hosts to undo the last rollout of Deployment PROJECT-APP
    Undo {
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Debug, Args)]
struct Target {
    /// The project (the write-up's appParent), e.g. demoproject
    #[arg(long, value_name = "PROJECT")]
    project: String,
    /// The environment, e.g. dev
    #[arg(long, value_name = "ENV")]
    env: String,
    /// The Kubernetes namespace
    #[arg(long, value_name = "NAMESPACE")]
    namespace: String,
    /// The app (the Deployment's container), e.g. s1
    #[arg(long, value_name = "APP")]
    app: String,
}

/// A rollout request nap will not write.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error("invalid {what} {value:?}: use letters, digits, - _ .")]
    NotAWord { what: &'static str, value: String },
    #[error("invalid image {0:?}: expected [HOST[:PORT]/]NAME[:TAG][@DIGEST], e.g. registry:5000/s1:e1234a5")]
    Image(String),
}

impl Target {
    /// Project and env become key segments, so they must be one each.
    fn check(&self) -> Result<(), CommandError> {
        let word = |w: &str| !w.is_empty() && w.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        for (what, value) in
            [("project", &self.project), ("env", &self.env), ("namespace", &self.namespace), ("app", &self.app)]
        {
            if !word(value) {
                return Err(RolloutError::NotAWord { what, value: value.clone() }.into());
            }
        }
        Ok(())
    }
}

pub async fn rollout(ctx: &Context, caller: &Caller, args: RolloutArgs) -> Result<Reply, CommandError> {
    caller.check_admin("write rollout requests")?;
    let (key, value, text) = match args.command {
        RolloutCommand::Set { target, image } => {
            target.check()?;
            if !is_image_reference(&image) {
                return Err(RolloutError::Image(image).into());
            }
            let request = Rollout {
                k8s_namespace: target.namespace.clone(),
                app_parent: target.project.clone(),
                app_name: target.app.clone(),
                image_latest: image.clone(),
            };
            let text = format!("rollout of {image} to {}-{} in {}", target.project, target.app, target.namespace);
            (k8s_deploy::rollout(&target.project, &target.env), json!(request), text)
        }
        RolloutCommand::Undo { target } => {
            target.check()?;
            let request = Undo {
                k8s_namespace: target.namespace.clone(),
                app_parent: target.project.clone(),
                app_name: target.app.clone(),
            };
            let text = format!("undo of the last rollout of {}-{} in {}", target.project, target.app, target.namespace);
            (k8s_deploy::undo(&target.project, &target.env), json!(request), text)
        }
    };
    ctx.store.put(&key, value.to_string().as_bytes()).await?;
    Ok(Reply::new(format!("requested {text} at {key}"), json!({ "key": key, "value": value })))
}

/// Whether `reference` is an image reference as Docker's grammar has it
/// (distribution's `reference` package): `[HOST[:PORT]/]PATH[:TAG][@DIGEST]`.
/// What deploy hosts put into a `kubectl` command line is nothing else.
fn is_image_reference(reference: &str) -> bool {
    let (rest, digest) = match reference.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (reference, None),
    };
    // A tag follows the last ':' after the last '/' (a port comes before one).
    let (name, tag) = match rest.rfind(':').filter(|&colon| !rest[colon..].contains('/')) {
        Some(colon) => (&rest[..colon], Some(&rest[colon + 1..])),
        None => (rest, None),
    };
    let mut components: Vec<&str> = name.split('/').collect();
    let first = components[0];
    let has_domain = components.len() > 1
        && (first.contains(['.', ':']) || first == "localhost" || first.chars().any(|c| c.is_ascii_uppercase()));
    if has_domain && !is_domain(components.remove(0)) {
        return false;
    }
    components.iter().all(|c| is_path_component(c))
        && tag.is_none_or(is_tag)
        && digest.is_none_or(is_digest)
        && reference.len() <= 255
}

/// `[a-z0-9]+` runs joined by `.`, `_`, `__` or runs of `-`.
fn is_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !bytes.first().is_some_and(alnum) || !bytes.last().is_some_and(alnum) {
        return false;
    }
    component
        .split(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        .filter(|separator| !separator.is_empty())
        .all(|separator| matches!(separator, "." | "_" | "__") || separator.chars().all(|c| c == '-'))
}

/// A host name (labels of letters, digits and inner `-`) or `[IPv6]`, with an optional port.
fn is_domain(domain: &str) -> bool {
    let (host, port) = match domain.rsplit_once(':').filter(|(host, _)| !host.ends_with(':')) {
        Some((host, port)) if !host.starts_with('[') || host.ends_with(']') => (host, Some(port)),
        _ => (domain, None),
    };
    let label = |label: &str| {
        !label.is_empty()
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => host.split('.').all(label),
    };
    host_ok && port.is_none_or(|port| !port.is_empty() && port.chars().all(|c| c.is_ascii_digit()))
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn is_tag(tag: &str) -> bool {
    let mut chars = tag.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && tag.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// `ALGORITHM:HEX`, the hex at least 32 digits.
fn is_digest(digest: &str) -> bool {
    digest.split_once(':').is_some_and(|(algorithm, hex)| {
        algorithm.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && algorithm.chars().all(|c| c.is_ascii_alphanumeric() || "-_+.".contains(c))
            && hex.len() >= 32
            && hex.chars().all(|c| c.is_ascii_hexdigit())
    })
}

#[cfg(test)]
mod tests {
    use super::is_image_reference;

    #[test]
    fn image_references_follow_dockers_grammar() {
        for good in [
            "s1",
            "registry:5000/s1:e1234a5",
            "registry.example:5000/team/s1:v1.2-rc_3",
            "localhost/app",
            "docker.io/library/busybox:1.36",
            "ghcr.io/a/b__c/d-e:latest",
            "app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "[::1]:5000/app:1",
        ] {
            assert!(is_image_reference(good), "{good}");
        }
        for bad in [
            "",
            "x;id",
            "a b",
            "App",
            "app:",
            ":tag",
            "app:-x",
            "/app",
            "app/",
            "a//b",
            "-a",
            "a-",
            "reg:port/app",
            "app@sha256:abc",
            "$(id)",
            "a\nb",
            "registry:5000/s1:e1;id",
        ] {
            assert!(!is_image_reference(bad), "{bad}");
        }
    }
}
