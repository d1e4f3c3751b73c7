//! The HTTP/1.1 the harness's loopback servers speak (the homeserver proxy, the browser
//! page's server): requests with a `Content-Length` body (no chunked bodies), each
//! keep-alive connection served on its own thread until the client closes it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

/// The longest request body read.
const MAX_BODY: usize = 64 << 20;

/// One request as read from the client.
pub(crate) struct Request {
    pub(crate) method: String,
    pub(crate) target: String,
    /// Its headers, names in lower case.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

/// An answer: status, content type, body.
pub(crate) type Response = (u16, String, Vec<u8>);

/// Answers the requests of `conn` with `handle` until the client closes it (or sends
/// what is not handled here).
pub(crate) fn serve(conn: TcpStream, mut handle: impl FnMut(Request) -> Response) {
    let Ok(mut write) = conn.try_clone() else {
        return;
    };
    let mut read = BufReader::new(conn);
    while let Some(req) = read_request(&mut read) {
        let (status, content_type, body) = handle(req);
        let head = format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
             Cache-Control: no-store\r\n\r\n",
            if status < 400 { "OK" } else { "Error" },
            body.len()
        );
        if write.write_all(head.as_bytes()).is_err() || write.write_all(&body).is_err() {
            return;
        }
    }
}

/// Reads one request; `None` at the end of the connection or on what is not handled
/// (a chunked body, one longer than [`MAX_BODY`]).
fn read_request(r: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    r.read_line(&mut line).ok().filter(|n| *n > 0)?;
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next()?.to_owned(), parts.next()?.to_owned());
    let mut headers = Vec::new();
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok().filter(|n| *n > 0)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (name, value) = h.split_once(':')?;
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_owned());
        match name.as_str() {
            "content-length" => length = value.parse().ok().filter(|&n| n <= MAX_BODY)?,
            "transfer-encoding" => return None,
            _ => {}
        }
        headers.push((name, value));
    }
    let mut body = vec![0; length];
    r.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        target,
        headers,
        body,
    })
}
