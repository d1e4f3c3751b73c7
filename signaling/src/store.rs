//! Signaling's SQLite database: the Matrix session (so a restart is the same device),
//! the sync token (so a restart does not re-read history), and every live call (so a
//! restart restores them and re-pushes them to the relay without cutting media).
//!
//! One file, one connection, WAL journal. Writes are small and happen when a call
//! starts, changes or ends and once per sync batch; nothing writes while idle, so an
//! idle server costs no disk traffic beyond the sync token of each (empty) long poll.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use crate::core::Call;

/// A store error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLite failed.
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The database file could not be created.
    #[error("creating the database: {0}")]
    Io(std::io::Error),
    /// A stored call did not decode (written by an incompatible version?).
    #[error("stored call {0} is unreadable: {1}")]
    BadCall(String, serde_json::Error),
}

/// The Matrix login that survives restarts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedSession {
    /// The account.
    pub user_id: String,
    /// Its device.
    pub device_id: String,
    /// Its access token.
    pub access_token: String,
    /// The homeserver it belongs to.
    pub homeserver: String,
}

/// The database.
#[derive(Debug)]
pub struct Store {
    db: Connection,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS calls (session_id TEXT PRIMARY KEY, call TEXT NOT NULL);
";

impl Store {
    /// Opens (creating if needed) the database at `path`. A new database is created
    /// readable by this user only (mode 0600; SQLite gives its WAL files the same): it
    /// holds the SFU account's access token and every call's ICE password.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        {
            use std::os::unix::fs::OpenOptionsExt;
            // create_new: an existing database keeps the mode its operator gave it.
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
            {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(StoreError::Io(e)),
            }
        }
        let db = Connection::open(path)?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "NORMAL")?;
        db.execute_batch(SCHEMA)?;
        Ok(Store { db })
    }

    fn get(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .db
            .query_row("SELECT value FROM kv WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    fn set(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.db.execute(
            "INSERT INTO kv (key, value) VALUES (?1, ?2)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    /// The saved Matrix session, if any.
    pub fn session(&self) -> Result<Option<SavedSession>, StoreError> {
        let (Some(user_id), Some(device_id), Some(access_token), Some(homeserver)) = (
            self.get("user_id")?,
            self.get("device_id")?,
            self.get("access_token")?,
            self.get("homeserver")?,
        ) else {
            return Ok(None);
        };
        Ok(Some(SavedSession {
            user_id,
            device_id,
            access_token,
            homeserver,
        }))
    }

    /// Saves the Matrix session and forgets the sync token of any earlier one.
    pub fn save_session(&mut self, s: &SavedSession) -> Result<(), StoreError> {
        let tx = self.db.transaction()?;
        for (k, v) in [
            ("user_id", &s.user_id),
            ("device_id", &s.device_id),
            ("access_token", &s.access_token),
            ("homeserver", &s.homeserver),
        ] {
            tx.execute(
                "INSERT INTO kv (key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![k, v],
            )?;
        }
        tx.execute("DELETE FROM kv WHERE key = 'sync_token'", [])?;
        tx.commit()?;
        Ok(())
    }

    /// The token of the last fully handled sync batch.
    pub fn sync_token(&self) -> Result<Option<String>, StoreError> {
        self.get("sync_token")
    }

    /// Records that every batch up to `token` is handled.
    pub fn set_sync_token(&self, token: &str) -> Result<(), StoreError> {
        self.set("sync_token", token)
    }

    /// The generation every request sent so far is at or below (0 if none was stored).
    pub fn generation_reserved(&self) -> Result<u64, StoreError> {
        Ok(self
            .get("generation_reserved")?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    /// Records that no request will carry a generation above `g` until a higher one is
    /// recorded.
    pub fn set_generation_reserved(&self, g: u64) -> Result<(), StoreError> {
        self.set("generation_reserved", &g.to_string())
    }

    /// Every stored call.
    pub fn calls(&self) -> Result<Vec<Call>, StoreError> {
        let mut stmt = self
            .db
            .prepare("SELECT session_id, call FROM calls ORDER BY session_id")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, json) = row?;
            out.push(serde_json::from_str(&json).map_err(|e| StoreError::BadCall(id, e))?);
        }
        Ok(out)
    }

    /// Inserts or replaces a call.
    pub fn save_call(&self, call: &Call) -> Result<(), StoreError> {
        let json = serde_json::to_string(call).expect("a Call always serializes");
        self.db.execute(
            "INSERT INTO calls (session_id, call) VALUES (?1, ?2)
             ON CONFLICT(session_id) DO UPDATE SET call = excluded.call",
            params![call.spec.session_id.as_str(), json],
        )?;
        Ok(())
    }

    /// Deletes a call (absent is fine).
    pub fn delete_call(&self, session_id: &str) -> Result<(), StoreError> {
        self.db
            .execute("DELETE FROM calls WHERE session_id = ?1", [session_id])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generation_reservation_survives_a_reopen() {
        let dir = std::env::temp_dir().join(format!("bf-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.db");
        let store = Store::open(&path).unwrap();
        assert_eq!(store.generation_reserved().unwrap(), 0, "none yet");
        store
            .set_generation_reserved(1_733_000_000_000_000)
            .unwrap();
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.generation_reserved().unwrap(), 1_733_000_000_000_000);
        std::fs::remove_dir_all(dir).ok();
    }

    /// It holds the SFU's access token: a new database, and its WAL, are the service
    /// user's alone.
    #[test]
    fn a_new_database_is_readable_by_its_user_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("bf-store-mode-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.db");
        let store = Store::open(&path).unwrap();
        store.set_generation_reserved(1).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.join("s.db-wal")), 0o600);
        drop(store);
        std::fs::remove_dir_all(dir).ok();
    }
}
