//! HTTP/1.1 framing, bounded: a request head of at most [`MAX_HEAD`] bytes, a body only
//! by `Content-Length` and of at most [`MAX_BODY`] bytes (the one body the service takes is
//! an instance's password). Parsing borrows from the connection's buffer and never
//! allocates; anything RFC 9112 does not allow is refused with a named [`HttpError`].

use alloc::vec::Vec;
use core::fmt::Write;

/// The largest request head (request line and headers, blank line included).
pub const MAX_HEAD: usize = 8 * 1024;

/// The largest request body: Nova's password limit (4 chunks of 255 bytes).
pub const MAX_BODY: usize = nanovnf_schema::metadata::MAX_PASSWORD;

/// Bytes of empty lines tolerated before a request line (RFC 9112 §2.2 asks for one).
pub const MAX_LEADING_EMPTY: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    /// A well-formed method the service does not serve (answered 405).
    Other,
}

/// A parsed request head; `target` and `head_len` refer to the parsed buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHead<'a> {
    pub method: Method,
    /// The request target as sent (origin or absolute form).
    pub target: &'a [u8],
    /// `HTTP/1.<minor>`.
    pub minor: u8,
    /// The body's length (0 without `Content-Length`).
    pub content_length: usize,
    /// The connection stays open after the answer.
    pub keep_alive: bool,
    /// Bytes of the head, blank line included (plus any empty lines before it).
    pub head_len: usize,
}

/// Why a request was refused before it reached the service; the connection closes after
/// the answer, since the stream cannot be trusted to resynchronise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpError {
    /// Not HTTP/1.x syntax: bad request line, header line, version, length or encoding.
    Malformed,
    /// The head did not end within [`MAX_HEAD`] bytes.
    HeadTooLarge,
    /// `Content-Length` beyond [`MAX_BODY`].
    BodyTooLarge,
}

impl HttpError {
    pub const fn status(self) -> Status {
        match self {
            HttpError::Malformed => Status::BadRequest,
            HttpError::HeadTooLarge => Status::HeaderFieldsTooLarge,
            HttpError::BodyTooLarge => Status::PayloadTooLarge,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    BadRequest,
    NotFound,
    MethodNotAllowed,
    Conflict,
    PayloadTooLarge,
    HeaderFieldsTooLarge,
}

impl Status {
    pub const ALL: [Status; 7] = [
        Status::Ok,
        Status::BadRequest,
        Status::NotFound,
        Status::MethodNotAllowed,
        Status::Conflict,
        Status::PayloadTooLarge,
        Status::HeaderFieldsTooLarge,
    ];

    pub const fn code(self) -> u16 {
        match self {
            Status::Ok => 200,
            Status::BadRequest => 400,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::Conflict => 409,
            Status::PayloadTooLarge => 413,
            Status::HeaderFieldsTooLarge => 431,
        }
    }

    pub const fn reason(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::BadRequest => "Bad Request",
            Status::NotFound => "Not Found",
            Status::MethodNotAllowed => "Method Not Allowed",
            Status::Conflict => "Conflict",
            Status::PayloadTooLarge => "Request Entity Too Large",
            Status::HeaderFieldsTooLarge => "Request Header Fields Too Large",
        }
    }

    /// The plain-text body webob sends with Nova's error answers.
    pub const fn explanation(self) -> &'static str {
        match self {
            Status::Ok => "",
            Status::BadRequest => {
                "The server could not comply with the request since it is either malformed or otherwise incorrect."
            }
            Status::NotFound => "The resource could not be found.",
            Status::MethodNotAllowed => "The method is not allowed for this resource.",
            Status::Conflict => "There was a conflict when trying to complete your request.",
            Status::PayloadTooLarge => "The body of your request was too large for this server.",
            Status::HeaderFieldsTooLarge => "The request header fields were too large.",
        }
    }
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Where the head ends (just past the blank line), if it has.
fn head_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(nl) = buf[i..].iter().position(|&b| b == b'\n') {
        let line_end = i + nl;
        let line = &buf[i..line_end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return Some(line_end + 1);
        }
        i = line_end + 1;
    }
    None
}

fn parse_decimal(s: &[u8]) -> Option<usize> {
    if s.is_empty() || s.len() > 12 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        s.iter()
            .fold(0usize, |n, &d| n * 10 + usize::from(d - b'0')),
    )
}

