//! The SSH keys allowed in, kept in the store under `/nap/keys/NAME`.

use russh::keys::PublicKey;
use russh::keys::ssh_key::HashAlg;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use nap_state::{Store, StoreError, layout};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("invalid key name {0:?}: use 1-64 letters, digits, '.', '_', '@' or '-', not starting with '-'")]
    InvalidName(String),
    #[error("not an OpenSSH public key ({0}); expected a line like 'ssh-ed25519 AAAA... you@host'")]
    Malformed(String),
    #[error("no public key on standard input; try: nap keys add NAME < ~/.ssh/id_ed25519.pub")]
    Empty,
    #[error("a key named {0:?} already exists; remove it first")]
    NameTaken(String),
    #[error(
        "this key is already added as {0:?}; change what it may do with: keys update {0} --admin, or: keys grant {0} APP"
    )]
    KeyTaken(String),
    #[error("{0:?} is the only admin key; make another key an admin first")]
    LastAdmin(String),
    #[error("the key {0:?} changed while it was being updated; try again")]
    Contended(String),
    #[error("no key named {0:?}")]
    Unknown(String),
    #[error("paths used in authorized_keys must be plain (letters, digits, / . _ - + : =): {0}")]
    UnplainPaths(String),
    #[error("reading the key from standard input: {0}")]
    ReadInput(#[source] std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthorizedKey {
    pub name: String,
    /// The key in OpenSSH form, without its comment.
    pub public_key: String,
    pub fingerprint: String,
    pub admin: bool,
    /// The apps a non-admin key may push and operate (exact names).
    #[serde(default)]
    pub apps: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub added_at: OffsetDateTime,
}

impl AuthorizedKey {
    fn parsed(&self) -> Option<PublicKey> {
        PublicKey::from_openssh(&self.public_key).ok()
    }
}

fn check_name(name: &str) -> Result<(), KeyError> {
    let valid = (1..=64).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-'));
    if valid { Ok(()) } else { Err(KeyError::InvalidName(name.to_owned())) }
}

/// A new key's name: as [`check_name`], and not starting with `-`, which
/// would read as a flag on the command lines that name it (`keys remove
/// NAME`, the forced command). Keys added before keep working.
fn check_new_name(name: &str) -> Result<(), KeyError> {
    check_name(name)?;
    if name.starts_with('-') { Err(KeyError::InvalidName(name.to_owned())) } else { Ok(()) }
}

/// Parses the first key line of an OpenSSH `.pub` file.
pub fn parse_public_key(text: &str) -> Result<PublicKey, KeyError> {
    let line = text.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#')).ok_or(KeyError::Empty)?;
    PublicKey::from_openssh(line).map_err(|err| KeyError::Malformed(err.to_string()))
}

pub async fn add(
    store: &Store,
    name: &str,
    key: &PublicKey,
    admin: bool,
    apps: Vec<String>,
) -> Result<AuthorizedKey, KeyError> {
    check_new_name(name)?;
    if let Some(existing) = find(store, key).await? {
        return Err(KeyError::KeyTaken(existing.name));
    }
    let mut bare = key.clone();
    bare.set_comment("");
    let record = AuthorizedKey {
        name: name.to_owned(),
        public_key: bare.to_openssh().map_err(|err| KeyError::Malformed(err.to_string()))?,
        fingerprint: key.fingerprint(HashAlg::Sha256).to_string(),
        admin,
        apps,
        added_at: OffsetDateTime::now_utc(),
    };
    let json = serde_json::to_vec(&record).map_err(StoreError::Encode)?;
    if !store.compare_and_swap(&layout::ssh_key(name), None, &json).await? {
        return Err(KeyError::NameTaken(name.to_owned()));
    }
    Ok(record)
}

pub async fn list(store: &Store) -> Result<Vec<AuthorizedKey>, KeyError> {
    Ok(store.list_json(&layout::ssh_keys()).await?)
}

pub async fn get(store: &Store, name: &str) -> Result<AuthorizedKey, KeyError> {
    check_name(name)?;
    store.get_json(&layout::ssh_key(name)).await?.ok_or_else(|| KeyError::Unknown(name.to_owned()))
}

