//! The Ogg Opus reader and writer against files and tools written by others: a file
//! made by opusenc (committed, `testdata/sine-1s.opus`, and made at test time), its
//! figures as opusinfo and ffprobe report them, and what opusdec and ffmpeg decode from
//! files our writer wrote.
//!
//! The tests that run opus-tools skip with a notice when they are missing, unless
//! `BLINDFOLD_REQUIRE_OPUS_TOOLS` is set (scripts/test sets it after installing
//! opus-tools, so CI never skips them). ffmpeg and ffprobe are a second opinion, used
//! when installed (nothing installs them for the tests: they are large).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::ogg::{
    OggError, OggOpusReader, OggOpusWriter, OpusHead, OpusPacket, Page, StreamSummary, TocError,
    ogg_crc32, opus_packet_samples,
};

/// `opusenc --framesize 20 --bitrate 12` of one second of a 440 Hz sine, mono 48 kHz
/// (opus-tools 0.2, libopus 1.3.1): 4 pages, 51 packets, pre-skip 312.
const SINE: &[u8] = include_bytes!("../testdata/sine-1s.opus");

fn read_all(bytes: &[u8]) -> Result<(OggOpusReader, Vec<OpusPacket>), OggError> {
    let mut r = OggOpusReader::from_bytes(bytes.to_vec())?;
    let packets = r.by_ref().collect::<Result<Vec<_>, _>>()?;
    Ok((r, packets))
}

/// Every page of `bytes`, with its offset.
fn pages(bytes: &[u8]) -> Vec<(usize, Page<'_>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let (page, len) = Page::parse(bytes, at).expect("page");
        out.push((at, page));
        at += len;
    }
    out
}

#[test]
fn the_crc_is_ogg_s_not_zlib_s() {
    // CRC-32 with polynomial 0x04c11db7, init 0, no reflection, no final XOR; the
    // standard check string. (The reflected zlib CRC gives 0xcbf43926.)
    assert_eq!(ogg_crc32(b"123456789"), 0x89a1_897f);
    // The first page opusenc wrote: its stored CRC is that of the page with the CRC
    // field zeroed.
    let mut first = SINE[..47].to_vec();
    let stored = u32::from_le_bytes(first[22..26].try_into().unwrap());
    assert_eq!(stored, 0xb440_eb5a);
    first[22..26].fill(0);
    assert_eq!(ogg_crc32(&first), stored);
}

#[test]
fn reads_what_opusenc_wrote() {
    let (r, packets) = read_all(SINE).expect("read");
    let head = r.head();
    assert_eq!(
        (head.version, head.channels, head.pre_skip, head.input_rate),
        (1, 1, 312, 48_000)
    );
    assert_eq!((head.output_gain, head.mapping_family), (0, 0));
    assert_eq!(r.tags().vendor, "libopus 1.3.1, libopusenc 0.2.1");
    assert!(
        r.tags()
            .comments
            .contains(&"ENCODER=opusenc from opus-tools 0.2".to_owned()),
        "{:?}",
        r.tags()
    );
    assert_eq!(r.serial(), 0x3bde_82fe);
    assert_eq!(packets.len(), 51);
    assert!(packets.iter().all(|p| p.samples == 960));
    assert!(
        packets
            .iter()
            .all(|p| p.duration() == std::time::Duration::from_millis(20))
    );
    // Page 2 ends after one second of packets, page 3 (end of stream) holds the last
    // one, trimmed to 312 samples past the second so that 48 000 play.
    let granules: Vec<(usize, u64)> = packets
        .iter()
        .enumerate()
        .filter_map(|(i, p)| Some((i, p.granule?)))
        .collect();
    assert_eq!(granules, [(49, 48_000), (50, 48_312)]);
    assert_eq!(r.last_granule(), Some(48_312));
}

