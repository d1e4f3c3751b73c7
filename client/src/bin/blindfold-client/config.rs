//! `blindfold-client`'s configuration: an optional TOML file (`--config PATH`) whose
//! keys the command-line flags override. Unknown keys are an error naming the key.
//! Secrets come only from files (or the TOML file, which should be mode 0600): a
//! command line is visible to every user of the machine.
//!
//! | TOML key | flag | default |
//! |---|---|---|
//! | `homeserver` | `--homeserver URL` | required |
//! | `user` | `--user USER_ID` | required (full id or localpart) |
//! | `password` / `password_file` | `--password-file FILE` | one of these or a token |
//! | `access_token` / `access_token_file` | `--access-token-file FILE` | see `password` |
//! | `room` | `--room ROOM_ID` | required: the conference room |
//! | `conference` | `--conference CONF_ID` | required: the announcement's state key |
//! | `store` | `--store DIR` | required: matrix-sdk's SQLite stores and the saved session |
//! | `duration` | `--duration SECS` | none: until Ctrl-C or SIGTERM |
//! | `report` | `--report FILE.json` | none: no report file |
//! | `record_dir` | `--record-dir DIR` | none: nothing recorded |
//! | `audio_file` | `--audio-file CLIP.opus` | none: synthetic audio |
//! | `subscribe` | `--subscribe all\|speaker\|SSRC,SSRC\|none` | `all` |
//! | `no_table` | `--no-table [BOOL]` | `false` |

use std::path::{Path, PathBuf};
use std::time::Duration;

use blindfold_client::conference::{Login, Subscription};
use blindfold_relay::id::Ssrc;
use serde::Deserialize;

/// The command-line flags; each overrides the TOML key of the same name (with `_`).
#[derive(Debug, Clone, Default, clap::Parser)]
#[command(
    name = "blindfold-client",
    version,
    // The last of a repeated flag wins, as in most tools (and the tests rely on it).
    args_override_self = true,
    about = "Joins a Blindfold conference in an end-to-end encrypted Matrix room: sends \
             synthetic video and synthetic or Ogg Opus audio, shows what it decrypts from \
             whom, records received audio, writes a JSON report"
)]
pub struct Args {
    /// A TOML config file; flags override its keys.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The homeserver's client-server API base URL.
    #[arg(long, value_name = "URL")]
    pub homeserver: Option<String>,
    /// The Matrix account: a full user id or a localpart.
    #[arg(long, value_name = "USER_ID")]
    pub user: Option<String>,
    /// A file holding the account's password.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// A file holding an access token (instead of a password).
    #[arg(long, value_name = "FILE")]
    pub access_token_file: Option<PathBuf>,
    /// The conference room (end-to-end encrypted).
    #[arg(long, value_name = "ROOM_ID")]
    pub room: Option<String>,
    /// The conference id (the org.matrix.msc2359.conference state key).
    #[arg(long, value_name = "CONF_ID")]
    pub conference: Option<String>,
    /// The participant's directory: its Matrix crypto store and session (created).
    #[arg(long, value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// Seconds to stay in the call after the answer; without it, until Ctrl-C.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<String>,
    /// Where to write the JSON report at exit.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Where to record each received audio stream as Ogg Opus (created).
    #[arg(long, value_name = "DIR")]
    pub record_dir: Option<PathBuf>,
    /// An Ogg Opus file to send as the audio stream (looped), instead of synthetic audio.
    #[arg(long, value_name = "CLIP.opus")]
    pub audio_file: Option<PathBuf>,
    /// Full-resolution streams to receive: all, speaker (the active speaker's), none,
    /// or SSRCs separated by commas.
    #[arg(long, value_name = "all|speaker|SSRC,SSRC")]
    pub subscribe: Option<String>,
    /// No live table: only a final summary (`--no-table false` brings back the table a
    /// config file turned off).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub no_table: Option<bool>,
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
    room: Option<String>,
    conference: Option<String>,
    store: Option<PathBuf>,
    duration: Option<u64>,
    report: Option<PathBuf>,
    record_dir: Option<PathBuf>,
    audio_file: Option<PathBuf>,
    subscribe: Option<String>,
    no_table: Option<bool>,
}

/// How to authenticate; a token's device is looked up with `/whoami`.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// Password login (the store keeps the session: later runs are the same device).
    Password(String),
    /// An existing access token.
    AccessToken(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a secret, even in a debug dump.
        f.write_str(match self {
            Credentials::Password(_) => "Password(…)",
            Credentials::AccessToken(_) => "AccessToken(…)",
        })
    }
}

