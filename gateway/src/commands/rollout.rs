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
    #[error("invalid image {0:?}")]
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
            if image.is_empty() || image.chars().any(char::is_whitespace) {
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
