//! Template resources: confd's `conf.d/*.toml` files, read unchanged, each
//! naming a template, the keys it reads and where the result goes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::functions::{self, Scope};
use crate::source::{KeyValues, join_key};

#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    #[error("{path}: {source}")]
    Config {
        path: String,
        #[source]
        source: ConfError,
    },
    #[error("{path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("resource {resource}: template {template}: {}", flatten(.source))]
    Template {
        resource: String,
        template: String,
        #[source]
        source: tera::Error,
    },
}

/// Why a conf.d file's text is not a resource.
#[derive(Debug, thiserror::Error)]
pub enum ConfError {
    #[error("{}", .0.to_string().trim().replace('\n', " "))]
    Toml(#[source] toml::de::Error),
    #[error("src {src:?} or dest {dest:?} holds a control character")]
    ControlCharacter { src: String, dest: String },
}

/// What a conf.d file says, in confd's names. Keys confd ignores (such as
/// `owner` in many existing files) are read where they make sense.
#[derive(Debug, Clone, Deserialize)]
struct ConfFile {
    template: Settings,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub src: String,
    pub dest: PathBuf,
    #[serde(default)]
    pub keys: Vec<String>,
    #[serde(default)]
    pub prefix: String,
    pub mode: Option<Mode>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// A user name, for `uid` (confd files carry it; confd ignores it).
    pub owner: Option<String>,
    pub check_cmd: Option<String>,
    pub reload_cmd: Option<String>,
    /// nap's own: delete this resource's keys when the watcher starts, for
    /// one-shot requests (an undo) that must not run again on a restart.
    #[serde(default)]
    pub clear_on_start: bool,
}

/// A file mode, written `"0644"` as in confd, or as a TOML integer.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(untagged)]
pub enum Mode {
    Octal(#[serde(deserialize_with = "octal")] u32),
    Number(u32),
}

impl Mode {
    pub fn bits(self) -> u32 {
        match self {
            Mode::Octal(bits) | Mode::Number(bits) => bits,
        }
    }
}

fn octal<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    let text = String::deserialize(deserializer)?;
    u32::from_str_radix(text.trim_start_matches("0o"), 8)
        .map_err(|_| serde::de::Error::custom(format!("mode {text:?} is not an octal number")))
}

/// One loaded resource: its settings and its parsed template.
pub struct Resource {
    /// The conf.d file's name without `.toml`, as logs and errors name it.
    pub name: String,
    pub settings: Settings,
    /// Every key prefix the template may read, absolute.
    pub watched: Vec<String>,
    tera: tera::Tera,
    scope: Scope,
}

impl Resource {
    /// Reads `conf_path` and its template from `template_dir`.
    pub fn load(conf_path: &Path, template_dir: &Path) -> Result<Resource, ResourceError> {
        let path = || conf_path.display().to_string();
        let text = std::fs::read_to_string(conf_path).map_err(|source| ResourceError::Read { path: path(), source })?;
        let settings = parse_conf(&text).map_err(|source| ResourceError::Config { path: path(), source })?;
        let name = conf_path.file_stem().map_or_else(|| "resource".into(), |s| s.to_string_lossy().into_owned());
        let template_path = template_dir.join(&settings.src);
        let template = std::fs::read_to_string(&template_path).map_err(|source| ResourceError::Read {
            path: format!("{}: template {}", path(), template_path.display()),
            source,
        })?;
        Resource::new(name, settings, &template)
    }

    /// A resource from the texts of its conf.d file and its template (the
    /// file `src` names), as [`Resource::load`] reads them.
    pub fn from_texts(name: &str, conf: &str, template: &str) -> Result<Resource, ResourceError> {
        let settings =
            parse_conf(conf).map_err(|source| ResourceError::Config { path: format!("{name}.toml"), source })?;
        Resource::new(name.to_owned(), settings, template)
    }

    fn new(name: String, settings: Settings, template: &str) -> Result<Resource, ResourceError> {
        let scope = Scope::new(&settings.prefix);
        let mut tera = tera::Tera::default();
        // Config files are not HTML: nothing is escaped.
        tera.autoescape_on(Vec::<&str>::new());
        functions::register(&mut tera, &scope);
        tera.add_raw_template(&settings.src, template).map_err(|source| ResourceError::Template {
            resource: name.clone(),
            template: settings.src.clone(),
            source,
        })?;
        let watched = if settings.keys.is_empty() {
            vec![join_key(&settings.prefix, "")]
        } else {
            settings.keys.iter().map(|key| join_key(&settings.prefix, key)).collect()
        };
        Ok(Resource { name, settings, watched, tera, scope })
    }

    /// Every `*.toml` in `conf_dir`, in name order.
    pub fn load_dir(conf_dir: &Path, template_dir: &Path) -> Result<Vec<Resource>, ResourceError> {
        let dir_err = |source| ResourceError::Read { path: conf_dir.display().to_string(), source };
        let mut paths: Vec<PathBuf> = std::fs::read_dir(conf_dir)
            .map_err(dir_err)?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
            .collect();
        paths.sort();
        paths.iter().map(|path| Resource::load(path, template_dir)).collect()
    }

    /// Whether a change to `key` can change what this resource renders.
    pub fn reads(&self, key: &str) -> bool {
        self.watched.iter().any(|prefix| key.starts_with(prefix.as_str()))
    }

    /// Renders the template against `keys`.
    pub fn render(&self, keys: Arc<KeyValues>) -> Result<String, ResourceError> {
        self.scope.set(keys);
        let context = tera::Context::new();
        self.tera.render(&self.settings.src, &context).map_err(|source| ResourceError::Template {
            resource: self.name.clone(),
            template: self.settings.src.clone(),
            source,
        })
    }
}

/// A conf.d file's settings; the error on one line.
fn parse_conf(text: &str) -> Result<Settings, ConfError> {
    let file: ConfFile = toml::from_str(text).map_err(ConfError::Toml)?;
    let settings = file.template;
    // They name files, and errors and logs quote them.
    if settings.src.contains(char::is_control) || settings.dest.to_string_lossy().contains(char::is_control) {
        return Err(ConfError::ControlCharacter {
            src: settings.src.clone(),
            dest: settings.dest.to_string_lossy().into_owned(),
        });
    }
    Ok(settings)
}

/// A tera error and its causes on one line: tera's own message is only
/// "failed to render", and the reason (a missing key) is below it. Of a
/// report with a source snippet, the message and its location are kept.
fn flatten(err: &tera::Error) -> String {
    let mut parts = vec![err.to_string()];
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        parts.push(cause.to_string());
        source = cause.source();
    }
    parts
        .iter()
        .map(|part| {
            let mut lines = part.lines().map(str::trim);
            let message = lines.next().unwrap_or_default().trim_start_matches("error: ");
            match lines.find_map(|line| line.strip_prefix("--> ")) {
                Some(location) => format!("{message} (at {location})"),
                None => message.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(": ")
}

#[cfg(test)]
mod tests {
    use super::Resource;

    #[test]
    fn a_file_name_with_a_control_character_is_refused_in_one_line() {
        let conf = "[template]\nsrc = \"nginx.conf.tera\\n\"\ndest = \"/tmp/nginx.conf\"\n";
        let err = Resource::from_texts("nginx", conf, "").err().expect("refused");
        let message = err.to_string();
        assert!(!message.contains('\n') && message.contains("control character"), "{message}");
        assert!(Resource::from_texts("nginx", &conf.replace("\\n", ""), "").is_ok());
    }
}