#[test]
fn pages_rebuild_byte_for_byte() {
    let all = pages(SINE);
    assert_eq!(all.len(), 4);
    for (at, page) in &all {
        let bytes = page.to_bytes();
        assert_eq!(bytes, SINE[*at..*at + bytes.len()], "page at {at}");
    }
}

/// A valid TOC byte for `samples` (single frame or two), then `len - 1` filler bytes.
fn packet(toc: u8, len: usize, fill: u8) -> Vec<u8> {
    let mut p = vec![toc];
    p.extend((1..len).map(|i| fill.wrapping_add(i as u8)));
    p
}

#[test]
fn round_trip_keeps_packets_granules_and_flags() {
    // Sizes around the lacing edges (254, 255, 256, 510), TOCs of every mode and frame
    // count code, and one packet longer than two pages (140 000 bytes: 550 segments).
    let tocs = [0x08, 0x78, 0x98, 0xf8, 0xf9, 0xfa, 0x48, 0x58];
    let mut sent: Vec<Vec<u8>> = Vec::new();
    for i in 0..300usize {
        let len = [1, 2, 60, 254, 255, 256, 510, 1000][i % 8];
        let mut p = packet(tocs[i % tocs.len()], len, i as u8);
        if len == 1 && p[0] & 3 != 0 {
            p.push(0); // codes 1 and 2 describe two frames; give them a byte
        }
        sent.push(p);
    }
    sent.insert(150, packet(0xfc, 140_000, 7)); // code 0, one 20 ms CELT frame
    let code3 = vec![0xfb, 0x03, 1, 2, 3]; // code 3, three 20 ms frames
    sent.push(code3);

    let head = OpusHead::new(2, 312, 44_100);
    let mut w = OggOpusWriter::new(Vec::new(), &head, 0x1234_5678).expect("writer");
    let mut total = 0u64;
    for p in &sent {
        total += u64::from(w.write_packet(p).expect("write"));
    }
    assert_eq!(w.packets(), sent.len() as u64);
    assert_eq!(w.samples(), total);
    let bytes = w.finish().expect("finish");

    let (r, got) = read_all(&bytes).expect("read back");
    assert_eq!(r.head(), &head);
    assert!(r.tags().vendor.starts_with("blindfold "));
    assert_eq!(r.serial(), 0x1234_5678);
    assert_eq!(got.len(), sent.len());
    for (i, (g, s)) in got.iter().zip(&sent).enumerate() {
        assert_eq!(&g.data, s, "packet {i}");
        assert_eq!(g.samples, opus_packet_samples(s).unwrap(), "packet {i}");
    }
    assert_eq!(got.last().unwrap().granule, Some(total));
    assert_eq!(r.last_granule(), Some(total));
    // Each granule is the sum of the durations of every packet up to it.
    let mut sum = 0;
    for g in &got {
        sum += u64::from(g.samples);
        if let Some(granule) = g.granule {
            assert_eq!(granule, sum);
        }
    }

    let all = pages(&bytes);
    assert_eq!(all[0].1.flags, 0x02, "OpusHead page: beginning of stream");
    assert_eq!((all[0].1.granule, all[1].1.granule), (0, 0));
    assert_eq!(all.last().unwrap().1.flags & 0x04, 0x04, "end of stream");
    assert!(
        all[2..all.len() - 1]
            .iter()
            .all(|(_, p)| p.flags & 0x04 == 0)
    );
    for (i, (_, p)) in all.iter().enumerate() {
        assert_eq!(p.sequence, i as u32);
        assert!(p.lacing.len() <= 255);
    }
    // The 140 000-byte packet runs over into pages flagged as continuations, and
    // a page on which no packet ends has granule -1.
    assert!(all.iter().any(|(_, p)| p.flags & 0x01 != 0));
    assert!(all.iter().any(|(_, p)| p.granule == u64::MAX));
}

