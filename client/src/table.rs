//! The participant's live table of what it decrypts from whom: one block per sender
//! (Matrix user and device), one line per stream (audio, thumbnail, full) with its
//! SSRC, bit rate, packets, loss, layer resumes, latency, key index and decrypt failures.
//!
//! The rows are plain data ([`SenderRow`], [`StreamRow`]) that the caller fills from
//! its receive statistics; the same rows go into the exit report
//! ([`crate::report::Report`]). [`render`] turns them into lines; [`LiveTable`] draws
//! those lines again and again, in place on a terminal (ANSI cursor up, each line
//! cleared and cut to the terminal's width so that nothing wraps and the cursor
//! arithmetic holds) and as plain successive blocks otherwise (a pipe, a log file).
//!
//! ```
//! use blindfold_client::table::{LiveTable, SenderRow, StreamKind, StreamRow};
//!
//! let rows = vec![SenderRow {
//!     user: "@bob:example.org".into(),
//!     device: "BOBDEVICE".into(),
//!     streams: vec![StreamRow {
//!         ssrc: 1111,
//!         kind: StreamKind::Audio,
//!         packets: 500,
//!         bytes: 40_000,
//!         lost: 0,
//!         resumes: 0,
//!         skipped: 0,
//!         decrypt_failures: 0,
//!         key_index: Some(0),
//!         kbps: 32.0,
//!         latency_ms: Some(1.5),
//!     }],
//! }];
//! let mut table = LiveTable::stdout();
//! // Every second or so:
//! table.draw(&mut std::io::stdout(), "@alice:example.org in weekly, 10 s", &rows)?;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! Output that is not the table (logs) should go to stderr, or call
//! [`LiveTable::forget`] after it, so that the next frame does not overwrite it.

use std::fmt::Write as _;
use std::io::{self, IsTerminal, Write};

use serde::{Deserialize, Serialize};

/// Which of a sender's streams (docs/protocol.md: an audio stream and two simulcast
/// video layers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamKind {
    /// Opus audio.
    Audio,
    /// The low-resolution video layer every participant receives.
    Thumbnail,
    /// The full-resolution video layer, received when subscribed.
    Full,
}

impl StreamKind {
    /// `audio`, `thumbnail` or `full`, as in the report's JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamKind::Audio => "audio",
            StreamKind::Thumbnail => "thumbnail",
            StreamKind::Full => "full",
        }
    }
}

/// What a receiver got on one stream of one sender.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamRow {
    /// The stream's SSRC.
    pub ssrc: u32,
    /// Audio, thumbnail or full.
    pub kind: StreamKind,
    /// Packets decrypted (authenticated) so far.
    pub packets: u64,
    /// Payload bytes decrypted so far.
    pub bytes: u64,
    /// Packets never received (sequence number gaps) so far, not counting `skipped`.
    pub lost: u64,
    /// Times a full-resolution stream came back at a keyframe's first packet after a
    /// gap longer than [`crate::MAX_NACK_GAP`] packets: the relay had moved this
    /// receiver to the sender's thumbnail (its downlink looked short), or away from a
    /// speaker it followed, and moved it back. Always 0 for audio and thumbnails.
    #[serde(default)]
    pub resumes: u64,
    /// The packets of those gaps: the relay never forwarded them to this receiver, so
    /// they are not in `lost`.
    #[serde(default)]
    pub skipped: u64,
    /// Packets that arrived but did not decrypt (no key, wrong key, tampered).
    pub decrypt_failures: u64,
    /// The MKI key index of the last packet decrypted; `None` before the first.
    pub key_index: Option<u8>,
    /// Receive rate now, in kbit/s of payload.
    pub kbps: f64,
    /// One-way latency in milliseconds, when the sender's clock is known (synthetic
    /// media carries send times; real Opus does not).
    pub latency_ms: Option<f64>,
}

