//! Where a policy bundle lives: `oci://REGISTRY/REPO[:TAG][@sha256:<hex>]`.
//!
//! The `oci://` prefix is optional on the CLI (ORAS and cosign take bare
//! references) and required by the webhook's `--policy`, where a bare value
//! is a file path. The registry must be named: a bare `straddle/policy`
//! would silently mean Docker Hub, which is never what a stretch wants.

use std::fmt;

use anyhow::{Result, bail};
use oci_client::Reference;

/// The prefix that marks a `--policy` value as a registry reference.
pub const SCHEME: &str = "oci://";

/// A parsed, registry-qualified reference to a policy bundle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyRef {
    inner: Reference,
}

impl PolicyRef {
    /// Whether a `--policy` value names a registry rather than a file.
    pub fn is_oci_url(text: &str) -> bool {
        text.starts_with(SCHEME)
    }

    /// Parses `[oci://]REGISTRY/REPO[:TAG][@sha256:<hex>]`.
    pub fn parse(text: &str) -> Result<PolicyRef> {
        let bare = text.strip_prefix(SCHEME).unwrap_or(text);
        let example =
            "e.g. oci://registry.example.com:5000/straddle/policy:v1 or …/policy@sha256:<64 hex>";
        let Some((host, _)) = bare.split_once('/') else {
            bail!("{text:?} names no registry: write REGISTRY/REPOSITORY[:TAG], {example}");
        };
        if !(host.contains('.') || host.contains(':') || host == "localhost") {
            bail!(
                "{text:?}: {host:?} is not a registry host (it has no '.' or ':' and is not \
                 localhost); name the registry explicitly, {example}"
            );
        }
        let inner: Reference = bare
            .parse()
            .map_err(|e| anyhow::anyhow!("{text:?} is not an OCI reference ({e}); {example}"))?;
        if let Some(digest) = inner.digest() {
            check_digest(digest).map_err(|e| anyhow::anyhow!("{text:?}: {e}"))?;
        }
        Ok(PolicyRef { inner })
    }

    pub fn registry(&self) -> &str {
        self.inner.resolve_registry()
    }

    pub fn repository(&self) -> &str {
        self.inner.repository()
    }

    /// The tag, if the reference has no digest (a digest wins: it is what is
    /// fetched).
    pub fn tag(&self) -> Option<&str> {
        match self.inner.digest() {
            Some(_) => None,
            None => self.inner.tag(),
        }
    }

    pub fn digest(&self) -> Option<&str> {
        self.inner.digest()
    }

    /// `REGISTRY/REPO`: what a cosign payload names as `docker-reference`.
    pub fn repository_name(&self) -> String {
        format!("{}/{}", self.registry(), self.repository())
    }

    /// The same repository, pinned to `digest`.
    pub fn pinned(&self, digest: &str) -> PolicyRef {
        PolicyRef {
            inner: Reference::with_digest(
                self.inner.registry().to_owned(),
                self.repository().to_owned(),
                digest.to_owned(),
            ),
        }
    }

    /// The same repository, at `tag`.
    pub fn tagged(&self, tag: &str) -> PolicyRef {
        PolicyRef {
            inner: Reference::with_tag(
                self.inner.registry().to_owned(),
                self.repository().to_owned(),
                tag.to_owned(),
            ),
        }
    }

    /// The oci-client reference.
    pub fn as_reference(&self) -> &Reference {
        &self.inner
    }
}

impl fmt::Display for PolicyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.repository_name())?;
        match (self.inner.digest(), self.inner.tag()) {
            (Some(d), _) => write!(f, "@{d}"),
            (None, Some(t)) => write!(f, ":{t}"),
            (None, None) => Ok(()),
        }
    }
}

/// `sha256:` followed by 64 lowercase hex digits.
pub fn check_digest(digest: &str) -> Result<()> {
    let Some(hex) = digest.strip_prefix("sha256:") else {
        bail!("digest {digest:?} is not sha256:<64 hex digits> (only sha256 is supported)");
    };
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        bail!("digest {digest:?} is not sha256:<64 lowercase hex digits>");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn tags_and_digests() {
        let r = PolicyRef::parse("oci://localhost:5000/straddle/policy:v1").unwrap();
        assert_eq!(r.registry(), "localhost:5000");
        assert_eq!(r.repository(), "straddle/policy");
        assert_eq!(r.tag(), Some("v1"));
        assert_eq!(r.digest(), None);
        assert_eq!(r.to_string(), "localhost:5000/straddle/policy:v1");

        let pinned = PolicyRef::parse(&format!("127.0.0.1:5000/p@{D}")).unwrap();
        assert_eq!(pinned.digest(), Some(D));
        assert_eq!(pinned.tag(), None);
        assert_eq!(pinned.to_string(), format!("127.0.0.1:5000/p@{D}"));
        assert_eq!(
            r.pinned(D).to_string(),
            format!("localhost:5000/straddle/policy@{D}")
        );
        assert_eq!(r.repository_name(), "localhost:5000/straddle/policy");

        // No tag means `latest`, as in every OCI tool.
        let latest = PolicyRef::parse("registry.example.com/p").unwrap();
        assert_eq!(latest.tag(), Some("latest"));
        assert!(PolicyRef::is_oci_url("oci://x.io/p"));
        assert!(!PolicyRef::is_oci_url("/etc/policy.wasm"));
    }

    #[test]
    fn refusals_say_what_to_write() {
        let e = PolicyRef::parse("straddle/policy:v1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a registry host"), "{e}");
        let e = PolicyRef::parse("policy").unwrap_err().to_string();
        assert!(e.contains("names no registry"), "{e}");
        let e = PolicyRef::parse("localhost:5000/p@sha256:abc")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sha256"), "{e}");
        let e = PolicyRef::parse("localhost:5000/UPPER:v1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not an OCI reference"), "{e}");
    }
}