#[test]
fn pages_hold_at_most_a_second() {
    let mut w = OggOpusWriter::new(Vec::new(), &OpusHead::new(1, 0, 0), 1).unwrap();
    for _ in 0..251 {
        w.write_packet(&[0xf8, 1, 2]).unwrap(); // 20 ms
    }
    let bytes = w.finish().unwrap();
    let granules: Vec<u64> = pages(&bytes)[2..].iter().map(|(_, p)| p.granule).collect();
    assert_eq!(
        granules,
        [48_000, 96_000, 144_000, 192_000, 240_000, 240_960]
    );
}

#[test]
fn a_dropped_writer_still_ends_the_stream() {
    let mut bytes = Vec::new();
    {
        let mut w = OggOpusWriter::new(&mut bytes, &OpusHead::new(1, 312, 48_000), 9).unwrap();
        for _ in 0..10 {
            w.write_packet(&[0xf8, 0xff]).unwrap();
        }
        // No finish(): as when a participant is stopped.
    }
    let (_, got) = read_all(&bytes).expect("read");
    assert_eq!(got.len(), 10);
    assert_eq!(pages(&bytes).last().unwrap().1.flags & 0x04, 0x04);
}

#[test]
fn a_stream_without_audio_reads_as_empty() {
    let w = OggOpusWriter::new(Vec::new(), &OpusHead::new(1, 312, 48_000), 9).unwrap();
    let bytes = w.finish().unwrap();
    let (r, got) = read_all(&bytes).expect("read");
    assert!(got.is_empty());
    assert_eq!(r.head().pre_skip, 312);
}

#[test]
fn the_writer_refuses_what_ogg_opus_cannot_hold() {
    let mut w = OggOpusWriter::new(Vec::new(), &OpusHead::new(1, 312, 48_000), 9).unwrap();
    for (packet, why) in [
        (&[][..], "empty packet"),
        (&[0xfb][..], "without its frame count"),
        (&[0xfb, 0x00][..], "0 frames"),
        (&[0xfb, 0x07][..], "longer than the 120 ms"), // 7 × 20 ms
    ] {
        let e = w.write_packet(packet).expect_err(why).to_string();
        assert!(e.contains(why), "{e}");
    }
    for samples in [0, 5_761] {
        let e = w.write_packet_with_samples(&[1], samples).unwrap_err();
        assert!(e.to_string().contains("1 to 5760"), "{e}");
    }
    assert_eq!(w.packets(), 0);
    let e = OggOpusWriter::new(Vec::new(), &OpusHead::new(3, 0, 0), 1).unwrap_err();
    assert_eq!(
        e.to_string(),
        "cannot write OpusHead: 3 channels with mapping family 0 (at most 2)"
    );
    let mut odd = OpusHead::new(2, 0, 0);
    odd.mapping_family = 1;
    odd.mapping = vec![1, 1, 0]; // one byte short of 2 + channels
    assert!(OggOpusWriter::new(Vec::new(), &odd, 1).is_err());
}

#[test]
fn toc_durations_follow_rfc_6716() {
    // (TOC, optional count byte, samples at 48 kHz)
    let cases: [(&[u8], u32); 12] = [
        (&[0 << 3], 480),                    // SILK NB 10 ms
        (&[1 << 3], 960),                    // SILK NB 20 ms
        (&[2 << 3], 1920),                   // SILK NB 40 ms
        (&[3 << 3], 2880),                   // SILK NB 60 ms
        (&[12 << 3], 480),                   // Hybrid SWB 10 ms
        (&[15 << 3], 960),                   // Hybrid FB 20 ms
        (&[16 << 3], 120),                   // CELT NB 2.5 ms
        (&[17 << 3], 240),                   // CELT NB 5 ms
        (&[(31 << 3) | 1], 1920),            // CELT FB 20 ms, two frames (code 1)
        (&[(31 << 3) | 2], 1920),            // two frames of different sizes (code 2)
        (&[(3 << 3) | 3, 2], 5760),          // 2 × 60 ms (code 3)
        (&[(16 << 3) | 3, 0x80 | 48], 5760), // 48 × 2.5 ms, VBR flag set
    ];
    for (p, samples) in cases {
        assert_eq!(opus_packet_samples(p), Ok(samples), "{p:x?}");
    }
    assert_eq!(opus_packet_samples(&[]), Err(TocError::Empty));
    assert_eq!(
        opus_packet_samples(&[(3 << 3) | 3, 3]),
        Err(TocError::TooLong { samples: 8640 })
    );
}