impl StreamRow {
    /// Lost packets as a percentage of those expected; `None` when none were.
    pub fn loss_percent(&self) -> Option<f64> {
        let expected = self.packets.saturating_add(self.lost);
        (expected > 0).then(|| self.lost as f64 * 100.0 / expected as f64)
    }
}

/// One sender (a member's device in the call) and its streams.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SenderRow {
    /// Its Matrix user id.
    pub user: String,
    /// Its Matrix device id (the `device_id` of its key event).
    pub device: String,
    /// Its streams, in the order they are to be shown.
    pub streams: Vec<StreamRow>,
}

/// Column headings; the numbers are right-aligned under theirs.
const HEAD: [&str; 11] = [
    "from", "device", "stream", "ssrc", "kbit/s", "packets", "loss", "resumed", "latency", "key",
    "failed",
];
/// Widths of the columns after the first two (which fit their contents).
const WIDTHS: [usize; 9] = [9, 10, 8, 9, 6, 7, 9, 3, 6];
/// The user and device columns grow with their contents up to these many characters;
/// longer ids are cut with an ellipsis.
const MAX_USER: usize = 36;
const MAX_DEVICE: usize = 14;

/// The table as lines (no newlines, no escape sequences): `title`, the column
/// headings, then one line per stream; the user and device only on a sender's first
/// line. Unknown values (latency of real Opus, loss before any packet) show as `-`, as
/// do the resumes of streams other than full-resolution ones.
pub fn render(title: &str, senders: &[SenderRow]) -> Vec<String> {
    let user_w = column_width(HEAD[0], MAX_USER, senders.iter().map(|s| s.user.as_str()));
    let device_w = column_width(
        HEAD[1],
        MAX_DEVICE,
        senders.iter().map(|s| s.device.as_str()),
    );
    let line = |cells: [&str; 11]| {
        let mut l = format!(
            "{:<user_w$}  {:<device_w$}  {:<w0$}",
            cut(cells[0], user_w),
            cut(cells[1], device_w),
            cells[2],
            w0 = WIDTHS[0]
        );
        for (cell, w) in cells[3..].iter().zip(&WIDTHS[1..]) {
            let _ = write!(l, " {cell:>w$}");
        }
        l.trim_end().to_owned()
    };
    let mut lines = vec![title.to_owned(), line(HEAD)];
    if senders.is_empty() {
        lines.push("(nothing decrypted yet)".to_owned());
    }
    for sender in senders {
        if sender.streams.is_empty() {
            lines.push(line([
                &sender.user,
                &sender.device,
                "-",
                "",
                "",
                "",
                "",
                "",
                "",
                "",
                "",
            ]));
        }
        for (i, s) in sender.streams.iter().enumerate() {
            let (user, device) = if i == 0 {
                (sender.user.as_str(), sender.device.as_str())
            } else {
                ("", "")
            };
            let kbps = if s.kbps.is_finite() && s.kbps >= 0.0 {
                format!("{:.1}", s.kbps)
            } else {
                "-".to_owned()
            };
            let loss = s
                .loss_percent()
                .map_or_else(|| "-".to_owned(), |p| format!("{p:.1}%"));
            let resumed = match s.kind {
                StreamKind::Full => s.resumes.to_string(),
                StreamKind::Audio | StreamKind::Thumbnail => "-".to_owned(),
            };
            let latency = match s.latency_ms {
                Some(ms) if ms.is_finite() && ms < 100.0 => format!("{ms:.1} ms"),
                Some(ms) if ms.is_finite() => format!("{ms:.0} ms"),
                _ => "-".to_owned(),
            };
            let key = s
                .key_index
                .map_or_else(|| "-".to_owned(), |k| k.to_string());
            lines.push(line([
                user,
                device,
                s.kind.as_str(),
                &s.ssrc.to_string(),
                &kbps,
                &s.packets.to_string(),
                &loss,
                &resumed,
                &latency,
                &key,
                &s.decrypt_failures.to_string(),
            ]));
        }
    }
    lines
}

