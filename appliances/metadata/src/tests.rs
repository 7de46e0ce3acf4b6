//! The engine on its own: every path of both trees, listings, 404s, HEAD, keep-alive and
//! pipelining, bad and oversized requests, the caller check, passwords, deadlines and live
//! changes. Requests go in as bytes; answers are parsed back out of the bytes.

use crate::engine::{
    Conn, Engine, Event, IDLE_TIMEOUT_NS, INPUT_LIMIT, Peer, REQUEST_TIMEOUT_NS, SEND_TIMEOUT_NS,
    ServiceError, SourceMac,
};
use crate::http::{self, HttpError, MAX_BODY, MAX_HEAD, Method, Status};
use crate::tree;
use alloc::boxed::Box;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use core::net::Ipv4Addr;
use nanovnf_schema::Ipv4Cidr;
use nanovnf_schema::control::Op;
use nanovnf_schema::dhcp::Route;
use nanovnf_schema::metadata::{
    InstancePassword, MAX_INSTANCES, MAX_PASSWORDS_PER_PAGE, MetadataInstance, MetadataRole,
    MetadataSubnet, PasswordPage,
};

const SEC: u64 = 1_000_000_000;

fn mac(n: u8) -> [u8; 6] {
    [0xfa, 0x16, 0x3e, 0, 0, n]
}

fn ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 1, 10 + n)
}

fn instance(n: u8) -> MetadataInstance {
    MetadataInstance {
        mac: mac(n),
        ip: ip(n),
        port_id: format!("6f1c2a4e-0000-4000-8000-00000000000{n}"),
        uuid: format!("d2c4a1b0-1111-4222-8333-44444444444{n}"),
        name: format!("server-{n}"),
        hostname: format!("vm{n}"),
        domain: "nanovnf.test".into(),
        availability_zone: "nova".into(),
        project_id: "0123456789abcdef".into(),
        launch_index: u32::from(n),
        public_keys: vec![("mykey".into(), "ssh-ed25519 AAAAC3Nza mykey\n".into())],
        meta: vec![("role".into(), "web".into())],
        user_data: Some(b"#cloud-config\nhostname: vm\n".to_vec()),
        floating_ip: Some(Ipv4Addr::new(203, 0, 113, 10 + n)),
        mtu: 1450,
    }
}

fn subnet() -> MetadataSubnet {
    MetadataSubnet {
        id: "subnet-1".into(),
        cidr: Ipv4Cidr::new(Ipv4Addr::new(192, 168, 1, 0), 24),
        gateway: Some(Ipv4Addr::new(192, 168, 1, 1)),
        dns_servers: vec![Ipv4Addr::new(192, 168, 1, 2)],
        host_routes: vec![Route {
            destination: Ipv4Cidr::new(Ipv4Addr::new(10, 10, 0, 0), 16),
            nexthop: Ipv4Addr::new(192, 168, 1, 254),
        }],
    }
}

fn role() -> MetadataRole {
    let mut bare = instance(2);
    bare.public_keys.clear();
    bare.meta.clear();
    bare.user_data = None;
    bare.floating_ip = None;
    MetadataRole {
        network_id: "net-1".into(),
        subnets: vec![subnet()],
        instances: vec![instance(1), bare],
        passwords: Vec::new(),
    }
}

fn engine() -> Engine {
    Engine::new(role(), 42).expect("valid role")
}

fn peer(n: u8) -> Peer {
    Peer {
        ip: ip(n),
        port: 40000,
        mac: SourceMac::Seen(mac(n)),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> &str {
        core::str::from_utf8(&self.body).expect("utf-8 body")
    }
}

/// Everything queued on `conn`, as if sent.
fn drain(conn: &mut Conn) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(b) = conn.output() {
        let b = b.to_vec();
        conn.advance(b.len(), 0);
        out.extend(b);
    }
    out
}

/// Splits `bytes` into responses; `heads` says which answer a HEAD (no body follows).
fn parse_responses(mut bytes: &[u8], heads: &[bool]) -> Vec<Response> {
    let mut out = Vec::new();
    let mut i = 0;
    while !bytes.is_empty() {
        let end = bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a complete head");
        let head = core::str::from_utf8(&bytes[..end]).expect("ascii head");
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
        let status: u16 = status_line[9..12].parse().unwrap();
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (n, v) = l.split_once(": ").expect("header line");
                (n.to_string(), v.to_string())
            })
            .collect();
        let len: usize = headers
            .iter()
            .find(|(n, _)| n == "Content-Length")
            .expect("content-length")
            .1
            .parse()
            .unwrap();
        let body_len = if heads.get(i).copied().unwrap_or(false) {
            0
        } else {
            len
        };
        let body = bytes[end + 4..end + 4 + body_len].to_vec();
        bytes = &bytes[end + 4 + body_len..];
        out.push(Response {
            status,
            headers,
            body,
        });
        i += 1;
    }
    out
}

fn exchange(e: &mut Engine, p: Peer, raw: &[u8]) -> (Vec<Response>, Conn) {
    let mut conn = e.connect(p, 0);
    let taken = e.feed(&mut conn, raw, 0);
    assert_eq!(taken, raw.len().min(INPUT_LIMIT));
    let bytes = drain(&mut conn);
    e.drive(&mut conn, 0);
    let mut all = bytes;
    all.extend(drain(&mut conn));
    let heads: Vec<bool> = raw
        .split(|&b| b == b'\n')
        .filter(|l| l.starts_with(b"HEAD ") || l.starts_with(b"GET ") || l.starts_with(b"POST "))
        .map(|l| l.starts_with(b"HEAD "))
        .collect();
    (parse_responses(&all, &heads), conn)
}

fn get_as(e: &mut Engine, p: Peer, path: &str) -> Response {
    let raw = format!("GET {path} HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n");
    let (mut r, _) = exchange(e, p, raw.as_bytes());
    assert_eq!(r.len(), 1, "one answer for {path}");
    r.remove(0)
}

fn get(e: &mut Engine, path: &str) -> Response {
    get_as(e, peer(1), path)
}

fn ok_text(e: &mut Engine, path: &str) -> String {
    let r = get(e, path);
    assert_eq!(r.status, 200, "{path}: {r:?}");
    String::from(r.text())
}

// ---------------------------------------------------------------------------------------
// HTTP framing

#[test]
fn parses_a_request_head() {
    let raw = b"GET /latest/meta-data/ HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\nrest";
    let h = http::parse_head(raw).unwrap().unwrap();
    assert_eq!(h.method, Method::Get);
    assert_eq!(h.target, b"/latest/meta-data/");
    assert_eq!(h.minor, 1);
    assert!(h.keep_alive);
    assert_eq!(h.head_len, raw.len() - 4);
    // Incomplete heads wait for more bytes.
    for cut in 0..raw.len() - 4 {
        assert_eq!(http::parse_head(&raw[..cut]), Ok(None), "cut at {cut}");
    }
}

