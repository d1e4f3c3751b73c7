//! Signaling's configuration: an optional TOML file (`--config PATH`) whose keys the
//! command-line flags override, then defaults. Unknown keys are an error naming the key.
//!
//! | TOML key | flag | default |
//! |---|---|---|
//! | `homeserver` | `--homeserver` | required: the client-server API base URL |
//! | `user` | `--user` | required: the SFU account, `@sfu:example.org` or a localpart |
//! | `password` / `password_file` | `--password-file` | one of these or `access_token` |
//! | `access_token` / `access_token_file` | `--access-token-file` | see `password` |
//! | `relay_socket` | `--relay-socket` | `/run/blindfold/relay.sock` |
//! | `database` | `--database` | `signaling.sqlite3` (SQLite: session, sync token, live calls) |
//! | `metrics` | `--metrics` | `127.0.0.1:9465`; `""` disables |
//! | `allow_users`, `allow_servers` | `--allow-user`, `--allow-server` (repeat) | both empty: users of the SFU's own server |
//! | `max_calls` | `--max-calls` | 1000 |
//! | `max_calls_per_conference` | `--max-calls-per-conference` | 100 |
//! | `max_calls_per_user` | `--max-calls-per-user` | 4 |
//! | `invites_per_user_per_minute` | `--invites-per-user-per-minute` | 20 |
//! | `max_sdp_bytes` | `--max-sdp-bytes` | 16384 |
//! | `max_rooms` | `--max-rooms` | 10000 |
//! | `log_level` | `--log-level` | `info` |
//!
//! Secrets are read from files (or the TOML file, which should be mode 0600), never
//! from flags: a command line is visible to every user of the machine.
//!
//! ```toml
//! homeserver = "https://matrix.example.org"
//! user = "@sfu:example.org"
//! password_file = "/etc/blindfold/sfu-password"
//! relay_socket = "/run/blindfold/relay.sock"
//! database = "/var/lib/blindfold/signaling.sqlite3"
//! allow_servers = ["example.org"]
//! ```

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::core::{AllowList, Limits};

/// How much to log: the same levels and names as the relay's.
pub use blindfold_relay::shell::config::LogLevel;

/// The command-line flags; each overrides the TOML key of the same name (with `_`).
#[derive(Debug, Clone, Default, clap::Parser)]
#[command(
    name = "blindfold-signaling",
    version,
    about = "Blindfold's signaling service: the SFU's Matrix user, which answers conference calls and drives the relay"
)]
pub struct Args {
    /// A TOML config file; flags override its keys.
    #[arg(long, short = 'c', value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// The homeserver's client-server API base URL.
    #[arg(long, value_name = "URL")]
    pub homeserver: Option<String>,
    /// The SFU account: a full user id or a localpart.
    #[arg(long)]
    pub user: Option<String>,
    /// A file holding the account's password.
    #[arg(long, value_name = "PATH")]
    pub password_file: Option<PathBuf>,
    /// A file holding an access token for the account (instead of a password).
    #[arg(long, value_name = "PATH")]
    pub access_token_file: Option<PathBuf>,
    /// The relay's control socket.
    #[arg(long, value_name = "PATH")]
    pub relay_socket: Option<PathBuf>,
    /// The SQLite database (created if missing).
    #[arg(long, value_name = "PATH")]
    pub database: Option<PathBuf>,
    /// TCP address for Prometheus `GET /metrics`; "" disables.
    #[arg(long, value_name = "IP:PORT")]
    pub metrics: Option<String>,
    /// A user allowed to invite and call the SFU (repeat for several).
    #[arg(long = "allow-user", value_name = "USER_ID")]
    pub allow_users: Vec<String>,
    /// A server whose users are allowed (repeat for several).
    #[arg(long = "allow-server", value_name = "SERVER")]
    pub allow_servers: Vec<String>,
    /// Live calls on this SFU.
    #[arg(long)]
    pub max_calls: Option<usize>,
    /// Live calls in one conference.
    #[arg(long)]
    pub max_calls_per_conference: Option<usize>,
    /// Live calls of one user.
    #[arg(long)]
    pub max_calls_per_user: Option<usize>,
    /// Invites one user may send per minute.
    #[arg(long)]
    pub invites_per_user_per_minute: Option<usize>,
    /// Largest SDP offer accepted, bytes.
    #[arg(long)]
    pub max_sdp_bytes: Option<usize>,
    /// Rooms (conference rooms and DMs) the SFU may be in; further invites are declined.
    #[arg(long)]
    pub max_rooms: Option<usize>,
    /// Log level.
    #[arg(long, value_enum)]
    pub log_level: Option<LogLevel>,
}