/// The width of a column that fits `head` and `cells`, at most `max` characters.
fn column_width<'a>(head: &str, max: usize, cells: impl Iterator<Item = &'a str>) -> usize {
    cells
        .map(|c| c.chars().count())
        .fold(head.len(), usize::max)
        .min(max)
}

/// `s` in at most `width` characters: cut with an ellipsis if longer.
fn cut(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Draws [`render`]'s table repeatedly: over the previous frame on a terminal, as a
/// new block (after an empty line) otherwise.
#[derive(Debug, Clone)]
pub struct LiveTable {
    /// Redraw in place with ANSI escapes.
    tty: bool,
    /// Terminal columns, to cut lines to (a wrapped line would break the redraw).
    width: Option<usize>,
    /// Lines of the last frame still on screen.
    drawn: usize,
}

impl LiveTable {
    /// A table for stdout: in place if stdout is a terminal (cut to its width), plain
    /// blocks if not.
    pub fn stdout() -> LiveTable {
        let out = io::stdout();
        if out.is_terminal() {
            LiveTable::new(true, terminal_width())
        } else {
            LiveTable::new(false, None)
        }
    }

    /// A table drawn in place (`tty`) or as plain blocks; lines cut to `width`
    /// characters if given (in place only).
    pub fn new(tty: bool, width: Option<usize>) -> LiveTable {
        LiveTable {
            tty,
            width,
            drawn: 0,
        }
    }

    /// The bytes that draw this frame.
    pub fn frame(&mut self, title: &str, senders: &[SenderRow]) -> String {
        let lines = render(title, senders);
        let mut out = String::new();
        if !self.tty {
            if self.drawn > 0 {
                out.push('\n');
            }
            for l in &lines {
                out.push_str(l);
                out.push('\n');
            }
            self.drawn = lines.len();
            return out;
        }
        if self.drawn > 0 {
            // Back to the first line of the previous frame.
            let _ = write!(out, "\x1b[{}A\r", self.drawn);
        }
        for l in &lines {
            // Erase the old line, write the new one cut to the terminal (the last
            // column stays free: some terminals wrap on writing it).
            out.push_str("\x1b[2K");
            match self.width {
                Some(w) => out.push_str(&cut(l, w.saturating_sub(1).max(1))),
                None => out.push_str(l),
            }
            out.push('\n');
        }
        // A frame shorter than the last one: clear what is left below.
        out.push_str("\x1b[J");
        self.drawn = lines.len();
        out
    }

    /// Writes this frame to `out` and flushes it.
    pub fn draw(
        &mut self,
        out: &mut impl Write,
        title: &str,
        senders: &[SenderRow],
    ) -> io::Result<()> {
        let frame = self.frame(title, senders);
        out.write_all(frame.as_bytes())?;
        out.flush()
    }

    /// Something else was printed after the last frame: draw the next one below it
    /// instead of over it.
    pub fn forget(&mut self) {
        self.drawn = 0;
    }
}

/// Columns of the terminal on stdout, if it says.
fn terminal_width() -> Option<usize> {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` through the pointer, which is valid and
    // exclusively ours for the call.
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    (ok && size.ws_col > 0).then_some(usize::from(size.ws_col))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(kind: StreamKind, ssrc: u32) -> StreamRow {
        StreamRow {
            ssrc,
            kind,
            packets: 0,
            bytes: 0,
            lost: 0,
            resumes: 0,
            skipped: 0,
            decrypt_failures: 0,
            key_index: None,
            kbps: 0.0,
            latency_ms: None,
        }
    }

    fn bob() -> SenderRow {
        SenderRow {
            user: "@bob:localhost".into(),
            device: "BOBDEVICE".into(),
            streams: vec![
                StreamRow {
                    packets: 498,
                    bytes: 49_800,
                    lost: 2,
                    key_index: Some(1),
                    kbps: 39.84,
                    latency_ms: Some(1.26),
                    ..stream(StreamKind::Audio, 4_000_000_001)
                },
                StreamRow {
                    packets: 1_500,
                    kbps: 1_234.56,
                    latency_ms: Some(123.4),
                    decrypt_failures: 3,
                    key_index: Some(0),
                    resumes: 2,
                    skipped: 250,
                    ..stream(StreamKind::Full, 7)
                },
            ],
        }
    }

    #[test]
    fn columns_line_up_and_units_show() {
        let lines = render("@alice:localhost, 10 s", &[bob()]);
        assert_eq!(
            lines,
            [
                "@alice:localhost, 10 s",
                "from            device     stream          ssrc   kbit/s   packets   loss \
                 resumed   latency key failed",
                "@bob:localhost  BOBDEVICE  audio     4000000001     39.8       498   0.4%       -    \
                 1.3 ms   1      0",
                "                           full               7   1234.6      1500   0.0%       2    \
                 123 ms   0      3",
            ]
        );
        // Every data line is as long as the heading: the columns line up.
        let width = lines[1].chars().count();
        assert!(lines[2..].iter().all(|l| l.chars().count() == width));
    }

    #[test]
    fn unknown_values_show_as_dashes() {
        let mut s = stream(StreamKind::Thumbnail, 2);
        s.kbps = f64::NAN;
        s.latency_ms = Some(f64::INFINITY);
        let rows = [SenderRow {
            user: "@c:x".into(),
            device: "D".into(),
            streams: vec![s],
        }];
        let lines = render("t", &rows);
        let cells: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "@c:x",
                "D",
                "thumbnail",
                "2",
                "-",
                "0",
                "-",
                "-",
                "-",
                "-",
                "0"
            ]
        );
    }

    #[test]
    fn long_ids_are_cut_and_empty_tables_say_so() {
        let long = SenderRow {
            user: format!("@{}:localhost", "x".repeat(60)),
            device: "D".repeat(30),
            streams: vec![stream(StreamKind::Audio, 1)],
        };
        let lines = render("t", &[long]);
        let user: String = lines[2].chars().take(MAX_USER).collect();
        assert!(user.ends_with('…') && user.starts_with("@xxx"), "{user}");
        assert!(lines[2].contains(&format!("{}…", "D".repeat(MAX_DEVICE - 1))));
        assert_eq!(render("t", &[])[2], "(nothing decrypted yet)");
        let silent = SenderRow {
            user: "@d:x".into(),
            device: "E".into(),
            streams: vec![],
        };
        assert_eq!(render("t", &[silent])[2], "@d:x  E       -");
    }

    #[test]
    fn a_terminal_frame_redraws_in_place() {
        let mut t = LiveTable::new(true, Some(40));
        let first = t.frame("one", &[bob()]);
        assert!(first.starts_with("\x1b[2Kone\n"), "{first:?}");
        assert_eq!(first.matches('\n').count(), 4);
        assert!(
            first
                .lines()
                .all(|l| l.trim_start_matches("\x1b[2K").chars().count() <= 39)
        );
        let second = t.frame("two", &[]);
        // Up over the four lines of the first frame, three new lines, clear the rest.
        assert!(second.starts_with("\x1b[4A\r\x1b[2Ktwo\n"), "{second:?}");
        assert!(
            second.ends_with("(nothing decrypted yet)\n\x1b[J"),
            "{second:?}"
        );
        t.forget();
        assert!(t.frame("three", &[]).starts_with("\x1b[2Kthree\n"));
    }

    #[test]
    fn a_plain_frame_is_a_new_block() {
        let mut t = LiveTable::new(false, Some(10));
        let first = t.frame("one", &[bob()]);
        assert!(!first.contains('\x1b'));
        assert!(
            first.starts_with("one\nfrom"),
            "lines are not cut: {first:?}"
        );
        let second = t.frame("two", &[]);
        assert_eq!(second, format!("\n{}\n", render("two", &[]).join("\n")));
    }
}
