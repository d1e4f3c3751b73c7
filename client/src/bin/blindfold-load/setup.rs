//! Setting a run up (signaling's requests, the participants, their keys) and measuring it.

use super::*;

/// Generations: microseconds since the epoch, always moving forward (as signaling does).
pub(crate) struct Generations(u64);

impl Generations {
    pub(crate) fn next(&mut self) -> Generation {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        self.0 = now.max(self.0 + 1);
        Generation(self.0)
    }
}

pub(crate) fn stream(ssrc: Ssrc, kind: StreamKind, layer: Layer) -> StreamSpec {
    StreamSpec { ssrc, kind, layer }
}

pub(crate) fn run(args: &Args) -> Result<Report, String> {
    if args.conferences == 0 || args.participants == 0 {
        return Err("--conferences and --participants must be at least 1".into());
    }
    // A day at most: longer would overflow the clock's arithmetic.
    const MAX_SECONDS: f64 = 86_400.0;
    if !(args.duration > 0.0 && args.duration <= MAX_SECONDS) {
        return Err("--duration must be positive and at most 86400 (a day)".into());
    }
    if !(args.connect_timeout >= 0.0 && args.connect_timeout <= MAX_SECONDS) {
        return Err("--connect-timeout must be at least 0 and at most 86400 (a day)".into());
    }
    let fixed = args.fixed_size.zip(args.fixed_pps);
    if let Some((_, pps)) = fixed
        && !(pps > 0.0 && pps.is_finite())
    {
        return Err("--fixed-pps must be positive".into());
    }
    if fixed.is_some() && args.participants < 2 {
        return Err("fixed-rate mode needs --participants of at least 2".into());
    }
    if fixed.is_none() && args.report_format == ReportFormat::UdpBlast {
        return Err("--report-format udp-blast needs --fixed-size and --fixed-pps".into());
    }
    let epoch = Instant::now();
    let poll = Poll::new().map_err(|e| format!("poll: {e}"))?;
    match (args.bare_target, fixed) {
        (Some(target), Some(_)) => run_bare(args, target, epoch, poll),
        (Some(_), None) => Err("--bare-target needs --fixed-size and --fixed-pps".into()),
        (None, _) => run_relay(args, fixed, epoch, poll),
    }
}