#[test]
fn damaged_input_is_an_error_never_a_panic() {
    // Every single-byte change is caught: by the CRC, or the page structure it breaks.
    for at in 0..SINE.len() {
        let mut bad = SINE.to_vec();
        bad[at] ^= 0x40;
        assert!(read_all(&bad).is_err(), "flipping byte {at} went unnoticed");
    }
    // Every truncation: an error, or (cut at a page boundary) a prefix of the packets.
    let (_, whole) = read_all(SINE).unwrap();
    for len in 0..SINE.len() {
        if let Ok((_, got)) = read_all(&SINE[..len]) {
            assert!(
                got.len() < whole.len() && whole.starts_with(&got),
                "cut at {len}"
            );
        }
    }
    // Garbage of every small length, from a fixed generator.
    let mut rng = crate::rng::Rng::new(7);
    for len in 0..2_000 {
        let mut junk = vec![0u8; len];
        rng.fill(&mut junk);
        assert!(read_all(&junk).is_err());
        let mut prefixed = b"OggS\0\x02".to_vec();
        prefixed.extend_from_slice(&junk);
        assert!(read_all(&prefixed).is_err());
    }
}

#[test]
fn errors_say_what_is_wrong() {
    let mut bad = SINE.to_vec();
    bad[900] ^= 1;
    let e = read_all(&bad).unwrap_err().to_string();
    assert!(e.contains("page 2 at byte 841: CRC mismatch"), "{e}");

    let e = read_all(b"RIFF\0\0\0\0WAVE").unwrap_err().to_string();
    assert!(
        e.contains("no capture pattern \"OggS\" (found 52 49 46 46)"),
        "{e}"
    );

    // A well-formed Ogg stream of another codec.
    let page = Page {
        flags: 0x02,
        granule: 0,
        serial: 5,
        sequence: 0,
        lacing: &[7],
        body: b"\x01vorbis",
    };
    let e = read_all(&page.to_bytes()).unwrap_err().to_string();
    assert!(e.contains("not an OpusHead identification header"), "{e}");

    // A page sequence gap: drop page 2 of the file.
    let mut gap = SINE[..841].to_vec();
    gap.extend_from_slice(&SINE[2562..]);
    let e = read_all(&gap).unwrap_err().to_string();
    assert!(e.contains("page sequence number 3 where 2 was due"), "{e}");
}

#[test]
fn a_continuation_without_its_start_is_refused() {
    let mut bytes = SINE[..841].to_vec();
    let page = Page {
        flags: 0x01,
        granule: 960,
        serial: 0x3bde_82fe,
        sequence: 2,
        lacing: &[3],
        body: &[0xf8, 1, 2],
    };
    bytes.extend_from_slice(&page.to_bytes());
    let e = read_all(&bytes).unwrap_err().to_string();
    assert!(
        e.contains("continues a packet that no earlier page started"),
        "{e}"
    );
}

// --- against the tools -----------------------------------------------------------

/// The path of opus-tools' `name`, or `None` with a notice (a panic if the tools are
/// required).
fn tool(name: &str) -> Option<PathBuf> {
    let found = on_path(name);
    if found.is_none() {
        assert!(
            std::env::var_os("BLINDFOLD_REQUIRE_OPUS_TOOLS").is_none(),
            "{name} is not installed (apt-get install opus-tools)"
        );
        eprintln!("SKIPPED: {name} is not installed (apt-get install opus-tools)");
    }
    found
}

