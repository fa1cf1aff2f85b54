//! Image references parsed the way Docker normalises them (`busybox` →
//! `docker.io/library/busybox:latest`), and the rule for which registries may use plain HTTP.

use std::fmt;
use std::net::IpAddr;

use crate::error::{Result, RuntimeError};

/// The default registry for references without a host, as Docker names it.
pub const DOCKER_HUB: &str = "docker.io";

/// A fully normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// `host[:port]`, e.g. `docker.io` or `127.0.0.1:5000`.
    pub registry: String,
    /// Repository path, e.g. `library/busybox`.
    pub repository: String,
    /// Tag; `latest` when neither tag nor digest was given.
    pub tag: Option<String>,
    /// `sha256:<hex>` when pinned by digest.
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parses a reference as a user would type it.
    pub fn parse(input: &str) -> Result<Self> {
        let bad =
            |why: &str| RuntimeError::InvalidArgument(format!("image reference {input:?}: {why}"));
        let s = input.trim();
        if s.is_empty() {
            return Err(bad("empty"));
        }
        let (name, digest) = match s.split_once('@') {
            Some((n, d)) => {
                let hex = d
                    .strip_prefix("sha256:")
                    .ok_or_else(|| bad("only sha256 digests are supported"))?;
                if hex.len() != 64
                    || !hex
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
                {
                    return Err(bad("digest must be 64 lower-case hex characters"));
                }
                (n, Some(d.to_string()))
            }
            None => (s, None),
        };
        // A tag is the part after the last ':' when that ':' comes after the last '/'
        // (otherwise it is a registry port).
        let (name, tag) = match name.rfind(':') {
            Some(i) if !name[i..].contains('/') => (&name[..i], Some(name[i + 1..].to_string())),
            _ => (name, None),
        };
        if let Some(t) = &tag
            && (t.is_empty()
                || t.len() > 128
                || !t
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-'))
        {
            return Err(bad("invalid tag"));
        }
        // The first component is a registry host if it looks like one (Docker's rule).
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        let registry = if registry == "index.docker.io" {
            DOCKER_HUB.to_string()
        } else {
            registry
        };
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if repository.is_empty()
            || repository.split('/').any(|c| {
                c.is_empty()
                    || !c.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)
                    })
            })
        {
            return Err(bad("invalid repository name"));
        }
        let tag = match (&tag, &digest) {
            (None, None) => Some("latest".to_string()),
            _ => tag,
        };
        Ok(ImageRef {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// `registry/repository`, the name repo tags and digests are built from.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// `registry/repository:tag` if tagged.
    pub fn repo_tag(&self) -> Option<String> {
        self.tag.as_ref().map(|t| format!("{}:{t}", self.name()))
    }

    /// `registry/repository@digest` for a given manifest digest.
    pub fn repo_digest(&self, digest: &str) -> String {
        format!("{}@{digest}", self.name())
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Whether a registry may be reached over plain HTTP: loopback hosts always (they never leave the
/// machine), and hosts the operator listed as insecure: `host:port` exactly, or, as Docker's
/// `insecure-registries`, a network (`172.30.0.0/16`) holding the registry's address.
pub fn allows_plain_http(registry: &str, insecure: &[String]) -> bool {
    if insecure.iter().any(|h| h == registry) {
        return true;
    }
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        registry.rsplit_once(':').map_or(registry, |(h, _)| h)
    };
    let ip = host.parse::<IpAddr>().ok();
    host == "localhost"
        || ip.is_some_and(|ip| ip.is_loopback())
        || ip.is_some_and(|ip| insecure.iter().any(|n| in_network(ip, n)))
}

/// Whether `ip` is in the network `cidr` (`a.b.c.d/len`, IPv4 or IPv6).
fn in_network(ip: IpAddr, cidr: &str) -> bool {
    let Some((net, len)) = cidr.split_once('/') else {
        return false;
    };
    let (Ok(net), Ok(len)) = (net.parse::<IpAddr>(), len.parse::<u32>()) else {
        return false;
    };
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) if len <= 32 => {
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) if len <= 128 => {
            let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_like_docker() {
        let cases = [
            (
                "busybox",
                "docker.io",
                "library/busybox",
                Some("latest"),
                None,
            ),
            (
                "busybox:1.36",
                "docker.io",
                "library/busybox",
                Some("1.36"),
                None,
            ),
            ("user/app", "docker.io", "user/app", Some("latest"), None),
            (
                "index.docker.io/library/x",
                "docker.io",
                "library/x",
                Some("latest"),
                None,
            ),
            (
                "127.0.0.1:5000/x/y:tag",
                "127.0.0.1:5000",
                "x/y",
                Some("tag"),
                None,
            ),
            ("localhost/x", "localhost", "x", Some("latest"), None),
            (
                "localhost:5000/x",
                "localhost:5000",
                "x",
                Some("latest"),
                None,
            ),
            ("quay.io/a/b", "quay.io", "a/b", Some("latest"), None),
        ];
        for (input, reg, repo, tag, digest) in cases {
            let r = ImageRef::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.registry, reg, "{input}");
            assert_eq!(r.repository, repo, "{input}");
            assert_eq!(r.tag.as_deref(), tag, "{input}");
            assert_eq!(r.digest.as_deref(), digest, "{input}");
        }
    }

    #[test]
    fn digest_references() {
        let d = format!("sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&format!("busybox@{d}")).expect("parse");
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_deref(), Some(d.as_str()));
        assert_eq!(r.to_string(), format!("docker.io/library/busybox@{d}"));
        let r = ImageRef::parse(&format!("127.0.0.1:5000/x:1@{d}")).expect("parse");
        assert_eq!(r.tag.as_deref(), Some("1"));
        assert_eq!(r.registry, "127.0.0.1:5000");
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "UPPER/case",
            "busybox@sha256:xyz",
            "busybox@md5:abc",
            "a//b",
            "x:",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn plain_http_only_for_loopback_and_listed_hosts() {
        let insecure = vec!["reg.lan:5000".to_string()];
        assert!(allows_plain_http("127.0.0.1:5055", &insecure));
        assert!(allows_plain_http("127.3.2.1", &insecure));
        assert!(allows_plain_http("localhost:5000", &insecure));
        assert!(allows_plain_http("[::1]:5000", &insecure));
        assert!(allows_plain_http("reg.lan:5000", &insecure));
        assert!(!allows_plain_http("reg.lan", &insecure));
        assert!(!allows_plain_http("docker.io", &insecure));
        assert!(!allows_plain_http("10.0.0.1:5000", &insecure));
        let nets = vec!["172.30.4.1/32".to_string(), "fd00::/8".to_string()];
        assert!(allows_plain_http("172.30.4.1:5000", &nets));
        assert!(allows_plain_http("172.30.4.1", &nets));
        assert!(!allows_plain_http("172.30.4.2:5000", &nets));
        assert!(allows_plain_http("[fd00::5]:5000", &nets));
        assert!(!allows_plain_http("reg.lan:5000", &nets));
        let wide = vec!["0.0.0.0/0".to_string()];
        assert!(allows_plain_http("8.8.8.8:443", &wide));
    }
}