/// Parses the request head at the start of `buf`. `Ok(None)`: incomplete, read more.
/// Empty lines before the request line are skipped (RFC 9112 §2.2).
pub fn parse_head(buf: &[u8]) -> Result<Option<RequestHead<'_>>, HttpError> {
    let mut skip = 0;
    loop {
        match &buf[skip..] {
            [b'\r', b'\n', ..] => skip += 2,
            [b'\n', ..] => skip += 1,
            [b'\r'] => return Ok(None),
            _ => break,
        }
        if skip > MAX_LEADING_EMPTY {
            return Err(HttpError::Malformed);
        }
    }
    let window = &buf[skip..buf.len().min(skip + MAX_HEAD)];
    let Some(end) = head_end(window) else {
        return if window.len() >= MAX_HEAD {
            Err(HttpError::HeadTooLarge)
        } else {
            Ok(None)
        };
    };
    let head = &window[..end];
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let request_line = lines.next().ok_or(HttpError::Malformed)?;
    let mut parts = request_line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HttpError::Malformed);
    };
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(HttpError::Malformed);
    }
    if target.is_empty() || !target.iter().all(|&b| (0x21..0x7f).contains(&b)) {
        return Err(HttpError::Malformed);
    }
    let minor = match version {
        b"HTTP/1.1" => 1,
        b"HTTP/1.0" => 0,
        _ => return Err(HttpError::Malformed),
    };
    let method = match method {
        b"GET" => Method::Get,
        b"HEAD" => Method::Head,
        b"POST" => Method::Post,
        _ => Method::Other,
    };
    let mut content_length: Option<usize> = None;
    let mut close = false;
    let mut keep_alive_token = false;
    for line in lines {
        if line.is_empty() {
            break; // the blank line ending the head
        }
        if matches!(line[0], b' ' | b'\t') {
            return Err(HttpError::Malformed); // obsolete line folding
        }
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or(HttpError::Malformed)?;
        let (name, value) = (&line[..colon], trim_ows(&line[colon + 1..]));
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(HttpError::Malformed);
        }
        if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(HttpError::Malformed);
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_decimal(value).ok_or(HttpError::Malformed)?;
            if content_length.is_some_and(|m| m != n) {
                return Err(HttpError::Malformed);
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // Bodies are small and sized: chunked requests are not taken.
            return Err(HttpError::Malformed);
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',').map(trim_ows) {
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive_token |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    let content_length = content_length.unwrap_or(0);
    if content_length > MAX_BODY {
        return Err(HttpError::BodyTooLarge);
    }
    let keep_alive = !close && (minor == 1 || keep_alive_token);
    Ok(Some(RequestHead {
        method,
        target,
        minor,
        content_length,
        keep_alive,
        head_len: skip + end,
    }))
}

/// The path of a request target: the origin form's path, or an absolute form's path, with
/// the query and fragment cut off and `%XX` escapes decoded (an invalid escape stays as
/// it is, like Python's `unquote`).
pub fn target_path(target: &[u8]) -> Vec<u8> {
    let mut t = target;
    for scheme in [&b"http://"[..], b"https://"] {
        if t.len() >= scheme.len() && t[..scheme.len()].eq_ignore_ascii_case(scheme) {
            let rest = &t[scheme.len()..];
            t = rest
                .iter()
                .position(|&b| b == b'/')
                .map_or(&b"/"[..], |i| &rest[i..]);
            break;
        }
    }
    let end = t
        .iter()
        .position(|&b| b == b'?' || b == b'#')
        .unwrap_or(t.len());
    let t = &t[..end];
    let mut out = Vec::with_capacity(t.len());
    let hex = |b: u8| (b as char).to_digit(16);
    let mut i = 0;
    while i < t.len() {
        if t[i] == b'%'
            && i + 2 < t.len()
            && let (Some(h), Some(l)) = (hex(t[i + 1]), hex(t[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(t[i]);
            i += 1;
        }
    }
    out
}

/// Splits a path like Python's `posixpath.normpath(path).split('/')[1:]`: empty and `.`
/// segments vanish, `..` removes its parent (never above the root).
pub fn path_tokens(path: &[u8]) -> Vec<&[u8]> {
    let mut tokens: Vec<&[u8]> = Vec::new();
    for seg in path.split(|&b| b == b'/') {
        match seg {
            b"" | b"." => {}
            b".." => {
                tokens.pop();
            }
            s => tokens.push(s),
        }
    }
    tokens
}

/// What an answer says about its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persist {
    /// HTTP/1.1's default: nothing to say, the connection stays.
    KeepAlive,
    /// An HTTP/1.0 client asked to keep the connection: `Connection: keep-alive` says it
    /// stays (without it, such a client takes the answer as the last).
    KeepAlive10,
    /// `Connection: close`: the answer is the last.
    Close,
}

impl Persist {
    pub fn keeps(self) -> bool {
        self != Persist::Close
    }
}

impl RequestHead<'_> {
    /// How the answer to this request leaves the connection.
    pub fn persist(&self) -> Persist {
        match (self.keep_alive, self.minor) {
            (false, _) => Persist::Close,
            (true, 0) => Persist::KeepAlive10,
            (true, _) => Persist::KeepAlive,
        }
    }
}

/// Writes a response head. `allow` is sent with 405.
pub fn write_head(
    out: &mut Vec<u8>,
    status: Status,
    content_type: &str,
    content_length: usize,
    persist: Persist,
    allow: Option<&str>,
) {
    let mut s = alloc::string::String::with_capacity(160);
    // Writing into a String cannot fail.
    let _ = write!(
        s,
        "HTTP/1.1 {} {}\r\nContent-Type: {content_type}\r\nContent-Length: {content_length}\r\n",
        status.code(),
        status.reason()
    );
    if let Some(allow) = allow {
        let _ = write!(s, "Allow: {allow}\r\n");
    }
    match persist {
        Persist::KeepAlive => {}
        Persist::KeepAlive10 => s.push_str("Connection: keep-alive\r\n"),
        Persist::Close => s.push_str("Connection: close\r\n"),
    }
    s.push_str("\r\n");
    out.extend_from_slice(s.as_bytes());
}
