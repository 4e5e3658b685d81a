use super::*;
use ChunkError::*;

type Outcome = Result<(Vec<u8>, Option<usize>), ChunkError>;

/// Feeds `stream` in pieces sized by `next`; returns payload and where Done ended.
fn run(d: &mut ChunkedDecoder, stream: &[u8], mut next: impl FnMut() -> usize) -> Outcome {
    let (mut pos, mut end, mut out) = (0, 0, Vec::new());
    loop {
        let input = &stream[pos..end];
        match d.decode(input)? {
            ChunkStep::Data { start, end: e } => {
                assert!(start < e && e <= input.len());
                out.extend_from_slice(&input[start..e]);
                pos += e;
            }
            ChunkStep::Done { consumed } => return Ok((out, Some(pos + consumed))),
            ChunkStep::NeedMore { consumed } => {
                assert_eq!(consumed, input.len(), "no internal buffering");
                pos += consumed;
                if end == stream.len() {
                    return Ok((out, None));
                }
                end = end.saturating_add(next().max(1)).min(stream.len());
            }
        }
    }
}

/// Decodes whole and byte-by-byte; both must agree.
fn check_with(ext: usize, trl: usize, s: &[u8]) -> Outcome {
    let whole = run(&mut ChunkedDecoder::new(ext, trl), s, || usize::MAX);
    let bytes = run(&mut ChunkedDecoder::new(ext, trl), s, || 1);
    assert_eq!(whole, bytes, "split-dependent result for {s:?}");
    whole
}

/// Test inputs packed into one literal, separated by `|` (no case contains one).
fn cases(s: &[u8]) -> Vec<&[u8]> {
    s.split(|&b| b == b'|').collect()
}

fn check(s: &[u8]) -> Outcome {
    check_with(64, 1024, s)
}

fn ok(s: &[u8]) -> Vec<u8> {
    let (body, done) = check(s).unwrap();
    assert_eq!(done, Some(s.len()), "{s:?}");
    body
}