/// ffmpeg's `name`, if installed (a notice if not).
fn second_opinion(name: &str) -> Option<PathBuf> {
    let found = on_path(name);
    if found.is_none() {
        eprintln!("not checked with {name}: not installed (apt-get install ffmpeg)");
    }
    found
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A directory removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("bf-ogg-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }

    fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Encodes `seconds` of a 440 Hz sine (48 kHz, 16-bit, `channels`) with opusenc.
fn opusenc(opusenc: &Path, out: &Path, channels: u16, seconds: f64, framesize: &str) {
    let frames = (48_000.0 * seconds) as usize;
    let mut pcm = Vec::with_capacity(frames * 2 * usize::from(channels));
    for i in 0..frames {
        let v = (8_000.0 * (i as f64 * 440.0 * std::f64::consts::TAU / 48_000.0).sin()) as i16;
        for _ in 0..channels {
            pcm.extend_from_slice(&v.to_le_bytes());
        }
    }
    let mut child = Command::new(opusenc)
        .args(["--quiet", "--raw", "--raw-rate", "48000", "--raw-chan"])
        .arg(channels.to_string())
        .args(["--framesize", framesize, "-"])
        .arg(out)
        .stdin(Stdio::piped())
        .spawn()
        .expect("opusenc");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&pcm)
        .expect("PCM to opusenc");
    assert!(child.wait().expect("opusenc").success());
}

/// A `Label: value` line of opusinfo's report.
fn field<'a>(report: &'a str, label: &str) -> &'a str {
    report
        .lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label:?} in opusinfo's report:\n{report}"))
        .trim()
}

#[test]
fn agrees_with_opusinfo_on_files_opusenc_writes() {
    let (Some(enc), Some(info)) = (tool("opusenc"), tool("opusinfo")) else {
        return;
    };
    let dir = Scratch::new("opusinfo");
    for (channels, seconds, framesize, ms) in [(1, 2.5, "20", 20.0), (2, 1.3, "60", 60.0)] {
        let file = dir.path(&format!("sine-{channels}.opus"));
        opusenc(&enc, &file, channels, seconds, framesize);
        let report = run(Command::new(&info).arg(&file));
        let (r, packets) = read_all(&std::fs::read(&file).unwrap()).expect("read");

        assert_eq!(field(&report, "Channels:"), channels.to_string());
        assert_eq!(field(&report, "Pre-skip:"), r.head().pre_skip.to_string());
        // "Playback length: 0m:02.500s": the last granule less pre-skip.
        let length = field(&report, "Playback length:");
        let (min, sec) = length.trim_end_matches('s').split_once("m:").expect(length);
        let reported_ms =
            min.parse::<f64>().unwrap() * 60_000.0 + sec.parse::<f64>().unwrap() * 1_000.0;
        let playback = r.last_granule().unwrap() - u64::from(r.head().pre_skip);
        assert!(
            (playback as f64 / 48.0 - reported_ms).abs() < 1.0,
            "{playback} samples vs {length}"
        );
        // "Packet duration: 20.0ms (max), 20.0ms (avg), 20.0ms (min)".
        let durations: Vec<&str> = field(&report, "Packet duration:")
            .split_whitespace()
            .collect();
        assert_eq!(
            durations.join(" "),
            format!("{ms:.1}ms (max), {ms:.1}ms (avg), {ms:.1}ms (min)")
        );
        assert!(packets.iter().all(|p| f64::from(p.samples) / 48.0 == ms));
        // So the packet count is what covers the playback plus pre-skip, the last
        // packet trimmed.
        let per = (ms * 48.0) as u64;
        let covered = playback + u64::from(r.head().pre_skip);
        assert_eq!(packets.len() as u64, covered.div_ceil(per));
        if let Some(probe) = second_opinion("ffprobe") {
            let out = run(Command::new(probe)
                .args(["-v", "error", "-count_packets", "-show_entries"])
                .args(["stream=nb_read_packets", "-of", "csv=p=0"])
                .arg(&file));
            assert_eq!(out.trim(), packets.len().to_string(), "ffprobe's count");
        }
    }
}

