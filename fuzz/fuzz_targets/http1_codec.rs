//! The router's HTTP/1.1 framing (`router/h1/codec.rs`), the most exposed
//! parser in nap: request heads as clients send them, answer heads as apps
//! send them, and the bodies that follow (lengths and chunks). Beyond not
//! panicking, it checks what the router relies on: a head is found the same
//! whether it comes whole or a piece at a time (a valid request split across
//! reads is never refused); the smuggling rules hold of every head accepted;
//! an answer's head that parses whole is seen to end where it does (the
//! router never waits past it); and a body ends at the same byte however it
//! is cut.
#![no_main]

use nap::router::codec::{self, Chunked, Framing};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&mode, data)) = data.split_first() else { return };
    // The second byte picks where inputs are cut.
    let Some((&cut, data)) = data.split_first() else { return };
    match mode % 3 {
        0 => request(data, cut),
        1 => response(data, cut, if mode & 4 == 0 { "GET" } else { "HEAD" }),
        _ => chunked(data, cut),
    }
});

/// Up to eight places to cut `len` bytes, from `cut`.
fn cuts(len: usize, cut: u8) -> Vec<usize> {
    if len == 0 {
        return Vec::new();
    }
    let step = usize::from(cut).max(1);
    (1..=8).map(|n| (n * step * 7919) % len).collect()
}

fn request(buf: &[u8], cut: u8) {
    let mut storage = codec::storage();
    let Ok(Some(head)) = codec::parse_request(buf, &mut storage) else { return };
    assert!(head.len <= buf.len());
    let named = |name: &str| -> Vec<&[u8]> {
        head.headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value).collect()
    };
    // RFC 9112's rules against smuggling, of every head accepted.
    let lengths = named("content-length");
    let codings = named("transfer-encoding").len();
    match &head.framing {
        Framing::Chunked(_) => {
            assert!(lengths.is_empty() && codings == 1 && head.minor == 1, "{:?}", String::from_utf8_lossy(buf));
        }
        Framing::Length(length) => {
            assert_eq!(codings, 0);
            for value in &lengths {
                let text = std::str::from_utf8(value).expect("an accepted length is ASCII");
                assert_eq!(text.trim_matches([' ', '\t']).parse::<u64>().ok(), Some(*length));
            }
            assert!(!lengths.is_empty() || *length == 0);
        }
        Framing::UntilClose => panic!("a request never runs until the close"),
    }
    let hosts = named("host").len();
    assert_eq!(head.hosts, hosts > 1);
    // Found the same a piece at a time: no prefix is a head, or refused.
    for at in cuts(head.len, cut) {
        let mut storage = codec::storage();
        let prefix = codec::parse_request(&buf[..at], &mut storage);
        assert!(matches!(prefix, Ok(None)), "{:?} cut at {at}: {:?}", String::from_utf8_lossy(buf), prefix.err());
    }
    body(head.framing.clone(), &buf[head.len..], cut);
}

fn response(buf: &[u8], cut: u8, method: &str) {
    let mut storage = codec::storage();
    let Ok(Some(head)) = codec::parse_response(buf, &mut storage) else {
        let _ = codec::head_end(buf);
        return;
    };
    assert!(head.len <= buf.len());
    // The router reads an answer until `head_end` finds its end, then parses it.
    let end = codec::head_end(buf);
    assert!(end.is_some_and(|end| end <= head.len), "{:?}: head_end {end:?}", String::from_utf8_lossy(buf));
    let framing = head.framing(method);
    if method == "HEAD" || matches!(head.code, 100..=199 | 204 | 304) {
        assert_eq!(framing, Framing::Length(0));
    }
    body(framing, &buf[head.len..], cut);
}

fn chunked(buf: &[u8], cut: u8) {
    body(Framing::Chunked(Chunked::default()), buf, cut);
    // The data runs are the body without its framing: never more than it.
    let mut data = 0;
    if let Ok(taken) = Chunked::default().advance_with(buf, |run| data += run.len()) {
        assert!(data <= taken);
    }
}

/// Follows a body whole, and cut in pieces: it ends at the same byte, or
/// is refused, either way.
fn body(framing: Framing, buf: &[u8], cut: u8) {
    let mut whole = framing.clone();
    let taken = whole.advance(buf);
    if let Ok(taken) = taken {
        assert!(taken <= buf.len());
        assert!(taken == buf.len() || whole.is_done(), "a body stopped short of its input without ending");
    }
    let mut points = cuts(buf.len(), cut);
    points.sort_unstable();
    points.dedup();
    let mut pieces = framing;
    let (mut at, mut consumed) = (0, Ok(0));
    for end in points.into_iter().chain([buf.len()]) {
        if end < at {
            continue;
        }
        match pieces.advance(&buf[at..end]) {
            Ok(n) => {
                consumed = consumed.map(|c| c + n);
                if n < end - at {
                    break;
                }
            }
            Err(err) => {
                consumed = Err(err);
                break;
            }
        }
        at = end;
    }
    assert_eq!(taken.is_ok(), consumed.is_ok(), "whole {taken:?}, in pieces {consumed:?}");
    if let (Ok(taken), Ok(consumed)) = (taken, consumed) {
        assert_eq!((taken, whole.is_done()), (consumed, pieces.is_done()));
    }
}