/// What [`update`] does to a key.
#[derive(Debug, Default)]
pub struct Change {
    /// Make it an admin key (`Some(true)`), or an app key (`Some(false)`).
    pub admin: Option<bool>,
    /// Replace its apps with these.
    pub apps: Option<Vec<String>>,
    /// Add these apps.
    pub grant: Vec<String>,
    /// Take these apps away.
    pub revoke: Vec<String>,
}

/// How many times [`update`] reads the key again when it changed meanwhile.
const UPDATE_ATTEMPTS: usize = 5;

/// Changes what the key `name` may do, atomically in the store. An update
/// that would leave no admin key is refused: nobody could manage keys then.
pub async fn update(store: &Store, name: &str, change: &Change) -> Result<AuthorizedKey, KeyError> {
    check_name(name)?;
    let key = layout::ssh_key(name);
    for _ in 0..UPDATE_ATTEMPTS {
        let before = store.get(&key).await?.ok_or_else(|| KeyError::Unknown(name.to_owned()))?;
        let mut record: AuthorizedKey =
            serde_json::from_slice(&before).map_err(|source| StoreError::Decode { key: key.clone(), source })?;
        if change.admin == Some(false) && record.admin {
            let admins = list(store).await?.iter().filter(|other| other.admin && other.name != name).count();
            if admins == 0 {
                return Err(KeyError::LastAdmin(name.to_owned()));
            }
        }
        change.apply(&mut record);
        let json = serde_json::to_vec(&record).map_err(StoreError::Encode)?;
        if store.compare_and_swap(&key, Some(&before), &json).await? {
            return Ok(record);
        }
    }
    Err(KeyError::Contended(name.to_owned()))
}

impl Change {
    fn apply(&self, record: &mut AuthorizedKey) {
        if let Some(admin) = self.admin {
            record.admin = admin;
        }
        if let Some(apps) = &self.apps {
            record.apps.clone_from(apps);
        }
        for app in &self.grant {
            if !record.apps.contains(app) {
                record.apps.push(app.clone());
            }
        }
        record.apps.retain(|app| !self.revoke.contains(app));
        record.apps.sort();
        record.apps.dedup();
    }
}

/// Removes the key `name`; refused for the last admin key, as [`update`]
/// refuses to make it an app key: nobody could manage keys then.
pub async fn remove(store: &Store, name: &str) -> Result<(), KeyError> {
    let record = get(store, name).await?;
    if record.admin && !list(store).await?.iter().any(|other| other.admin && other.name != name) {
        return Err(KeyError::LastAdmin(name.to_owned()));
    }
    if store.delete(&layout::ssh_key(name)).await? { Ok(()) } else { Err(KeyError::Unknown(name.to_owned())) }
}

/// The allowed key whose key material is `key`, if any.
pub async fn find(store: &Store, key: &PublicKey) -> Result<Option<AuthorizedKey>, KeyError> {
    Ok(list(store).await?.into_iter().find(|k| matches(k, key)))
}

fn matches(known: &AuthorizedKey, key: &PublicKey) -> bool {
    known.parsed().is_some_and(|parsed| parsed.key_data() == key.key_data())
}

/// One `authorized_keys` line that makes OpenSSH run nap for this key.
/// `nap_command` is the `nap ... ` prefix (binary and settings flags).
pub fn authorized_keys_line(nap_command: &str, key: &AuthorizedKey) -> String {
    // Key names are restricted to characters that need no quoting here.
    // `restrict` takes everything away; `pty` gives back the terminal that
    // `ssh -t ... run APP -- sh` asks for.
    // `--key=NAME`, so that no name reads as a flag.
    format!("command=\"{nap_command} ssh-command --key={}\",restrict,pty {} {}", key.name, key.public_key, key.name)
}