#[test]
fn connection_persistence_by_version_and_header() {
    let ka = |raw: &[u8]| http::parse_head(raw).unwrap().unwrap().keep_alive;
    assert!(ka(b"GET / HTTP/1.1\r\n\r\n"));
    assert!(!ka(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"));
    assert!(!ka(
        b"GET / HTTP/1.1\r\nconnection: Keep-Alive, CLOSE\r\n\r\n"
    ));
    assert!(!ka(b"GET / HTTP/1.0\r\n\r\n"));
    assert!(ka(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
    // Bare LF line ends and one leading empty line are tolerated.
    assert!(ka(b"\r\nGET / HTTP/1.1\nHost: x\n\n"));
}

#[test]
fn refuses_malformed_heads() {
    let bad: &[&[u8]] = &[
        b"GET\r\n\r\n",
        b"GET / \r\n\r\n",
        b"GET  / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/2.0\r\n\r\n",
        b"GET / http/1.1\r\n\r\n",
        b"G(T / HTTP/1.1\r\n\r\n",
        b"GET /a b HTTP/1.1\r\n\r\n",
        b"GET /\x01 HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nNoColon\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
        b"GET / HTTP/1.1\r\n: empty\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
        b"\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\n\r\n",
    ];
    for raw in bad {
        assert_eq!(
            http::parse_head(raw),
            Err(HttpError::Malformed),
            "{:?}",
            String::from_utf8_lossy(raw)
        );
    }
    // Equal repeated lengths are fine.
    let h = http::parse_head(b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n");
    assert_eq!(h.unwrap().unwrap().content_length, 3);
}

#[test]
fn refuses_oversized_heads_and_bodies() {
    let mut raw = b"GET / HTTP/1.1\r\nX: ".to_vec();
    raw.resize(MAX_HEAD, b'a');
    assert_eq!(http::parse_head(&raw), Err(HttpError::HeadTooLarge));
    assert_eq!(http::parse_head(&raw[..MAX_HEAD - 1]), Ok(None));
    let big = format!(
        "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
        MAX_BODY + 1
    );
    assert_eq!(
        http::parse_head(big.as_bytes()),
        Err(HttpError::BodyTooLarge)
    );
    let huge = b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n";
    assert_eq!(http::parse_head(huge), Err(HttpError::Malformed));
}

#[test]
fn target_paths_normalise_like_posixpath() {
    let toks = |t: &[u8]| -> Vec<Vec<u8>> {
        http::path_tokens(&http::target_path(t))
            .into_iter()
            .map(<[u8]>::to_vec)
            .collect()
    };
    let v = |s: &[&str]| -> Vec<Vec<u8>> { s.iter().map(|x| x.as_bytes().to_vec()).collect() };
    assert_eq!(toks(b"/"), v(&[]));
    assert_eq!(toks(b"/latest/meta-data/"), v(&["latest", "meta-data"]));
    assert_eq!(toks(b"//latest/./meta-data//"), v(&["latest", "meta-data"]));
    assert_eq!(toks(b"/a/../latest/x/.."), v(&["latest"]));
    assert_eq!(toks(b"/../../.."), v(&[]));
    assert_eq!(toks(b"/latest?x=1#f"), v(&["latest"]));
    assert_eq!(toks(b"/open%73tack"), v(&["openstack"]));
    assert_eq!(toks(b"/bad%zzescape%4"), v(&["bad%zzescape%4"]));
    assert_eq!(
        toks(b"http://169.254.169.254/openstack/latest"),
        v(&["openstack", "latest"])
    );
    assert_eq!(toks(b"HTTP://169.254.169.254"), v(&[]));
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Decodes standard base64 with padding (the tests' reference).
fn unbase64(text: &str) -> Option<Vec<u8>> {
    let mut bits = 0u32;
    let mut held = 0;
    let mut out = Vec::new();
    for c in text.trim_end_matches('=').bytes() {
        bits = bits << 6 | BASE64.iter().position(|&d| d == c)? as u32;
        held += 6;
        if held >= 8 {
            held -= 8;
            out.push((bits >> held) as u8);
        }
    }
    // Left-over bits of the last digit must be zero, as an encoder writes them.
    (bits & ((1 << held) - 1) == 0).then_some(out)
}

#[test]
fn base64_digits_map_every_value_in_every_byte() {
    for pos in 0..8 {
        for v in 0..64u64 {
            // The other bytes hold values that sit on the comparison edges.
            let others = 0x3f_34_1a_00_33_19_3e_01u64 & !(0xff << (8 * pos));
            let digits = tree::base64_digits(others | v << (8 * pos)).to_le_bytes();
            assert_eq!(digits[pos], BASE64[v as usize], "{v} at byte {pos}");
            for (i, d) in digits.iter().enumerate().filter(|&(i, _)| i != pos) {
                assert_eq!(*d, BASE64[(others >> (8 * i) & 0x3f) as usize]);
            }
        }
    }
}

#[test]
fn random_seeds_decode_to_512_bytes_and_look_uniform() {
    let mut rng = tree::Rng::new(42);
    let mut counts = [0u32; 256];
    for _ in 0..200 {
        let mut seed = String::new();
        tree::random_base64_into(&mut seed, &mut rng, 512);
        assert_eq!(seed.len(), 684);
        assert!(seed.ends_with('=') && !seed.ends_with("=="), "{seed}");
        let bytes = unbase64(&seed).expect("valid base64, zero padding bits");
        assert_eq!(bytes.len(), 512);
        for b in bytes {
            counts[usize::from(b)] += 1;
        }
    }
    // 102,400 bytes over 256 values: 400 each; a loose chi-squared bound (255 degrees of
    // freedom: mean 255, far tail at 400) catches a stuck or skewed bit.
    let chi2: f64 = counts
        .iter()
        .map(|&c| (f64::from(c) - 400.0).powi(2) / 400.0)
        .sum();
    assert!(chi2 < 400.0, "chi-squared {chi2}");
}

#[test]
fn the_reference_decoder_agrees_with_rfc_4648() {
    for (want, text) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ] {
        assert_eq!(unbase64(text).unwrap(), want.as_bytes());
    }
    assert_eq!(unbase64("Zh=="), None, "non-zero padding bits");
}

#[test]
fn the_word_at_a_time_escape_check_agrees_with_the_bytewise_one() {
    let bytewise = |s: &[u8]| {
        s.iter()
            .any(|&b| !(0x20..0x7f).contains(&b) || b == b'"' || b == b'\\')
    };
    // Every byte value at every position of a 17-byte string (two words and a tail).
    for pos in 0..17 {
        for b in 0..=255u8 {
            let mut s = [b'a'; 17];
            s[pos] = b;
            assert_eq!(
                crate::json::needs_escape(&s),
                bytewise(&s),
                "{b:#x} at {pos}"
            );
        }
    }
    // Neighbours that borrow or carry into each other.
    for pair in [
        [0x20, 0x1f],
        [0x7f, 0x00],
        [0x00, 0x23],
        [0x21, 0x22],
        [0x5b, 0x5c],
    ] {
        let mut s = [b'z'; 8];
        s[3..5].copy_from_slice(&pair);
        assert_eq!(crate::json::needs_escape(&s), bytewise(&s), "{pair:x?}");
    }
}

#[test]
fn json_escapes_like_python() {
    let mut s = String::new();
    crate::json::escape_into(&mut s, "a\"b\\c\n\t\u{1}é😀/");
    assert_eq!(s, r#""a\"b\\c\n\t\u0001\u00e9\ud83d\ude00/""#);
}

// ---------------------------------------------------------------------------------------
// The EC2 tree

#[test]
fn ec2_version_list_at_the_root() {
    let mut e = engine();
    let want = "1.0\n2007-01-19\n2007-03-01\n2007-08-29\n2007-10-10\n2007-12-15\n2008-02-01\n2008-09-01\n2009-04-04\nlatest";
    for path in ["/", "", "/ec2", "/ec2/", "//"] {
        let r = get(&mut e, if path.is_empty() { "/" } else { path });
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), want, "{path}");
        assert_eq!(r.header("Content-Type"), Some("text/plain; charset=UTF-8"));
    }
}

#[test]
fn ec2_meta_data_listing_is_sorted_with_sub_trees_marked() {
    let mut e = engine();
    let want = "ami-id\nami-launch-index\nami-manifest-path\nblock-device-mapping/\nhostname\n\
                instance-action\ninstance-id\ninstance-type\nlocal-hostname\nlocal-ipv4\n\
                placement/\npublic-hostname\npublic-ipv4\npublic-keys/\nreservation-id\n\
                security-groups";
    for v in ["latest", "2009-04-04"] {
        assert_eq!(ok_text(&mut e, &format!("/{v}/meta-data/")), want);
        assert_eq!(ok_text(&mut e, &format!("/{v}/meta-data")), want);
        assert_eq!(ok_text(&mut e, &format!("/ec2/{v}/meta-data/")), want);
    }
    assert_eq!(ok_text(&mut e, "/latest"), "meta-data/\nuser-data");
    assert_eq!(ok_text(&mut e, "/latest/"), "meta-data/\nuser-data");
    // Without a key or user data, neither is listed.
    let r = get_as(&mut e, peer(2), "/latest/meta-data/");
    assert!(!r.text().contains("public-keys"), "{}", r.text());
    assert_eq!(get_as(&mut e, peer(2), "/latest/").text(), "meta-data/");
}

#[test]
fn ec2_older_versions_have_fewer_items() {
    let mut e = engine();
    assert_eq!(
        ok_text(&mut e, "/1.0/meta-data/"),
        "ami-id\nami-launch-index\nami-manifest-path\nhostname\ninstance-id\nlocal-ipv4\n\
         public-keys/\nreservation-id\nsecurity-groups"
    );
    let v2007 = ok_text(&mut e, "/2007-12-15/meta-data/");
    assert!(v2007.contains("block-device-mapping/") && v2007.contains("instance-type"));
    assert!(!v2007.contains("placement/") && !v2007.contains("instance-action"));
    assert!(ok_text(&mut e, "/2008-02-01/meta-data/").contains("placement/"));
}

#[test]
fn ec2_leaves() {
    let mut e = engine();
    let id = ok_text(&mut e, "/latest/meta-data/instance-id");
    assert_eq!(id.len(), 10, "{id}");
    assert!(id.starts_with("i-") && id[2..].chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(ok_text(&mut e, "/2009-04-04/meta-data/instance-id"), id);
    let cases = [
        ("ami-launch-index", "1"),
        ("hostname", "vm1"),
        ("local-hostname", "vm1.nanovnf.test"),
        ("public-hostname", "vm1.nanovnf.test"),
        ("local-ipv4", "192.168.1.11"),
        ("public-ipv4", "203.0.113.11"),
        ("placement/availability-zone", "nova"),
        ("placement", "availability-zone"),
        ("block-device-mapping/", "ami\nroot"),
        ("block-device-mapping/root", "/dev/vda"),
        ("security-groups", "default"),
        ("instance-action", "none"),
        ("ami-manifest-path", "FIXME"),
        ("public-keys", "0=mykey"),
        ("public-keys/", "0=mykey"),
        ("public-keys/0", "openssh-key"),
        ("public-keys/0/", "openssh-key"),
        ("public-keys/0/openssh-key", "ssh-ed25519 AAAAC3Nza mykey\n"),
    ];
    for (path, want) in cases {
        assert_eq!(
            ok_text(&mut e, &format!("/latest/meta-data/{path}")),
            want,
            "{path}"
        );
    }
    let r = get(&mut e, "/latest/meta-data/reservation-id");
    assert!(r.text().starts_with("r-") && r.text().len() == 10);
    // Without a floating IP, public-ipv4 is empty.
    let r = get_as(&mut e, peer(2), "/latest/meta-data/public-ipv4");
    assert_eq!((r.status, r.text()), (200, ""));
}

#[test]
fn ec2_user_data_raw_or_404() {
    let mut e = engine();
    for v in ["latest", "1.0", "2009-04-04"] {
        let r = get(&mut e, &format!("/{v}/user-data"));
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"#cloud-config\nhostname: vm\n");
        assert_eq!(r.header("Content-Type"), Some("text/plain; charset=UTF-8"));
    }
    assert_eq!(get_as(&mut e, peer(2), "/latest/user-data").status, 404);
}

#[test]
fn ec2_unknown_versions_and_paths_are_404() {
    let mut e = engine();
    // The versions cloud-init probes first must not be found.
    for path in [
        "/2021-03-23/meta-data/instance-id",
        "/2018-09-24/meta-data/instance-id",
        "/2016-09-02/meta-data/instance-id",
        "/2021-03-23",
        "/latest/meta-data/nope",
        "/latest/meta-data/hostname/extra",
        "/latest/meta-data/public-keys/1",
        "/latest/meta-data/public-keys/0/openssh-key/x",
        "/latest/meta-data/security-groups/default",
        "/latest/dynamic/instance-identity/document",
        "/ec2/nope",
        "/favicon.ico",
    ] {
        let r = get(&mut e, path);
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.header("Content-Type"), Some("text/plain; charset=UTF-8"));
        assert!(r.text().starts_with("404 Not Found"));
    }
    assert!(e.events(Event::NoSuchPath) >= 12);
}

// ---------------------------------------------------------------------------------------
// The OpenStack tree

#[test]
fn openstack_version_list_and_listings() {
    let mut e = engine();
    let versions = "2012-08-10\n2013-04-04\n2013-10-17\n2015-10-15\n2016-06-30\n2016-10-06\n\
                    2017-02-22\n2018-08-27\nlatest";
    assert_eq!(ok_text(&mut e, "/openstack"), versions);
    assert_eq!(ok_text(&mut e, "/openstack/"), versions);
    let all = "meta_data.json\nuser_data\npassword\nvendor_data.json\nnetwork_data.json\n\
               vendor_data2.json";
    assert_eq!(ok_text(&mut e, "/openstack/latest"), all);
    assert_eq!(ok_text(&mut e, "/openstack/2018-08-27/"), all);
    assert_eq!(
        ok_text(&mut e, "/openstack/2012-08-10"),
        "meta_data.json\nuser_data"
    );
    assert_eq!(
        ok_text(&mut e, "/openstack/2013-10-17"),
        "meta_data.json\nuser_data\npassword\nvendor_data.json"
    );
    assert_eq!(
        ok_text(&mut e, "/openstack/2015-10-15"),
        "meta_data.json\nuser_data\npassword\nvendor_data.json\nnetwork_data.json"
    );
    // No user data: not listed, and 404.
    let r = get_as(&mut e, peer(2), "/openstack/latest");
    assert!(!r.text().contains("user_data"));
    assert_eq!(
        get_as(&mut e, peer(2), "/openstack/latest/user_data").status,
        404
    );
}

/// A tiny JSON reader, enough to check the documents structurally.
mod j {
    use alloc::string::String;
    use alloc::vec::Vec;

    #[derive(Debug, Clone, PartialEq)]
    pub enum V {
        Null,
        Num(u64),
        Str(String),
        Arr(Vec<V>),
        Obj(Vec<(String, V)>),
    }

    impl V {
        pub fn get(&self, k: &str) -> Option<&V> {
            match self {
                V::Obj(m) => m.iter().find(|(n, _)| n == k).map(|(_, v)| v),
                _ => None,
            }
        }
        pub fn at(&self, i: usize) -> &V {
            match self {
                V::Arr(a) => &a[i],
                _ => panic!("not an array"),
            }
        }
        pub fn s(&self) -> &str {
            match self {
                V::Str(s) => s,
                _ => panic!("not a string: {self:?}"),
            }
        }
        pub fn keys(&self) -> Vec<&str> {
            match self {
                V::Obj(m) => m.iter().map(|(k, _)| k.as_str()).collect(),
                _ => Vec::new(),
            }
        }
        pub fn len(&self) -> usize {
            match self {
                V::Arr(a) => a.len(),
                _ => 0,
            }
        }
    }

    pub fn parse(s: &str) -> V {
        let b = s.as_bytes();
        let mut i = 0;
        let v = value(b, &mut i);
        assert_eq!(i, b.len(), "trailing bytes in {s}");
        v
    }

    fn ws(b: &[u8], i: &mut usize) {
        while *i < b.len() && b[*i] == b' ' {
            *i += 1;
        }
    }

    fn value(b: &[u8], i: &mut usize) -> V {
        ws(b, i);
        match b[*i] {
            b'{' => {
                *i += 1;
                let mut m = Vec::new();
                ws(b, i);
                if b[*i] == b'}' {
                    *i += 1;
                    return V::Obj(m);
                }
                loop {
                    ws(b, i);
                    let V::Str(k) = value(b, i) else { panic!() };
                    assert_eq!(&b[*i..*i + 2], b": ");
                    *i += 2;
                    m.push((k, value(b, i)));
                    match b[*i] {
                        b',' => {
                            assert_eq!(b[*i + 1], b' ');
                            *i += 2
                        }
                        b'}' => {
                            *i += 1;
                            return V::Obj(m);
                        }
                        c => panic!("unexpected {}", c as char),
                    }
                }
            }
            b'[' => {
                *i += 1;
                let mut a = Vec::new();
                if b[*i] == b']' {
                    *i += 1;
                    return V::Arr(a);
                }
                loop {
                    a.push(value(b, i));
                    match b[*i] {
                        b',' => *i += 2,
                        b']' => {
                            *i += 1;
                            return V::Arr(a);
                        }
                        c => panic!("unexpected {}", c as char),
                    }
                }
            }
            b'"' => {
                *i += 1;
                let start = *i;
                while b[*i] != b'"' {
                    if b[*i] == b'\\' {
                        *i += 1;
                    }
                    *i += 1;
                }
                let s = String::from_utf8(b[start..*i].to_vec()).unwrap();
                *i += 1;
                V::Str(s.replace("\\n", "\n"))
            }
            b'n' => {
                *i += 4;
                V::Null
            }
            _ => {
                let start = *i;
                while b[*i].is_ascii_digit() {
                    *i += 1;
                }
                V::Num(
                    core::str::from_utf8(&b[start..*i])
                        .unwrap()
                        .parse()
                        .unwrap(),
                )
            }
        }
    }
}

#[test]
fn meta_data_json_has_novas_members_by_version() {
    let mut e = engine();
    let r = get(&mut e, "/openstack/latest/meta_data.json");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    let md = j::parse(r.text());
    assert_eq!(
        md.keys(),
        [
            "uuid",
            "meta",
            "public_keys",
            "keys",
            "hostname",
            "name",
            "launch_index",
            "availability_zone",
            "random_seed",
            "project_id",
            "devices"
        ]
    );
    assert_eq!(md.get("uuid").unwrap().s(), instance(1).uuid);
    assert_eq!(md.get("hostname").unwrap().s(), "vm1");
    assert_eq!(md.get("name").unwrap().s(), "server-1");
    assert_eq!(md.get("launch_index"), Some(&j::V::Num(1)));
    assert_eq!(md.get("availability_zone").unwrap().s(), "nova");
    assert_eq!(md.get("project_id").unwrap().s(), "0123456789abcdef");
    assert_eq!(md.get("meta").unwrap().get("role").unwrap().s(), "web");
    assert_eq!(
        md.get("public_keys").unwrap().get("mykey").unwrap().s(),
        "ssh-ed25519 AAAAC3Nza mykey\n"
    );
    let key = md.get("keys").unwrap().at(0);
    assert_eq!(key.keys(), ["name", "type", "data"]);
    assert_eq!(key.get("type").unwrap().s(), "ssh");
    let seed = md.get("random_seed").unwrap().s();
    assert_eq!(seed.len(), 684, "base64 of 512 bytes");
    assert_eq!(md.get("devices"), Some(&j::V::Arr(Vec::new())));
    // Each answer has a fresh seed.
    let again = j::parse(get(&mut e, "/openstack/latest/meta_data.json").text());
    assert_ne!(again.get("random_seed"), md.get("random_seed"));

    let folsom = j::parse(get(&mut e, "/openstack/2012-08-10/meta_data.json").text());
    assert!(folsom.get("random_seed").is_none() && folsom.get("project_id").is_none());
    let grizzly = j::parse(get(&mut e, "/openstack/2013-04-04/meta_data.json").text());
    assert!(grizzly.get("random_seed").is_some() && grizzly.get("project_id").is_none());
    let liberty = j::parse(get(&mut e, "/openstack/2015-10-15/meta_data.json").text());
    assert!(liberty.get("project_id").is_some() && liberty.get("devices").is_none());

    // No keys, no meta: the members are absent, as in Nova.
    let bare = j::parse(get_as(&mut e, peer(2), "/openstack/latest/meta_data.json").text());
    assert!(bare.get("meta").is_none() && bare.get("public_keys").is_none());
    assert!(bare.get("keys").is_none());
}

#[test]
fn network_data_json_from_port_subnet_routes_and_dns() {
    let mut e = engine();
    for v in ["latest", "2015-10-15", "2018-08-27"] {
        let r = get(&mut e, &format!("/openstack/{v}/network_data.json"));
        assert_eq!(r.status, 200);
        // Nova labels it text/plain (its handler sets no JSON type).
        assert_eq!(r.header("Content-Type"), Some("text/plain; charset=UTF-8"));
        let nd = j::parse(r.text());
        assert_eq!(nd.keys(), ["links", "networks", "services"]);
        let link = nd.get("links").unwrap().at(0);
        assert_eq!(link.get("id").unwrap().s(), "tap6f1c2a4e-00");
        assert_eq!(link.get("vif_id").unwrap().s(), instance(1).port_id);
        assert_eq!(link.get("type").unwrap().s(), "bridge");
        assert_eq!(link.get("mtu"), Some(&j::V::Num(1450)));
        assert_eq!(
            link.get("ethernet_mac_address").unwrap().s(),
            "fa:16:3e:00:00:01"
        );
        let net = nd.get("networks").unwrap().at(0);
        assert_eq!(
            net.keys(),
            [
                "id",
                "type",
                "link",
                "ip_address",
                "netmask",
                "routes",
                "network_id",
                "services"
            ]
        );
        assert_eq!(net.get("type").unwrap().s(), "ipv4");
        assert_eq!(net.get("link").unwrap().s(), "tap6f1c2a4e-00");
        assert_eq!(net.get("ip_address").unwrap().s(), "192.168.1.11");
        assert_eq!(net.get("netmask").unwrap().s(), "255.255.255.0");
        assert_eq!(net.get("network_id").unwrap().s(), "net-1");
        let routes = net.get("routes").unwrap();
        assert_eq!(routes.len(), 2);
        assert_eq!(routes.at(0).get("network").unwrap().s(), "0.0.0.0");
        assert_eq!(routes.at(0).get("gateway").unwrap().s(), "192.168.1.1");
        assert_eq!(routes.at(1).get("network").unwrap().s(), "10.10.0.0");
        assert_eq!(routes.at(1).get("netmask").unwrap().s(), "255.255.0.0");
        assert_eq!(routes.at(1).get("gateway").unwrap().s(), "192.168.1.254");
        let dns = nd.get("services").unwrap().at(0);
        assert_eq!(dns.get("type").unwrap().s(), "dns");
        assert_eq!(dns.get("address").unwrap().s(), "192.168.1.2");
        assert_eq!(net.get("services").unwrap().at(0), dns);
    }
}

#[test]
fn network_data_json_of_an_instance_outside_every_subnet_is_empty() {
    let mut role = role();
    role.instances[0].ip = Ipv4Addr::new(10, 99, 0, 5);
    let mut e = Engine::new(role, 1).unwrap();
    let p = Peer {
        ip: Ipv4Addr::new(10, 99, 0, 5),
        ..peer(1)
    };
    let r = get_as(&mut e, p, "/openstack/latest/network_data.json");
    assert_eq!(r.text(), r#"{"links": [], "networks": [], "services": []}"#);
}

#[test]
fn vendor_data_user_data_and_version_gates() {
    let mut e = engine();
    for name in ["vendor_data.json", "vendor_data2.json"] {
        let r = get(&mut e, &format!("/openstack/latest/{name}"));
        assert_eq!((r.status, r.text()), (200, "{}"));
        assert_eq!(r.header("Content-Type"), Some("application/json"));
    }
    let r = get(&mut e, "/openstack/latest/user_data");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"#cloud-config\nhostname: vm\n");
    assert_eq!(r.header("Content-Type"), Some("text/plain; charset=UTF-8"));
    for path in [
        "/openstack/2013-04-04/vendor_data.json",
        "/openstack/2016-06-30/vendor_data2.json",
        "/openstack/2012-08-10/password",
        "/openstack/2012-01-01/meta_data.json",
        "/openstack/2020-10-14/meta_data.json",
        "/openstack/latest/content",
        "/openstack/latest/content/0000",
        "/openstack/latest/meta_data.json/x",
        "/openstack/latest/nope",
    ] {
        assert_eq!(get(&mut e, path).status, 404, "{path}");
    }
}

// ---------------------------------------------------------------------------------------
// Methods, keep-alive, pipelining, bad requests

#[test]
fn head_answers_headers_without_a_body() {
    let mut e = engine();
    let get_r = get(&mut e, "/latest/user-data");
    let raw = b"HEAD /latest/user-data HTTP/1.1\r\n\r\n";
    let (r, _) = exchange(&mut e, peer(1), raw);
    assert_eq!(r[0].status, 200);
    assert!(r[0].body.is_empty());
    assert_eq!(
        r[0].header("Content-Length"),
        get_r.header("Content-Length")
    );
    let (r, _) = exchange(&mut e, peer(1), b"HEAD /nope HTTP/1.1\r\n\r\n");
    assert_eq!(r[0].status, 404);
    assert!(r[0].body.is_empty());
}

#[test]
fn other_methods_are_405_with_allow() {
    let mut e = engine();
    for (raw, allow) in [
        (
            &b"PUT /latest/meta-data/hostname HTTP/1.1\r\n\r\n"[..],
            "GET, HEAD",
        ),
        (b"DELETE /openstack HTTP/1.1\r\n\r\n", "GET, HEAD"),
        (
            b"POST /openstack/latest/meta_data.json HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi",
            "GET, HEAD",
        ),
        (
            b"OPTIONS /openstack/latest/password HTTP/1.1\r\n\r\n",
            "GET, HEAD, POST",
        ),
    ] {
        let (r, conn) = exchange(&mut e, peer(1), raw);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].status, 405, "{}", String::from_utf8_lossy(raw));
        assert_eq!(r[0].header("Allow"), Some(allow));
        assert!(!conn.finished(), "the connection stays open");
    }
    // A path that does not exist is 404 whatever the method.
    let (r, _) = exchange(&mut e, peer(1), b"PUT /nope HTTP/1.1\r\n\r\n");
    assert_eq!(r[0].status, 404);
    assert_eq!(e.events(Event::MethodNotAllowed), 4);
}

#[test]
fn keep_alive_pipelining_answers_in_order() {
    let mut e = engine();
    let raw = b"GET /latest/meta-data/hostname HTTP/1.1\r\nHost: a\r\n\r\n\
                HEAD /openstack HTTP/1.1\r\n\r\n\
                GET /nope HTTP/1.1\r\n\r\n\
                GET /latest/user-data HTTP/1.1\r\n\r\n\
                GET /latest/meta-data/local-ipv4 HTTP/1.1\r\n\r\n";
    let (r, conn) = exchange(&mut e, peer(1), raw);
    let statuses: Vec<u16> = r.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 200, 404, 200, 200]);
    assert_eq!(r[0].text(), "vm1");
    assert!(r[1].body.is_empty());
    assert_eq!(r[3].body, b"#cloud-config\nhostname: vm\n");
    assert_eq!(r[4].text(), "192.168.1.11");
    assert!(r.iter().all(|r| r.header("Connection").is_none()));
    assert!(!conn.finished());
    assert_eq!(e.events(Event::Requests), 5);
}

