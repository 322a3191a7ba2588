//! Request heads: the request line and header fields of HTTP/1.0 and HTTP/1.1 (RFC 9112).
//!
//! Parsing never panics and never allocates: it works on the bytes in the connection's input
//! buffer and returns slices of them. Lines end in CRLF or a bare LF; leading empty lines are
//! skipped. Anything this server does not accept is a [`Status`] to answer with.

use crate::Status;

/// Header fields counted at most.
pub const MAX_HEADERS: usize = 64;

/// The HTTP version of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.0: the connection closes after the response unless the client asks otherwise.
    Http10,
    /// HTTP/1.1: persistent unless the client says `Connection: close`.
    Http11,
}

/// A parsed request head (slices of the input).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head<'a> {
    /// The method (case-sensitive, as sent).
    pub method: &'a str,
    /// The path of the target, without query; `/` for an absolute-form target without one.
    pub path: &'a str,
    /// The version.
    pub version: Version,
    /// `Content-Length`, if sent.
    pub content_length: Option<u64>,
    /// A `Transfer-Encoding` field was sent (not supported: the body's end cannot be found).
    pub transfer_encoding: bool,
    /// A `Host` field was sent.
    pub host: bool,
    /// `Connection: close` was sent.
    pub close: bool,
    /// `Connection: keep-alive` was sent.
    pub keep_alive: bool,
    /// `Expect: 100-continue` was sent (the client waits for an interim answer before the body).
    pub expect_continue: bool,
}

impl Head<'_> {
    /// Whether the connection stays open after the response (before the server's own reasons
    /// to close it).
    pub fn persistent(&self) -> bool {
        match self.version {
            Version::Http11 => !self.close,
            Version::Http10 => self.keep_alive && !self.close,
        }
    }
}

/// Why no head came out of the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// The head is not complete yet.
    Incomplete,
    /// The head is complete (or cannot be) and wrong: answer this and close.
    Reject(Status),
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// The next line of `buf` from `at`: (line without CR LF, offset after it), or `None` if no LF.
fn line(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let rest = buf.get(at..)?;
    let lf = rest.iter().position(|&b| b == b'\n')?;
    let l = rest.get(..lf)?;
    let l = l.strip_suffix(b"\r").unwrap_or(l);
    Some((l, at + lf + 1))
}

fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &d| acc.checked_mul(10)?.checked_add(u64::from(d - b'0')))
}

/// Parses a decimal number as it appears in a path or header (digits only, no sign, no
/// leading `+`, at most 19 digits).
pub fn parse_decimal(s: &str) -> Option<u64> {
    parse_u64(s.as_bytes())
}