/// The load against a relay: conferences and sessions over the control socket, real
/// participants connecting, keys shared, then [`measure`], then the conferences removed.
pub(crate) fn run_relay(
    args: &Args,
    fixed: Option<(usize, f64)>,
    epoch: Instant,
    poll: Poll,
) -> Result<Report, String> {
    let control_path = args
        .control
        .as_ref()
        .ok_or("--control is required (or --bare-target)")?;
    let (mut control, info) = ControlClient::connect(control_path, Duration::from_secs(10))
        .map_err(|e| format!("control socket {}: {e}", control_path.display()))?;
    let relay_addr = match args.relay.or_else(|| info.candidates.first().copied()) {
        Some(a) => a,
        None => return Err("the relay announced no candidate; give --relay".into()),
    };
    let mut generations = Generations(0);
    let tag = std::process::id();
    let cert = DtlsCert::generate().map_err(|e| format!("certificate: {e}"))?;
    let dtls =
        DtlsConfig::new(DtlsSettings::default()).map_err(|e| format!("dtls config: {e:?}"))?;
    let profile = SrtpProfile::AeadAes128Gcm;
    let want = |s: StreamArg| args.streams.contains(&s);
    let mut request = |body: RequestBody, what: &str| {
        control
            .request(body)
            .map(|_| ())
            .map_err(|e| format!("{what}: {:?} {}", e.code, e.message))
    };

    let mut members = Vec::new();
    let mut conf_ids = Vec::new();
    for c in 0..args.conferences {
        let conf_id = ConfId::new(format!("!load{tag}-{c}:blindfold"))
            .map_err(|e| format!("conf id: {e}"))?;
        request(
            RequestBody::UpsertConference {
                generation: generations.next(),
                conference: ConferenceSpec {
                    conf_id: conf_id.clone(),
                },
            },
            "upsert_conference",
        )?;
        conf_ids.push(conf_id.clone());
        for i in 0..args.participants {
            let g = members.len();
            let ssrcs = OwnSsrcs::numbered(g);
            let name = format!("{tag}c{c}p{i}");
            let relay_ice = IceCredentials {
                ufrag: format!("r{name}"),
                pwd: format!("relaypwd{name}0123456789abcdef"),
            };
            let local_ice = IceCredentials {
                ufrag: format!("l{name}"),
                pwd: format!("peerpwd{name}0123456789abcdef"),
            };
            let session = SessionId::new(format!("@load{name}:blindfold|DEV"))
                .map_err(|e| format!("session id: {e}"))?;
            let bad = |e: blindfold_relay::control::ControlError| format!("session spec: {e}");
            let spec = SessionSpec {
                session_id: session.clone(),
                conf_id: conf_id.clone(),
                ice_ufrag: IceUfrag::new(relay_ice.ufrag.clone()).map_err(bad)?,
                ice_pwd: IcePwd::new(relay_ice.pwd.clone()).map_err(bad)?,
                remote_ufrag: IceUfrag::new(local_ice.ufrag.clone()).map_err(bad)?,
                remote_pwd: Some(IcePwd::new(local_ice.pwd.clone()).map_err(bad)?),
                dtls_fingerprint: cert.fingerprint().into(),
                streams: vec![
                    stream(ssrcs.audio, StreamKind::Audio, Layer::None),
                    stream(ssrcs.thumbnail, StreamKind::Video, Layer::Thumbnail),
                    stream(ssrcs.full, StreamKind::Video, Layer::Full),
                ],
                extmap: LOAD_EXTMAP,
                tmmbr: false,
            };
            request(
                RequestBody::UpsertSession {
                    generation: generations.next(),
                    session: spec,
                },
                "upsert_session",
            )?;
            let full_subscriber = i >= args.participants.saturating_sub(args.full_subscribers);
            if full_subscriber {
                request(
                    RequestBody::SetSubscription {
                        generation: generations.next(),
                        subscription: SubscriptionSpec {
                            session_id: session.clone(),
                            full: FullSet::All,
                        },
                    },
                    "set_subscription",
                )?;
            }
            let key: Vec<u8> = (0..profile.master_len())
                .map(|k| (k as u8).wrapping_mul(31) ^ (g as u8) ^ ((g >> 8) as u8).rotate_left(3))
                .collect();
            let mut cfg = ParticipantConfig::new(
                local_ice,
                relay_ice,
                relay_addr,
                cert.clone(),
                info.dtls_fingerprint.into(),
                dtls.clone(),
                ssrcs,
                MasterKey::new(profile, &key).map_err(|e| format!("master key: {e:?}"))?,
                g as u64 + 1,
            );
            cfg.auto_feedback = false;
            let p =
                Participant::new(cfg, Instant::now()).map_err(|e| format!("participant: {e}"))?;
            let link = member_link(&poll, g, fixed.is_some())?;
            members.push(Member {
                conf: c,
                session,
                endpoint: Endpoint::Participant(UdpParticipant::new(p, link)),
                key,
                sends: [
                    want(StreamArg::Audio),
                    want(StreamArg::Thumbnail),
                    want(StreamArg::Full) && i < args.speakers,
                ],
                full_subscriber,
                driver: None,
                rx: Receiver::new(epoch),
                media_in: 0,
                count_rtp: fixed.is_some(),
                rtp_in: 0,
                rtp_latency: LatencyHistogram::default(),
                other_in: 0,
            });
        }
    }
    let mut load = Load::new(members, poll, epoch);

    // ----- connect -----
    let total = load.members.len();
    let connect_started = Instant::now();
    let deadline = connect_started + Duration::from_secs_f64(args.connect_timeout.max(0.1));
    let ours: HashSet<SessionId> = load.members.iter().map(|m| m.session.clone()).collect();
    let mut announced = HashSet::new();
    loop {
        let now = Instant::now();
        if let Some(m) = load
            .members
            .iter()
            .find(|m| m.p().is_some_and(Participant::is_failed))
        {
            return Err(format!("participant {} failed to connect", m.session));
        }
        let connected = load
            .members
            .iter()
            .filter(|m| m.p().is_some_and(Participant::is_connected))
            .count();
        if connected == total {
            for n in control.poll_notifications(Duration::from_millis(2)) {
                match n {
                    NotificationBody::SessionConnected { session_id, .. }
                        if ours.contains(&session_id) =>
                    {
                        announced.insert(session_id);
                    }
                    NotificationBody::SessionFailed { session_id, .. }
                        if ours.contains(&session_id) =>
                    {
                        return Err(format!("the relay reports {session_id} failed"));
                    }
                    _ => {}
                }
            }
            if announced.len() == total {
                break;
            }
        }
        if now >= deadline {
            return Err(format!(
                "{connected} of {total} participants connected, {} announced by the relay, \
                 within {} s",
                announced.len(),
                args.connect_timeout
            ));
        }
        load.turn(now + Duration::from_millis(10))?;
    }
    let connect_secs = connect_started.elapsed().as_secs_f64();
    load.run_until(Instant::now() + SETTLE)?;
    share_keys(&mut load.members, profile)?;
    let report = measure(
        args,
        &mut load,
        epoch,
        connect_secs,
        relay_addr,
        args.relay_pid,
        None,
    );
    // Leave the relay as we found it, whatever the measurement did.
    for conf_id in conf_ids {
        let _ = control.request(RequestBody::RemoveConference {
            generation: generations.next(),
            conf_id,
        });
    }
    report
}

