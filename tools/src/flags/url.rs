//! URL handling the way etcd does it: Go's `net/url.Parse`, `net.SplitHostPort`
//! and etcd's `types.NewURLs` / `types.NewURLsMap` checks, with Go's error texts.
//!
//! Only the parts of `net/url` that etcd's URL flags can reach are modelled:
//! scheme, userinfo, host (with Go's host character rules and `%` escapes),
//! path, query and fragment, and the canonical string form `URL.String()`.

use super::goparse::quote;

/// A parsed URL, field for field like Go's `url.URL` (raw forms kept).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GoUrl {
    pub scheme: String,
    pub opaque: String,
    /// Raw userinfo (before `@`), if any.
    pub user: Option<String>,
    /// Unescaped host, including `:port`.
    pub host: String,
    pub path: String,
    pub raw_query: String,
    pub force_query: bool,
    pub fragment: String,
}

fn is_ctl(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

fn ishex(c: u8) -> bool {
    c.is_ascii_hexdigit()
}

fn unhex(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => 0,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Host,
    Path,
    UserPassword,
    Fragment,
}

/// Go's `shouldEscape` for the modes used here.
fn should_escape(c: u8, mode: Mode) -> bool {
    if c.is_ascii_alphanumeric() {
        return false;
    }
    if mode == Mode::Host
        && matches!(
            c,
            b'!' | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'['
                | b']'
                | b'<'
                | b'>'
                | b'"'
        )
    {
        return false;
    }
    match c {
        b'-' | b'_' | b'.' | b'~' => return false,
        b'$' | b'&' | b'+' | b',' | b'/' | b':' | b';' | b'=' | b'?' | b'@' => match mode {
            Mode::Path => return c == b'?',
            Mode::UserPassword => return c == b'@' || c == b'/' || c == b'?' || c == b':',
            Mode::Fragment => return false,
            Mode::Host => {}
        },
        _ => {}
    }
    if mode == Mode::Fragment && matches!(c, b'!' | b'(' | b')' | b'*') {
        return false;
    }
    true
}

/// Go's `unescape`; returns the unescaped bytes or the error text.
fn unescape(s: &str, mode: Mode) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                if i + 2 >= b.len() || !ishex(b[i + 1]) || !ishex(b[i + 2]) {
                    let end = (i + 3).min(b.len());
                    let bad = String::from_utf8_lossy(&b[i..end]).into_owned();
                    return Err(format!("invalid URL escape {}", quote(&bad)));
                }
                if mode == Mode::Host && unhex(b[i + 1]) < 8 && &b[i..i + 3] != b"%25" {
                    let bad = String::from_utf8_lossy(&b[i..i + 3]).into_owned();
                    return Err(format!("invalid URL escape {}", quote(&bad)));
                }
                out.push(unhex(b[i + 1]) << 4 | unhex(b[i + 2]));
                i += 3;
            }
            c => {
                if mode == Mode::Host && c < 0x80 && should_escape(c, mode) {
                    let bad = String::from_utf8_lossy(&b[i..i + 1]).into_owned();
                    return Err(format!("invalid character {} in host name", quote(&bad)));
                }
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn escape(s: &str, mode: Mode) -> String {
    let mut out = String::with_capacity(s.len());
    for &c in s.as_bytes() {
        if should_escape(c, mode) {
            out.push_str(&format!("%{c:02X}"));
        } else {
            out.push(c as char);
        }
    }
    out
}

fn valid_optional_port(port: &str) -> bool {
    if port.is_empty() {
        return true;
    }
    let Some(rest) = port.strip_prefix(':') else {
        return false;
    };
    rest.bytes().all(|b| b.is_ascii_digit())
}

fn parse_host(host: &str) -> Result<String, String> {
    if host.starts_with('[') {
        let Some(i) = host.rfind(']') else {
            return Err("missing ']' in host".to_string());
        };
        let colon_port = &host[i + 1..];
        if !valid_optional_port(colon_port) {
            return Err(format!("invalid port {} after host", quote(colon_port)));
        }
    } else if let Some(i) = host.rfind(':') {
        let colon_port = &host[i..];
        if !valid_optional_port(colon_port) {
            return Err(format!("invalid port {} after host", quote(colon_port)));
        }
    }
    unescape(host, Mode::Host)
}

/// Go's `getScheme`: `Ok((scheme, rest))`.
fn get_scheme(raw: &str) -> Result<(&str, &str), String> {
    for (i, c) in raw.bytes().enumerate() {
        if c.is_ascii_alphabetic() {
            continue;
        }
        if c.is_ascii_digit() || c == b'+' || c == b'-' || c == b'.' {
            if i == 0 {
                return Ok(("", raw));
            }
            continue;
        }
        if c == b':' {
            if i == 0 {
                return Err("missing protocol scheme".to_string());
            }
            return Ok((&raw[..i], &raw[i + 1..]));
        }
        return Ok(("", raw));
    }
    Ok(("", raw))
}

impl GoUrl {
    /// Go's `url.Parse`.  The error text is Go's (`parse "x": reason`).
    pub fn parse(raw: &str) -> Result<GoUrl, String> {
        let wrap = |e: String| format!("parse {}: {}", quote(raw), e);
        let (u, frag) = match raw.find('#') {
            Some(i) => (&raw[..i], Some(&raw[i + 1..])),
            None => (raw, None),
        };
        let mut url = Self::parse_no_frag(u).map_err(wrap)?;
        if let Some(f) = frag {
            url.fragment = unescape(f, Mode::Fragment).map_err(wrap)?;
        }
        Ok(url)
    }

    fn parse_no_frag(raw: &str) -> Result<GoUrl, String> {
        if raw.bytes().any(is_ctl) {
            return Err("net/url: invalid control character in URL".to_string());
        }
        let mut url = GoUrl::default();
        if raw.is_empty() {
            return Ok(url);
        }
        if raw == "*" {
            url.path = "*".to_string();
            return Ok(url);
        }
        let (scheme, mut rest) = get_scheme(raw)?;
        url.scheme = scheme.to_ascii_lowercase();
        if rest.ends_with('?') && rest.matches('?').count() == 1 {
            url.force_query = true;
            rest = &rest[..rest.len() - 1];
        } else if let Some(i) = rest.find('?') {
            url.raw_query = rest[i + 1..].to_string();
            rest = &rest[..i];
        }
        if !rest.starts_with('/') {
            if !url.scheme.is_empty() {
                url.opaque = rest.to_string();
                return Ok(url);
            }
            if let Some(colon) = rest.find(':') {
                match rest.find('/') {
                    Some(slash) if slash < colon => {}
                    _ => return Err("first path segment in URL cannot contain colon".to_string()),
                }
            }
        }
        if (!url.scheme.is_empty() || !rest.starts_with("///")) && rest.starts_with("//") {
            let after = &rest[2..];
            let (authority, path) = match after.find('/') {
                Some(i) => (&after[..i], &after[i..]),
                None => (after, ""),
            };
            rest = path;
            match authority.rfind('@') {
                Some(i) => {
                    let userinfo = &authority[..i];
                    if !userinfo.bytes().all(valid_userinfo_byte) {
                        return Err("net/url: invalid userinfo".to_string());
                    }
                    unescape(userinfo, Mode::UserPassword)?;
                    url.user = Some(userinfo.to_string());
                    url.host = parse_host(&authority[i + 1..])?;
                }
                None => url.host = parse_host(authority)?,
            }
        }
        url.path = unescape(rest, Mode::Path)?;
        Ok(url)
    }

    /// Go's `URL.String()`.
    pub fn to_go_string(&self) -> String {
        let mut buf = String::new();
        if !self.scheme.is_empty() {
            buf.push_str(&self.scheme);
            buf.push(':');
        }
        if !self.opaque.is_empty() {
            buf.push_str(&self.opaque);
        } else {
            if !self.scheme.is_empty() || !self.host.is_empty() || self.user.is_some() {
                if !self.host.is_empty() || !self.path.is_empty() || self.user.is_some() {
                    buf.push_str("//");
                }
                if let Some(u) = &self.user {
                    buf.push_str(u);
                    buf.push('@');
                }
                if !self.host.is_empty() {
                    buf.push_str(&escape(&self.host, Mode::Host));
                }
            }
            let path = escape_path(&self.path);
            if !path.is_empty() && !path.starts_with('/') && !self.host.is_empty() {
                buf.push('/');
            }
            if buf.is_empty() {
                if let Some(i) = path.find(':') {
                    if !path[..i].contains('/') {
                        buf.push_str("./");
                    }
                }
            }
            buf.push_str(&path);
        }
        if self.force_query || !self.raw_query.is_empty() {
            buf.push('?');
            buf.push_str(&self.raw_query);
        }
        if !self.fragment.is_empty() {
            buf.push('#');
            buf.push_str(&escape(&self.fragment, Mode::Fragment));
        }
        buf
    }
}

fn escape_path(p: &str) -> String {
    let mut out = String::with_capacity(p.len());
    for &c in p.as_bytes() {
        if c != b'/' && should_escape(c, Mode::Path) {
            out.push_str(&format!("%{c:02X}"));
        } else {
            out.push(c as char);
        }
    }
    out
}

fn valid_userinfo_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            b'-' | b'.'
                | b'_'
                | b':'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b'%'
                | b'@'
        )
}