/// Decoded samples per channel of `file` by opusdec (raw 16-bit at 48 kHz).
fn opusdec_samples(opusdec: &Path, file: &Path, channels: u64) -> u64 {
    let raw = file.with_extension("raw");
    run(Command::new(opusdec)
        .args(["--quiet", "--rate", "48000"])
        .arg(file)
        .arg(&raw));
    std::fs::metadata(&raw).expect("decoded file").len() / (2 * channels)
}

#[test]
fn opusdec_and_ffmpeg_play_what_the_writer_writes() {
    let Some(dec) = tool("opusdec") else {
        return;
    };
    let dir = Scratch::new("opusdec");
    // Real audio: opusenc's packets, copied into pages of our own making.
    let (source, packets) = read_all(SINE).unwrap();
    let ours = dir.path("copy.opus");
    let mut w = OggOpusWriter::create(&ours, source.head()).expect("create");
    for p in &packets {
        w.write_packet(&p.data).expect("write");
    }
    w.finish().expect("finish");
    // 51 × 20 ms less the pre-skip; our writer does not trim the end.
    let expected = 51 * 960 - 312;
    assert_eq!(opusdec_samples(&dec, &ours, 1), expected);

    // A 5 s stream of 20 ms packets that carry only a TOC byte (zero-length frames,
    // which the decoder conceals): length comes from the pages alone.
    let silent = dir.path("silent.opus");
    let mut w = OggOpusWriter::create(&silent, &OpusHead::new(2, 312, 48_000)).unwrap();
    for _ in 0..250 {
        w.write_packet(&[0xfc]).unwrap();
    }
    drop(w); // the end-of-stream page comes from Drop
    let got = opusdec_samples(&dec, &silent, 2) as f64;
    let want = (250 * 960 - 312) as f64;
    assert!(
        (got - want).abs() / want < 0.05,
        "{got} samples, want {want}"
    );

    if let Some(ffmpeg) = second_opinion("ffmpeg") {
        let out = Command::new(ffmpeg)
            .args(["-v", "error", "-i"])
            .arg(&ours)
            .args(["-f", "s16le", "-ac", "1", "-ar", "48000", "-"])
            .output()
            .expect("ffmpeg");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got = (out.stdout.len() / 2) as f64;
        let want = expected as f64;
        assert!(
            (got - want).abs() / want < 0.05,
            "ffmpeg: {got} samples, want {want}"
        );
    }
}

#[test]
fn a_packet_without_a_valid_toc_is_an_error_item_and_reading_goes_on() {
    // What a recorder of synthetic audio writes: sound pages, a packet that is not Opus.
    let mut w = OggOpusWriter::new(Vec::new(), &OpusHead::new(1, 0, 0), 3).unwrap();
    w.write_packet(&[0xf8, 1]).unwrap();
    w.write_packet_with_samples(&[0xfb, 0x00], 960).unwrap();
    w.write_packet(&[0xf8, 2]).unwrap();
    let bytes = w.finish().unwrap();
    let bytes_again = bytes.clone();
    let items: Vec<_> = OggOpusReader::from_bytes(bytes).unwrap().collect();
    assert_eq!(items.len(), 3);
    assert_eq!(items[0].as_ref().unwrap().data, [0xf8, 1]);
    let e = items[1].as_ref().unwrap_err();
    assert!(
        matches!(
            e,
            OggError::Packet {
                index: 1,
                source: TocError::NoFrames
            }
        ),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        "Opus packet 1 (counting from 0): frame count code 3 with 0 frames"
    );
    assert_eq!(items[2].as_ref().unwrap().granule, Some(2880));
    let summary = OggOpusReader::from_bytes(bytes_again)
        .unwrap()
        .summarize()
        .unwrap();
    assert_eq!(
        summary,
        StreamSummary {
            packets: 3,
            bad_toc: 1,
            playback_samples: Some(2880),
        }
    );
}

