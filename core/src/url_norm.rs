//! One spelling per location, for deconfliction: two reports of the same
//! URL must land on the same case however the URL was typed. The URL is
//! parsed as browsers do (WHATWG, the `url` crate: host lower-cased and
//! IDNA-encoded, default port dropped, `.` and `..` resolved), then:
//! scheme and host in lower case for every scheme, the default port of
//! ftps and sftp dropped too, user name and password dropped (they do not
//! name the material), the fragment dropped (it never reaches the server),
//! percent-encoding made canonical (unreserved characters decoded, the rest
//! in upper-case hex, a `%` that starts no escape written `%25`), trailing
//! slashes of the path dropped, an empty query dropped, and the trailing
//! dots of a fully qualified host dropped (what is left parsed as a host
//! again). The normal spelling is its own normal spelling: a report that
//! gives it lands on the same case as one that gave any other spelling.
//! Invisible and direction-changing characters never get here: a URL
//! holding one is refused (`report::ReportUrl::parse`). Query parameters keep their order: servers may read it.

use crate::report::ReportUrl;

/// A URL in its one normal spelling.
#[derive(Clone, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct NormalUrl(String);

impl NormalUrl {
    /// The normal spelling.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for NormalUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Percent-encoding in its canonical form: `%41` becomes `A`, `%2f` becomes
/// `%2F`, and a `%` that starts no escape is the character itself, `%25`
/// (else decoding `%3%31` to `%31` would make an escape that a second pass
/// decodes again).
fn canonical_percent(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        let at = |k: usize| b.get(k).copied().unwrap_or(0);
        if at(i) == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(at(i + 1)), hex(at(i + 2))) {
                let byte = (h * 16 + l) as u8;
                if is_unreserved(byte) {
                    out.push(byte as char);
                } else {
                    out.push_str(&format!("%{byte:02X}"));
                }
                i += 3;
                continue;
            }
        }
        if at(i) == b'%' {
            out.push_str("%25");
            i += 1;
            continue;
        }
        // Multi-byte characters are copied whole (the url crate has already
        // percent-encoded what needs it).
        let ch_len = s[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&s[i..i + ch_len]);
        i += ch_len;
    }
    out
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        "ftp" => Some(21),
        "ftps" => Some(990),
        "sftp" => Some(22),
        _ => None,
    }
}