/// Parses the head at the start of `buf`. Returns it and its length in bytes (the body, if
/// any, follows).
pub fn parse(buf: &[u8]) -> Result<(Head<'_>, usize), ParseError> {
    // Skip empty lines before the request line (RFC 9112 §2.2).
    let mut at = 0;
    let (request_line, mut at) = loop {
        match line(buf, at) {
            None => {
                return if buf.get(at..).is_some_and(|r| r.iter().all(|b| b.is_ascii_whitespace())) || buf.len() < 16 {
                    Err(ParseError::Incomplete)
                } else {
                    check_partial_request_line(buf.get(at..).unwrap_or(&[]))
                };
            }
            Some((&[], next)) => at = next,
            Some(found) => break found,
        }
    };
    let mut parts = request_line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(ParseError::Reject(Status::BadRequest));
    };
    if !is_token(method) {
        return Err(ParseError::Reject(Status::BadRequest));
    }
    let version = match version {
        b"HTTP/1.1" => Version::Http11,
        b"HTTP/1.0" => Version::Http10,
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor] if major.is_ascii_digit() && minor.is_ascii_digit() => {
            return Err(ParseError::Reject(Status::VersionNotSupported));
        }
        _ => return Err(ParseError::Reject(Status::BadRequest)),
    };
    let path = path_of(target).ok_or(ParseError::Reject(Status::BadRequest))?;
    let method = core::str::from_utf8(method).map_err(|_| ParseError::Reject(Status::BadRequest))?;

    let mut head = Head {
        method,
        path,
        version,
        content_length: None,
        transfer_encoding: false,
        host: false,
        close: false,
        keep_alive: false,
        expect_continue: false,
    };
    let mut fields = 0;
    loop {
        let Some((l, next)) = line(buf, at) else { return Err(ParseError::Incomplete) };
        at = next;
        if l.is_empty() {
            return Ok((head, at));
        }
        fields += 1;
        if fields > MAX_HEADERS {
            return Err(ParseError::Reject(Status::HeaderFieldsTooLarge));
        }
        // No obsolete line folding, no whitespace before the colon (RFC 9112 §5).
        let colon = l.iter().position(|&b| b == b':').ok_or(ParseError::Reject(Status::BadRequest))?;
        let (name, value) = (l.get(..colon).unwrap_or(&[]), trim(l.get(colon + 1..).unwrap_or(&[])));
        if !is_token(name) || value.iter().any(|&b| b == b'\r' || b == 0) {
            return Err(ParseError::Reject(Status::BadRequest));
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_u64(value).ok_or(ParseError::Reject(Status::BadRequest))?;
            if head.content_length.is_some_and(|m| m != n) {
                return Err(ParseError::Reject(Status::BadRequest));
            }
            head.content_length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            head.transfer_encoding = true;
        } else if name.eq_ignore_ascii_case(b"host") {
            if head.host {
                return Err(ParseError::Reject(Status::BadRequest));
            }
            head.host = true;
        } else if name.eq_ignore_ascii_case(b"expect") {
            head.expect_continue |= value.eq_ignore_ascii_case(b"100-continue");
        } else if name.eq_ignore_ascii_case(b"connection") {
            for opt in value.split(|&b| b == b',').map(trim) {
                if opt.eq_ignore_ascii_case(b"close") {
                    head.close = true;
                } else if opt.eq_ignore_ascii_case(b"keep-alive") {
                    head.keep_alive = true;
                }
            }
        }
    }
}

/// A request line still without its LF: reject early what cannot become valid (binary junk),
/// so a peer cannot make the server wait for a full buffer of garbage.
fn check_partial_request_line(rest: &[u8]) -> Result<(Head<'_>, usize), ParseError> {
    let method_end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
    let method_ok = rest.get(..method_end).is_some_and(|m| m.iter().all(|&b| is_tchar(b)));
    if !method_ok || rest.iter().any(|&b| b < 0x20 && b != b'\r' && b != b'\t') {
        return Err(ParseError::Reject(Status::BadRequest));
    }
    Err(ParseError::Incomplete)
}

