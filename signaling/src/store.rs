//! Signaling's SQLite database: the Matrix session (so a restart is the same device),
//! the sync token (so a restart does not re-read history), every live call (so a
//! restart restores them and re-pushes them to the relay without cutting media), and
//! the Matrix events not yet sent (so a crash after the batch that caused them was
//! marked handled loses none).
//!
//! One file, one connection, WAL journal. Writes are small and happen when a call
//! starts, changes or ends, when an event is queued and sent, and once per sync batch;
//! nothing writes while idle, so an idle server costs no disk traffic beyond the sync
//! token of each (empty) long poll.

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

/// A Matrix event waiting to be sent, kept until the homeserver took it (or refused it
/// for good).
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedEvent {
    /// Its place in the queue (events of one room go in this order).
    pub seq: i64,
    /// The room it goes to.
    pub room: String,
    /// Its type.
    pub event_type: String,
    /// Its content.
    pub content: serde_json::Value,
    /// The transaction id it is sent with, the same on every try (the homeserver
    /// de-duplicates by it, so an event sent just before a crash is not sent twice).
    pub txn: String,
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
CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT,
    room TEXT NOT NULL, event_type TEXT NOT NULL, content TEXT NOT NULL, txn TEXT NOT NULL);
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

    /// Saves the Matrix session. The sync token stays if the earlier session was the
    /// same account on the same homeserver (a new login after the access token lapsed,
    /// on the same device or a new one: the token is the account's place in its rooms'
    /// timelines, and without it the first sync would skip what came meanwhile); for
    /// another account it is forgotten.
    pub fn save_session(&mut self, s: &SavedSession) -> Result<(), StoreError> {
        let same_account = self
            .session()?
            .is_some_and(|old| old.user_id == s.user_id && old.homeserver == s.homeserver);
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
        if !same_account {
            tx.execute("DELETE FROM kv WHERE key = 'sync_token'", [])?;
        }
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
        save_call(&self.db, call)
    }

    /// Deletes a call (absent is fine).
    pub fn delete_call(&self, session_id: &str) -> Result<(), StoreError> {
        self.db
            .execute("DELETE FROM calls WHERE session_id = ?1", [session_id])?;
        Ok(())
    }

    /// Queues an event to send, and saves `call` (the call it answers) in the same
    /// write: a crash between the two would restore a call whose caller never gets its
    /// answer. Returns the event's place in the queue.
    pub fn queue_event(
        &self,
        room: &str,
        event_type: &str,
        content: &serde_json::Value,
        txn: &str,
        call: Option<&Call>,
    ) -> Result<i64, StoreError> {
        let tx = self.db.unchecked_transaction()?;
        if let Some(call) = call {
            save_call(&tx, call)?;
        }
        tx.execute(
            "INSERT INTO outbox (room, event_type, content, txn) VALUES (?1, ?2, ?3, ?4)",
            params![room, event_type, content.to_string(), txn],
        )?;
        let seq = tx.last_insert_rowid();
        tx.commit()?;
        Ok(seq)
    }

    /// Takes a sent (or given up) event out of the queue (absent is fine).
    pub fn forget_event(&self, seq: i64) -> Result<(), StoreError> {
        self.db
            .execute("DELETE FROM outbox WHERE seq = ?1", [seq])?;
        Ok(())
    }

    /// The queued events, in queue order. One whose content does not decode (the
    /// database was edited?) is dropped with a warning: it could not be sent anyway.
    pub fn queued_events(&self) -> Result<Vec<QueuedEvent>, StoreError> {
        let mut stmt = self
            .db
            .prepare("SELECT seq, room, event_type, content, txn FROM outbox ORDER BY seq")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
            ))
        })?;
        let mut out = Vec::new();
        let mut bad = Vec::new();
        for row in rows {
            let (seq, room, event_type, content, txn) = row?;
            match serde_json::from_str(&content) {
                Ok(content) => out.push(QueuedEvent {
                    seq,
                    room,
                    event_type,
                    content,
                    txn,
                }),
                Err(e) => {
                    tracing::warn!(seq, %room, %event_type, error = %e, "dropping an unreadable queued event");
                    bad.push(seq);
                }
            }
        }
        for seq in bad {
            self.forget_event(seq)?;
        }
        Ok(out)
    }
}

fn save_call(db: &Connection, call: &Call) -> Result<(), StoreError> {
    let json = serde_json::to_string(call).expect("a Call always serializes");
    db.execute(
        "INSERT INTO calls (session_id, call) VALUES (?1, ?2)
         ON CONFLICT(session_id) DO UPDATE SET call = excluded.call",
        params![call.spec.session_id.as_str(), json],
    )?;
    Ok(())
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

    #[test]
    fn queued_events_survive_a_reopen_in_order_until_forgotten() {
        let dir = std::env::temp_dir().join(format!("bf-store-outbox-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.db");
        let store = Store::open(&path).unwrap();
        let answer = serde_json::json!({"call_id": "c1", "answer": {"sdp": "v=0"}});
        let hangup = serde_json::json!({"call_id": "c1"});
        let a = store
            .queue_event("!dm:x", "m.call.answer", &answer, "t1", None)
            .unwrap();
        let b = store
            .queue_event("!dm:x", "m.call.hangup", &hangup, "t2", None)
            .unwrap();
        let c = store
            .queue_event("!dm2:x", "m.call.hangup", &hangup, "t3", None)
            .unwrap();
        store.forget_event(b).unwrap();
        store.forget_event(b).unwrap();
        // One no version of signaling wrote: dropped, not fatal.
        store
            .db
            .execute(
                "INSERT INTO outbox (room, event_type, content, txn) VALUES ('!r:x', 't', '{', 'x')",
                [],
            )
            .unwrap();
        drop(store);
        let store = Store::open(&path).unwrap();
        let queued = store.queued_events().unwrap();
        let got: Vec<(i64, &str, &str)> = queued
            .iter()
            .map(|q| (q.seq, q.room.as_str(), q.txn.as_str()))
            .collect();
        assert_eq!(got, [(a, "!dm:x", "t1"), (c, "!dm2:x", "t3")]);
        assert_eq!(queued[0].content, answer);
        assert_eq!(queued[0].event_type, "m.call.answer");
        assert_eq!(
            store.queued_events().unwrap().len(),
            2,
            "the bad one is gone"
        );
        std::fs::remove_dir_all(dir).ok();
    }

    /// A new login of the same account keeps its place in the timelines; another
    /// account's starts afresh.
    #[test]
    fn a_new_login_keeps_the_sync_token_only_for_the_same_account() {
        let dir = std::env::temp_dir().join(format!("bf-store-login-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut store = Store::open(&dir.join("s.db")).unwrap();
        let session = |user: &str, device: &str| SavedSession {
            user_id: user.into(),
            device_id: device.into(),
            access_token: format!("token-{device}"),
            homeserver: "http://hs".into(),
        };
        store.save_session(&session("@sfu:hs", "D1")).unwrap();
        store.set_sync_token("s42").unwrap();
        // The token lapsed: a new login, on a new device too.
        store.save_session(&session("@sfu:hs", "D2")).unwrap();
        assert_eq!(store.sync_token().unwrap().as_deref(), Some("s42"));
        assert_eq!(store.session().unwrap().unwrap().device_id, "D2");
        store.save_session(&session("@other:hs", "D3")).unwrap();
        assert_eq!(store.sync_token().unwrap(), None);
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