/// Go's `net.SplitHostPort`, with Go's error text (`address x: missing port in address`).
pub fn split_host_port(hostport: &str) -> Result<(String, String), String> {
    let err = |why: &str| Err(format!("address {hostport}: {why}"));
    let Some(i) = hostport.rfind(':') else {
        return err("missing port in address");
    };
    let (host, j, k);
    if hostport.starts_with('[') {
        let Some(end) = hostport.find(']') else {
            return err("missing ']' in address");
        };
        if end + 1 == hostport.len() {
            return err("missing port in address");
        } else if end + 1 != i {
            if hostport.as_bytes()[end + 1] == b':' {
                return err("too many colons in address");
            }
            return err("missing port in address");
        }
        host = &hostport[1..end];
        j = 1;
        k = end + 1;
    } else {
        host = &hostport[..i];
        if host.contains(':') {
            return err("too many colons in address");
        }
        j = 0;
        k = 0;
    }
    if hostport[j..].contains('[') {
        return err("unexpected '[' in address");
    }
    if hostport[k..].contains(']') {
        return err("unexpected ']' in address");
    }
    Ok((host.to_string(), hostport[i + 1..].to_string()))
}

/// etcd 3.5.1's `types.NewURLs`: trims, parses and checks every URL, then
/// sorts them by their string form.  Returns the canonical strings.
pub fn new_urls(items: &[&str]) -> Result<Vec<String>, String> {
    if items.is_empty() {
        return Err("no valid URLs given".to_string());
    }
    let mut out = Vec::with_capacity(items.len());
    for raw in items {
        out.push(check_url(raw)?.to_go_string());
    }
    out.sort();
    Ok(out)
}