/// The allowed keys, as `nap serve` follows them: read from the store once,
/// then kept true by the store's watch ([`KnownKeys::follow`]), so that a
/// key offered at login costs no store read. A key the copy lacks (one
/// added a moment ago, before the watch brings it, or a stranger's) costs
/// one read of the store, shared by every lookup waiting for it, so that a
/// flood of unknown keys makes one read at a time. While the watch is not
/// known to be live (before it starts, after it fails, and in processes
/// that do not follow: `ssh-command`, the host's CLI), every lookup reads
/// the store, and every command's check fails closed when it cannot.
///
/// The connections logged in with a key are told when the copy loses it
/// ([`KnownKeys::session`]): a removed key's running commands end.
#[derive(Default)]
pub struct KnownKeys {
    known: std::sync::RwLock<Known>,
    /// The logged-in connections, each with the key it logged in with.
    sessions: std::sync::Mutex<Vec<std::sync::Weak<Session>>>,
    /// Held by the one read of the store under way.
    reading: tokio::sync::Mutex<()>,
    /// How many such reads have ended.
    reads: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct Known {
    keys: Vec<AuthorizedKey>,
    /// Whether `keys` follows the store's watch now.
    followed: bool,
}

/// A connection logged in with a key, for as long as it lives: the
/// commands it runs end when the key is removed, or loses an app or being
/// an admin (`keys update`, `keys revoke`).
pub struct Session {
    name: String,
    public_key: String,
    access: std::sync::Mutex<Access>,
}

/// What a session's key may do as its running commands began, and what
/// ends them.
struct Access {
    admin: bool,
    apps: Vec<String>,
    /// Cancelled when the key is removed or may do less; a narrowed key's
    /// next commands get a fresh one.
    revoked: tokio_util::sync::CancellationToken,
    /// Why the last one was cancelled.
    why: Option<Revoked>,
}

#[derive(Debug, Clone, Copy)]
enum Revoked {
    Removed,
    Narrowed,
}

impl Session {
    /// What a command begun now ends with.
    pub fn revoked(&self) -> tokio_util::sync::CancellationToken {
        self.access.lock().unwrap_or_else(std::sync::PoisonError::into_inner).revoked.clone()
    }

    /// Why the session's commands ended, once their token is cancelled.
    pub fn why(&self) -> KeyCheckError {
        let access = self.access.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match access.why {
            Some(Revoked::Narrowed) => KeyCheckError::Narrowed(self.name.clone()),
            Some(Revoked::Removed) | None => KeyCheckError::Removed(self.name.clone()),
        }
    }

    /// Ends the running commands if `now` (the key as the store has it
    /// now, `None`: removed) may do less than they began with; answers
    /// whether the session goes on being followed.
    fn follow(&self, now: Option<&AuthorizedKey>) -> bool {
        let mut access = self.access.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(now) = now else {
            tracing::info!(key = %self.name, "the key was removed: ending its running commands");
            access.why = Some(Revoked::Removed);
            access.revoked.cancel();
            return false;
        };
        let narrowed = !now.admin && (access.admin || access.apps.iter().any(|app| !now.apps.contains(app)));
        if narrowed {
            tracing::info!(key = %self.name, "the key may do less: ending its running commands");
            access.why = Some(Revoked::Narrowed);
            access.revoked.cancel();
            access.revoked = tokio_util::sync::CancellationToken::new();
        }
        access.admin = now.admin;
        access.apps.clone_from(&now.apps);
        true
    }
}

/// Why a key cannot go on being used.
#[derive(Debug, thiserror::Error)]
pub enum KeyCheckError {
    #[error("the key {0:?} is no longer allowed in")]
    Removed(String),
    #[error("the key {0:?} may do less now (keys update, keys revoke); its running commands were ended")]
    Narrowed(String),
    #[error("cannot check the key {name:?}: {source}")]
    Store {
        name: String,
        #[source]
        source: KeyError,
    },
}

impl KnownKeys {
    /// The allowed key whose key material is `key`, if any. When the store
    /// cannot say, the last copy answers, so that the client learns why its
    /// commands are refused ([`Self::recheck`] fails closed) rather than a
    /// bare "Permission denied".
    pub async fn find(&self, store: &Store, key: &PublicKey) -> Option<AuthorizedKey> {
        let found = |keys: &[AuthorizedKey]| keys.iter().find(|k| matches(k, key)).cloned();
        if let Some(Some(known)) = self.followed(found) {
            return Some(known);
        }
        if let Err(err) = self.refresh(store).await {
            // Logged in from the last copy, only to say why: every command
            // checks its key again first, and fails closed without the store.
            tracing::warn!(error = %err, "cannot read the keys; the last copy logs in, and commands are refused");
        }
        self.look(found)
    }

