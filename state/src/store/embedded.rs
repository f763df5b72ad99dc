//! The embedded backend: one SQLite file, shared safely by every nap process
//! on the host (the gateway and the hooks it spawns). It keeps etcd's model:
//! each write bumps a store-wide revision and is logged as an event, so
//! watches can resume from a revision; keys may be bound to leases that
//! expire unless kept alive.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use super::{Pairs, StoreError, WatchEvent};

/// Events kept for watchers that resume from an older revision; older ones
/// are compacted away, as etcd would.
const EVENTS_KEPT: i64 = 10_000;

#[derive(Clone)]
pub(super) struct Embedded {
    conn: Arc<Mutex<Connection>>,
    path: Arc<PathBuf>,
}

/// The synchronous view of the database that one store operation gets.
pub(super) struct Db<'a> {
    conn: &'a mut Connection,
}

/// Why an embedded operation failed, before the path is attached.
pub(super) enum DbError {
    Sql(rusqlite::Error),
    LeaseNotFound(i64),
    Compacted(i64),
}

impl From<rusqlite::Error> for DbError {
    fn from(err: rusqlite::Error) -> Self {
        DbError::Sql(err)
    }
}

type DbResult<T> = Result<T, DbError>;

impl Embedded {
    pub(super) fn open(path: &Path) -> Result<Self, StoreError> {
        let err = |source| StoreError::Embedded { path: path.display().to_string(), source };
        owner_only(path).map_err(|source| StoreError::Permissions { path: path.display().to_string(), source })?;
        let conn = Connection::open(path).map_err(err)?;
        // Other nap processes may hold the write lock for a moment; wait for it.
        conn.busy_timeout(Duration::from_secs(10)).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(err)?;
        // What is deleted is overwritten, so a removed secret is not left
        // in the file's free pages.
        conn.pragma_update(None, "secure_delete", "ON").map_err(err)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS kv (
                 key TEXT PRIMARY KEY NOT NULL,
                 value BLOB NOT NULL,
                 mod_revision INTEGER NOT NULL,
                 lease INTEGER
             );
             CREATE TABLE IF NOT EXISTS revision (id INTEGER PRIMARY KEY CHECK (id = 0), value INTEGER NOT NULL);
             INSERT OR IGNORE INTO revision (id, value) VALUES (0, 0);
             CREATE TABLE IF NOT EXISTS leases (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 ttl_ms INTEGER NOT NULL,
                 expires_at_ms INTEGER NOT NULL
             );
             CREATE TABLE IF NOT EXISTS events (
                 revision INTEGER NOT NULL,
                 key TEXT NOT NULL,
                 value BLOB
             );
             CREATE INDEX IF NOT EXISTS events_by_revision ON events (revision);
             CREATE TABLE IF NOT EXISTS compacted (id INTEGER PRIMARY KEY CHECK (id = 0), revision INTEGER NOT NULL);
             INSERT OR IGNORE INTO compacted (id, revision) VALUES (0, 0);",
        )
        .map_err(err)?;
        Ok(Embedded { conn: Arc::new(Mutex::new(conn)), path: Arc::new(path.to_owned()) })
    }

    /// Runs one operation off the async runtime: SQLite may wait on another
    /// process's lock, and that wait must not stall the gateway's tasks. On
    /// a single-threaded runtime (or none), which has no other worker to hand
    /// its tasks to, it runs in place.
    #[expect(clippy::unused_async, reason = "async like every etcd call, so the store awaits either backend alike")]
    pub(super) async fn run<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        F: FnOnce(&mut Db<'_>) -> DbResult<T> + Send,
        T: Send,
    {
        let conn = Arc::clone(&self.conn);
        let path = Arc::clone(&self.path);
        let work = move || {
            let mut guard = conn.lock().map_err(|_| StoreError::Poisoned)?;
            op(&mut Db { conn: &mut guard }).map_err(|err| match err {
                DbError::Sql(source) => StoreError::Embedded { path: path.display().to_string(), source },
                DbError::LeaseNotFound(id) => StoreError::LeaseNotFound(id),
                DbError::Compacted(revision) => StoreError::Compacted(revision),
            })
        };
        let flavor = tokio::runtime::Handle::try_current().map(|runtime| runtime.runtime_flavor());
        if matches!(flavor, Ok(tokio::runtime::RuntimeFlavor::MultiThread)) {
            tokio::task::block_in_place(work)
        } else {
            work()
        }
    }
}

