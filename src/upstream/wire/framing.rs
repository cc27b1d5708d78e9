//! An HTTP/1.1 answer's framing, read from bytes: its head (with httparse) and a chunked body.

use crate::keepalive::Failure;

/// Headers parsed per answer; more is an error, as in hyper (100).
pub(super) const MAX_HEADERS: usize = 100;

/// How the body's end is known (RFC 9112, 6.3).
pub(super) enum Framing {
    Length(usize),
    Chunked,
    Close,
}

/// The answer's head when `bytes` hold all of it: (status, its length,
/// how its body ends, whether the connection may carry another request).
pub(super) fn parse_head(bytes: &[u8]) -> Result<Option<(u16, usize, Framing, bool)>, Failure> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(Failure::Invalid(format!("not an HTTP answer: {e}"))),
    };
    let status = response.code.unwrap_or(0);
    let mut keep = response.version == Some(1);
    let mut length: Option<usize> = None;
    let mut chunked = None;
    for h in response.headers.iter() {
        let value = std::str::from_utf8(h.value)
            .map_err(|_| Failure::Invalid(format!("header {} is not text", h.name)))?;
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = value
                .trim()
                .parse::<usize>()
                .map_err(|_| Failure::Invalid(format!("bad content-length {value:?}")))?;
            if length.is_some_and(|m| m != n) {
                return Err(Failure::Invalid("two different content-lengths".into()));
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // Only a final `chunked` frames the body; anything else runs to the end.
            let last = value.rsplit(',').next().unwrap_or("").trim();
            chunked = Some(last.eq_ignore_ascii_case("chunked"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    keep = false;
                } else if token.eq_ignore_ascii_case("keep-alive") && response.version == Some(0) {
                    keep = true;
                }
            }
        }
    }
    let framing = match (chunked, length) {
        (Some(true), _) => Framing::Chunked,
        (Some(false), _) => Framing::Close,
        (None, Some(n)) => Framing::Length(n),
        (None, None) => Framing::Close,
    };
    if matches!(framing, Framing::Close) {
        keep = false;
    }
    Ok(Some((status, len, framing, keep)))
}

/// One step of decoding a chunked body from `bytes`.
pub(super) enum Step {
    /// A chunk of this many bytes was taken into the body.
    Took(usize),
    /// The last chunk and trailers ended after this many bytes.
    Done(usize),
    /// The next chunk is not all here yet.
    More,
}

pub(super) fn dechunk(bytes: &[u8], body: &mut Vec<u8>, limit: usize) -> Result<Step, Failure> {
    let bad = |m: &str| Failure::Invalid(format!("bad chunked body: {m}"));
    let (size_len, size) = match httparse::parse_chunk_size(bytes) {
        Ok(httparse::Status::Complete(found)) => found,
        Ok(httparse::Status::Partial) => return Ok(Step::More),
        Err(_) => return Err(bad("chunk size")),
    };
    let rest = &bytes[size_len..];
    if size == 0 {
        // Trailers, if any, then an empty line.
        let mut at = 0;
        loop {
            let Some(eol) = rest[at..].windows(2).position(|w| w == b"\r\n") else {
                return Ok(Step::More);
            };
            if eol == 0 {
                return Ok(Step::Done(size_len + at + 2));
            }
            at += eol + 2;
        }
    }
    let size = usize::try_from(size).map_err(|_| bad("chunk too large"))?;
    if body.len().saturating_add(size) > limit {
        return Err(Failure::Invalid(format!("answer over {limit} bytes")));
    }
    if rest.len() < size + 2 {
        return Ok(Step::More);
    }
    if &rest[size..size + 2] != b"\r\n" {
        return Err(bad("chunk not ended by CRLF"));
    }
    body.extend_from_slice(&rest[..size]);
    Ok(Step::Took(size_len + size + 2))
}