    /// `key` as the store has it now, for each new command on a connection
    /// that logged in with it: a removed key runs nothing more, and a key's
    /// changed apps apply at once.
    pub async fn recheck(&self, store: &Store, key: &AuthorizedKey) -> Result<AuthorizedKey, KeyCheckError> {
        let same = |keys: &[AuthorizedKey]| {
            keys.iter().find(|k| k.name == key.name && k.public_key == key.public_key).cloned()
        };
        let found = if let Some(found) = self.followed(same) {
            found
        } else {
            self.refresh(store).await.map_err(|source| KeyCheckError::Store { name: key.name.clone(), source })?;
            self.look(same)
        };
        found.ok_or_else(|| KeyCheckError::Removed(key.name.clone()))
    }

    /// Reads the keys from the store into the copy, or waits for a read
    /// that began after this call (reads run one at a time, so the second
    /// to end after the call began after it). The keys commands call it
    /// after each change, so that this gateway applies it before the watch
    /// brings it.
    pub async fn refresh(&self, store: &Store) -> Result<(), KeyError> {
        use std::sync::atomic::Ordering;
        let asked = self.reads.load(Ordering::Acquire);
        let _reading = self.reading.lock().await;
        if self.reads.load(Ordering::Acquire) >= asked + 2 {
            return Ok(());
        }
        let read = list(store).await;
        self.reads.fetch_add(1, Ordering::AcqRel);
        let keys = read?;
        self.revoke_removed(&keys);
        self.known.write().unwrap_or_else(std::sync::PoisonError::into_inner).keys = keys;
        Ok(())
    }

    /// Follows a connection that logged in with `key`: its `revoked` is
    /// cancelled once the copy of the keys no longer has `key` (the watch
    /// brought its removal, or a read of the store did).
    pub fn session(&self, key: &AuthorizedKey) -> std::sync::Arc<Session> {
        let access = Access {
            admin: key.admin,
            apps: key.apps.clone(),
            revoked: tokio_util::sync::CancellationToken::new(),
            why: None,
        };
        let session = std::sync::Arc::new(Session {
            name: key.name.clone(),
            public_key: key.public_key.clone(),
            access: std::sync::Mutex::new(access),
        });
        let mut sessions = self.sessions.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        sessions.retain(|session| session.strong_count() > 0);
        sessions.push(std::sync::Arc::downgrade(&session));
        session
    }

    /// Tells each session what its key is in `keys`: removed, or able to
    /// do less, its running commands end.
    fn revoke_removed(&self, keys: &[AuthorizedKey]) {
        let mut sessions = self.sessions.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        sessions.retain(|session| {
            let Some(session) = session.upgrade() else { return false };
            session.follow(keys.iter().find(|k| k.name == session.name && k.public_key == session.public_key))
        });
    }

    fn look<T>(&self, look: impl FnOnce(&[AuthorizedKey]) -> T) -> T {
        look(&self.known.read().unwrap_or_else(std::sync::PoisonError::into_inner).keys)
    }

    /// `look` at the copy, if it follows the store.
    fn followed<T>(&self, look: impl FnOnce(&[AuthorizedKey]) -> T) -> Option<T> {
        let known = self.known.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        known.followed.then(|| look(&known.keys))
    }

    /// The keys as the watch brings them (`None`: the watch stopped).
    fn set(&self, keys: Option<Vec<AuthorizedKey>>) {
        let mut known = self.known.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        match keys {
            Some(keys) => {
                self.revoke_removed(&keys);
                *known = Known { keys, followed: true };
            }
            None => known.followed = false,
        }
    }

    /// Keeps the copy true to the store until `stop`: its revision, the
    /// keys, then the watch from that revision, again after a pause
    /// whenever it fails.
    pub async fn follow(&self, store: &Store, stop: &tokio_util::sync::CancellationToken) {
        let failed = "keys: the store's watch failed; reading the keys again";
        crate::following::until_stopped(stop, FOLLOW_RETRY, failed, || async {
            let followed = self.follow_once(store).await;
            self.set(None);
            followed
        })
        .await;
        self.set(None);
    }

    async fn follow_once(&self, store: &Store) -> Result<(), KeyError> {
        use futures_util::StreamExt;
        let revision = store.revision().await?;
        let mut events = store.watch(&layout::ssh_keys(), revision + 1).await?;
        self.set(Some(list(store).await?));
        while let Some(batch) = events.next().await {
            batch?;
            self.set(Some(list(store).await?));
        }
        Ok(())
    }
}

/// How long the key watch waits before following the store again.
const FOLLOW_RETRY: std::time::Duration = std::time::Duration::from_secs(1);