/// Everything the client runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub homeserver: String,
    pub user: String,
    pub credentials: Credentials,
    pub room: String,
    pub conference: String,
    pub store: PathBuf,
    pub duration: Option<Duration>,
    pub report: Option<PathBuf>,
    pub record_dir: Option<PathBuf>,
    pub audio_file: Option<PathBuf>,
    pub subscribe: Subscription,
    pub table: bool,
}

/// A configuration problem, in one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn invalid(key: &str, why: impl std::fmt::Display) -> ConfigError {
    ConfigError(format!("{key}: {why}"))
}

/// Longest `--duration`: a day (a typo of a few zeros should not keep a call open for
/// years).
const MAX_DURATION_S: u64 = 86_400;

impl Config {
    /// The flags over the TOML file named by `--config`, if any.
    pub fn load(args: Args) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ConfigError(format!("reading {}: {e}", path.display())))?;
                parse_file(&text, path)?
            }
            None => FileConfig::default(),
        };
        resolve(args, file)
    }

    /// The login matrix-sdk gets (a token still needs its device: see `main`).
    pub fn password_login(&self) -> Option<Login> {
        match &self.credentials {
            Credentials::Password(p) => Some(Login::Password {
                user: self.user.clone(),
                password: p.clone(),
            }),
            Credentials::AccessToken(_) => None,
        }
    }
}

fn parse_file(text: &str, path: &Path) -> Result<FileConfig, ConfigError> {
    // toml's messages span lines (a caret under the key); one line is enough here,
    // and it names the unknown key.
    toml::from_str(text).map_err(|e| {
        let msg = e.message().replace('\n', " ");
        ConfigError(format!("{}: {msg}", path.display()))
    })
}

/// A secret from a file, without the trailing newline editors add.
fn read_secret(key: &str, path: &Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| invalid(key, format!("reading {}: {e}", path.display())))?;
    let secret = text.trim_end_matches(['\n', '\r']).to_owned();
    if secret.is_empty() {
        return Err(invalid(key, format!("{} is empty", path.display())));
    }
    Ok(secret)
}

fn required<T>(v: Option<T>, key: &str, what: &str) -> Result<T, ConfigError> {
    v.ok_or_else(|| invalid(key, format!("required: {what}")))
}

fn resolve(a: Args, f: FileConfig) -> Result<Config, ConfigError> {
    let homeserver = required(
        a.homeserver.or(f.homeserver),
        "homeserver",
        "the homeserver's URL, e.g. https://matrix.example.org",
    )?;
    if !(homeserver.starts_with("http://") || homeserver.starts_with("https://")) {
        return Err(invalid(
            "homeserver",
            format!("{homeserver:?} is not an http(s) URL"),
        ));
    }
    let user = required(a.user.or(f.user), "user", "the Matrix account")?;
    let password = match a.password_file.or(f.password_file) {
        Some(p) => Some(read_secret("password_file", &p)?),
        None => f.password,
    };
    let token = match a.access_token_file.or(f.access_token_file) {
        Some(p) => Some(read_secret("access_token_file", &p)?),
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
                "required: --password-file or --access-token-file (or password / \
                 access_token in the config file)",
            ));
        }
    };
    let room = required(a.room.or(f.room), "room", "the conference room id")?;
    // Only the sigil: room versions 12 and later drop the `:server` part, and
    // matrix-sdk parses the rest when joining.
    if !room.starts_with('!') || room.len() < 2 {
        return Err(invalid(
            "room",
            format!("{room:?} is not a room id (they start with !)"),
        ));
    }
    let conference = required(
        a.conference.or(f.conference),
        "conference",
        "the conference id",
    )?;
    let store = required(
        a.store.or(f.store),
        "store",
        "a directory for the Matrix crypto store",
    )?;
    let duration = match (a.duration, f.duration) {
        (Some(text), _) => Some(text.parse::<u64>().map_err(|_| {
            invalid(
                "duration",
                format!("{text:?} is not a whole number of seconds"),
            )
        })?),
        (None, d) => d,
    };
    let duration = match duration {
        None => None,
        Some(s) if (1..=MAX_DURATION_S).contains(&s) => Some(Duration::from_secs(s)),
        Some(s) => {
            return Err(invalid(
                "duration",
                format!("{s} s: 1 to {MAX_DURATION_S} seconds"),
            ));
        }
    };
    let subscribe = match a.subscribe.or(f.subscribe) {
        None => Subscription::All,
        Some(text) => parse_subscription(&text).map_err(|why| invalid("subscribe", why))?,
    };
    Ok(Config {
        homeserver,
        user,
        credentials,
        room,
        conference,
        store,
        duration,
        report: a.report.or(f.report),
        record_dir: a.record_dir.or(f.record_dir),
        audio_file: a.audio_file.or(f.audio_file),
        subscribe,
        table: !a.no_table.or(f.no_table).unwrap_or(false),
    })
}