/// The load against a bare forwarder (`--bare-target`, fixed-rate mode, one
/// conference): the same sockets and receive path as [`run_relay`]'s members but no
/// participants; the forwarder command is spawned with `--dest` per receiver, probes wait
/// until each receiver hears through it, then [`measure`] with a [`BareSender`], then
/// SIGTERM.
pub(crate) fn run_bare(
    args: &Args,
    target: SocketAddr,
    epoch: Instant,
    poll: Poll,
) -> Result<Report, String> {
    if args.conferences != 1 {
        return Err("--bare-target runs one conference".into());
    }
    let Some((prog, rest)) = args.spawn.split_first() else {
        return Err("--bare-target needs the forwarder's command after --".into());
    };
    let mut members = Vec::new();
    for g in 0..args.participants {
        let link = member_link(&poll, g, true)?;
        members.push(Member {
            conf: 0,
            session: SessionId::new(format!("@bare{g}:blindfold|DEV"))
                .map_err(|e| format!("session id: {e}"))?,
            endpoint: Endpoint::Bare(link),
            key: Vec::new(),
            sends: [false; 3],
            full_subscriber: false,
            driver: None,
            rx: Receiver::new(epoch),
            media_in: 0,
            count_rtp: true,
            rtp_in: 0,
            rtp_latency: LatencyHistogram::default(),
            other_in: 0,
        });
    }
    let mut cmd = std::process::Command::new(prog);
    cmd.args(rest);
    for m in members.iter().skip(1) {
        let addr = m
            .link()
            .local_addr()
            .map_err(|e| format!("local addr: {e}"))?;
        cmd.arg("--dest").arg(addr.to_string());
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::null());
    let child = Forwarder(cmd.spawn().map_err(|e| format!("spawning {prog}: {e}"))?);
    let mut load = Load::new(members, poll, epoch);

    // Probes (not RTP, so not counted as media) until every receiver hears one.
    let started = Instant::now();
    let size = args.fixed_size.unwrap_or(0);
    let probe = vec![0u8; size.max(1)];
    let deadline = Instant::now() + Duration::from_secs_f64(args.connect_timeout.max(0.1));
    loop {
        if load.members.iter().skip(1).all(|m| m.other_in > 0) {
            break;
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "no probe reached every receiver through {target} within {} s",
                args.connect_timeout
            ));
        }
        if let Some(m) = load.members.first() {
            // Refused while nothing listens yet: the next probe tries again. Straight
            // from the socket: probes are not the measured traffic.
            let _ = m.link().socket().send_to(&probe, target);
        }
        load.run_until(Instant::now() + Duration::from_millis(10))?;
    }
    load.run_until(Instant::now() + SETTLE)?;

    let profile = SrtpProfile::AeadAes128Gcm;
    let key: Vec<u8> = (0..profile.master_len()).map(|k| k as u8).collect();
    let bare = BareSender::new(target, Ssrc(0x1001), profile, &key)?;
    let connect_secs = started.elapsed().as_secs_f64();
    let report = measure(
        args,
        &mut load,
        epoch,
        connect_secs,
        target,
        Some(child.0.id()),
        Some(bare),
    );
    drop(child);
    report
}

