//! `placement APP`: where the swarm runner may place an app's tasks.
//! `placement APP CONSTRAINT...` sets the constraints (the swarm's own
//! syntax, `node.labels.zone==a`, checked and then passed on verbatim) and
//! `placement APP --clear` removes them (admin keys only, as with limits:
//! where an app runs is the operator's call); either rolls the app's
//! running release over to them at once, start-first, as `restart` does.
//! Constraints no node meets are refused, and the previous ones stay.

use clap::Args;
use nap_runner::Constraint;
use serde_json::json;

use super::{CommandError, Reply, existing_app, with_flow_reporter};
use crate::caller::Caller;
use crate::context::{Context, Io};
use crate::deploy;

#[derive(Debug, Args)]
pub struct PlacementArgs {
    app: String,
    /// Constraints to set (admin keys only), each ATTRIBUTE==VALUE or ATTRIBUTE!=VALUE: node.labels.KEY, node.id, node.role, engine.labels.KEY
    constraints: Vec<String>,
    /// Remove every constraint: tasks may run on any node (admin keys only)
    #[arg(long, conflicts_with = "constraints")]
    clear: bool,
}

pub async fn run(ctx: &Context, caller: &Caller, args: PlacementArgs, io: &mut Io) -> Result<Reply, CommandError> {
    let app = existing_app(ctx, caller, &args.app).await?;
    if args.constraints.is_empty() && !args.clear {
        let placement: Vec<Constraint> = ctx.store.placement(app.as_str()).await?;
        let text = if placement.is_empty() {
            format!("{app} may run on any node")
        } else {
            placement.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
        };
        return Ok(Reply::new(text, json!({ "app": app.as_str(), "placement": placement })));
    }
    caller.check_admin("change placement")?;
    let placement =
        args.constraints.iter().map(|text| Constraint::parse(text)).collect::<Result<Vec<Constraint>, _>>()?;
    let said = if placement.is_empty() {
        format!("{app} may run on any node")
    } else {
        format!("{app} runs where {}", placement.iter().map(ToString::to_string).collect::<Vec<_>>().join(" and "))
    };
    let who = caller.name();
    let rolled = with_flow_reporter(io, |report| {
        let (app, placement) = (&app, &placement);
        async move { deploy::place(ctx, app, placement, who, &report).await }
    })
    .await?;
    let note = if rolled {
        ""
    } else if nap_runner::RunnerKind::places_instances(ctx.settings.runner) {
        " (from its first release)"
    } else {
        " (only the swarm runner places tasks; this one ignores it)"
    };
    Ok(Reply::new(format!("{said}{note}"), json!({ "app": args.app, "placement": placement })))
}