#[test]
fn a_summary_counts_packets_and_length() {
    let summary = OggOpusReader::from_bytes(SINE.to_vec())
        .unwrap()
        .summarize()
        .unwrap();
    assert_eq!((summary.packets, summary.bad_toc), (51, 0));
    assert_eq!(summary.playback(), Some(std::time::Duration::from_secs(1)));
    let mut cut = SINE.to_vec();
    cut[2600] ^= 1;
    let e = OggOpusReader::from_bytes(cut)
        .unwrap()
        .summarize()
        .unwrap_err();
    assert!(matches!(e, OggError::Crc { sequence: 3, .. }), "{e}");
}

#[test]
fn levels_are_the_rms_in_dbov_and_silence_is_127() {
    use crate::ogg::{VOICE_LEVEL, level_of};
    assert_eq!(level_of(&[0; 960]).level, 127);
    assert!(!level_of(&[0; 960]).voice_activity);
    // A full-scale square wave is 0 dBov; a sine of amplitude 0.1 is -23 dBov.
    assert_eq!(level_of(&[i16::MIN, i16::MIN, i16::MIN]).level, 0);
    let sine: Vec<i16> = (0..960)
        .map(|i| (3276.8 * (i as f64 * 2.0 * std::f64::consts::PI / 48.0).sin()) as i16)
        .collect();
    let l = level_of(&sine);
    assert_eq!((l.level, l.voice_activity), (23, true));
    assert!(
        level_of(&[3; 960]).level > VOICE_LEVEL,
        "quiet hiss is no voice"
    );
}

/// Past the decoder's first frames, the levels of a file of the 440 Hz sine of
/// amplitude 8000 that [`opusenc`] writes (and `testdata/sine-1s.opus` holds): RMS
/// 8000/√2 of 32768, -15.3 dBov.
fn steady_sine_levels(levels: &[Option<blindfold_relay::wire::rtp::AudioLevel>]) {
    for (i, l) in levels.iter().enumerate().skip(5).take(levels.len() - 7) {
        let l = l.unwrap_or_else(|| panic!("packet {i} did not decode"));
        assert!(
            (15..=16).contains(&l.level) && l.voice_activity,
            "packet {i}: {l:?}"
        );
    }
}

#[test]
fn the_sine_file_decodes_to_its_level() {
    use crate::ogg::audio_levels;
    let (reader, packets) = read_all(SINE).unwrap();
    let levels = audio_levels(reader.head(), &packets);
    assert_eq!(levels.len(), packets.len());
    steady_sine_levels(&levels);
    // A packet that does not decode has no level (the decoder starts afresh after it,
    // whose first frames are quieter), and the ones after it keep theirs.
    let mut damaged = packets.clone();
    damaged[20].data = vec![0xfb, 0x00]; // code 3 with no frames: not Opus
    let levels = audio_levels(reader.head(), &damaged);
    assert_eq!(levels[20], None);
    steady_sine_levels(&levels[..22]);
    steady_sine_levels(&levels[21..]);
    // A stream this decoder cannot take (more than two channels) has no levels.
    let mut head = reader.head().clone();
    head.channels = 6;
    head.mapping_family = 1;
    assert!(audio_levels(&head, &packets).iter().all(Option::is_none));
}

#[test]
fn stereo_and_long_frames_decode_to_the_same_level() {
    use crate::ogg::audio_levels;
    let Some(enc) = tool("opusenc") else { return };
    let dir = Scratch::new("levels");
    for (channels, framesize) in [(2, "20"), (1, "60"), (2, "60")] {
        let path = dir.path(&format!("sine-{channels}-{framesize}.opus"));
        opusenc(&enc, &path, channels, 2.0, framesize);
        let (reader, packets) = read_all(&std::fs::read(&path).unwrap()).unwrap();
        steady_sine_levels(&audio_levels(reader.head(), &packets));
    }
}