/// The path of an origin-form (`/a/b?q`) or absolute-form (`http://host/a?q`) target.
fn path_of(target: &[u8]) -> Option<&str> {
    let t = core::str::from_utf8(target).ok()?;
    if t.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return None;
    }
    let path = if t.starts_with('/') {
        t
    } else {
        let lower_ok = t.get(..7).is_some_and(|s| s.eq_ignore_ascii_case("http://"));
        let after = if lower_ok { t.get(7..)? } else { t.get(..8).filter(|s| s.eq_ignore_ascii_case("https://")).and(t.get(8..))? };
        after.find('/').and_then(|i| after.get(i..)).unwrap_or("/")
    };
    let path = path.split(['?', '#']).next().unwrap_or("/");
    Some(if path.is_empty() { "/" } else { path })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;
    use alloc::string::String;
    use alloc::vec::Vec;

    fn ok(s: &str) -> (Head<'_>, usize) {
        parse(s.as_bytes()).expect("valid head")
    }

    #[test]
    fn a_simple_get() {
        let (h, n) = ok("GET /stats?x=1 HTTP/1.1\r\nHost: a\r\n\r\nrest");
        assert_eq!(n, "GET /stats?x=1 HTTP/1.1\r\nHost: a\r\n\r\n".len());
        assert_eq!((h.method, h.path, h.version, h.host, h.persistent()), ("GET", "/stats", Version::Http11, true, true));
    }

    #[test]
    fn headers_are_case_insensitive_and_trimmed() {
        let (h, _) = ok("POST /sink HTTP/1.1\nhost: a\nCONTENT-length:  12 \nConnection: Keep-Alive, Close\n\n");
        assert_eq!(h.content_length, Some(12));
        assert!(h.close && h.keep_alive && !h.persistent());
        assert!(!h.expect_continue);
        assert!(ok("POST /sink HTTP/1.1\r\nExpect: 100-Continue\r\n\r\n").0.expect_continue);
    }

    #[test]
    fn http10_closes_unless_asked() {
        assert!(!ok("GET / HTTP/1.0\r\n\r\n").0.persistent());
        assert!(ok("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").0.persistent());
    }

    #[test]
    fn leading_empty_lines_are_skipped() {
        let (h, n) = ok("\r\n\r\nGET / HTTP/1.1\r\n\r\n");
        assert_eq!((h.path, n), ("/", 22));
    }

    #[test]
    fn absolute_form_targets() {
        assert_eq!(ok("GET http://example/bytes/5?q HTTP/1.1\r\n\r\n").0.path, "/bytes/5");
        assert_eq!(ok("GET http://example HTTP/1.1\r\n\r\n").0.path, "/");
    }

    #[test]
    fn incomplete_heads_wait() {
        for s in ["", "\r\n", "GET / HTTP/1.1", "GET / HTTP/1.1\r\nHost: a\r\n", "GET / HTTP/1.1\r\nHost: a\r\n\r"] {
            assert_eq!(parse(s.as_bytes()).err(), Some(ParseError::Incomplete), "{s:?}");
        }
    }

    #[test]
    fn malformed_heads_are_rejected() {
        let bad = [
            "GET /\r\n\r\n",
            "GET  / HTTP/1.1\r\n\r\n",
            "G(T / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1 x\r\n\r\n",
            "GET / FTP/1.1\r\n\r\n",
            "GET nopath HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nNoColon\r\n\r\n",
            "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
            "GET / HTTP/1.1\r\nName : x\r\n\r\n",
            "GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 1, 1\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "\x16\x03\x01\x02\x00\x01\x00\x01\x7f\x03\x03 tls hello junk",
        ];
        for s in bad {
            assert_eq!(parse(s.as_bytes()).err(), Some(ParseError::Reject(Status::BadRequest)), "{s:?}");
        }
        assert_eq!(parse(b"GET / HTTP/2.0\r\n\r\n").err(), Some(ParseError::Reject(Status::VersionNotSupported)));
        let mut many = String::from("GET / HTTP/1.1\r\n");
        for i in 0..=MAX_HEADERS {
            many.push_str(&format!("X-{i}: y\r\n"));
        }
        many.push_str("\r\n");
        assert_eq!(parse(many.as_bytes()).err(), Some(ParseError::Reject(Status::HeaderFieldsTooLarge)));
    }

    #[test]
    fn decimal_numbers() {
        assert_eq!(parse_decimal("0"), Some(0));
        assert_eq!(parse_decimal("67108864"), Some(64 << 20));
        assert_eq!(parse_decimal("18446744073709551615"), None, "20 digits");
        for s in ["", "+1", "-1", "1 ", "0x10", "1e3"] {
            assert_eq!(parse_decimal(s), None, "{s:?}");
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut x = 0x1234_5678_u64;
        for len in 0..2000 {
            let buf: Vec<u8> = (0..len % 300)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    b"GET /\r\n: HTP1.0a"[(x % 16) as usize]
                })
                .collect();
            let _ = parse(&buf);
        }
    }
}
