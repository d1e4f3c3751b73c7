use super::*;

static DROPS: Labels<3> = Labels {
    metric: "blindfold_drops_total",
    help: "Datagrams dropped, by reason.",
    label: "reason",
    values: ["unknown_source", "bad_rtp", "weird \"quoted\\\" name"],
};
static SESSIONS: Labels<2> = Labels {
    metric: "blindfold_sessions",
    help: "Sessions, by state.\nSecond line.",
    label: "state",
    values: ["connecting", "connected"],
};

fn sample() -> Arc<Metrics<3, 2>> {
    let m = Metrics::new(3, &DROPS, &SESSIONS);
    for (i, w) in m.workers().iter().enumerate() {
        let i = i as u64;
        w.packets_in.add(10 + i);
        w.bytes_in.add(1000 * (i + 1));
        w.packets_out.add(20);
        w.bytes_out.add(2000);
        w.dtls_handshakes.inc();
        w.dtls_failures.add(i);
        w.control_messages.add(2);
        w.drops.add(0, 1);
        w.drops.add(2, i);
        w.drops.add(99, 1); // ignored, no panic
        w.sessions.set(1, 4);
        w.sessions.add(0, 2);
        w.sessions.add(0, -1);
        w.sessions.add(7, 1); // ignored
    }
    m
}

/// A sample line of the text format: name, labels, value.
#[derive(Debug, PartialEq)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// A strict-enough parser of the Prometheus text format 0.0.4: every line is a
/// `# HELP`/`# TYPE` comment or `name{l="v",…} value`, TYPE precedes samples, names and
/// label names are valid, label values are properly escaped.
fn parse_exposition(text: &str) -> Vec<Sample> {
    fn is_name(s: &str, colon: bool) -> bool {
        let mut cs = s.chars();
        matches!(cs.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || (colon && c == ':'))
            && cs.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':'))
    }
    assert!(text.ends_with('\n'));
    let mut typed = std::collections::HashSet::new();
    let mut out = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            assert!(is_name(name, true), "{line}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(is_name(name, true), "{line}");
            assert!(matches!(kind, "counter" | "gauge"), "{line}");
            assert!(typed.insert(name.to_string()), "duplicate TYPE: {line}");
            continue;
        }
        assert!(!line.starts_with('#'), "{line}");
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value in {line}"));
        let (name, labels) = match series.split_once('{') {
            None => (series, Vec::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("{line}"));
                let mut labels = Vec::new();
                let mut chars = body.chars().peekable();
                while chars.peek().is_some() {
                    let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
                    assert!(is_name(&key, false), "{line}");
                    assert_eq!(chars.next(), Some('"'), "{line}");
                    let mut val = String::new();
                    loop {
                        match chars
                            .next()
                            .unwrap_or_else(|| panic!("unterminated: {line}"))
                        {
                            '"' => break,
                            '\\' => match chars.next() {
                                Some('\\') => val.push('\\'),
                                Some('"') => val.push('"'),
                                Some('n') => val.push('\n'),
                                other => panic!("bad escape {other:?} in {line}"),
                            },
                            c => val.push(c),
                        }
                    }
                    labels.push((key, val));
                    match chars.next() {
                        None => break,
                        Some(',') => {}
                        Some(c) => panic!("unexpected {c:?} in {line}"),
                    }
                }
                (name, labels)
            }
        };
        assert!(is_name(name, true), "{line}");
        assert!(typed.contains(name), "sample before its TYPE: {line}");
        out.push(Sample {
            name: name.into(),
            labels,
            value,
        });
    }
    out
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && s.labels.len() == labels.len()
                && s.labels
                    .iter()
                    .zip(labels)
                    .all(|(a, b)| a.0 == b.0 && a.1 == b.1)
        })
        .unwrap_or_else(|| panic!("no {name} {labels:?}"))
        .value
}

#[test]
fn summed_exposition_parses_and_adds_up() {
    let mut text = String::new();
    sample().render(&mut text, false);
    let s = parse_exposition(&text);
    assert_eq!(value(&s, "blindfold_packets_received_total", &[]), 33.0);
    assert_eq!(value(&s, "blindfold_bytes_received_total", &[]), 6000.0);
    assert_eq!(value(&s, "blindfold_packets_sent_total", &[]), 60.0);
    assert_eq!(value(&s, "blindfold_dtls_handshakes_total", &[]), 3.0);
    assert_eq!(
        value(&s, "blindfold_dtls_handshake_failures_total", &[]),
        3.0
    );
    assert_eq!(value(&s, "blindfold_control_messages_total", &[]), 6.0);
    assert_eq!(
        value(&s, "blindfold_drops_total", &[("reason", "unknown_source")]),
        3.0
    );
    assert_eq!(
        value(&s, "blindfold_drops_total", &[("reason", "bad_rtp")]),
        0.0
    );
    assert_eq!(
        value(
            &s,
            "blindfold_drops_total",
            &[("reason", "weird \"quoted\\\" name")]
        ),
        3.0
    );
    assert_eq!(
        value(&s, "blindfold_sessions", &[("state", "connecting")]),
        3.0
    );
    assert_eq!(
        value(&s, "blindfold_sessions", &[("state", "connected")]),
        12.0
    );
    assert!(text.contains("# HELP blindfold_sessions Sessions, by state.\\nSecond line.\n"));
    assert!(text.contains("# TYPE blindfold_sessions gauge\n"));
}

