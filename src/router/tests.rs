use super::*;

fn seed() -> Router<&'static str> {
    let mut r = Router::new();
    r.insert("/", "all").unwrap();
    r.insert("/app1", "a1").unwrap();
    r.insert("/app2", "a2").unwrap();
    r.insert("/admin", "deny").unwrap();
    r
}

fn get<'a>(r: &'a Router<&'static str>, path: &str) -> Option<(&'a str, usize)> {
    r.lookup(path.as_bytes()).map(|(v, n)| (*v, n))
}

#[test]
fn seed_table() {
    let r = seed();
    assert_eq!(r.len(), 4);
    assert!(!r.is_empty());
    let cases = [
        ("/", "all", 0),
        ("/x", "all", 0),
        ("/app1", "a1", 5),
        ("/app1/", "a1", 5),
        ("/app1/x", "a1", 5),
        ("/app10", "all", 0),
        ("/APP1/x", "a1", 5),
        ("/app2/y/z", "a2", 5),
        ("/admin", "deny", 6),
        ("/Admin/", "deny", 6),
        ("/ADMIN", "deny", 6),
        ("/admin/x", "deny", 6),
        ("/administrator", "all", 0),
    ];
    for (path, want, n) in cases {
        assert_eq!(get(&r, path), Some((want, n)), "path {path:?}");
    }
}

#[test]
fn longest_nested_prefix_wins() {
    let mut r = Router::new();
    r.insert("/a/b", "ab").unwrap();
    r.insert("/a", "a").unwrap();
    r.insert("/a/b/c", "abc").unwrap();
    assert_eq!(get(&r, "/a"), Some(("a", 2)));
    assert_eq!(get(&r, "/a/x"), Some(("a", 2)));
    assert_eq!(get(&r, "/a/b"), Some(("ab", 4)));
    assert_eq!(get(&r, "/a/b/cd"), Some(("ab", 4)));
    assert_eq!(get(&r, "/a/b/c"), Some(("abc", 6)));
    assert_eq!(get(&r, "/A/B/C/d/e"), Some(("abc", 6)));
    assert_eq!(get(&r, "/b"), None);
}

#[test]
fn intermediate_nodes_without_values_do_not_match() {
    let mut r = Router::new();
    r.insert("/a/b/c", "abc").unwrap();
    assert_eq!(get(&r, "/a/b"), None);
    assert_eq!(get(&r, "/a/b/"), None);
    assert_eq!(r.len(), 1);
}

#[test]
fn no_root_route() {
    let mut r = Router::new();
    r.insert("/app1", 1).unwrap();
    assert_eq!(r.lookup(b"/zzz"), None);
    assert_eq!(r.lookup(b"/"), None);
    assert_eq!(r.lookup(b""), None);
    assert_eq!(r.lookup(b"app1"), None);
}

#[test]
fn empty_router() {
    let r: Router<u8> = Router::default();
    assert!(r.is_empty());
    assert_eq!(r.len(), 0);
    assert_eq!(r.lookup(b"/"), None);
}

#[test]
fn strip_lengths() {
    let mut r = Router::new();
    r.insert("/strip/", "s").unwrap();
    r.insert("/", "root").unwrap();
    let path = "/strip/echo";
    let (_, n) = r.lookup(path.as_bytes()).unwrap();
    assert_eq!((n, &path[n..]), (6, "/echo"));
    let (_, n) = r.lookup(b"/strip").unwrap();
    assert_eq!(n, 6);
    let (_, n) = r.lookup(b"/strip/").unwrap();
    assert_eq!(n, 6);
    let (v, n) = r.lookup(b"/other").unwrap();
    assert_eq!((*v, n), ("root", 0));
}