/// One URL through etcd 3.5.1's `NewURLs` checks.
pub fn check_url(raw: &str) -> Result<GoUrl, String> {
    let s = raw.trim();
    let u = GoUrl::parse(s)?;
    if !matches!(u.scheme.as_str(), "http" | "https" | "unix" | "unixs") {
        return Err(format!(
            "URL scheme must be http, https, unix, or unixs: {s}"
        ));
    }
    if split_host_port(&u.host).is_err() {
        return Err(format!(
            "URL address does not have the form \"host:port\": {s}"
        ));
    }
    if !u.path.is_empty() {
        return Err(format!("URL must not contain a path: {s}"));
    }
    Ok(u)
}

/// etcd's flag value for URL lists (`flags.UniqueURLs.Set`): comma-separated,
/// checked, sorted and deduplicated.
pub fn unique_urls(s: &str) -> Result<Vec<String>, String> {
    let parts: Vec<&str> = s.split(',').collect();
    let mut v = new_urls(&parts)?;
    v.dedup();
    Ok(v)
}

/// `types.NewURLsMap`: `name=url,name=url,...` into name → sorted URLs.
pub fn new_urls_map(s: &str) -> Result<std::collections::BTreeMap<String, Vec<String>>, String> {
    let mut raw: std::collections::BTreeMap<String, Vec<&str>> = Default::default();
    for item in s.split(',') {
        if item.is_empty() {
            continue;
        }
        let (k, v) = match item.find('=') {
            Some(i) => (&item[..i], &item[i + 1..]),
            None => (item, ""),
        };
        raw.entry(k.to_string()).or_default().push(v);
    }
    let mut out = std::collections::BTreeMap::new();
    for (name, urls) in raw {
        out.insert(name, new_urls(&urls)?);
    }
    Ok(out)
}

