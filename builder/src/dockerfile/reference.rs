//! Image references as Docker reads them (`[DOMAIN/]PATH[:TAG][@DIGEST]`),
//! whose repository they name, and the URLs an `ADD` may not fetch.

/// A parsed image reference, its domain and path normalized as Docker does
/// (`busybox` is `docker.io/library/busybox`).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ImageName {
    pub domain: String,
    pub path: String,
    /// The tag, or the digest (`sha256:…`) when the reference has one.
    pub tag_or_digest: Option<String>,
}

impl ImageName {
    /// `text` as a reference Docker could pull, or None (an image ID, or
    /// not a reference at all).
    pub fn parse(text: &str) -> Option<ImageName> {
        let hex64 = |hex: &str| hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if hex64(text) || text.strip_prefix("sha256:").is_some_and(hex64) {
            return None;
        }
        let (name, digest) = match text.split_once('@') {
            Some((name, digest)) => (name, Some(digest)),
            None => (text, None),
        };
        if let Some(digest) = digest {
            let (algorithm, hex) = digest.split_once(':')?;
            if algorithm.is_empty() || hex.len() < 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
        }
        let slash = name.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name[slash..].rfind(':') {
            Some(colon) => (&name[..slash + colon], Some(&name[slash + colon + 1..])),
            None => (name, None),
        };
        if let Some(tag) = tag
            && (tag.is_empty()
                || tag.len() > 128
                || !tag.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
                || tag.starts_with(['.', '-']))
        {
            return None;
        }
        let (domain, path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains(['.', ':'])
                    || first == "localhost"
                    || first.bytes().any(|b| b.is_ascii_uppercase()) =>
            {
                (first, rest)
            }
            _ => ("docker.io", name),
        };
        let domain_ok = !domain.is_empty()
            && domain.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
            && !domain.contains("..");
        let path_ok = !path.is_empty()
            && path.split('/').all(|component| {
                !component.is_empty()
                    && component.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                    && component.starts_with(|c: char| c.is_ascii_alphanumeric())
                    && component.ends_with(|c: char| c.is_ascii_alphanumeric())
            });
        if !domain_ok || !path_ok {
            return None;
        }
        let domain = if domain == "index.docker.io" { "docker.io" } else { domain };
        let path =
            if domain == "docker.io" && !path.contains('/') { format!("library/{path}") } else { path.to_owned() };
        Some(ImageName { domain: domain.to_owned(), path, tag_or_digest: digest.or(tag).map(str::to_owned) })
    }

    /// What to pull: the repository and the tag or digest (`latest` if none).
    pub fn pull_args(&self) -> (String, String) {
        (format!("{}/{}", self.domain, self.path), self.tag_or_digest.clone().unwrap_or_else(|| "latest".to_owned()))
    }

    /// The app whose repository this is on nap's registry `registry`
    /// (`REGISTRY/APP`), if it is one.
    pub fn app_on(&self, registry: &str) -> Option<&str> {
        (self.domain.eq_ignore_ascii_case(registry) && !self.path.contains('/')).then_some(self.path.as_str())
    }
}

/// Characters Docker allows in an image reference or ID: anything else is
/// never asked of the daemon (it goes into a request path).
pub(crate) fn is_reference_text(text: &str) -> bool {
    !text.is_empty()
        && !text.contains("..")
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:/@-[]".contains(&b))
}

/// Whether an `ADD` source (expanded) is a URL, which the daemon would
/// fetch itself, from the host's network: where nap's registry and the
/// host's services answer, under any of the host's names and behind any
/// redirect. (Docker asks for `http://` or `https://`; any case is taken.)
pub(crate) fn is_url(source: &str) -> bool {
    let lower = source.get(..8).unwrap_or(source).to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

#[cfg(test)]
mod tests {
    use super::{ImageName, is_reference_text, is_url};

    fn name(text: &str) -> Option<(String, String, Option<String>)> {
        ImageName::parse(text).map(|n| (n.domain, n.path, n.tag_or_digest))
    }

    #[test]
    fn reads_references_as_docker_does() {
        let s = |v: &str| v.to_owned();
        assert_eq!(name("busybox"), Some((s("docker.io"), s("library/busybox"), None)));
        assert_eq!(name("nap/busybox:1"), Some((s("docker.io"), s("nap/busybox"), Some(s("1")))));
        assert_eq!(name("127.0.0.1:5000/sec-b:v1"), Some((s("127.0.0.1:5000"), s("sec-b"), Some(s("v1")))));
        assert_eq!(name("127.0.0.1:5000/sec-b"), Some((s("127.0.0.1:5000"), s("sec-b"), None)));
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            name(&format!("localhost:5000/b:v1@{digest}")),
            Some((s("localhost:5000"), s("b"), Some(digest.clone())))
        );
        assert_eq!(name("index.docker.io/x"), Some((s("docker.io"), s("library/x"), None)));
        assert_eq!(name(&digest), None);
        assert_eq!(name(&"a".repeat(64)), None);
        assert_eq!(name("Upper"), None);
        assert_eq!(name("a//b"), None);
        assert_eq!(name("a:"), None);
        assert_eq!(name("a@sha256:xyz"), None);
    }

    #[test]
    fn knows_nap_repositories() {
        let on = |text: &str| ImageName::parse(text).and_then(|n| n.app_on("127.0.0.1:5000").map(str::to_owned));
        assert_eq!(on("127.0.0.1:5000/sec-b:v1").as_deref(), Some("sec-b"));
        assert_eq!(on("127.0.0.1:5000/base/busybox").as_deref(), None);
        assert_eq!(on("localhost:5000/sec-b").as_deref(), None);
        assert_eq!(on("nap/sec-b").as_deref(), None);
    }

    #[test]
    fn only_reference_characters_reach_the_daemon() {
        assert!(is_reference_text("127.0.0.1:5000/b:v1@sha256:00"));
        assert!(!is_reference_text("../containers/x"));
        assert!(!is_reference_text("a b"));
        assert!(!is_reference_text("a?b"));
        assert!(!is_reference_text(""));
    }

    #[test]
    fn every_remote_url_is_one() {
        for url in ["http://127.0.0.1:5000/v2/b/manifests/v1", "HTTP://127.1:5000/v2/", "https://example.com/f.tar"] {
            assert!(is_url(url), "{url}");
        }
        for path in ["file.tar", "http", "./http://x", "ftp://example.com/f"] {
            assert!(!is_url(path), "{path}");
        }
    }
}
