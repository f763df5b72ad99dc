//! `keys`, `keys add NAME [--admin] [--apps a,b] < KEY.pub`, `keys grant
//! NAME APP...`, `keys revoke NAME APP...`, `keys update NAME [--admin |
//! --no-admin] [--apps a,b]`, `keys remove NAME`, `keys authorized-keys`.
//! Admin keys only.

use clap::{Args, Subcommand};
use serde_json::json;
use tokio::io::AsyncReadExt;

use super::table::Table;
use super::{CommandError, Reply};
use crate::app_name::AppName;
use crate::caller::Caller;
use crate::context::{Context, Io};
use crate::keys;

/// An OpenSSH public key line is far shorter; more is not a key.
const MAX_KEY_INPUT: u64 = 16 * 1024;

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct KeysArgs {
    #[command(subcommand)]
    command: Option<KeysCommand>,
}

impl KeysArgs {
    /// `keys add` reads the public key from standard input.
    pub fn reads_input(&self) -> bool {
        matches!(self.command, Some(KeysCommand::Add { .. }))
    }
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Allow a key in; the public key comes on standard input
    Add {
        /// A name for the key's owner (letters, digits, . _ @ -)
        name: String,
        /// The key may manage keys and every app
        #[arg(long)]
        admin: bool,
        /// Apps a non-admin key may push and operate, comma-separated
        #[arg(long, value_delimiter = ',', value_name = "APP,...")]
        apps: Vec<String>,
    },
    /// Let a key push and operate these apps too
    Grant {
        name: String,
        #[arg(required = true, value_name = "APP")]
        apps: Vec<String>,
    },
    /// Take apps away from a key
    Revoke {
        name: String,
        #[arg(required = true, value_name = "APP")]
        apps: Vec<String>,
    },
    /// Change what a key may do: admin or not, and its whole list of apps
    #[command(group(clap::ArgGroup::new("change").required(true).multiple(true).args(["admin", "no_admin", "apps"])))]
    Update {
        name: String,
        /// Make it an admin key: keys and every app
        #[arg(long, conflicts_with = "no_admin")]
        admin: bool,
        /// Make it an app key: only its apps
        #[arg(long)]
        no_admin: bool,
        /// Replace its apps with these, comma-separated (empty: none)
        #[arg(long, value_delimiter = ',', value_name = "APP,...", num_args = 0..=1)]
        apps: Option<Vec<String>>,
    },
    /// List the allowed keys
    #[command(visible_alias = "ls")]
    List,
    /// Remove a key
    #[command(visible_alias = "rm")]
    Remove { name: String },
    /// Print authorized_keys lines that run nap as OpenSSH's forced command
    AuthorizedKeys,
}

pub async fn run(ctx: &Context, caller: &Caller, args: KeysArgs, io: &mut Io) -> Result<Reply, CommandError> {
    caller.check_admin("manage keys")?;
    let changes = !matches!(args.command, None | Some(KeysCommand::List | KeysCommand::AuthorizedKeys));
    let reply = keys_command(ctx, args, io).await;
    // This gateway's logins see the change at once; others', by the watch.
    if changes && reply.is_ok() {
        let _ = ctx.known_keys.refresh(&ctx.store).await;
    }
    reply
}

async fn keys_command(ctx: &Context, args: KeysArgs, io: &mut Io) -> Result<Reply, CommandError> {
    match args.command {
        None | Some(KeysCommand::List) => list(ctx).await,
        Some(KeysCommand::Add { name, admin, apps }) => {
            let apps = app_names(apps)?;
            let mut text = String::new();
            (&mut io.stdin).take(MAX_KEY_INPUT).read_to_string(&mut text).await.map_err(keys::KeyError::ReadInput)?;
            let key = keys::parse_public_key(&text)?;
            let added = keys::add(&ctx.store, &name, &key, admin, apps).await?;
            let scope = if added.admin { " as admin".to_owned() } else { format!(" for {}", apps_text(&added.apps)) };
            Ok(Reply::new(
                format!("added key {} ({}){scope}", added.name, added.fingerprint),
                serde_json::to_value(&added).unwrap_or_default(),
            ))
        }
        Some(KeysCommand::Grant { name, apps }) => {
            update(ctx, &name, keys::Change { grant: app_names(apps)?, ..keys::Change::default() }).await
        }
        Some(KeysCommand::Revoke { name, apps }) => {
            update(ctx, &name, keys::Change { revoke: app_names(apps)?, ..keys::Change::default() }).await
        }
        Some(KeysCommand::Update { name, admin, no_admin, apps }) => {
            let admin = if admin { Some(true) } else { no_admin.then_some(false) };
            let apps =
                apps.map(|apps| app_names(apps.into_iter().filter(|app| !app.is_empty()).collect())).transpose()?;
            update(ctx, &name, keys::Change { admin, apps, ..keys::Change::default() }).await
        }
        Some(KeysCommand::Remove { name }) => {
            keys::remove(&ctx.store, &name).await?;
            Ok(Reply::new(format!("removed key {name}"), json!({ "name": name, "removed": true })))
        }
        Some(KeysCommand::AuthorizedKeys) => {
            let prefix = forced_command_prefix(ctx)?;
            let lines: Vec<String> =
                keys::list(&ctx.store).await?.iter().map(|key| keys::authorized_keys_line(&prefix, key)).collect();
            Ok(Reply::new(lines.join("\n"), json!(lines)))
        }
    }
}

/// Checks each name; the names, as given.
fn app_names(apps: Vec<String>) -> Result<Vec<String>, CommandError> {
    for app in &apps {
        AppName::parse(app)?;
    }
    Ok(apps)
}

async fn update(ctx: &Context, name: &str, change: keys::Change) -> Result<Reply, CommandError> {
    let updated = keys::update(&ctx.store, name, &change).await?;
    let scope = if updated.admin {
        "is an admin key: it manages keys and uses every app".to_owned()
    } else {
        format!("may use {}", apps_text(&updated.apps))
    };
    Ok(Reply::new(format!("key {} {scope}", updated.name), serde_json::to_value(&updated).unwrap_or_default()))
}

async fn list(ctx: &Context) -> Result<Reply, CommandError> {
    let all = keys::list(&ctx.store).await?;
    let text = if all.is_empty() {
        "no keys; add one with: nap keys add NAME < KEY.pub".to_owned()
    } else {
        let mut table = Table::new(&["NAME", "FINGERPRINT", "MAY USE"]);
        for key in &all {
            let scope = if key.admin { "admin".to_owned() } else { apps_text(&key.apps) };
            table.row(&[&key.name, &key.fingerprint, &scope]);
        }
        table.into_text()
    };
    Ok(Reply::new(text, serde_json::to_value(&all).unwrap_or_default()))
}

fn apps_text(apps: &[String]) -> String {
    if apps.is_empty() { "no apps".to_owned() } else { format!("apps {}", apps.join(",")) }
}

/// `nap` as OpenSSH should run it: this binary, with the settings that find
/// this data directory.
fn forced_command_prefix(ctx: &Context) -> Result<String, CommandError> {
    let mut words = vec![ctx.exe.display().to_string()];
    if let Some(config) = &ctx.settings.config {
        words.push(format!("--config {}", config.display()));
    }
    words.push(format!("--data-dir {}", ctx.settings.data_dir().display()));
    let prefix = words.join(" ");
    // The line is read by OpenSSH inside double quotes and then by a shell.
    if prefix.chars().any(|c| !(c.is_ascii_alphanumeric() || "/._-+:= ".contains(c))) {
        return Err(keys::KeyError::UnplainPaths(prefix).into());
    }
    Ok(prefix)
}