#[test]
fn many_siblings_sorted() {
    let mut r = Router::new();
    let names: Vec<String> = (0..200).rev().map(|i| format!("/s{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        r.insert(name, i).unwrap();
    }
    for (i, name) in names.iter().enumerate() {
        let upper = name.to_ascii_uppercase();
        assert_eq!(r.lookup(upper.as_bytes()), Some((&i, name.len())));
    }
    assert_eq!(r.lookup(b"/s200"), None);
}

#[test]
fn duplicates() {
    let mut r = seed();
    let dup = |p: &str| RouterError::Duplicate(p.to_string());
    assert_eq!(r.insert("/app1", "x"), Err(dup("/app1")));
    assert_eq!(r.insert("/app1/", "x"), Err(dup("/app1/")));
    assert_eq!(r.insert("/App1", "x"), Err(dup("/App1")));
    assert_eq!(r.insert("/ADMIN/", "x"), Err(dup("/ADMIN/")));
    assert_eq!(r.insert("/", "x"), Err(dup("/")));
    assert_eq!(r.len(), 4);
    // The original value survives a rejected duplicate.
    assert_eq!(get(&r, "/app1"), Some(("a1", 5)));
}

#[test]
fn bad_prefixes() {
    let mut r: Router<u8> = Router::new();
    for p in ["app1", "", "*", "http://x/"] {
        assert_eq!(r.insert(p, 0), Err(RouterError::NotAbsolute(p.to_string())), "{p:?}");
    }
    let bad = [
        "//", "/a//b", "/a//", "/.", "/..", "/a/./b", "/a/../b", "/a?", "/a#b", "/a%20b", "/%61", "/a b", "/a\\b",
        "/é", "/a;b", "/;",
    ];
    for p in bad {
        assert_eq!(r.insert(p, 0), Err(RouterError::BadPrefix(p.to_string())), "{p:?}");
    }
    assert!(r.is_empty());
    // Rejections must not leave valueless nodes that change later behaviour.
    assert_eq!(r.root.children.len(), 0);
    r.insert("/...", 1).unwrap();
    r.insert("/a:b@c~", 2).unwrap();
    assert_eq!(r.lookup(b"/.../x"), Some((&1, 4)));
    assert_eq!(r.lookup(b"/A:B@C~"), Some((&2, 7)));
}

/// Issue 11, class 2: every form of a path parameter on `/admin`
/// reaches the `/admin` route (backends such as Tomcat strip them).
#[test]
fn path_parameters_do_not_escape_a_prefix() {
    let r = seed();
    for path in ["/admin;x", "/admin;/x", "/admin;", "/admin;v=1/", "/admin%3Bx", "/admin%3bx", "/ADMIN;x/y"] {
        let mut norm = Vec::new();
        crate::http::path::normalize_path(path.as_bytes(), &mut norm).expect("normalizes");
        assert_eq!(r.lookup(&norm).map(|(v, _)| *v), Some("deny"), "{path:?} -> {:?}", String::from_utf8_lossy(&norm));
    }
    // The matched length covers the parameters, so a stripped prefix
    // leaves only what follows the segment.
    assert_eq!(get(&r, "/app1;jsessionid=1/x"), Some(("a1", 18)));
    assert_eq!(get(&r, "/app10;x"), Some(("all", 0)));
}

/// The property the fuzz target also checks: inserting `;Q` after any
/// segment of any path never changes the route it takes.
#[test]
fn parameters_never_change_the_route() {
    let mut r = Router::new();
    for (i, p) in ["/", "/a", "/a/b", "/b", "/a/b/c", "/c/d"].iter().enumerate() {
        r.insert(p, i).unwrap();
    }
    let route = |path: &[u8]| -> Option<Option<usize>> {
        let mut norm = Vec::new();
        crate::http::path::normalize_path(path, &mut norm).ok()?;
        Some(r.lookup(&norm).map(|(v, _)| *v))
    };
    let atoms: [&[u8]; 10] = [b"a", b"b", b"c", b"d", b".", b"..", b"", b"A", b"%61", b"x"];
    let params: [&[u8]; 8] = [b"", b"x", b"v=1", b";", b"%3B", b"..", b"a=b;c", b"%3bq"];
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    for _ in 0..5000 {
        let segs: Vec<&[u8]> = (0..1 + next(5)).map(|_| atoms[next(atoms.len())]).collect();
        let path: Vec<u8> = segs.iter().flat_map(|s| [&b"/"[..], s].concat()).collect();
        let Some(want) = route(&path) else { continue };
        for at in 0..segs.len() {
            let mut with = Vec::new();
            for (i, s) in segs.iter().enumerate() {
                with.push(b'/');
                with.extend_from_slice(s);
                if i == at {
                    with.push(if next(2) == 0 { b';' } else { b'%' });
                    if with.last() == Some(&b'%') {
                        with.extend_from_slice(if next(2) == 0 { b"3B" } else { b"3b" });
                    }
                    with.extend_from_slice(params[next(params.len())]);
                }
            }
            assert_eq!(
                route(&with),
                Some(want),
                "{:?} vs {:?}",
                String::from_utf8_lossy(&path),
                String::from_utf8_lossy(&with)
            );
        }
    }
}

#[test]
fn odd_lookup_inputs_do_not_panic() {
    let r = seed();
    for p in [&b""[..], b"/", b"//", b"///app1", b"/app1//x", b"/\xff\xfe", b"/app1?x"] {
        let _ = r.lookup(p);
    }
    assert_eq!(get(&r, "/app1?x"), Some(("all", 0)));
}