/// A 30-column bar for `done` (0.0..=1.0) of the run: `[=========>                    ]`.
pub(crate) fn progress_bar(done: f64) -> String {
    const WIDTH: usize = 30;
    let filled = ((done.clamp(0.0, 1.0) * WIDTH as f64).round() as usize).min(WIDTH);
    let mut bar = String::with_capacity(WIDTH + 2);
    bar.push('[');
    bar.extend(std::iter::repeat_n('=', filled.saturating_sub(1)));
    if filled > 0 {
        bar.push(if filled == WIDTH { '=' } else { '>' });
    }
    bar.extend(std::iter::repeat_n(' ', WIDTH - filled));
    bar.push(']');
    bar
}

/// Member `g`'s socket: non-blocking on 127.0.0.1, registered with `poll` as `Token(g)`;
/// with `fixed_rate`, a 4 MiB receive buffer (one thread reads every receiver between
/// bursts: their queues need room).
pub(crate) fn member_link(poll: &Poll, g: usize, fixed_rate: bool) -> Result<UdpLink, String> {
    let link = UdpLink::bind("127.0.0.1:0").map_err(|e| format!("udp socket: {e}"))?;
    if fixed_rate {
        set_rcvbuf(link.socket(), 4 << 20);
    }
    let fd = link.socket().as_raw_fd();
    poll.registry()
        .register(&mut SourceFd(&fd), Token(g), Interest::READABLE)
        .map_err(|e| format!("register: {e}"))?;
    Ok(link)
}

/// A spawned bare forwarder: SIGTERM and reaped when dropped, on every path.
pub(crate) struct Forwarder(std::process::Child);

