use super::*;

const SIG: [u8; 12] = V2_SIGNATURE;

fn v2(cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
    let mut h = SIG.to_vec();
    h.extend_from_slice(&[0x20 | cmd, fam]);
    h.extend_from_slice(&(body.len() as u16).to_be_bytes());
    h.extend_from_slice(body);
    h
}

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

#[test]
fn v1_examples_from_the_spec() {
    let h = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET /";
    let (got, n) = parse(h).expect("valid");
    assert_eq!(got, ProxyHeader::Tcp { source: sa("192.168.0.1:56324"), destination: sa("192.168.0.11:443") });
    assert_eq!(&h[n..], b"GET /", "the connection's own bytes follow");
    let (got, _) = parse(b"PROXY TCP6 2001:db8::1 ::1 65535 80\r\n").expect("valid");
    assert_eq!(got, ProxyHeader::Tcp { source: sa("[2001:db8::1]:65535"), destination: sa("[::1]:80") });
    assert_eq!(parse(b"PROXY UNKNOWN\r\n"), Ok((ProxyHeader::Unknown, 15)));
    assert_eq!(
        parse(b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n").map(|r| r.0),
        Ok(ProxyHeader::Unknown)
    );
}

#[test]
fn v1_malformed_headers_are_invalid() {
    for bad in [
        &b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"[..],
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
        b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
        b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
        b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 +80 2\r\n",
        b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n",
        b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY\r\n",
        b"PROXX TCP4",
        b"GET / HTTP/1.1\r\n",
        b"\x16\x03\x01\x02\x00",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\xff\r\n",
    ] {
        assert!(matches!(parse(bad), Err(ProxyHeaderError::Invalid(_))), "{:?}", String::from_utf8_lossy(bad));
    }
}

#[test]
fn v1_without_its_end_is_incomplete_then_too_large() {
    let full = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n";
    for k in 0..full.len() {
        assert_eq!(parse(&full[..k]), Err(ProxyHeaderError::Incomplete), "prefix {k}");
    }
    let mut long = b"PROXY UNKNOWN ".to_vec();
    long.resize(V1_MAX_BYTES, b'x');
    assert_eq!(parse(&long), Err(ProxyHeaderError::TooLarge));
    long.truncate(V1_MAX_BYTES - 2);
    long.extend_from_slice(b"\r\n");
    assert_eq!(parse(&long).map(|r| r.1), Ok(V1_MAX_BYTES), "exactly 107 bytes is allowed");
}

#[test]
fn v2_addresses_local_and_other_families() {
    let mut body = vec![10, 0, 0, 1, 10, 0, 0, 2];
    body.extend_from_slice(&1234u16.to_be_bytes());
    body.extend_from_slice(&80u16.to_be_bytes());
    let h = v2(1, 0x11, &body);
    assert_eq!(parse(&h), Ok((ProxyHeader::Tcp { source: sa("10.0.0.1:1234"), destination: sa("10.0.0.2:80") }, 28)));
    // TLVs after the addresses are skipped.
    let mut with_tlv = body.clone();
    with_tlv.extend_from_slice(&[0x04, 0, 2, b'h', b'i']);
    let h = v2(1, 0x11, &with_tlv);
    assert_eq!(parse(&h).map(|r| r.1), Ok(h.len()));
    assert_eq!(parse(&v2(0, 0x00, &[])), Ok((ProxyHeader::Local, 16)), "LOCAL");
    assert_eq!(parse(&v2(0, 0x11, &body)).map(|r| r.0), Ok(ProxyHeader::Local), "LOCAL ignores addresses");
    assert_eq!(parse(&v2(1, 0x31, &[0; 216])).map(|r| r.0), Ok(ProxyHeader::Unknown), "a Unix socket has no client IP");
    assert_eq!(parse(&v2(1, 0x12, &body)).map(|r| r.0), Ok(ProxyHeader::Unknown), "UDP");
}

#[test]
fn v2_malformed_and_oversize() {
    assert!(matches!(parse(&v2(1, 0x11, &[0; 11])), Err(ProxyHeaderError::Invalid(_))), "short IPv4 block");
    assert!(matches!(parse(&v2(1, 0x21, &[0; 35])), Err(ProxyHeaderError::Invalid(_))), "short IPv6 block");
    assert!(matches!(parse(&v2(2, 0x11, &[0; 12])), Err(ProxyHeaderError::Invalid(_))), "unknown command");
    let mut v1_version = v2(1, 0x11, &[0; 12]);
    v1_version[12] = 0x11;
    assert!(matches!(parse(&v1_version), Err(ProxyHeaderError::Invalid(_))), "version 1 in a v2 header");
    let mut huge = SIG.to_vec();
    huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
    assert_eq!(parse(&huge), Err(ProxyHeaderError::TooLarge), "refused before the body arrives");
    let mut bad_sig = v2(1, 0x11, &[0; 12]);
    bad_sig[5] = b'x';
    assert!(matches!(parse(&bad_sig), Err(ProxyHeaderError::Invalid(_))));
    let good = v2(1, 0x21, &[7; 36]);
    for k in 0..good.len() {
        assert_eq!(parse(&good[..k]), Err(ProxyHeaderError::Incomplete), "prefix {k}");
    }
}

/// Written headers read back the same, for generated address pairs of
/// both families and mixed ones.
#[test]
fn what_we_write_reads_back() {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..2000 {
        let mut addr = |v6: bool| {
            let r = next();
            let ip = if v6 {
                IpAddr::V6(Ipv6Addr::from((u128::from(r) << 64) | u128::from(next())))
            } else {
                IpAddr::V4(Ipv4Addr::from(r as u32))
            };
            SocketAddr::new(ip, (r >> 40) as u16)
        };
        let (s, d) = (addr(i % 3 == 1), addr(i % 3 == 2 || i % 5 == 0));
        let (es, ed) = same_family(s, d);
        for write in [write_v1 as fn(SocketAddr, SocketAddr, &mut Vec<u8>), write_v2] {
            let mut out = Vec::new();
            write(s, d, &mut out);
            assert!(out.len() <= V1_MAX_BYTES.max(V2_MAX_BYTES));
            assert_eq!(parse(&out), Ok((ProxyHeader::Tcp { source: es, destination: ed }, out.len())), "{s} -> {d}");
        }
    }
}

/// Random bytes, and random mutations of valid headers, never panic.
#[test]
fn arbitrary_bytes_never_panic() {
    let mut x: u64 = 12345;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut seeds = vec![b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n".to_vec(), v2(1, 0x21, &[3; 40])];
    let mut mixed = Vec::new();
    write_v2(sa("1.2.3.4:5"), sa("[::1]:6"), &mut mixed);
    seeds.push(mixed);
    for _ in 0..20_000 {
        let mut input = seeds[(next() % 3) as usize].clone();
        for _ in 0..(next() % 4) {
            let at = (next() as usize) % input.len();
            input[at] = next() as u8;
        }
        input.truncate((next() as usize) % (input.len() + 1));
        let _ = parse(&input);
        let random: Vec<u8> = (0..(next() % 64)).map(|_| next() as u8).collect();
        let _ = parse(&random);
    }
}