#[test]
fn requests_split_across_many_reads() {
    let mut e = engine();
    let raw = b"GET /latest/meta-data/hostname HTTP/1.1\r\nHost: a\r\n\r\nGET /latest/meta-data/instance-action HTTP/1.1\r\n\r\n";
    let mut conn = e.connect(peer(1), 0);
    let mut out = Vec::new();
    for b in raw.iter() {
        assert_eq!(e.feed(&mut conn, core::slice::from_ref(b), 0), 1);
        out.extend(drain(&mut conn));
    }
    let r = parse_responses(&out, &[]);
    assert_eq!(r.len(), 2);
    assert_eq!((r[0].text(), r[1].text()), ("vm1", "none"));
}

#[test]
fn connection_close_and_http_1_0_close_after_the_answer() {
    let mut e = engine();
    for raw in [
        &b"GET /latest/meta-data/hostname HTTP/1.1\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n\r\n"[..],
        b"GET /latest/meta-data/hostname HTTP/1.0\r\n\r\nGET / HTTP/1.1\r\n\r\n",
    ] {
        let (r, conn) = exchange(&mut e, peer(1), raw);
        assert_eq!(r.len(), 1, "nothing after the closing request is answered");
        assert_eq!(r[0].header("Connection"), Some("close"));
        assert!(conn.finished());
        assert_eq!(conn.room(), 0);
    }
    let (r, conn) = exchange(
        &mut e,
        peer(1),
        b"GET /latest/meta-data/hostname HTTP/1.0\r\nConnection: keep-alive\r\n\r\n\
          GET /nope HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    );
    // An HTTP/1.0 client is told the connection stays, or it would take each answer as
    // the last (ApacheBench -k asks this way).
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].text(), "vm1");
    assert_eq!(r[0].header("Connection"), Some("keep-alive"));
    assert_eq!(
        (r[1].status, r[1].header("Connection")),
        (404, Some("keep-alive"))
    );
    assert!(!conn.finished());
}