impl Drop for Forwarder {
    fn drop(&mut self) {
        // SAFETY: `kill` takes a pid and a signal; the pid is our unreaped child (we hold
        // its `Child`), so it names no other process.
        unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

/// Where the load went, for the report: the control socket or the bare forwarder.
pub(crate) fn target_name(args: &Args) -> String {
    match (&args.control, args.bare_target) {
        (Some(c), _) => c.display().to_string(),
        (None, Some(t)) => t.to_string(),
        (None, None) => String::new(),
    }
}

/// The media phase, the same against a relay and a bare forwarder (at `forwarder`,
/// process `pid`): sources or fixed-rate senders for `--duration`, then the drain, and
/// the report. `bare` is the fixed-rate sender's packet builder against a bare
/// forwarder.
pub(crate) fn measure(
    args: &Args,
    load: &mut Load,
    epoch: Instant,
    connect_secs: f64,
    forwarder: SocketAddr,
    pid: Option<u32>,
    bare: Option<BareSender>,
) -> Result<Report, String> {
    let fixed = args.fixed_size.zip(args.fixed_pps);
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(args.duration);
    if let Some((size, pps)) = fixed {
        let senders: Vec<usize> = (0..args.conferences)
            .map(|c| c * args.participants)
            .collect();
        let n = senders.len();
        let tick = Duration::from_micros(args.fixed_tick_us.clamp(10, 1_000_000));
        load.fixed = Some(Fixed {
            senders,
            pps: pps / n as f64,
            payload: vec![0x5a; size],
            start,
            end,
            scheduled: vec![0; n],
            skipped: 0,
            sent: vec![0; n],
            send_errors: 0,
            next: start,
            tick,
            ticker: Ticker::start(&load.poll, tick)?,
            bare,
        });
    } else {
        for (g, m) in load.members.iter_mut().enumerate() {
            m.driver = Some(driver(m, g, epoch, args.rate, start)?);
        }
    }
    load.driving = true;
    load.next_timers = start;
    let relay_before = pid.map(proc_cpu_ticks).transpose()?;
    let relay_before_split = pid.map(proc_cpu_split).transpose()?;
    let own_before = own_cpu_secs();
    let own_before_split = cpu_seconds();
    let udp_before = udp_buffer_errors();
    let receiver_ports: Vec<u16> = load
        .members
        .iter()
        .filter_map(|m| m.link().local_addr().ok().map(|a| a.port()))
        .collect();
    let drops_before = (
        udp_socket_drops(&[forwarder.port()]),
        udp_socket_drops(&receiver_ports),
    );
    let mut tick = start + Duration::from_secs(1);
    let tty = std::io::stderr().is_terminal();
    let (mut last_sent, mut last_in, mut last_at) = (0u64, 0u64, start);
    while Instant::now() < end {
        load.turn(tick.min(end))?;
        let now = Instant::now();
        if now >= tick {
            if !args.no_progress {
                let (sent, got) = (load.sent(), load.media_in());
                let dt = now.duration_since(last_at).as_secs_f64();
                let elapsed = now.duration_since(start).as_secs_f64();
                let line = format!(
                    "{} {elapsed:5.1}/{:.1} s  sent {:9.0} pps  received {:9.0} pps  loss {:.3}%",
                    progress_bar(elapsed / args.duration),
                    args.duration,
                    (sent - last_sent) as f64 / dt,
                    (got - last_in) as f64 / dt,
                    100.0 * load.loss_so_far()
                );
                // On a terminal the bar redraws in place; in a log it is one line a second.
                if tty {
                    eprint!("\r{line}");
                } else {
                    eprintln!("{line}");
                }
                (last_sent, last_in, last_at) = (sent, got, now);
            }
            tick += Duration::from_secs(1);
        }
    }
    if tty && !args.no_progress {
        eprintln!();
    }
    if let Some(f) = &mut load.fixed {
        // The last burst, so every scheduled packet is sent (late, if need be).
        f.pace(&mut load.members, load.bufs.epoch, Instant::now());
    }
    let run_secs = start.elapsed().as_secs_f64();
    let relay_cpu = match (pid, relay_before) {
        (Some(pid), Some(before)) => {
            let after = proc_cpu_ticks(pid)?;
            // SAFETY: sysconf has no preconditions.
            let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
            Some((after.saturating_sub(before) as f64 / hz, proc_rss_kib(pid)?))
        }
        _ => None,
    };
    let own_cpu = own_cpu_secs() - own_before;
    let own_split = {
        let (u, s) = cpu_seconds();
        (u - own_before_split.0, s - own_before_split.1)
    };
    let relay_split = match (pid, relay_before_split) {
        (Some(pid), Some((u0, s0))) => {
            let (u1, s1) = proc_cpu_split(pid)?;
            // SAFETY: sysconf has no preconditions.
            let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
            Some((
                u1.saturating_sub(u0) as f64 / hz,
                s1.saturating_sub(s0) as f64 / hz,
            ))
        }
        _ => None,
    };
    load.driving = false;
    load.run_until(Instant::now() + DRAIN)?;
    let since = |before: Option<u64>, after: Option<u64>| Some(after?.saturating_sub(before?));
    let drops = (
        since(drops_before.0, udp_socket_drops(&[forwarder.port()])),
        since(drops_before.1, udp_socket_drops(&receiver_ports)),
    );
    let udp_errors = match (udp_before, udp_buffer_errors()) {
        (Some((r0, s0)), Some((r1, s1))) => Some((r1.saturating_sub(r0), s1.saturating_sub(s0))),
        _ => None,
    };

    let mut report = Report::new(load, run_secs, connect_secs, relay_cpu, own_cpu, udp_errors);
    report.blast = load.fixed.as_ref().map(|f| {
        let fanout = (args.participants - 1) as f64;
        let offered = f.offered();
        let sent: u64 = f.sent.iter().sum();
        let per_sink: Vec<f64> = load
            .members
            .iter()
            .enumerate()
            .filter(|(g, _)| !f.senders.contains(g))
            .map(|(_, m)| m.rtp_in as f64 / run_secs.max(1e-9))
            .collect();
        let received: u64 = load.members.iter().map(|m| m.rtp_in).sum();
        let loss_vs = |base: f64| {
            if base > 0.0 {
                1.0 - received as f64 / (base * fanout)
            } else {
                0.0
            }
        };
        BlastFields {
            offered_pps: offered / run_secs.max(1e-9),
            sent_pps: sent as f64 / run_secs.max(1e-9),
            shortfall_pps: (offered - sent as f64).max(0.0) / run_secs.max(1e-9),
            received_pps_per_sink: per_sink,
            loss: loss_vs(offered),
            loss_after_send: loss_vs(sent as f64),
            own_split,
            relay_split,
            send_errors: f.send_errors,
            drops,
        }
    });
    Ok(report)
}

/// Every member installs every other conference member's keys, as their key events in
/// the encrypted room would have them do.
pub(crate) fn share_keys(members: &mut [Member], profile: SrtpProfile) -> Result<(), String> {
    let keys: Vec<(usize, OwnSsrcs, Vec<u8>)> = members
        .iter()
        .filter_map(|m| Some((m.conf, m.p()?.ssrcs(), m.key.clone())))
        .collect();
    for (i, m) in members.iter_mut().enumerate() {
        for (j, (conf, ssrcs, key)) in keys.iter().enumerate() {
            if i == j || *conf != m.conf {
                continue;
            }
            let streams = ssrcs.as_remote_streams();
            let Some(p) = m.p_mut() else {
                continue;
            };
            p.install_remote_keys(
                SenderId(j as u64),
                &streams,
                profile,
                &[(KeyIndex(0), key.as_slice())],
            )
            .map_err(|e| format!("install keys: {e}"))?;
        }
    }
    Ok(())
}

/// The member's driver: the streams it does not send start in a year.
pub(crate) fn driver(
    m: &Member,
    g: usize,
    epoch: Instant,
    rate: f64,
    now: Instant,
) -> Result<Driver, String> {
    let s = m.p().ok_or("a driver needs a participant")?.ssrcs();
    let sender = SenderId(g as u64);
    let ext = LOAD_EXTMAP;
    let seed = g as u64 + 1;
    let mut cfgs = [
        SourceConfig::audio(sender, s.audio, ext, epoch, seed),
        SourceConfig::video(VideoLayer::Thumbnail, sender, s.thumbnail, ext, epoch, seed),
        SourceConfig::video(VideoLayer::Full, sender, s.full, ext, epoch, seed),
    ];
    for c in &mut cfgs {
        c.rate = rate;
    }
    let [a, t, f] = cfgs;
    let start = |on: bool| if on { now } else { now + NEVER };
    Driver::new(
        s,
        MediaSource::new(a, start(m.sends[0])),
        MediaSource::new(t, start(m.sends[1])),
        MediaSource::new(f, start(m.sends[2])),
        None,
    )
    .map_err(|e| format!("driver: {e}"))
}

/// Asks for a receive buffer of `bytes` (the kernel caps it at `rmem_max`); best effort.
pub(crate) fn set_rcvbuf(sock: &std::net::UdpSocket, bytes: libc::c_int) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid socket fd and a pointer to a c_int with its size.
    let _ = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&raw const bytes).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

/// This process's user + system CPU seconds.
pub(crate) fn own_cpu_secs() -> f64 {
    let (u, s) = cpu_seconds();
    u + s
}

#[cfg(test)]
mod tests {
    use super::progress_bar;

    #[test]
    pub(crate) fn progress_bar_fills_with_the_run() {
        assert_eq!(progress_bar(0.0), format!("[{}]", " ".repeat(30)));
        assert_eq!(
            progress_bar(0.5),
            format!("[{}>{}]", "=".repeat(14), " ".repeat(15))
        );
        assert_eq!(progress_bar(1.0), format!("[{}]", "=".repeat(30)));
        // Past the end (the last tick can be late) or nonsense stays a full bar.
        assert_eq!(progress_bar(1.7), progress_bar(1.0));
        assert_eq!(progress_bar(-1.0), progress_bar(0.0));
    }
}
