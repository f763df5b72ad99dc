//! The embedded backend: one SQLite file, shared safely by every nap process
//! on the host (the gateway and the hooks it spawns). Each write bumps a
//! store-wide revision, as etcd does, so that watches can later resume from one.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::StoreError;

#[derive(Clone)]
pub(super) struct Embedded {
    conn: Arc<Mutex<Connection>>,
    path: Arc<PathBuf>,
}

/// The synchronous view of the database that one store operation gets.
pub(super) struct Db<'a> {
    conn: &'a mut Connection,
}

impl Embedded {
    pub(super) fn open(path: &Path) -> Result<Self, StoreError> {
        let err = |source| StoreError::Embedded { path: path.display().to_string(), source };
        let conn = Connection::open(path).map_err(err)?;
        // Other nap processes may hold the write lock for a moment; wait for it.
        conn.busy_timeout(Duration::from_secs(10)).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(err)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS kv (
                 key TEXT PRIMARY KEY NOT NULL,
                 value BLOB NOT NULL,
                 mod_revision INTEGER NOT NULL
             );
             CREATE TABLE IF NOT EXISTS revision (id INTEGER PRIMARY KEY CHECK (id = 0), value INTEGER NOT NULL);
             INSERT OR IGNORE INTO revision (id, value) VALUES (0, 0);",
        )
        .map_err(err)?;
        Ok(Embedded { conn: Arc::new(Mutex::new(conn)), path: Arc::new(path.to_owned()) })
    }

    /// Runs one operation off the async runtime: SQLite may wait on another
    /// process's lock, and that wait must not stall the gateway's tasks.
    pub(super) async fn run<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        F: FnOnce(&mut Db<'_>) -> rusqlite::Result<T> + Send,
        T: Send,
    {
        let conn = Arc::clone(&self.conn);
        let path = Arc::clone(&self.path);
        tokio::task::block_in_place(move || {
            let mut guard = conn.lock().map_err(|_| StoreError::Task("store mutex poisoned".into()))?;
            op(&mut Db { conn: &mut guard })
                .map_err(|source| StoreError::Embedded { path: path.display().to_string(), source })
        })
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

impl Db<'_> {
    pub(super) fn get(&mut self, key: &str) -> rusqlite::Result<Option<Vec<u8>>> {
        self.conn.query_row("SELECT value FROM kv WHERE key = ?1", [key], |row| row.get(0)).optional()
    }

    pub(super) fn put_many(&mut self, pairs: &[(&str, &[u8])]) -> rusqlite::Result<()> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let revision = bump_revision(&tx)?;
        for (key, value) in pairs {
            upsert(&tx, key, value, revision)?;
        }
        tx.commit()
    }

    pub(super) fn list(&mut self, prefix: &str) -> rusqlite::Result<Vec<(String, Vec<u8>)>> {
        let mut stmt =
            self.conn.prepare_cached("SELECT key, value FROM kv WHERE key LIKE ?1 ESCAPE '\\' ORDER BY key")?;
        let rows = stmt.query_map([like_prefix(prefix)], |row| Ok((row.get(0)?, row.get(1)?)))?;
        rows.collect()
    }

    pub(super) fn delete(&mut self, key: &str) -> rusqlite::Result<bool> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let deleted = tx.execute("DELETE FROM kv WHERE key = ?1", [key])?;
        if deleted > 0 {
            bump_revision(&tx)?;
        }
        tx.commit()?;
        Ok(deleted > 0)
    }

    pub(super) fn delete_prefix(&mut self, prefix: &str) -> rusqlite::Result<u64> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let deleted = tx.execute("DELETE FROM kv WHERE key LIKE ?1 ESCAPE '\\'", [like_prefix(prefix)])?;
        if deleted > 0 {
            bump_revision(&tx)?;
        }
        tx.commit()?;
        Ok(deleted as u64)
    }

    pub(super) fn compare_and_swap(
        &mut self,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> rusqlite::Result<bool> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current: Option<Vec<u8>> =
            tx.query_row("SELECT value FROM kv WHERE key = ?1", [key], |row| row.get(0)).optional()?;
        if current.as_deref() != expected {
            return Ok(false);
        }
        let revision = bump_revision(&tx)?;
        upsert(&tx, key, value, revision)?;
        tx.commit()?;
        Ok(true)
    }
}

fn bump_revision(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<i64> {
    tx.query_row("UPDATE revision SET value = value + 1 WHERE id = 0 RETURNING value", [], |row| row.get(0))
}

fn upsert(tx: &rusqlite::Transaction<'_>, key: &str, value: &[u8], revision: i64) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO kv (key, value, mod_revision) VALUES (?1, ?2, ?3)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value, mod_revision = excluded.mod_revision",
        params![key, value, revision],
    )?;
    Ok(())
}