#[test]
fn malformed_requests_get_400_and_the_connection_closes() {
    let mut e = engine();
    for raw in [
        &b"GET / HTTP/1.1\r\nBad Header\r\n\r\nGET / HTTP/1.1\r\n\r\n"[..],
        b"\x00\x01\x02\x03garbage\r\n\r\n",
        b"POST /openstack/latest/password HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ] {
        let (r, conn) = exchange(&mut e, peer(1), raw);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].status, 400);
        assert_eq!(r[0].header("Connection"), Some("close"));
        assert!(conn.finished());
    }
    assert_eq!(e.events(Event::Malformed), 3);
    // Framing is judged before the caller: a stranger's garbage is a 400 as well.
    let stranger = Peer {
        ip: Ipv4Addr::new(192, 168, 1, 99),
        ..peer(1)
    };
    let (r, _) = exchange(&mut e, stranger, b"GARBAGE\r\n\r\n");
    assert_eq!(r[0].status, 400);
}

#[test]
fn oversized_head_is_431_and_oversized_body_413() {
    let mut e = engine();
    let mut raw = b"GET /latest HTTP/1.1\r\nX-Long: ".to_vec();
    raw.resize(MAX_HEAD + 100, b'a');
    let mut conn = e.connect(peer(1), 0);
    let taken = e.feed(&mut conn, &raw, 0);
    assert!(taken <= INPUT_LIMIT);
    let r = parse_responses(&drain(&mut conn), &[]);
    assert_eq!(r[0].status, 431);
    assert!(conn.finished());
    assert_eq!(conn.room(), 0, "nothing more is read");

    let raw = format!(
        "POST /openstack/latest/password HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
        MAX_BODY + 1
    );
    let (r, conn) = exchange(&mut e, peer(1), raw.as_bytes());
    assert_eq!(r[0].status, 413);
    assert!(conn.finished());
    assert_eq!(e.events(Event::HeadTooLarge), 1);
    assert_eq!(e.events(Event::BodyTooLarge), 1);
    assert_eq!(e.statuses(Status::PayloadTooLarge), 1);
}