/// The normal spelling of a reported URL, or why it has none.
pub fn normalize(u: &ReportUrl) -> Result<NormalUrl, String> {
    let mut parsed = url::Url::parse(u.as_str()).map_err(|e| e.to_string())?;
    // `example.test.` is the fully qualified spelling of `example.test`. The
    // host without its trailing dots is parsed again: what is left may be
    // another kind of host (`192.0.2.` is the IPv4 address 192.0.0.2).
    let host = parsed.host_str().ok_or_else(|| "no host".to_string())?;
    let bare = host.trim_end_matches('.');
    if bare.len() < host.len() && !bare.is_empty() {
        let bare = bare.to_string();
        parsed.set_host(Some(&bare)).map_err(|e| e.to_string())?;
    }
    let scheme = parsed.scheme().to_ascii_lowercase();
    let host = parsed
        .host_str()
        .ok_or_else(|| "no host".to_string())?
        .to_ascii_lowercase();
    let port = parsed
        .port()
        .filter(|p| Some(*p) != default_port(&scheme))
        .map(|p| format!(":{p}"))
        .unwrap_or_default();
    let mut path = canonical_percent(parsed.path());
    while path.len() > 1 && path.ends_with('/') {
        path.pop();
    }
    if path.is_empty() {
        path.push('/');
    }
    let query = parsed
        .query()
        .filter(|q| !q.is_empty())
        .map(|q| format!("?{}", canonical_percent(q)))
        .unwrap_or_default();
    Ok(NormalUrl(format!("{scheme}://{host}{port}{path}{query}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        normalize(&ReportUrl::parse(s).unwrap()).unwrap().0
    }

    #[test]
    fn spellings_of_one_location_are_one() {
        let want = "https://files.example.test/a/b?x=1";
        for s in [
            "https://files.example.test/a/b?x=1",
            "HTTPS://Files.Example.TEST/a/b?x=1",
            "https://files.example.test:443/a/b?x=1",
            "https://files.example.test/a/b/?x=1",
            "https://files.example.test/a/b//?x=1",
            "https://files.example.test/a/./c/../b?x=1",
            "https://files.example.test/%61/%62?x=%31",
            "https://files.example.test/a/b?x=1#part-2",
            "https://user:secret@files.example.test/a/b?x=1",
            "https://files.example.test./a/b?x=1",
        ] {
            assert_eq!(norm(s), want, "{s}");
        }
    }

    #[test]
    fn different_locations_stay_different() {
        assert_ne!(norm("https://e.test/a"), norm("http://e.test/a"));
        assert_ne!(norm("https://e.test/a"), norm("https://e.test:8443/a"));
        assert_ne!(norm("https://e.test/a"), norm("https://e.test/A"));
        assert_ne!(
            norm("https://e.test/a?x=1&y=2"),
            norm("https://e.test/a?y=2&x=1")
        );
        assert_ne!(norm("https://e.test/a%2Fb"), norm("https://e.test/a/b"));
    }

    #[test]
    fn invisible_and_direction_changing_characters_are_refused() {
        for (s, c) in [
            ("https://e.test/\u{202E}fdp.exe", "U+202E"),
            ("https://e.test/a\u{200B}b", "U+200B"),
            ("https://e.test/\u{FEFF}a", "U+FEFF"),
            ("https://e.test/\u{2066}a", "U+2066"),
            ("https://e\u{00AD}x.test/", "U+00AD"),
            ("https://e\u{200D}x.test/", "U+200D"),
        ] {
            let e = ReportUrl::parse(s).unwrap_err();
            assert!(e.contains(c), "{s}: {e}");
        }
        // Percent-encoded, the same character is visible and allowed.
        assert_eq!(
            norm("https://e.test/%E2%80%AEa"),
            "https://e.test/%E2%80%AEa"
        );
    }

    #[test]
    fn encodings_become_canonical() {
        assert_eq!(norm("https://e.test/a%2fb"), "https://e.test/a%2Fb");
        assert_eq!(norm("https://e.test/%7Euser"), "https://e.test/~user");
        assert_eq!(norm("https://e.test/"), "https://e.test/");
        assert_eq!(norm("https://e.test"), "https://e.test/");
        assert_eq!(norm("https://e.test/?"), "https://e.test/");
        assert_eq!(
            norm("https://BÜCHER.example/x"),
            "https://xn--bcher-kva.example/x"
        );
        assert_eq!(norm("sftp://Host.test:22/f"), "sftp://host.test/f");
        assert_eq!(norm("https://[::1]:443/x"), "https://[::1]/x");
        assert_eq!(norm("https://e.test/a%zz%4"), "https://e.test/a%25zz%254");
    }

    #[test]
    fn the_normal_spelling_is_its_own_normal_spelling() {
        // Each found by the `url` fuzz target: normalising once gave a
        // spelling that normalised otherwise.
        for (s, want) in [
            (
                "https://files.example.test../b",
                "https://files.example.test/b",
            ),
            (
                "https://files.example.test.../b",
                "https://files.example.test/b",
            ),
            ("https://e.test/a/?x=%3%31", "https://e.test/a?x=%2531"),
            ("ftp://192.0.2../pub", "ftp://192.0.0.2/pub"),
            ("ftp://192.0.2./pub", "ftp://192.0.0.2/pub"),
            (
                "sftp://ho../b//_x=%.test:22/~/in",
                "sftp://ho/b//_x=%25.test:22/~/in",
            ),
            ("http://h\u{e9}llo..../", "http://xn--hllo-bpa/"),
        ] {
            let once = norm(s);
            assert_eq!(once, want, "{s}");
            assert_eq!(norm(&once), once, "{s} normalised twice");
        }
        assert_eq!(
            norm("https://files.example.test../b"),
            norm("https://files.example.test./b")
        );
    }
}