/// The TOML file: every key optional, unknown keys rejected.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    homeserver: Option<String>,
    user: Option<String>,
    password: Option<String>,
    password_file: Option<PathBuf>,
    access_token: Option<String>,
    access_token_file: Option<PathBuf>,
    relay_socket: Option<PathBuf>,
    database: Option<PathBuf>,
    metrics: Option<String>,
    allow_users: Option<Vec<String>>,
    allow_servers: Option<Vec<String>>,
    max_calls: Option<usize>,
    max_calls_per_conference: Option<usize>,
    max_calls_per_user: Option<usize>,
    invites_per_user_per_minute: Option<usize>,
    max_sdp_bytes: Option<usize>,
    max_rooms: Option<usize>,
    log_level: Option<LogLevel>,
}

/// How the SFU account authenticates.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// Log in with a password (once; the session is then kept in the database).
    Password(String),
    /// Use an existing access token.
    AccessToken(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credentials::Password(_) => "Password(…)",
            Credentials::AccessToken(_) => "AccessToken(…)",
        })
    }
}

/// The resolved configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Homeserver base URL.
    pub homeserver: String,
    /// The SFU account as given (full id or localpart).
    pub user: String,
    /// How it logs in.
    pub credentials: Credentials,
    /// The relay's control socket.
    pub relay_socket: PathBuf,
    /// The database file.
    pub database: PathBuf,
    /// Metrics address, or `None` when disabled.
    pub metrics: Option<SocketAddr>,
    /// Who may use the SFU; empty lists mean the SFU's own server.
    pub allow: AllowList,
    /// Limits.
    pub limits: Limits,
    /// Log level.
    pub log_level: LogLevel,
}

/// Why the configuration was rejected. Each names the key at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Bad command line, or `--help`/`--version` (call `.exit()` on it to print and exit).
    #[error(transparent)]
    Args(#[from] clap::Error),
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid TOML, has an unknown key, or a key of the wrong type.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The TOML parser's message (it names the key and line).
        message: String,
    },
    /// A required key is missing or a value is unusable.
    #[error("`{key}`: {message}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

fn read_secret(path: &Path) -> Result<String, ConfigError> {
    let s = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    Ok(s.trim_end_matches(['\n', '\r']).to_owned())
}