#[test]
fn binary_garbage_never_panics_and_is_bounded() {
    let mut e = engine();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for round in 0..300 {
        let mut conn = e.connect(peer(1), 0);
        let len = (round * 37) % 12_000;
        let mut data = Vec::with_capacity(len);
        for _ in 0..len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            data.push(if round % 3 == 0 {
                b"GET /\r\n :"[x as usize % 9]
            } else {
                x as u8
            });
        }
        let mut off = 0;
        while off < data.len() && conn.room() > 0 {
            off += e.feed(&mut conn, &data[off..], 0);
            drain(&mut conn);
        }
        assert!(off <= data.len());
    }
}

// ---------------------------------------------------------------------------------------
// Who is asking

#[test]
fn unknown_or_mismatched_callers_get_404_and_nothing_else() {
    let mut e = engine();
    let cases = [
        (
            Peer {
                ip: Ipv4Addr::new(192, 168, 1, 99),
                ..peer(1)
            },
            Event::UnknownAddress,
        ),
        (
            Peer {
                mac: SourceMac::Seen(mac(9)),
                ..peer(1)
            },
            Event::MacMismatch,
        ),
        (
            Peer {
                mac: SourceMac::Seen(mac(2)),
                ..peer(1)
            },
            Event::MacMismatch,
        ),
        (
            Peer {
                mac: SourceMac::Unseen,
                ..peer(1)
            },
            Event::MacUnseen,
        ),
        (
            Peer {
                mac: SourceMac::Changed,
                ..peer(1)
            },
            Event::MacChanged,
        ),
    ];
    let baseline = get(&mut e, "/nope");
    for (p, event) in cases {
        let before = e.events(event);
        for path in [
            "/",
            "/latest/meta-data/instance-id",
            "/openstack",
            "/openstack/latest/meta_data.json",
            "/latest/user-data",
        ] {
            let r = get_as(&mut e, p, path);
            assert_eq!(r.status, 404, "{path} for {p:?}");
            assert_eq!(r.body, baseline.body, "the same 404 as any missing path");
            assert_eq!(r.headers, baseline.headers);
        }
        let (r, _) = exchange(
            &mut e,
            p,
            b"POST /openstack/latest/password HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
        );
        assert_eq!(r[0].status, 404);
        assert_eq!(e.events(event), before + 6, "{event:?}");
    }
    assert!(e.instance(mac(1)).unwrap().password.is_none());
}

#[test]
fn each_instance_gets_its_own_data() {
    let mut e = engine();
    assert_eq!(
        get_as(&mut e, peer(1), "/latest/meta-data/hostname").text(),
        "vm1"
    );
    assert_eq!(
        get_as(&mut e, peer(2), "/latest/meta-data/hostname").text(),
        "vm2"
    );
    let a = get_as(&mut e, peer(1), "/latest/meta-data/instance-id");
    let b = get_as(&mut e, peer(2), "/latest/meta-data/instance-id");
    assert_ne!(a.body, b.body);
}