/// `types.URLsMap.String()`: sorted `name=url` pairs joined by commas.
pub fn urls_map_string(m: &std::collections::BTreeMap<String, Vec<String>>) -> String {
    let mut pairs: Vec<String> = m
        .iter()
        .flat_map(|(n, us)| us.iter().map(move |u| format!("{n}={u}")))
        .collect();
    pairs.sort();
    pairs.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(s: &str) -> String {
        unique_urls(s).unwrap_err()
    }

    // Every expected text below was printed by the real etcd 3.5.1 binary for
    // `etcd --listen-client-urls=<input>`.
    #[test]
    fn url_errors_match_etcd_351() {
        assert_eq!(
            err("127.0.0.1:2379"),
            "parse \"127.0.0.1:2379\": first path segment in URL cannot contain colon"
        );
        assert_eq!(
            err("localhost:2379"),
            "URL scheme must be http, https, unix, or unixs: localhost:2379"
        );
        assert_eq!(
            err("http://127.0.0.1:2379/"),
            "URL must not contain a path: http://127.0.0.1:2379/"
        );
        assert_eq!(
            err("http://127.0.0.1:2379,"),
            "URL scheme must be http, https, unix, or unixs: "
        );
        assert_eq!(
            err("unix://foo"),
            "URL address does not have the form \"host:port\": unix://foo"
        );
        assert_eq!(
            err("http://127.0.0.1:abc"),
            "parse \"http://127.0.0.1:abc\": invalid port \":abc\" after host"
        );
        assert_eq!(
            err("http://a b:1"),
            "parse \"http://a b:1\": invalid character \" \" in host name"
        );
        assert_eq!(
            err("http://[::1]"),
            "URL address does not have the form \"host:port\": http://[::1]"
        );
        assert_eq!(
            err("http://%zz:1"),
            "parse \"http://%zz:1\": invalid URL escape \"%zz\""
        );
        assert_eq!(err("://x"), "parse \"://x\": missing protocol scheme");
        assert_eq!(
            err("http://127.0.0.1"),
            "URL address does not have the form \"host:port\": http://127.0.0.1"
        );
        assert_eq!(
            err("foo"),
            "URL scheme must be http, https, unix, or unixs: foo"
        );
    }

    #[test]
    fn accepted_urls_are_canonical_and_sorted() {
        assert_eq!(
            unique_urls("http://localhost:2379,http://127.0.0.1:2379").unwrap(),
            vec!["http://127.0.0.1:2379", "http://localhost:2379"]
        );
        assert_eq!(
            unique_urls("HTTP://127.0.0.1:2379").unwrap(),
            vec!["http://127.0.0.1:2379"]
        );
        assert_eq!(
            unique_urls(" http://127.0.0.1:2379").unwrap(),
            vec!["http://127.0.0.1:2379"]
        );
        assert_eq!(
            unique_urls("http://[::1]:2379").unwrap(),
            vec!["http://[::1]:2379"]
        );
        assert_eq!(
            unique_urls("http://127.0.0.1:2379?x").unwrap(),
            vec!["http://127.0.0.1:2379?x"]
        );
        assert_eq!(
            unique_urls("http://127.0.0.1:2379#frag").unwrap(),
            vec!["http://127.0.0.1:2379#frag"]
        );
        assert_eq!(
            unique_urls("http://u@127.0.0.1:1").unwrap(),
            vec!["http://u@127.0.0.1:1"]
        );
        assert_eq!(
            unique_urls("http://127.0.0.1:").unwrap(),
            vec!["http://127.0.0.1:"]
        );
        assert_eq!(unique_urls("http://:2379").unwrap(), vec!["http://:2379"]);
        assert_eq!(
            unique_urls("http://a:1,http://a:1").unwrap(),
            vec!["http://a:1"]
        );
    }

    #[test]
    fn split_host_port_like_go() {
        assert_eq!(
            split_host_port("127.0.0.1:80").unwrap(),
            ("127.0.0.1".to_string(), "80".to_string())
        );
        assert_eq!(
            split_host_port("[::1]:80").unwrap(),
            ("::1".to_string(), "80".to_string())
        );
        assert_eq!(
            split_host_port("h").unwrap_err(),
            "address h: missing port in address"
        );
        assert_eq!(
            split_host_port("::1:80").unwrap_err(),
            "address ::1:80: too many colons in address"
        );
    }

    #[test]
    fn urls_map_like_etcd() {
        let m = new_urls_map("b=http://b:1,a=http://a:2,a=http://a:1").unwrap();
        assert_eq!(m["a"], vec!["http://a:1", "http://a:2"]);
        assert_eq!(
            urls_map_string(&m),
            "a=http://a:1,a=http://a:2,b=http://b:1"
        );
        assert_eq!(
            new_urls_map("default=foo").unwrap_err(),
            "URL scheme must be http, https, unix, or unixs: foo"
        );
    }
}