#[test]
fn simple_bodies() {
    assert_eq!(ok(b"5\r\nhello\r\n0\r\n\r\n"), b"hello");
    assert_eq!(ok(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"), b"hello world");
    assert_eq!(ok(b"0\r\n\r\n"), b"");
    assert_eq!(ok(b"1\r\n\n\r\n2\r\n\r\n\r\n0\r\n\r\n"), b"\n\r\n");
}

#[test]
fn extensions_are_accepted_and_discarded() {
    assert_eq!(ok(b"5;a=b\r\nhello\r\n0\r\n\r\n"), b"hello");
    assert_eq!(ok(b"5;a=\"x;y\\\"z\";b\r\nhello\r\n0;last\r\n\r\n"), b"hello");
    assert_eq!(ok(b"5; \tk = v\r\nhello\r\n0\r\n\r\n"), b"hello");
    assert_eq!(check_with(4, 0, b"1;abc\r\nx\r\n0\r\n\r\n").unwrap().1, Some(15));
    assert_eq!(check_with(4, 0, b"1;abcd\r\nx"), Err(ExtensionTooLong));
    assert_eq!(check_with(0, 0, b"0;\r\n"), Err(ExtensionTooLong));
}

#[test]
fn leading_zeros_and_hex_case() {
    assert_eq!(ok(b"0000000000000000005\r\nhello\r\n0000\r\n\r\n"), b"hello");
    let body = [b'x'; 0x1f];
    for size in [&b"1f"[..], b"1F", b"001f"] {
        let mut s = size.to_vec();
        s.extend_from_slice(b"\r\n");
        s.extend_from_slice(&body);
        s.extend_from_slice(b"\r\n0\r\n\r\n");
        assert_eq!(ok(&s), body);
    }
    assert_eq!(check(&[b'0'; 65]), Err(BadSize));
    assert_eq!(check(&[b'0'; 64]), Ok((vec![], None)));
}

#[test]
fn empty_or_malformed_size_is_rejected() {
    let cases = cases(
        b"\r\n|;ext\r\n|+5\r\n|-5\r\n|0x5\r\n| 5\r\n|5 6\r\n|\
        5\n|5 \r\n|5_0\r\n|5\rX|\n|g\r\n|5\r\r\n",
    );
    for c in &cases {
        assert_eq!(check(c), Err(BadSize), "{c:?}");
    }
}

#[test]
fn bad_extensions_are_rejected() {
    let cases = cases(b"5;a\nXXXXX\r\n|5;a\x00b\r\n|5;a\rb|5;\x7f\r\n|0;a\r\r\n");
    for c in &cases {
        assert_eq!(check(c), Err(BadExtension), "{c:?}");
    }
}

#[test]
fn size_limits() {
    let mut d = ChunkedDecoder::new(0, 0);
    let s = b"ffffffffffffffff\r\nab";
    assert_eq!(run(&mut d, s, || 1), Ok((b"ab".to_vec(), None)));
    assert_eq!(d.payload_bytes(), 2);
    assert_eq!(check(b"0000FFFFFFFFFFFFFFFF\r\n"), Ok((vec![], None)));
    assert_eq!(check(b"10000000000000000\r\n"), Err(SizeOverflow));
    assert_eq!(check(b"fffffffffffffffff"), Err(SizeOverflow));
}

#[test]
fn missing_crlf_after_data() {
    for c in [&b"5\r\nhelloX\r\n0\r\n\r\n"[..], b"5\r\nhello\rX", b"5\r\nhello\n0\r\n\r\n", b"5\r\nhello0"] {
        assert_eq!(check(c), Err(MissingCrlf), "{c:?}");
    }
}

#[test]
fn trailers_are_validated_discarded_and_capped() {
    assert_eq!(ok(b"0\r\nX-A: 1\r\nx-b:\t2 3\r\nEmpty:\r\n\r\n"), b"");
    let bad = cases(
        b"0\r\nX-A 1\r\n\r\n|0\r\n: v\r\n\r\n|0\r\nX A: v\r\n\r\n|0\r\nX : v\r\n|\
        0\r\n folded\r\n|0\r\nX-A: v\nY|0\r\nX-A: v\r\r|0\r\nX-A: \x01\r\n|0\r\n\n|\
        0\r\n\rX|0\r\nGET /admin HTTP/1.1\r\n\r\n",
    );
    for c in &bad {
        assert_eq!(check(c), Err(BadTrailer), "{c:?}");
    }
    // "X: 1234\r\n" is 9 bytes; the closing empty line is not counted.
    assert_eq!(check_with(0, 9, b"0\r\nX: 1234\r\n\r\n").unwrap().1, Some(14));
    assert_eq!(check_with(0, 9, b"0\r\nX: 12345\r\n\r\n"), Err(TrailersTooLong));
    assert_eq!(check_with(0, 9, b"0\r\nX: 1\r\nY: 2\r\n\r\n"), Err(TrailersTooLong));
    assert_eq!(check_with(0, 0, b"0\r\nX"), Err(TrailersTooLong));
}

#[test]
fn pipelined_and_smuggled_bytes_are_left_unconsumed() {
    for body in [&b"0\r\n\r\n"[..], b"5\r\nhello\r\n0\r\n\r\n", b"1;a\r\nx\r\n0;z\r\nT: v\r\n\r\n"] {
        let mut s = body.to_vec();
        s.extend_from_slice(b"GET /admin HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(check(&s).unwrap().1, Some(body.len()));
    }
    let mut d = ChunkedDecoder::new(0, 0);
    let s = b"0\r\n\r\nGET /admin HTTP/1.1\r\n";
    assert_eq!(d.decode(s), Ok(ChunkStep::Done { consumed: 5 }));
    assert_eq!(&s[5..8], b"GET");
    assert!(d.is_done());
    assert_eq!(d.decode(&s[5..]), Ok(ChunkStep::Done { consumed: 0 }));
}

#[test]
fn errors_are_sticky() {
    let mut d = ChunkedDecoder::new(0, 0);
    assert_eq!(d.decode(b"x"), Err(BadSize));
    assert_eq!(d.decode(b"0\r\n\r\n"), Err(BadSize));
    assert!(!d.is_done());
}

#[test]
fn canonical_encoding() {
    let mut out = Vec::new();
    for n in [0, 5, 255, 0x1000] {
        write_chunk_header(n, &mut out);
    }
    assert_eq!(out, b"0\r\n5\r\nFF\r\n1000\r\n");
    out.clear();
    write_chunk_header(usize::MAX, &mut out);
    assert_eq!(out, format!("{:X}\r\n", usize::MAX).as_bytes());
}

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
    fn pick<'a>(&mut self, xs: &[&'a [u8]]) -> &'a [u8] {
        xs[self.below(xs.len())]
    }
}