impl Config {
    /// Parses flags (`args[0]` is the program name) and the config file they name.
    pub fn from_args<I, T>(args: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        use clap::Parser;
        let args = Args::try_parse_from(args)?;
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                Self::parse_file(&text, path)?
            }
            None => FileConfig::default(),
        };
        Self::resolve(args, file)
    }

    /// Parses a TOML config's text with no flags (for tests and tools).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::resolve(
            Args::default(),
            Self::parse_file(text, Path::new("<string>"))?,
        )
    }

    fn parse_file(text: &str, path: &Path) -> Result<FileConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    fn resolve(a: Args, f: FileConfig) -> Result<Self, ConfigError> {
        let homeserver = a.homeserver.or(f.homeserver).ok_or_else(|| {
            invalid(
                "homeserver",
                "required: the homeserver's URL, e.g. https://matrix.example.org",
            )
        })?;
        if !(homeserver.starts_with("http://") || homeserver.starts_with("https://")) {
            return Err(invalid(
                "homeserver",
                format!("{homeserver:?} is not an http(s) URL"),
            ));
        }
        let user = a
            .user
            .or(f.user)
            .ok_or_else(|| invalid("user", "required: the SFU's Matrix account"))?;
        let password = match a.password_file.or(f.password_file) {
            Some(p) => Some(read_secret(&p)?),
            None => f.password,
        };
        let token = match a.access_token_file.or(f.access_token_file) {
            Some(p) => Some(read_secret(&p)?),
            None => f.access_token,
        };
        let credentials = match (password, token) {
            (Some(p), None) if !p.is_empty() => Credentials::Password(p),
            (None, Some(t)) if !t.is_empty() => Credentials::AccessToken(t),
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "password",
                    "give a password or an access token, not both",
                ));
            }
            _ => {
                return Err(invalid(
                    "password",
                    "required: `password`, `password_file`, `access_token` or `access_token_file`",
                ));
            }
        };
        let metrics = match a.metrics.or(f.metrics) {
            None => Some(SocketAddr::from(([127, 0, 0, 1], 9465))),
            Some(s) if s.is_empty() => None,
            Some(s) => Some(
                s.parse()
                    .map_err(|e| invalid("metrics", format!("{s:?}: {e}")))?,
            ),
        };
        let mut allow = AllowList {
            users: if a.allow_users.is_empty() {
                f.allow_users.unwrap_or_default()
            } else {
                a.allow_users
            },
            servers: if a.allow_servers.is_empty() {
                f.allow_servers.unwrap_or_default()
            } else {
                a.allow_servers
            },
        };
        if let Some(bad) = allow
            .users
            .iter()
            .find(|u| !u.starts_with('@') || !u.contains(':'))
        {
            return Err(invalid(
                "allow_users",
                format!("{bad:?} is not a user id (@name:server)"),
            ));
        }
        allow.servers.retain(|s| !s.is_empty());
        let d = Limits::default();
        let limits = Limits {
            max_calls: a.max_calls.or(f.max_calls).unwrap_or(d.max_calls),
            max_calls_per_conference: a
                .max_calls_per_conference
                .or(f.max_calls_per_conference)
                .unwrap_or(d.max_calls_per_conference),
            max_calls_per_user: a
                .max_calls_per_user
                .or(f.max_calls_per_user)
                .unwrap_or(d.max_calls_per_user),
            invites_per_user_per_minute: a
                .invites_per_user_per_minute
                .or(f.invites_per_user_per_minute)
                .unwrap_or(d.invites_per_user_per_minute),
            max_sdp_bytes: a
                .max_sdp_bytes
                .or(f.max_sdp_bytes)
                .unwrap_or(d.max_sdp_bytes),
            max_rooms: a.max_rooms.or(f.max_rooms).unwrap_or(d.max_rooms),
        };
        if limits.max_calls > blindfold_relay::control::MAX_SNAPSHOT_SESSIONS {
            return Err(invalid(
                "max_calls",
                format!(
                    "above {}: a reconnect's snapshot of every call could not be sent",
                    blindfold_relay::control::MAX_SNAPSHOT_SESSIONS
                ),
            ));
        }
        if limits.max_sdp_bytes < 512 {
            return Err(invalid(
                "max_sdp_bytes",
                "below 512 bytes no real offer fits",
            ));
        }
        Ok(Config {
            homeserver,
            user,
            credentials,
            relay_socket: a
                .relay_socket
                .or(f.relay_socket)
                .unwrap_or_else(|| PathBuf::from("/run/blindfold/relay.sock")),
            database: a
                .database
                .or(f.database)
                .unwrap_or_else(|| PathBuf::from("signaling.sqlite3")),
            metrics,
            allow,
            limits,
            log_level: a.log_level.or(f.log_level).unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str =
        "homeserver = \"http://127.0.0.1:8008\"\nuser = \"@sfu:hs\"\npassword = \"pw\"\n";

    #[test]
    fn minimal_file_takes_defaults() {
        let c = Config::from_toml(MIN).unwrap();
        assert_eq!(c.credentials, Credentials::Password("pw".into()));
        assert_eq!(c.limits, Limits::default());
        assert_eq!(c.metrics, Some("127.0.0.1:9465".parse().unwrap()));
        assert!(c.allow.users.is_empty() && c.allow.servers.is_empty());
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::from_toml(&format!("{MIN}max_cals = 3\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_cals"), "{err}");
    }

    #[test]
    fn missing_credentials_and_both_are_refused() {
        let no_pw = "homeserver = \"http://h\"\nuser = \"@s:h\"\n";
        assert!(
            Config::from_toml(no_pw)
                .unwrap_err()
                .to_string()
                .contains("password")
        );
        let both = format!("{MIN}access_token = \"t\"\n");
        assert!(
            Config::from_toml(&both)
                .unwrap_err()
                .to_string()
                .contains("not both")
        );
    }

    #[test]
    fn flags_override_the_file() {
        let dir = std::env::temp_dir().join(format!("bf-sig-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(&path, format!("{MIN}max_calls = 3\nmetrics = \"\"\n")).unwrap();
        let c = Config::from_args(["x", "--config", path.to_str().unwrap(), "--max-calls", "9"])
            .unwrap();
        assert_eq!(c.limits.max_calls, 9);
        assert_eq!(c.metrics, None);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn max_rooms_is_read_from_the_file_and_defaults_to_10000() {
        assert_eq!(Config::from_toml(MIN).unwrap().limits.max_rooms, 10_000);
        let c = Config::from_toml(&format!("{MIN}max_rooms = 50\n")).unwrap();
        assert_eq!(c.limits.max_rooms, 50);
    }

    #[test]
    fn bad_values_name_their_key() {
        for (line, key) in [
            ("homeserver = \"matrix.org\"", "homeserver"),
            ("metrics = \"nope\"", "metrics"),
            ("allow_users = [\"bob\"]", "allow_users"),
            ("max_sdp_bytes = 10", "max_sdp_bytes"),
            ("max_calls = 10001", "max_calls"),
        ] {
            let text = MIN
                .lines()
                .filter(|l| !l.starts_with(key))
                .collect::<Vec<_>>()
                .join("\n");
            let err = Config::from_toml(&format!("{text}\n{line}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{line}: {err}");
        }
    }
}
