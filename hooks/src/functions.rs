//! The template functions, confd's, under `snake_case` names. They are the one
//! place that knows how a template reads keys. Keys are relative to the
//! resource's `prefix`, as in confd. A missing key without a default is an
//! error (confd wrote `<no value>`), and a default of "" is a default.
//!
//! confd's Go template builtins and its string helpers that tera already has
//! as filters or operators (`upper`, `lower`, `replace`, `split`, `join`,
//! `+ - * / %`, `in`) are also offered as functions where confd had them, so
//! a ported template reads alike.

use std::collections::BTreeMap;
use std::net::{IpAddr, ToSocketAddrs};
use std::sync::{Arc, RwLock};

use base64::Engine;
use tera::{Error, Kwargs, State, TeraResult, Value};

use crate::source::{KeyValues, join_key};

/// What the functions of one resource read: its prefix, and the keys of the
/// render under way (swapped in before each render).
#[derive(Clone, Default)]
pub struct Scope {
    prefix: String,
    keys: Arc<RwLock<Arc<KeyValues>>>,
}

impl Scope {
    pub fn new(prefix: &str) -> Self {
        Scope { prefix: prefix.to_owned(), keys: Arc::default() }
    }

    /// Makes `keys` what the next render reads.
    pub fn set(&self, keys: Arc<KeyValues>) {
        // A poisoned lock only means a render panicked; the value is still whole.
        let mut current = self.keys.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        *current = keys;
    }