const EXTS: &[&[u8]] = &[b";a=b", b";name", b";q=\"x;y \\\" z\"", b"; \tk = v", b";a=1;b=2", b";\x80obs"];
const TRAILERS: &[&[u8]] = &[b"X-T: v\r\n", b"Checksum:abc\r\n", b"x:\r\n", b"A-b: q \t r\r\n"];
const SUFFIXES: &[&[u8]] = &[b"", b"GET / HTTP/1.1\r\n\r\n", b"0\r\n\r\n", b"\r\n"];

fn size_line(rng: &mut Rng, len: usize, out: &mut Vec<u8>) {
    out.resize(out.len() + rng.below(4), b'0');
    let hex = if rng.below(2) == 0 { format!("{len:x}") } else { format!("{len:X}") };
    out.extend_from_slice(hex.as_bytes());
    if rng.below(3) == 0 {
        out.extend_from_slice(rng.pick(EXTS));
    }
    out.extend_from_slice(b"\r\n");
}

fn random_split(rng: &mut Rng) -> usize {
    match rng.below(3) {
        0 => 1,
        1 => 1 + rng.below(8),
        _ => 1 + rng.below(200),
    }
}

fn decode_random(stream: &[u8], framed_len: usize, seed: u64) -> Vec<u8> {
    let mut split = Rng(seed | 1);
    let mut d = ChunkedDecoder::new(64, 1024);
    let (body, done) = run(&mut d, stream, || random_split(&mut split)).unwrap();
    assert_eq!(done, Some(framed_len));
    assert!(d.is_done());
    assert_eq!(d.payload_bytes(), body.len() as u64);
    body
}

#[test]
fn random_round_trips() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for iter in 0..1000u64 {
        let payload: Vec<u8> = (0..rng.below(600)).map(|_| rng.below(256) as u8).collect();
        let mut enc = Vec::new();
        let mut rest = &payload[..];
        while !rest.is_empty() {
            let cap = if rng.below(4) == 0 { 1 } else { 1 + rng.below(96) };
            let (chunk, tail) = rest.split_at(cap.min(rest.len()));
            size_line(&mut rng, chunk.len(), &mut enc);
            enc.extend_from_slice(chunk);
            enc.extend_from_slice(b"\r\n");
            rest = tail;
        }
        size_line(&mut rng, 0, &mut enc);
        for _ in 0..rng.below(4) {
            enc.extend_from_slice(rng.pick(TRAILERS));
        }
        enc.extend_from_slice(b"\r\n");
        let framed = enc.len();
        enc.extend_from_slice(rng.pick(SUFFIXES));
        let body = decode_random(&enc, framed, iter.wrapping_mul(31) ^ 0xABCD);
        assert_eq!(body, payload, "iteration {iter}");
        // Corrupted framing must never panic, and the verdict must not depend on splits.
        let mut bad = enc.clone();
        let at = rng.below(bad.len());
        bad[at] = rng.pick(&[b"\r", b"\n", b" ", b";", b":", b"0", b"f", b"\0", b"g"])[0];
        let _ = check_with(64, 1024, &bad);

        let mut canon = Vec::new();
        let mut rest = &body[..];
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at((1 + rng.below(128)).min(rest.len()));
            write_chunk_header(chunk.len(), &mut canon);
            canon.extend_from_slice(chunk);
            canon.extend_from_slice(b"\r\n");
            rest = tail;
        }
        canon.extend_from_slice(LAST_CHUNK);
        assert_eq!(decode_random(&canon, canon.len(), iter ^ 0x5555), payload);
    }
}
