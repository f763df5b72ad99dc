//! The commiter flow's setup: `manage` stores the cluster settings, `import`
//! reads the original commiter tool's YAML into what `commit` will snapshot.

use std::collections::BTreeMap;
use std::net::IpAddr;

use clap::Args;
use nap_state::layout::commiter;
use serde::Deserialize;
use serde_json::json;
use tokio::io::AsyncReadExt;

use super::{CommandError, Reply};
use crate::caller::Caller;
use crate::context::{Context, Io};

/// An import file is a few lines; more is a mistake.
const MAX_IMPORT: u64 = 1024 * 1024;

#[derive(Debug, Args)]
pub struct ManageArgs {
    /// The Kubernetes API server, e.g. 192.168.11.52:8080
    #[arg(long, value_name = "ADDR")]
    apiserver: Option<String>,
    /// Any other setting of the flow, e.g. --set namespace=prod
    #[arg(long = "set", value_name = "NAME=VALUE")]
    settings: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// What `commit` does with these containers: 0 = do not commit,
    /// 1 = commit and push to the registry, 2 = commit without pushing
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=2))]
    commit: u8,
}

/// Commiter settings or an import file nap cannot take; each names the
/// field, and for an import its line.
#[derive(Debug, thiserror::Error)]
pub enum CommiterError {
    #[error("malformed setting {0:?}: expected NAME=VALUE")]
    MalformedSetting(String),
    #[error("import: {message}{place}")]
    Import { message: String, place: String },
    #[error("import: invalid {field} {value:?} {at}")]
    InvalidField { field: String, value: String, at: String },
    #[error("import: invalid Repository {value:?} {at}: expected HOST[:PORT]")]
    InvalidRepository { value: String, at: String },
    #[error("import: Ips is empty {at}; list at least one `- Ip: ADDRESS`")]
    NoIps { at: String },
    #[error("import: reading standard input: {0}")]
    ReadInput(#[source] std::io::Error),
}

pub async fn manage(ctx: &Context, caller: &Caller, args: ManageArgs) -> Result<Reply, CommandError> {
    caller.check_admin("change the commiter settings")?;
    let root = &ctx.settings.commiter_root();
    let mut pairs = Vec::new();
    if let Some(apiserver) = args.apiserver {
        pairs.push(("apiserver".to_owned(), apiserver));
    }
    for setting in &args.settings {
        let (name, value) = setting
            .split_once('=')
            .filter(|(name, _)| !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_".contains(c)))
            .ok_or_else(|| CommiterError::MalformedSetting(setting.clone()))?;
        pairs.push((name.to_owned(), value.to_owned()));
    }
    if !pairs.is_empty() {
        let writes: Vec<(String, Vec<u8>)> =
            pairs.iter().map(|(name, value)| (commiter::config(root, name), value.clone().into_bytes())).collect();
        ctx.store.put_many(&writes).await?;
    }
    let prefix = commiter::config(root, "");
    let settings: BTreeMap<String, String> = ctx
        .store
        .list(&prefix)
        .await?
        .into_iter()
        .map(|(key, value)| (key[prefix.len()..].to_owned(), String::from_utf8_lossy(&value).into_owned()))
        .collect();
    let text = if settings.is_empty() {
        format!("no commiter settings under {prefix}; set the API server with: manage --apiserver ADDR")
    } else {
        settings.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("\n")
    };
    Ok(Reply::new(text, json!(settings)))
}

/// The original tool's import file, unchanged.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct ImportFile {
    #[serde(deserialize_with = "scalar")]
    app: String,
    #[serde(deserialize_with = "scalar")]
    component: String,
    #[serde(deserialize_with = "scalar")]
    repository: String,
    ips: Vec<ImportIp>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct ImportIp {
    #[serde(deserialize_with = "scalar")]
    ip: String,
}

/// A string or a number: the original tool's app names are numbers (`306`).
fn scalar<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    match serde_yaml::Value::deserialize(deserializer)? {
        serde_yaml::Value::String(text) => Ok(text),
        serde_yaml::Value::Number(number) => Ok(number.to_string()),
        other => Err(serde::de::Error::custom(format!("expected a string or a number, found {other:?}"))),
    }
}

pub async fn import(ctx: &Context, caller: &Caller, args: ImportArgs, io: &mut Io) -> Result<Reply, CommandError> {
    caller.check_admin("import commiter state")?;
    let mut text = String::new();
    (&mut io.stdin).take(MAX_IMPORT).read_to_string(&mut text).await.map_err(CommiterError::ReadInput)?;
    let file = parse_import(&text)?;
    let root = &ctx.settings.commiter_root();
    let mut writes = Vec::new();
    for ip in &file.ips {
        let field = |name| commiter::component_field(root, &ip.ip, &file.app, &file.component, name);
        writes.push((field(commiter::STATE), args.commit.to_string().into_bytes()));
        writes.push((field(commiter::REPOSITORY), file.repository.clone().into_bytes()));
    }
    // All keys or none.
    ctx.store.put_many(&writes).await?;
    let meaning = match args.commit {
        0 => "do not commit",
        1 => "commit and push",
        _ => "commit without pushing",
    };
    let hosts: Vec<&str> = file.ips.iter().map(|ip| ip.ip.as_str()).collect();
    Ok(Reply::new(
        format!("imported {}/{} on {} (state {}: {meaning})", file.app, file.component, hosts.join(", "), args.commit),
        json!({ "app": file.app, "component": file.component, "repository": file.repository, "ips": hosts, "state": args.commit }),
    ))
}

/// Checks an import file as `import` does, without writing anything (the
/// fuzz target's way in).
pub fn check_import(text: &str) -> Result<(), CommiterError> {
    parse_import(text).map(|_| ())
}

/// Parses and checks an import file; errors name the field and its line.
fn parse_import(text: &str) -> Result<ImportFile, CommiterError> {
    let file: ImportFile = serde_yaml::from_str(text).map_err(|e| {
        let message = e.to_string();
        // serde_yaml gives no place for a missing field: name the mapping that lacks it.
        let place = if message.contains(" line ") {
            String::new()
        } else if message.contains("`Ip`") {
            let item = text.lines().position(|l| l.trim_start().starts_with('-') && !l.contains("Ip:"));
            format!(" at line {}", item.map_or(1, |n| n + 1))
        } else {
            format!(" at line {}", e.location().map_or(1, |l| l.line()))
        };
        CommiterError::Import { message: crate::usage::flat(&message), place }
    })?;
    let at = |field: &str, value: &str| {
        let line = text.lines().position(|l| l.contains(value) && l.contains(field)).map_or(0, |n| n + 1);
        format!("at line {line}")
    };
    let word = |field: &str, value: &str| {
        if value.is_empty() || !value.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            Err(CommiterError::InvalidField { field: field.to_owned(), value: value.to_owned(), at: at(field, value) })
        } else {
            Ok(())
        }
    };
    word("App", &file.app)?;
    word("Component", &file.component)?;
    if file.repository.is_empty() || file.repository.contains(['/', ' ']) {
        let where_ = at("Repository", &file.repository);
        return Err(CommiterError::InvalidRepository { value: file.repository.clone(), at: where_ });
    }
    if file.ips.is_empty() {
        return Err(CommiterError::NoIps { at: at("Ips", "") });
    }
    for ip in &file.ips {
        if ip.ip.parse::<IpAddr>().is_err() {
            return Err(CommiterError::InvalidField { field: "Ip".into(), value: ip.ip.clone(), at: at("Ip", &ip.ip) });
        }
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::parse_import;

    #[test]
    fn reads_the_original_format_with_numeric_app_names() {
        let file =
            parse_import("App: 306\nComponent: mango\nRepository: 192.168.11.51:5000\nIps:\n  - Ip: 192.168.11.52\n")
                .unwrap();
        assert_eq!((file.app.as_str(), file.component.as_str()), ("306", "mango"));
        assert_eq!(file.ips[0].ip, "192.168.11.52");
    }

    #[test]
    fn errors_name_the_field_and_the_line() {
        let missing = parse_import("App: 306\nRepository: r:5000\nIps:\n  - Ip: 10.0.0.1\n").unwrap_err().to_string();
        assert!(missing.contains("missing field `Component`") && missing.contains("line 1"), "{missing}");
        let bad_ip = parse_import("App: 306\nComponent: mango\nRepository: r:5000\nIps:\n  - Ip: 10.0.0.999\n")
            .unwrap_err()
            .to_string();
        assert_eq!(bad_ip, "import: invalid Ip \"10.0.0.999\" at line 5");
        let typo = parse_import("App: 306\nComponnet: mango\n").unwrap_err().to_string();
        assert!(typo.contains("unknown field `Componnet`") && typo.contains("line 2"), "{typo}");
    }
}