#[test]
fn per_worker_exposition_labels_each_worker() {
    let mut text = String::new();
    sample().render(&mut text, true);
    let s = parse_exposition(&text);
    for i in 0..3 {
        let w = i.to_string();
        assert_eq!(
            value(&s, "blindfold_packets_received_total", &[("worker", &w)]),
            10.0 + i as f64
        );
        assert_eq!(
            value(
                &s,
                "blindfold_drops_total",
                &[("worker", &w), ("reason", "weird \"quoted\\\" name")]
            ),
            i as f64
        );
        assert_eq!(
            value(
                &s,
                "blindfold_sessions",
                &[("worker", &w), ("state", "connected")]
            ),
            4.0
        );
    }
}

#[test]
fn workers_are_cache_line_isolated() {
    let m = sample();
    assert_eq!(std::mem::align_of::<WorkerMetrics<3, 2>>(), 128);
    let a = m.worker(0).unwrap() as *const _ as usize;
    let b = m.worker(1).unwrap() as *const _ as usize;
    assert!(b - a >= 128 && b.is_multiple_of(128));
    assert!(m.worker(3).is_none());
}

#[test]
fn request_line_classification() {
    assert_eq!(
        parse_request(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
        Request::Metrics
    );
    assert_eq!(
        parse_request(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"),
        Request::Metrics
    );
    assert_eq!(parse_request(b"GET / HTTP/1.1\r\n\r\n"), Request::NotFound);
    assert_eq!(
        parse_request(b"GET /metricsx HTTP/1.1\r\n\r\n"),
        Request::NotFound
    );
    assert_eq!(
        parse_request(b"POST /metrics HTTP/1.1\r\n\r\n"),
        Request::MethodNotAllowed
    );
    for bad in [
        &b""[..],
        b"GET /metrics HTTP/1.1",
        b"GET /metrics\r\n\r\n",
        b"GET  /metrics HTTP/1.1\r\n",
        b"GET metrics HTTP/1.1\r\n",
        b"GET /metrics SPDY/3\r\n",
        b"\xff\xfe /metrics HTTP/1.1\r\n",
        b"GET /metrics HTTP/1.1 extra\r\n",
    ] {
        assert_eq!(parse_request(bad), Request::Bad, "{bad:?}");
    }
}

fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn http_endpoint_serves_metrics_404s_and_survives_garbage_and_slow_clients() {
    let m = sample();
    let server = MetricsServer::spawn("127.0.0.1:0".parse().unwrap(), {
        let m = Arc::clone(&m);
        move |out| m.render(out, false)
    })
    .unwrap();
    let addr = server.local_addr();

    let ok = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let (head, body) = ok.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert!(
        head.contains(&format!("Content-Length: {}", body.len())),
        "{head}"
    );
    assert_eq!(
        value(
            &parse_exposition(body),
            "blindfold_packets_received_total",
            &[]
        ),
        33.0
    );

    assert!(exchange(addr, b"GET /other HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404 "));
    assert!(exchange(addr, b"DELETE /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405 "));
    assert!(exchange(addr, b"\x16\x03\x01\x02\x00garbage\r\n\r\n").starts_with("HTTP/1.1 400 "));
    assert!(
        exchange(addr, &[b'A'; 20_000]).starts_with("HTTP/1.1 400 "),
        "oversized head"
    );
    // A client that closes without a request, and one that sends half a line and closes.
    drop(TcpStream::connect(addr).unwrap());
    let mut half = TcpStream::connect(addr).unwrap();
    half.write_all(b"GET /met").unwrap();
    drop(half);

    // A silent client holds the server at most for the request deadline; meanwhile a
    // second client queues and is answered after it.
    let silent = TcpStream::connect(addr).unwrap();
    let t = Instant::now();
    let ok = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n");
    assert!(ok.starts_with("HTTP/1.1 200 "));
    assert!(t.elapsed() < REQUEST_DEADLINE + Duration::from_secs(3));
    drop(silent);

    server.shutdown();
    assert!(TcpStream::connect(addr).is_err() || exchange_fails(addr));
}

/// A client that takes the response a few bytes at a time holds the server for the
/// response deadline in total, not for a write timeout per write: a scrape behind it is
/// answered.
#[test]
fn a_slowly_reading_client_holds_the_server_at_most_the_response_deadline() {
    // A body far larger than the socket buffers, so that writes wait for the client.
    let server = MetricsServer::spawn("127.0.0.1:0".parse().unwrap(), |out| {
        out.push_str(&"# filler line for a large response\n".repeat(1 << 19));
    })
    .unwrap();
    let addr = server.local_addr();
    let done = Arc::new(AtomicBool::new(false));
    let slow = {
        let done = Arc::clone(&done);
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            while !done.load(Ordering::Relaxed) {
                match s.read(&mut buf) {
                    Ok(0) => return,
                    _ => std::thread::sleep(Duration::from_millis(300)),
                }
            }
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    let ok = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n");
    assert!(ok.starts_with("HTTP/1.1 200 "));
    assert!(
        t.elapsed() < RESPONSE_DEADLINE + Duration::from_secs(3),
        "{:?}",
        t.elapsed()
    );
    done.store(true, Ordering::Relaxed);
    slow.join().unwrap();
}

/// After shutdown the listener is closed, or (if the port was reused) nobody answers.
fn exchange_fails(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return true;
    };
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let _ = s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n");
    let mut out = String::new();
    s.read_to_string(&mut out).map(|n| n == 0).unwrap_or(true)
}