    fn keys(&self) -> Arc<KeyValues> {
        Arc::clone(&self.keys.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    fn absolute(&self, key: &str) -> String {
        if self.prefix.is_empty() { join_key("", key) } else { join_key(&self.prefix, key) }
    }

    /// `key` as the template wrote it, relative to the prefix again.
    fn relative(&self, absolute: &str) -> String {
        let prefix = join_key(&self.prefix, "");
        match absolute.strip_prefix(prefix.trim_end_matches('/')) {
            Some(rest) if prefix != "/" && (rest.is_empty() || rest.starts_with('/')) => {
                if rest.is_empty() {
                    "/".into()
                } else {
                    rest.to_owned()
                }
            }
            _ => absolute.to_owned(),
        }
    }
}

fn missing(key: &str, absolute: &str) -> Error {
    if key == absolute {
        Error::message(format!("key {key} not found"))
    } else {
        Error::message(format!("key {key} ({absolute}) not found"))
    }
}

fn pattern(text: &str) -> TeraResult<glob::Pattern> {
    glob::Pattern::new(text).map_err(|e| Error::message(format!("bad key pattern {text:?}: {e}")))
}

fn pair(key: String, value: &str) -> BTreeMap<&'static str, String> {
    BTreeMap::from([("key", key), ("value", value.to_owned())])
}

/// Registers every function on `tera`, reading through `scope`.
#[expect(clippy::too_many_lines, reason = "one short closure per confd function, in confd's order")]
pub fn register(tera: &mut tera::Tera, scope: &Scope) {
    let s = scope.clone();
    tera.register_function("getv", move |kwargs: Kwargs, _: &State| -> TeraResult<String> {
        let key: &str = kwargs.must_get("key")?;
        let absolute = s.absolute(key);
        match (s.keys().get(&absolute), kwargs.get::<&str>("default")?) {
            (Some(value), _) => Ok(value.to_owned()),
            (None, Some(default)) => Ok(default.to_owned()),
            (None, None) => Err(missing(key, &absolute)),
        }
    });
    let s = scope.clone();
    tera.register_function("get", move |kwargs: Kwargs, _: &State| -> TeraResult<Value> {
        let key: &str = kwargs.must_get("key")?;
        let absolute = s.absolute(key);
        let keys = s.keys();
        let value = keys.get(&absolute).ok_or_else(|| missing(key, &absolute))?;
        Ok(Value::from_serializable(&pair(key.to_owned(), value)))
    });
    let s = scope.clone();
    tera.register_function("getvs", move |kwargs: Kwargs, _: &State| -> TeraResult<Vec<String>> {
        let pattern = pattern(&s.absolute(kwargs.must_get("key")?))?;
        Ok(s.keys().matching(&pattern).map(|(_, v)| v.to_owned()).collect())
    });
    let s = scope.clone();
    tera.register_function("gets", move |kwargs: Kwargs, _: &State| -> TeraResult<Value> {
        let pattern = pattern(&s.absolute(kwargs.must_get("key")?))?;
        let keys = s.keys();
        let pairs: Vec<_> = keys.matching(&pattern).map(|(k, v)| pair(s.relative(k), v)).collect();
        Ok(Value::from_serializable(&pairs))
    });
    let s = scope.clone();
    tera.register_function("ls", move |kwargs: Kwargs, _: &State| -> TeraResult<Vec<String>> {
        Ok(s.keys().children(&s.absolute(kwargs.must_get("key")?), false))
    });
    let s = scope.clone();
    tera.register_function("lsdir", move |kwargs: Kwargs, _: &State| -> TeraResult<Vec<String>> {
        Ok(s.keys().children(&s.absolute(kwargs.must_get("key")?), true))
    });
    let s = scope.clone();
    tera.register_function("exists", move |kwargs: Kwargs, _: &State| -> TeraResult<bool> {
        Ok(s.keys().get(&s.absolute(kwargs.must_get("key")?)).is_some())
    });

    tera.register_function("json", |kwargs: Kwargs, _: &State| -> TeraResult<Value> {
        let value: &str = kwargs.must_get("value")?;
        let parsed: serde_json::Value =
            serde_json::from_str(value).map_err(|e| Error::message(format!("json: not JSON ({e}): {value:?}")))?;
        if !parsed.is_object() {
            return Err(Error::message(format!("json: not a JSON object: {value:?} (json_array reads arrays)")));
        }
        Ok(Value::from_serializable(&parsed))
    });
    tera.register_function("json_array", |kwargs: Kwargs, _: &State| -> TeraResult<Value> {
        let value: &str = kwargs.must_get("value")?;
        let parsed: serde_json::Value = serde_json::from_str(value)
            .map_err(|e| Error::message(format!("json_array: not JSON ({e}): {value:?}")))?;
        if !parsed.is_array() {
            return Err(Error::message(format!("json_array: not a JSON array: {value:?}")));
        }
        Ok(Value::from_serializable(&parsed))
    });
    tera.register_function("base", |kwargs: Kwargs, _: &State| -> TeraResult<String> {
        Ok(path_base(kwargs.must_get("path")?))
    });
    tera.register_function("dir", |kwargs: Kwargs, _: &State| -> TeraResult<String> {
        Ok(path_dir(kwargs.must_get("path")?))
    });
    tera.register_function("split", |kwargs: Kwargs, _: &State| -> TeraResult<Vec<String>> {
        let value: &str = kwargs.must_get("value")?;
        let sep: &str = kwargs.must_get("sep")?;
        Ok(value.split(sep).map(str::to_owned).collect())
    });
    tera.register_function("join", |kwargs: Kwargs, _: &State| -> TeraResult<String> {
        let values: Vec<String> = kwargs.must_get("values")?;
        Ok(values.join(kwargs.get::<&str>("sep")?.unwrap_or("")))
    });
    tera.register_function("getenv", |kwargs: Kwargs, _: &State| -> TeraResult<String> {
        let name: &str = kwargs.must_get("name")?;
        match (std::env::var(name), kwargs.get::<&str>("default")?) {
            (Ok(value), _) => Ok(value),
            (Err(_), Some(default)) => Ok(default.to_owned()),
            (Err(_), None) => Err(Error::message(format!("environment variable {name} is not set"))),
        }
    });
    tera.register_function("datetime", |kwargs: Kwargs, _: &State| -> TeraResult<String> {
        let now = time::OffsetDateTime::now_utc();
        let formatted = match kwargs.get::<&str>("format")? {
            Some(format) => {
                let description = time::format_description::parse_borrowed::<2>(format)
                    .map_err(|e| Error::message(format!("datetime: bad format {format:?}: {e}")))?;
                now.format(&description)
            }
            None => now.format(&time::format_description::well_known::Rfc3339),
        };
        formatted.map_err(|e| Error::message(format!("datetime: {e}")))
    });
    tera.register_function("lookup_ip", |kwargs: Kwargs, _: &State| -> TeraResult<Vec<String>> {
        lookup(kwargs.must_get("name")?, |_| true)
    });
    tera.register_function("lookup_ipv4", |kwargs: Kwargs, _: &State| -> TeraResult<Vec<String>> {
        lookup(kwargs.must_get("name")?, IpAddr::is_ipv4)
    });
    tera.register_function("lookup_ipv6", |kwargs: Kwargs, _: &State| -> TeraResult<Vec<String>> {
        lookup(kwargs.must_get("name")?, IpAddr::is_ipv6)
    });
    tera.register_function("file_exists", |kwargs: Kwargs, _: &State| -> TeraResult<bool> {
        Ok(std::path::Path::new(kwargs.must_get::<&str>("path")?).exists())
    });
    tera.register_function("shell_quote", |kwargs: Kwargs, _: &State| -> TeraResult<String> {
        Ok(shell_quote(kwargs.must_get("value")?))
    });
    tera.register_function("base64_encode", |kwargs: Kwargs, _: &State| -> TeraResult<String> {
        Ok(base64::engine::general_purpose::STANDARD.encode(kwargs.must_get::<&str>("value")?))
    });
    tera.register_function("base64_decode", |kwargs: Kwargs, _: &State| -> TeraResult<String> {
        let value: &str = kwargs.must_get("value")?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(value)
            .map_err(|e| Error::message(format!("base64_decode: {e}: {value:?}")))?;
        String::from_utf8(bytes).map_err(|_| Error::message(format!("base64_decode: not UTF-8 text: {value:?}")))
    });
    tera.register_function("parse_bool", |kwargs: Kwargs, _: &State| -> TeraResult<bool> {
        let value: &str = kwargs.must_get("value")?;
        // Go's strconv.ParseBool, which confd's parseBool is.
        match value {
            "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
            "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
            _ => Err(Error::message(format!("parse_bool: not a boolean: {value:?}"))),
        }
    });
    tera.register_function("atoi", |kwargs: Kwargs, _: &State| -> TeraResult<i64> {
        let value: &str = kwargs.must_get("value")?;
        value.trim().parse().map_err(|_| Error::message(format!("atoi: not an integer: {value:?}")))
    });
    tera.register_function("seq", |kwargs: Kwargs, _: &State| -> TeraResult<Vec<i64>> {
        let (first, last): (i64, i64) = (kwargs.must_get("first")?, kwargs.must_get("last")?);
        if last.saturating_sub(first) > 100_000 {
            return Err(Error::message(format!("seq: {first}..{last} is too long")));
        }
        Ok((first..=last).collect())
    });
    tera.register_function("contains", |kwargs: Kwargs, _: &State| -> TeraResult<bool> {
        Ok(kwargs.must_get::<&str>("value")?.contains(kwargs.must_get::<&str>("substr")?))
    });
    tera.register_function("replace", |kwargs: Kwargs, _: &State| -> TeraResult<String> {
        let (value, old, new): (&str, &str, &str) =
            (kwargs.must_get("value")?, kwargs.must_get("old")?, kwargs.must_get("new")?);
        Ok(match kwargs.get::<i64>("n")? {
            Some(n) if n >= 0 => value.replacen(old, new, usize::try_from(n).unwrap_or(usize::MAX)),
            _ => value.replace(old, new),
        })
    });
    tera.register_function("trim_suffix", |kwargs: Kwargs, _: &State| -> TeraResult<String> {
        let value: &str = kwargs.must_get("value")?;
        Ok(value.strip_suffix(kwargs.must_get::<&str>("suffix")?).unwrap_or(value).to_owned())
    });
    tera.register_function("to_upper", |kwargs: Kwargs, _: &State| -> TeraResult<String> {
        Ok(kwargs.must_get::<&str>("value")?.to_uppercase())
    });
    tera.register_function("to_lower", |kwargs: Kwargs, _: &State| -> TeraResult<String> {
        Ok(kwargs.must_get::<&str>("value")?.to_lowercase())
    });
    tera.register_function("reverse", |kwargs: Kwargs, _: &State| -> TeraResult<Vec<Value>> {
        let mut values: Vec<Value> = kwargs.must_get("values")?;
        values.reverse();
        Ok(values)
    });
    tera.register_function("sort_by_length", |kwargs: Kwargs, _: &State| -> TeraResult<Vec<String>> {
        let mut values: Vec<String> = kwargs.must_get("values")?;
        values.sort_by_key(String::len);
        Ok(values)
    });
    tera.register_function("sort_kv_by_length", |kwargs: Kwargs, _: &State| -> TeraResult<Vec<Value>> {
        let mut pairs: Vec<Value> = kwargs.must_get("values")?;
        let key_len =
            |v: &Value| v.as_map().and_then(|m| m.get(&"key".into())).and_then(Value::as_str).map_or(0, str::len);
        pairs.sort_by_key(key_len);
        Ok(pairs)
    });
}

/// Go's `path.Base`, which confd's `base` is.
fn path_base(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    match (path.is_empty(), trimmed.is_empty()) {
        (true, _) => ".".into(),
        (false, true) => "/".into(),
        _ => trimmed.rsplit('/').next().unwrap_or(trimmed).to_owned(),
    }
}

/// Go's `path.Dir`, which confd's `dir` is.
fn path_dir(path: &str) -> String {
    let Some(at) = path.rfind('/') else { return ".".into() };
    let dir = path[..at].trim_end_matches('/');
    if dir.is_empty() { "/".into() } else { dir.to_owned() }
}

fn lookup(name: &str, keep: fn(&IpAddr) -> bool) -> TeraResult<Vec<String>> {
    let addresses =
        (name, 0).to_socket_addrs().map_err(|e| Error::message(format!("lookup of {name:?} failed: {e}")))?;
    let mut ips: Vec<String> = addresses.map(|a| a.ip()).filter(keep).map(|ip| ip.to_string()).collect();
    ips.sort();
    ips.dedup();
    Ok(ips)
}

/// `value` as one POSIX shell word: in single quotes, each `'` written as
/// `'\''`, so that nothing in it is expanded or ends the word.
fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_like_go() {
        assert_eq!(path_base("/hosts/a/ip"), "ip");
        assert_eq!(path_base("/hosts/a/"), "a");
        assert_eq!(path_base("/"), "/");
        assert_eq!(path_dir("/hosts/a/ip"), "/hosts/a");
        assert_eq!(path_dir("/ip"), "/");
        assert_eq!(path_dir("ip"), ".");
    }

    #[test]
    fn shell_quote_makes_one_word_the_shell_reads_back_as_is() {
        for value in ["plain", "x;id", "it's", "$(touch /tmp/x) `id` \"q\" \\ *", "", "a\nb"] {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {}", shell_quote(value)))
                .output()
                .expect("sh");
            assert_eq!(String::from_utf8_lossy(&out.stdout), value);
        }
    }
}