/// `all`, `speaker` (the active speaker's), `none` (thumbnails only) or SSRCs
/// separated by commas.
pub fn parse_subscription(text: &str) -> Result<Subscription, String> {
    match text.trim() {
        "all" => return Ok(Subscription::All),
        "speaker" => return Ok(Subscription::Speaker),
        "none" | "" => return Ok(Subscription::Ssrcs(Vec::new())),
        _ => {}
    }
    let ssrcs = text
        .split(',')
        .map(|s| {
            let s = s.trim();
            s.parse::<u32>().map(Ssrc).map_err(|_| {
                format!(
                    "{s:?} is not an SSRC (0 to 4294967295); expected all, speaker, none or SSRC,SSRC"
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Subscription::Ssrcs(ssrcs))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("bf-client-config-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn args(extra: &[&str]) -> Result<Config, ConfigError> {
        // One file per call: the tests run in parallel, and a file rewritten by
        // another is empty for a moment.
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let pw = dir().join(format!("pw{n}"));
        std::fs::write(&pw, "secret\n").unwrap();
        let mut argv = vec![
            "blindfold-client",
            "--homeserver",
            "http://127.0.0.1:8008",
            "--user",
            "@a:l",
            "--room",
            "!r:l",
            "--conference",
            "c",
            "--store",
            "/s",
        ];
        let pw = pw.display().to_string();
        argv.extend(["--password-file", &pw]);
        argv.extend(extra);
        Config::load(Args::try_parse_from(argv).unwrap())
    }

    #[test]
    fn flags_give_a_config() {
        let c = args(&["--duration", "20", "--subscribe", "1,2", "--no-table"]).unwrap();
        assert_eq!(c.credentials, Credentials::Password("secret".into()));
        assert_eq!(c.duration, Some(Duration::from_secs(20)));
        assert_eq!(c.subscribe, Subscription::Ssrcs(vec![Ssrc(1), Ssrc(2)]));
        assert!(!c.table);
        assert_eq!(format!("{:?}", c.credentials), "Password(…)");
    }

    #[test]
    fn flags_override_the_file_and_unknown_keys_are_named() {
        let d = dir();
        let cfg = d.join("c.toml");
        std::fs::write(
            &cfg,
            "duration = 5\nsubscribe = \"none\"\nno_table = true\n",
        )
        .unwrap();
        let c = args(&["--config", cfg.to_str().unwrap(), "--duration", "7"]).unwrap();
        assert_eq!(c.duration, Some(Duration::from_secs(7)));
        assert_eq!(c.subscribe, Subscription::Ssrcs(vec![]));
        assert!(!c.table);
        let c = args(&["--config", cfg.to_str().unwrap(), "--no-table", "false"]).unwrap();
        assert!(c.table, "the flag's false overrides the file's true");
        std::fs::write(&cfg, "durration = 5\n").unwrap();
        let e = args(&["--config", cfg.to_str().unwrap()]).unwrap_err();
        assert!(e.0.contains("unknown field `durration`"), "{e}");
        assert!(!e.0.contains('\n'), "{e}");
    }

    #[test]
    fn bad_values_are_one_line_errors() {
        for (extra, why) in [
            (&["--duration", "0"][..], "duration: 0 s"),
            (&["--duration", "2s"], "duration: \"2s\""),
            (
                &["--subscribe", "all,3"],
                "subscribe: \"all\" is not an SSRC",
            ),
            (&["--room", "room"], "room: \"room\" is not a room id"),
            (&["--homeserver", "matrix.org"], "not an http(s) URL"),
        ] {
            let e = args(extra).unwrap_err();
            assert!(e.0.contains(why), "{extra:?}: {e}");
        }
        let e = args(&["--password-file", "/nonexistent/pw"]).unwrap_err();
        assert!(
            e.0.starts_with("password_file: reading /nonexistent/pw"),
            "{e}"
        );
        let e = resolve(
            Args {
                homeserver: Some("http://h".into()),
                user: Some("u".into()),
                ..Args::default()
            },
            FileConfig::default(),
        )
        .unwrap_err();
        assert!(e.0.starts_with("password: required"), "{e}");
    }
}