// ---------------------------------------------------------------------------------------
// Password

#[test]
fn password_is_set_once_then_conflicts() {
    let mut e = engine();
    let r = get(&mut e, "/openstack/latest/password");
    assert_eq!((r.status, r.text()), (200, ""));
    let post = |e: &mut Engine, body: &str| {
        let raw = format!(
            "POST /openstack/latest/password HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        exchange(e, peer(1), raw.as_bytes()).0.remove(0)
    };
    // An empty POST sets nothing.
    assert_eq!(post(&mut e, "").status, 200);
    assert_eq!(get(&mut e, "/openstack/latest/password").text(), "");
    let secret = "c2VjcmV0".repeat(127); // 1016 bytes, under the 1020 limit
    assert_eq!(post(&mut e, &secret).status, 200);
    assert_eq!(get(&mut e, "/openstack/2013-04-04/password").text(), secret);
    assert_eq!(post(&mut e, "again").status, 409);
    assert_eq!(get(&mut e, "/openstack/latest/password").text(), secret);
    assert_eq!(e.events(Event::PasswordsSet), 1);
    assert_eq!(e.events(Event::PasswordConflict), 1);
    // The other instance's password is its own.
    assert_eq!(
        get_as(&mut e, peer(2), "/openstack/latest/password").text(),
        ""
    );
    // A live update of the same instance keeps it; a new instance on the MAC does not.
    let mut same = instance(1);
    same.floating_ip = None;
    e.apply(&Op::MetadataUpsert(Box::new(same.clone())))
        .unwrap();
    assert_eq!(get(&mut e, "/openstack/latest/password").text(), secret);
    same.uuid = "another".into();
    e.apply(&Op::MetadataUpsert(Box::new(same))).unwrap();
    assert_eq!(get(&mut e, "/openstack/latest/password").text(), "");
}

#[test]
fn a_password_body_may_arrive_late() {
    let mut e = engine();
    let mut conn = e.connect(peer(1), 0);
    e.feed(
        &mut conn,
        b"POST /openstack/latest/password HTTP/1.1\r\nContent-Length: 6\r\n\r\nsec",
        0,
    );
    assert!(conn.output().is_none(), "waits for the whole body");
    e.feed(
        &mut conn,
        b"retGET /latest/meta-data/hostname HTTP/1.1\r\n\r\n",
        0,
    );
    let r = parse_responses(&drain(&mut conn), &[]);
    assert_eq!(r.len(), 2);
    assert_eq!((r[0].status, r[1].text()), (200, "vm1"));
    assert_eq!(
        e.instance(mac(1)).unwrap().password.as_deref(),
        Some(&b"secret"[..])
    );
}

// ---------------------------------------------------------------------------------------
// Time and backpressure

#[test]
fn slow_idle_and_stuck_connections_expire() {
    let mut e = engine();
    // A request trickling in: its deadline runs from its first byte.
    let mut slow = e.connect(peer(1), 0);
    e.feed(&mut slow, b"GET /lat", SEC);
    e.feed(&mut slow, b"est", 5 * SEC);
    assert_eq!(slow.deadline(), SEC + REQUEST_TIMEOUT_NS);
    assert!(!e.expired(&slow, SEC + REQUEST_TIMEOUT_NS - 1));
    assert!(e.expired(&slow, SEC + REQUEST_TIMEOUT_NS));
    assert_eq!(e.events(Event::TimeoutRequest), 1);
    // An idle keep-alive connection, after answering.
    let mut idle = e.connect(peer(1), 0);
    e.feed(&mut idle, b"GET / HTTP/1.1\r\n\r\n", 2 * SEC);
    drain(&mut idle);
    assert_eq!(idle.deadline(), IDLE_TIMEOUT_NS, "drain() sends at t=0");
    assert!(idle.is_idle());
    assert!(e.expired(&idle, IDLE_TIMEOUT_NS));
    assert_eq!(e.events(Event::TimeoutIdle), 1);
    // A client that does not read its answer.
    let mut stuck = e.connect(peer(1), 0);
    e.feed(
        &mut stuck,
        b"GET /latest/user-data HTTP/1.1\r\n\r\n",
        3 * SEC,
    );
    assert!(stuck.output().is_some());
    assert_eq!(stuck.deadline(), 3 * SEC + SEND_TIMEOUT_NS);
    stuck.advance(10, 4 * SEC);
    assert_eq!(
        stuck.deadline(),
        4 * SEC + SEND_TIMEOUT_NS,
        "progress extends it"
    );
    assert!(e.expired(&stuck, 4 * SEC + SEND_TIMEOUT_NS));
    assert_eq!(e.events(Event::TimeoutSend), 1);
}

#[test]
fn pipelined_requests_wait_while_answers_pile_up() {
    let mut role = role();
    role.instances[0].user_data = Some(vec![b'x'; 60 * 1024]);
    let mut e = Engine::new(role, 1).unwrap();
    let mut conn = e.connect(peer(1), 0);
    let mut raw = Vec::new();
    for _ in 0..20 {
        raw.extend_from_slice(b"GET /latest/user-data HTTP/1.1\r\n\r\n");
    }
    let taken = e.feed(&mut conn, &raw, 0);
    assert_eq!(taken, raw.len());
    assert_eq!(
        e.events(Event::Requests),
        1,
        "one 60 KiB answer queued, the rest wait"
    );
    // Input is bounded too: beyond INPUT_LIMIT bytes nothing more is taken.
    let more = vec![b'G'; INPUT_LIMIT];
    assert!(e.feed(&mut conn, &more, 0) < more.len());
    let mut out = Vec::new();
    loop {
        e.drive(&mut conn, 0);
        let Some(b) = conn.output() else { break };
        let n = b.len().min(1500);
        out.extend_from_slice(&b[..n]);
        conn.advance(n, 0);
    }
    let r = parse_responses(&out, &[]);
    assert_eq!(
        r.len(),
        20 + 1,
        "twenty answers, then a 431 for the G flood"
    );
    assert!(
        r[..20]
            .iter()
            .all(|r| r.status == 200 && r.body.len() == 60 * 1024)
    );
    assert_eq!(r[20].status, 431);
}

// ---------------------------------------------------------------------------------------
// Live changes and configuration

#[test]
fn live_upsert_changes_public_ipv4_without_reconnecting() {
    let mut e = engine();
    let mut conn = e.connect(peer(1), 0);
    let ask = |e: &mut Engine, conn: &mut Conn| {
        e.feed(
            conn,
            b"GET /latest/meta-data/public-ipv4 HTTP/1.1\r\n\r\n",
            0,
        );
        parse_responses(&drain(conn), &[]).remove(0)
    };
    assert_eq!(ask(&mut e, &mut conn).text(), "203.0.113.11");
    let mut moved = instance(1);
    moved.floating_ip = Some(Ipv4Addr::new(198, 51, 100, 7));
    e.apply(&Op::MetadataUpsert(Box::new(moved))).unwrap();
    assert_eq!(ask(&mut e, &mut conn).text(), "198.51.100.7");
    e.apply(&Op::MetadataRemove { mac: mac(1) }).unwrap();
    assert_eq!(ask(&mut e, &mut conn).status, 404);
    assert_eq!(e.events(Event::UnknownAddress), 1);
    // Removing twice is fine.
    e.apply(&Op::MetadataRemove { mac: mac(1) }).unwrap();
    assert_eq!(e.len(), 1);
}

#[test]
fn upsert_moves_an_address_and_refuses_conflicts_and_limits() {
    let mut e = engine();
    // The second instance takes another address: its old one is free again.
    let mut moved = e.instance(mac(2)).unwrap().inst.clone();
    moved.ip = Ipv4Addr::new(192, 168, 1, 50);
    e.upsert(moved).unwrap();
    let mut third = instance(3);
    third.ip = ip(2);
    e.upsert(third.clone()).unwrap();
    // An address held by another MAC is refused.
    third.mac = mac(4);
    let err = e.upsert(third).unwrap_err();
    assert_eq!(
        err,
        ServiceError::AddressInUse {
            ip: ip(2),
            by: mac(3)
        }
    );
    assert!(format!("{err}").contains("fa:16:3e:00:00:03"));
    let mut big = instance(5);
    big.user_data = Some(vec![0; nanovnf_schema::metadata::MAX_USER_DATA + 1]);
    assert!(matches!(
        e.upsert(big),
        Err(ServiceError::UserDataTooLarge { .. })
    ));
    assert_eq!(
        e.apply(&Op::Ping),
        Err(ServiceError::NotMetadata),
        "not our operation"
    );
    // The table is bounded.
    let mut e = Engine::new(
        MetadataRole {
            network_id: "n".into(),
            subnets: vec![subnet()],
            instances: Vec::new(),
            passwords: Vec::new(),
        },
        0,
    )
    .unwrap();
    for i in 0..MAX_INSTANCES {
        let mut inst = instance(1);
        inst.mac = [2, 0, 0, 0, (i >> 8) as u8, i as u8];
        inst.ip = Ipv4Addr::from(0x0a00_0000 + i as u32);
        e.upsert(inst).unwrap();
    }
    assert_eq!(e.upsert(instance(1)), Err(ServiceError::TableFull));
}

#[test]
fn counters_are_named_and_complete() {
    let mut e = engine();
    get(&mut e, "/latest/meta-data/hostname");
    get(&mut e, "/nope");
    let c = e.counters();
    let value = |n: &str| c.iter().find(|c| c.name == n).map(|c| c.value);
    assert_eq!(value("requests"), Some(2));
    assert_eq!(value("status_200"), Some(1));
    assert_eq!(value("status_404"), Some(1));
    assert_eq!(value("not_found_path"), Some(1));
    assert_eq!(value("instances"), Some(2));
    let mut names: Vec<&str> = c.iter().map(|c| c.name.as_str()).collect();
    names.sort_unstable();
    let n = names.len();
    names.dedup();
    assert_eq!(names.len(), n, "names are unique");
}

#[test]
fn tree_lookup_is_total_over_odd_tokens() {
    let e = engine();
    let entry = e.instance(mac(1)).unwrap();
    let net = tree::Network {
        id: "n",
        subnets: &[],
    };
    let mut rng = tree::Rng::new(0);
    for toks in [
        &[&b"\xff\xfe"[..]][..],
        &[b"openstack", b"latest", b"\xc3"],
        &[
            b"latest",
            b"meta-data",
            b"public-keys",
            b"0",
            b"openssh-key",
            b"x",
            b"y",
        ],
    ] {
        assert!(tree::lookup(toks, entry, net, &mut rng).is_none());
    }
}

// ---------------------------------------------------------------------------------------
// Passwords kept by the manager

#[test]
fn passwords_are_reported_in_the_order_they_were_set() {
    let mut e = engine();
    let post = |e: &mut Engine, p: Peer, body: &str| {
        let raw = format!(
            "POST /openstack/latest/password HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        exchange(e, p, raw.as_bytes()).0.remove(0).status
    };
    assert_eq!(e.passwords(0), PasswordPage::default());
    assert_eq!(post(&mut e, peer(2), "two"), 200);
    assert_eq!(post(&mut e, peer(1), "one"), 200);
    let page = e.passwords(0);
    assert_eq!((page.upto, page.more), (2, false));
    let got: Vec<(u8, &[u8])> = page
        .passwords
        .iter()
        .map(|p| (p.mac[5], &p.password[..]))
        .collect();
    assert_eq!(got, [(2, &b"two"[..]), (1, b"one")]);
    assert_eq!(page.passwords[1].uuid, instance(1).uuid);
    // Only what is newer than `since`; a refused second POST adds nothing.
    assert_eq!(post(&mut e, peer(1), "again"), 409);
    let page = e.passwords(1);
    assert_eq!((page.upto, page.passwords.len()), (2, 1));
    assert_eq!(page.passwords[0].password, b"one");
    assert_eq!(e.passwords(2).passwords, []);
    // A new instance on the port has none; the old one's is not reported any more.
    let mut other = instance(1);
    other.uuid = "another".into();
    e.upsert(other).unwrap();
    assert_eq!(e.passwords(0).passwords.len(), 1);
}

#[test]
fn password_pages_stop_at_the_page_size_and_continue_from_upto() {
    let mut r = role();
    r.instances.clear();
    let mut e = Engine::new(r, 0).unwrap();
    let n = MAX_PASSWORDS_PER_PAGE + 3;
    for i in 0..n {
        let mut inst = instance(1);
        inst.mac = [2, 0, 0, 0, 0, i as u8];
        inst.ip = Ipv4Addr::new(10, 0, 0, i as u8);
        e.upsert(inst).unwrap();
        let p = Peer {
            ip: Ipv4Addr::new(10, 0, 0, i as u8),
            port: 1,
            mac: SourceMac::Seen([2, 0, 0, 0, 0, i as u8]),
        };
        let raw =
            format!("POST /openstack/latest/password HTTP/1.1\r\nContent-Length: 2\r\n\r\n{i:02}");
        assert_eq!(exchange(&mut e, p, raw.as_bytes()).0[0].status, 200);
    }
    let first = e.passwords(0);
    assert!(first.more);
    assert_eq!(first.passwords.len(), MAX_PASSWORDS_PER_PAGE);
    assert_eq!(first.upto, MAX_PASSWORDS_PER_PAGE as u64);
    let rest = e.passwords(first.upto);
    assert!(!rest.more);
    assert_eq!(rest.upto, n as u64);
    let all: Vec<Vec<u8>> = first
        .passwords
        .iter()
        .chain(&rest.passwords)
        .map(|p| p.password.clone())
        .collect();
    let want: Vec<Vec<u8>> = (0..n).map(|i| format!("{i:02}").into_bytes()).collect();
    assert_eq!(all, want);
}

#[test]
fn a_restored_password_is_served_conflicts_and_is_reported_again() {
    let mut r = role();
    let password = |mac: [u8; 6], uuid: &str, pw: &[u8]| InstancePassword {
        mac,
        uuid: uuid.into(),
        password: pw.to_vec(),
    };
    r.passwords = vec![
        password(mac(1), &instance(1).uuid, b"c2VjcmV0"),
        // Another instance's UUID, an unknown MAC, empty and oversized: all ignored.
        password(mac(2), &instance(1).uuid, b"not-yours"),
        password(mac(7), "nobody", b"x"),
        password(mac(2), &instance(2).uuid, b""),
        password(mac(2), &instance(2).uuid, &[b'a'; MAX_BODY + 1]),
    ];
    let mut e = Engine::new(r, 1).unwrap();
    assert_eq!(e.events(Event::PasswordsRestored), 1);
    assert_eq!(get(&mut e, "/openstack/latest/password").text(), "c2VjcmV0");
    assert_eq!(
        get_as(&mut e, peer(2), "/openstack/latest/password").text(),
        ""
    );
    let raw = b"POST /openstack/latest/password HTTP/1.1\r\nContent-Length: 3\r\n\r\nnew";
    assert_eq!(exchange(&mut e, peer(1), raw).0[0].status, 409);
    // A manager that lost its copy gets it back from the appliance.
    let page = e.passwords(0);
    assert_eq!(page.upto, 1);
    assert_eq!(
        page.passwords,
        [password(mac(1), &instance(1).uuid, b"c2VjcmV0")]
    );
}

// ---------------------------------------------------------------------------------------
// The fuzz body, on stable

use crate as metadata;

/// The cargo-fuzz target's body (input layout and invariants), shared with `fuzz/`.
#[path = "../../../fuzz/metadata_http_check.rs"]
mod fuzz_check;

/// Seed inputs for the fuzzer in `fuzz_check`'s layout: every kind of request above from
/// every kind of caller, split and pipelined, refused input, slow readers, live changes
/// and password reports. `fuzz/corpus/metadata_http/seed-<name>` holds them (see
/// `committed_seed_corpus_is_current`).
fn fuzz_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use fuzz_check::{OP_CLOSE, OP_DATA, OP_IDLE, OP_LIVE, OP_PASSWORDS, OP_READ, encode};
    // `sel` for slot `slot` opened from source `src`.
    let on = |slot: u8, src: u8| slot + 8 * src;
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n");
    let paths = [
        "/openstack/latest/meta_data.json",
        "/openstack/latest/network_data.json",
        "/openstack/latest/user_data",
        "/openstack/2012-08-10/meta_data.json",
        "/latest/meta-data/",
        "/latest/meta-data/public-keys/0/openssh-key",
        "/2009-04-04/user-data",
        "/openstack",
        "/nope",
    ];
    let pipelined: String = paths.iter().map(|p| get(p)).collect();
    let head = "HEAD /latest/meta-data/hostname HTTP/1.1\r\n\r\n";
    let put = "PUT /openstack/latest/password HTTP/1.1\r\nContent-Length: 1\r\n\r\nx";
    let post = "POST /openstack/latest/password HTTP/1.1\r\nContent-Length: 8\r\n\r\nc2VjcmV0";
    let get_pw = get("/openstack/latest/password");
    let close = "GET /latest/meta-data/instance-id HTTP/1.0\r\n\r\n";
    let md = get("/openstack/latest/meta_data.json");

    let mut callers: Vec<(u8, u8, u8, &[u8])> = Vec::new();
    for src in 0..8 {
        callers.push((OP_DATA, 0, on(src, src), md.as_bytes()));
        callers.push((OP_DATA, 0, on(src, src), head.as_bytes()));
        callers.push((OP_READ, 1, on(src, 10), b""));
    }
    let mut split: Vec<(u8, u8, u8, &[u8])> = Vec::new();
    // Two requests from two callers, interleaved a few bytes at a time.
    let slow = get("/openstack/latest/network_data.json");
    let other = get("/latest/meta-data/local-ipv4");
    let pairs = slow.as_bytes().chunks(3).zip(other.as_bytes().chunks(2));
    for (a, b) in pairs.clone() {
        split.push((OP_DATA, 0, on(0, 0), a));
        split.push((OP_DATA, 0, on(1, 1), b));
    }
    let n = pairs.count();
    split.push((
        OP_DATA,
        0,
        on(0, 0),
        &slow.as_bytes()[(3 * n).min(slow.len())..],
    ));
    split.push((
        OP_DATA,
        0,
        on(1, 1),
        &other.as_bytes()[(2 * n).min(other.len())..],
    ));
    split.push((OP_READ, 0, on(0, 10), b""));
    split.push((OP_READ, 0, on(1, 10), b""));
    let big_head = format!(
        "GET / HTTP/1.1\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(http::MAX_HEAD)
    );
    let big_body = "POST /openstack/latest/password HTTP/1.1\r\nContent-Length: 1021\r\n\r\n";
    let user_data = vec![b'u'; 40_000];
    let many_ud: String = (0..6).map(|_| get("/openstack/latest/user_data")).collect();
    vec![
        (
            "paths",
            encode(
                1,
                &[
                    (OP_DATA, 0, on(0, 0), pipelined.as_bytes()),
                    (OP_READ, 0, on(0, 10), b""),
                    (OP_DATA, 0, on(1, 1), pipelined.as_bytes()),
                    (OP_DATA, 0, on(1, 1), head.as_bytes()),
                    (OP_DATA, 0, on(1, 1), put.as_bytes()),
                    (OP_READ, 0, on(1, 10), b""),
                    (OP_DATA, 0, on(2, 0), close.as_bytes()),
                    (OP_READ, 0, on(2, 10), b""),
                ],
            ),
        ),
        ("callers", encode(0, &callers)),
        (
            "password",
            encode(
                2,
                &[
                    (OP_PASSWORDS, 0, 0, b""),
                    (OP_DATA, 0, on(0, 0), get_pw.as_bytes()),
                    (OP_DATA, 0, on(1, 1), post.as_bytes()),
                    (OP_DATA, 0, on(1, 1), get_pw.as_bytes()),
                    (OP_DATA, 0, on(1, 1), post.as_bytes()),
                    (OP_READ, 0, on(1, 10), b""),
                    (OP_DATA, 0, on(3, 3), post.as_bytes()),
                    (OP_DATA, 0, on(4, 6), get_pw.as_bytes()),
                    (OP_PASSWORDS, 0, 1, b""),
                    (OP_READ, 0, on(0, 10), b""),
                ],
            ),
        ),
        ("split", encode(0, &split)),
        (
            "refused",
            encode(
                0,
                &[
                    (OP_DATA, 0, on(0, 0), b"\r\n\r\nGET /\x01 HTTP/1.1\r\n\r\n"),
                    (OP_DATA, 0, on(1, 0), big_head.as_bytes()),
                    (OP_DATA, 0, on(2, 1), big_body.as_bytes()),
                    (
                        OP_DATA,
                        0,
                        on(3, 1),
                        b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                    ),
                    (OP_DATA, 0, on(4, 0), b"GET / HTTP/1.1\r\nHost"),
                    (OP_CLOSE, 0, 4, b""),
                    (OP_DATA, 0, on(5, 0), b"GET / HTT"),
                    (OP_CLOSE, 0, 5 + 8, b""),
                    (OP_READ, 0, on(0, 10), b""),
                    (OP_READ, 0, on(1, 10), b""),
                    (OP_READ, 0, on(2, 10), b""),
                    (OP_READ, 0, on(3, 10), b""),
                ],
            ),
        ),
        (
            "live",
            encode(
                0,
                &[
                    (OP_DATA, 0, on(0, 0), md.as_bytes()),
                    (OP_LIVE, 0, 1, b""), // instance 1 moves to .50
                    (OP_DATA, 0, on(1, 7), md.as_bytes()),
                    (OP_DATA, 0, on(2, 0), md.as_bytes()),
                    (OP_LIVE, 0, 2 + 4, b"new"), // instance 2 gets another UUID
                    (OP_LIVE, 0, 8, b"three"),   // instance 3 arrives
                    (OP_DATA, 0, on(3, 2), md.as_bytes()),
                    (OP_LIVE, 0, 3 + 8, b""), // and leaves
                    (OP_DATA, 0, on(3, 2), md.as_bytes()),
                    (OP_LIVE, 0, 0, b"home"), // instance 1 comes back
                    (OP_READ, 0, on(0, 10), b""),
                    (OP_READ, 0, on(1, 10), b""),
                    (OP_READ, 0, on(2, 10), b""),
                    (OP_READ, 0, on(3, 10), b""),
                ],
            ),
        ),
        (
            "slow",
            encode(
                0,
                &[
                    (OP_LIVE, 0, 0, &user_data),
                    (OP_DATA, 0, on(0, 0), many_ud.as_bytes()),
                    (OP_READ, 1, on(0, 3), b""),
                    (OP_READ, 1, on(0, 5), b""),
                    (OP_DATA, 0, on(1, 1), b"GET / HTTP/1.1\r\n"),
                    (OP_IDLE, 60, 0, b""),
                    (OP_DATA, 0, on(2, 1), md.as_bytes()),
                    (OP_READ, 0, on(2, 10), b""),
                    (OP_IDLE, 200, 0, b""),
                ],
            ),
        ),
    ]
}

#[test]
fn fuzz_body_holds_on_seeds_and_mutations() {
    let seeds = fuzz_seeds();
    for (name, seed) in &seeds {
        let e = fuzz_check::run(seed);
        let status = |s: Status| e.statuses(s);
        // Each seed reaches the path it was written for.
        let reached = match *name {
            "paths" => status(Status::Ok) >= 15 && status(Status::MethodNotAllowed) == 1,
            "callers" => {
                e.events(Event::MacMismatch) == 2
                    && e.events(Event::MacUnseen) == 2
                    && e.events(Event::MacChanged) == 2
                    && e.events(Event::UnknownAddress) == 6
            }
            "password" => {
                e.events(Event::PasswordsRestored) == 1
                    && e.events(Event::PasswordsSet) == 1
                    && e.events(Event::PasswordConflict) == 1
            }
            "split" => status(Status::Ok) == 2,
            "refused" => {
                e.events(Event::Malformed) == 2
                    && e.events(Event::HeadTooLarge) == 1
                    && e.events(Event::BodyTooLarge) == 1
            }
            "live" => e.events(Event::UnknownAddress) >= 1 && status(Status::Ok) >= 3,
            "slow" => e.events(Event::TimeoutRequest) == 1 && e.events(Event::TimeoutSend) == 1,
            _ => true,
        };
        assert!(reached, "seed {name}: {:?}", e.counters());
    }
    // Deterministic mutations: flipped bits, cut tails, spliced seeds.
    seed_corpus::mutate(&seeds, 1500, fuzz_check::run);
}

#[path = "../../../fuzz/seed_corpus.rs"]
mod seed_corpus;

#[test]
fn committed_seed_corpus_is_current() {
    seed_corpus::check("metadata_http", "nanovnf-metadata", &fuzz_seeds());
}