/// Escapes `prefix` for a `LIKE ... ESCAPE '\'` pattern.
fn like_prefix(prefix: &str) -> String {
    let mut pattern = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Keys whose lease has expired do not exist, even before they are purged.
const LIVE: &str = "(lease IS NULL OR lease IN (SELECT id FROM leases WHERE expires_at_ms > ?2))";

impl Db<'_> {
    fn write(&mut self) -> DbResult<Transaction<'_>> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        purge_expired(&tx)?;
        Ok(tx)
    }

    pub(super) fn get(&mut self, key: &str) -> DbResult<Option<Vec<u8>>> {
        let sql = format!("SELECT value FROM kv WHERE key = ?1 AND {LIVE}");
        Ok(self.conn.query_row(&sql, params![key, now_ms()], |row| row.get(0)).optional()?)
    }

    pub(super) fn list(&mut self, prefix: &str) -> DbResult<Vec<(String, Vec<u8>)>> {
        let sql = format!("SELECT key, value FROM kv WHERE key LIKE ?1 ESCAPE '\\' AND {LIVE} ORDER BY key");
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![like_prefix(prefix), now_ms()], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Every key under each prefix and the revision they are at, read in one
    /// transaction, so no other process's write falls between them.
    pub(super) fn snapshot(&mut self, prefixes: &[String]) -> DbResult<(Pairs, i64)> {
        self.conn.execute_batch("BEGIN")?;
        let read = (|| {
            let revision = self.revision()?;
            let mut pairs = Vec::new();
            for prefix in prefixes {
                pairs.extend(self.list(prefix)?);
            }
            Ok((pairs, revision))
        })();
        self.conn.execute_batch("COMMIT")?;
        read
    }

    /// Forgets the events up to `revision`, as etcd's compaction does, and
    /// lets the WAL go, so that the values they held are gone from the files.
    /// A watch from before gets `Compacted` and reads afresh.
    pub(super) fn compact(&mut self, revision: i64) -> DbResult<()> {
        let tx = self.write()?;
        tx.execute("UPDATE compacted SET revision = max(revision, ?1) WHERE id = 0", [revision])?;
        tx.execute("DELETE FROM events WHERE revision <= ?1", [revision])?;
        tx.commit()?;
        // As far as other processes' readers allow; the next time goes further.
        self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }

    pub(super) fn revision(&mut self) -> DbResult<i64> {
        Ok(self.conn.query_row("SELECT value FROM revision WHERE id = 0", [], |row| row.get(0))?)
    }

    pub(super) fn put_many(&mut self, pairs: &[(&str, &[u8])], lease: Option<i64>) -> DbResult<()> {
        self.write_many(pairs, &[], lease)
    }

    /// Puts `pairs` (bound to `lease`, if any) and deletes `deletes`, at
    /// one revision.
    pub(super) fn write_many(&mut self, pairs: &[(&str, &[u8])], deletes: &[&str], lease: Option<i64>) -> DbResult<()> {
        let tx = self.write()?;
        check_lease(&tx, lease)?;
        let revision = bump_revision(&tx)?;
        for (key, value) in pairs {
            upsert(&tx, key, value, revision, lease)?;
        }
        for key in deletes {
            if tx.execute("DELETE FROM kv WHERE key = ?1", [key])? > 0 {
                tx.execute("INSERT INTO events (revision, key, value) VALUES (?1, ?2, NULL)", params![revision, key])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub(super) fn delete(&mut self, key: &str) -> DbResult<bool> {
        Ok(self.delete_matching("key = ?1", key)? > 0)
    }

    pub(super) fn delete_prefix(&mut self, prefix: &str) -> DbResult<u64> {
        self.delete_matching("key LIKE ?1 ESCAPE '\\'", &like_prefix(prefix))
    }

    fn delete_matching(&mut self, condition: &str, arg: &str) -> DbResult<u64> {
        let tx = self.write()?;
        let keys: Vec<String> = {
            let mut stmt = tx.prepare(&format!("SELECT key FROM kv WHERE {condition}"))?;
            stmt.query_map([arg], |row| row.get(0))?.collect::<rusqlite::Result<_>>()?
        };
        delete_keys(&tx, &keys)?;
        tx.commit()?;
        Ok(keys.len() as u64)
    }

    pub(super) fn compare_and_swap(
        &mut self,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
        lease: Option<i64>,
    ) -> DbResult<bool> {
        let tx = self.write()?;
        check_lease(&tx, lease)?;
        let current: Option<Vec<u8>> =
            tx.query_row("SELECT value FROM kv WHERE key = ?1", [key], |row| row.get(0)).optional()?;
        if current.as_deref() != expected {
            return Ok(false);
        }
        let revision = bump_revision(&tx)?;
        upsert(&tx, key, value, revision, lease)?;
        tx.commit()?;
        Ok(true)
    }

    pub(super) fn grant_lease(&mut self, ttl: Duration) -> DbResult<i64> {
        let tx = self.write()?;
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        tx.execute("INSERT INTO leases (ttl_ms, expires_at_ms) VALUES (?1, ?2)", params![ttl_ms, now_ms() + ttl_ms])?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        Ok(id)
    }

    pub(super) fn keep_lease_alive(&mut self, lease: i64) -> DbResult<()> {
        let tx = self.write()?;
        let renewed = tx.execute(
            "UPDATE leases SET expires_at_ms = ?2 + ttl_ms WHERE id = ?1 AND expires_at_ms > ?2",
            params![lease, now_ms()],
        )?;
        tx.commit()?;
        if renewed == 0 { Err(DbError::LeaseNotFound(lease)) } else { Ok(()) }
    }

    pub(super) fn revoke_lease(&mut self, lease: i64) -> DbResult<()> {
        let tx = self.write()?;
        expire_leases(&tx, &[lease])?;
        tx.commit()?;
        Ok(())
    }

    /// Events under `prefix` from revision `from` on, oldest first.
    pub(super) fn events_since(&mut self, prefix: &str, from: i64) -> DbResult<Vec<WatchEvent>> {
        {
            // Expiries are events too; make them happen.
            let tx = self.write()?;
            tx.commit()?;
        }
        let current = self.revision()?;
        let compacted: i64 =
            self.conn.query_row("SELECT revision FROM compacted WHERE id = 0", [], |row| row.get(0))?;
        let compacted = compacted.max(current - EVENTS_KEPT);
        if from > 0 && from <= compacted {
            return Err(DbError::Compacted(compacted + 1));
        }
        let mut stmt = self.conn.prepare_cached(
            "SELECT revision, key, value FROM events WHERE revision >= ?1 AND key LIKE ?2 ESCAPE '\\'
             ORDER BY revision, rowid",
        )?;
        let rows = stmt.query_map(params![from, like_prefix(prefix)], |row| {
            let (revision, key, value): (i64, String, Option<Vec<u8>>) = (row.get(0)?, row.get(1)?, row.get(2)?);
            Ok(match value {
                Some(value) => WatchEvent::Put { key, value, revision },
                None => WatchEvent::Delete { key, revision },
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

fn check_lease(tx: &Transaction<'_>, lease: Option<i64>) -> DbResult<()> {
    let Some(lease) = lease else { return Ok(()) };
    let exists: Option<i64> =
        tx.query_row("SELECT id FROM leases WHERE id = ?1", [lease], |row| row.get(0)).optional()?;
    exists.map(|_| ()).ok_or(DbError::LeaseNotFound(lease))
}

/// Deletes the keys of leases that ran out, and the leases.
fn purge_expired(tx: &Transaction<'_>) -> DbResult<()> {
    let expired: Vec<i64> = {
        let mut stmt = tx.prepare_cached("SELECT id FROM leases WHERE expires_at_ms <= ?1")?;
        stmt.query_map([now_ms()], |row| row.get(0))?.collect::<rusqlite::Result<_>>()?
    };
    expire_leases(tx, &expired)
}

fn expire_leases(tx: &Transaction<'_>, leases: &[i64]) -> DbResult<()> {
    for lease in leases {
        let keys: Vec<String> = {
            let mut stmt = tx.prepare_cached("SELECT key FROM kv WHERE lease = ?1")?;
            stmt.query_map([lease], |row| row.get(0))?.collect::<rusqlite::Result<_>>()?
        };
        delete_keys(tx, &keys)?;
        tx.execute("DELETE FROM leases WHERE id = ?1", [lease])?;
    }
    Ok(())
}

/// Deletes `keys` as one revision, logging a delete event for each.
fn delete_keys(tx: &Transaction<'_>, keys: &[String]) -> DbResult<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let revision = bump_revision(tx)?;
    for key in keys {
        tx.execute("DELETE FROM kv WHERE key = ?1", [key])?;
        tx.execute("INSERT INTO events (revision, key, value) VALUES (?1, ?2, NULL)", params![revision, key])?;
    }
    Ok(())
}

fn bump_revision(tx: &Transaction<'_>) -> DbResult<i64> {
    let revision: i64 =
        tx.query_row("UPDATE revision SET value = value + 1 WHERE id = 0 RETURNING value", [], |row| row.get(0))?;
    tx.execute("DELETE FROM events WHERE revision <= ?1", [revision - EVENTS_KEPT])?;
    Ok(revision)
}

fn upsert(tx: &Transaction<'_>, key: &str, value: &[u8], revision: i64, lease: Option<i64>) -> DbResult<()> {
    tx.execute(
        "INSERT INTO kv (key, value, mod_revision, lease) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value, mod_revision = excluded.mod_revision,
                                        lease = excluded.lease",
        params![key, value, revision, lease],
    )?;
    tx.execute("INSERT INTO events (revision, key, value) VALUES (?1, ?2, ?3)", params![revision, key, value])?;
    Ok(())
}

/// Makes the database (and its WAL files, which SQLite creates with the
/// database's mode) readable by its owner alone: it holds config values,
/// private keys of certificates and ACME credentials.
fn owner_only(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
    for suffix in ["", "-wal", "-shm"] {
        let file = PathBuf::from(format!("{}{suffix}", path.display()));
        match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err),
            _ => {}
        }
    }
    Ok(())
}
