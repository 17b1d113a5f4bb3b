//! Registry credentials, chosen the way users of docker, ORAS and cosign
//! expect: an explicit bearer token, else an explicit user and password,
//! else the registry's entry in a Docker `config.json` (the file `docker
//! login` writes and a Kubernetes image pull secret holds as
//! `.dockerconfigjson`), else anonymous.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;

#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    Anonymous,
    Basic { username: String, password: String },
    Bearer(String),
}

impl fmt::Debug for Credentials {
    // Never print a secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Anonymous => write!(f, "anonymous"),
            Credentials::Basic { username, .. } => write!(f, "basic auth as {username:?}"),
            Credentials::Bearer(_) => write!(f, "bearer token"),
        }
    }
}

/// What the user gave on the command line or in the environment.
#[derive(Clone, Debug, Default)]
pub struct AuthOptions {
    pub username: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    /// A Docker `config.json`; when `None`, `$DOCKER_CONFIG/config.json` or
    /// `~/.docker/config.json` is read if it exists.
    pub registry_config: Option<PathBuf>,
}

/// The credentials for `registry`, and where they came from (for messages).
pub fn resolve(options: &AuthOptions, registry: &str) -> Result<(Credentials, String)> {
    if let Some(token) = &options.token {
        return Ok((
            Credentials::Bearer(token.clone()),
            "--registry-token".into(),
        ));
    }
    match (&options.username, &options.password) {
        (Some(username), Some(password)) => {
            return Ok((
                Credentials::Basic {
                    username: username.clone(),
                    password: password.clone(),
                },
                "--username/--password".into(),
            ));
        }
        (Some(_), None) => bail!("--username needs --password (or STRADDLE_REGISTRY_PASSWORD)"),
        (None, Some(_)) => bail!("--password needs --username (or STRADDLE_REGISTRY_USERNAME)"),
        (None, None) => {}
    }
    let (path, explicit) = match &options.registry_config {
        Some(path) => (Some(path.clone()), true),
        None => (default_docker_config(), false),
    };
    if let Some(path) = path {
        match std::fs::read(&path) {
            Ok(bytes) => {
                let found = from_docker_config(&bytes, registry).with_context(|| {
                    format!("reading registry credentials from {}", path.display())
                })?;
                if let Some(credentials) = found {
                    return Ok((credentials, path.display().to_string()));
                }
            }
            Err(e) if explicit => {
                return Err(e).with_context(|| format!("--registry-config {}", path.display()));
            }
            Err(_) => {}
        }
    }
    Ok((Credentials::Anonymous, "anonymous".into()))
}

fn default_docker_config() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(Path::new(&dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|home| Path::new(&home).join(".docker/config.json"))
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, DockerAuth>,
}

#[derive(Deserialize)]
struct DockerAuth {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    registrytoken: Option<String>,
}

/// The entry for `registry` in a Docker `config.json` (or the
/// `.dockerconfigjson` of a pull secret). Keys may be bare hosts or URLs
/// (`https://index.docker.io/v1/`).
pub fn from_docker_config(json: &[u8], registry: &str) -> Result<Option<Credentials>> {
    let config: DockerConfig = serde_json::from_slice(json)
        .context("not a Docker config.json (expected {\"auths\": {…}})")?;
    let wanted = normalize_host(registry);
    let Some((key, entry)) = config
        .auths
        .iter()
        .find(|(key, _)| normalize_host(key) == wanted)
    else {
        return Ok(None);
    };
    if let Some(token) = &entry.registrytoken {
        return Ok(Some(Credentials::Bearer(token.clone())));
    }
    if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
        let decoded = BASE64
            .decode(auth.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .with_context(|| format!("auths.{key:?}.auth is not base64 of user:password"))?;
        let Some((username, password)) = decoded.split_once(':') else {
            bail!("auths.{key:?}.auth is not base64 of user:password (no ':')");
        };
        return Ok(Some(Credentials::Basic {
            username: username.to_owned(),
            password: password.to_owned(),
        }));
    }
    if let (Some(username), Some(password)) = (&entry.username, &entry.password) {
        return Ok(Some(Credentials::Basic {
            username: username.clone(),
            password: password.clone(),
        }));
    }
    bail!(
        "auths.{key:?} has no auth, username/password or registrytoken (credential helpers \
         are not supported: put the credentials in the file, as a pull secret does)"
    )
}

/// `https://index.docker.io/v1/` → `docker.io`; `Host:5000/` → `host:5000`.
fn normalize_host(key: &str) -> String {
    let key = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = key.split('/').next().unwrap_or(key).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_owned(),
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_config_entries() {
        let json = br#"{"auths": {
            "localhost:5000": {"auth": "YWxpY2U6czNjcjN0"},
            "https://index.docker.io/v1/": {"username": "bob", "password": "pw"},
            "ghcr.io": {"registrytoken": "tok"},
            "broken.io": {"auth": "!!!"}
        }}"#;
        let basic = |u: &str, p: &str| Credentials::Basic {
            username: u.into(),
            password: p.into(),
        };
        assert_eq!(
            from_docker_config(json, "localhost:5000").unwrap(),
            Some(basic("alice", "s3cr3t"))
        );
        assert_eq!(
            from_docker_config(json, "docker.io").unwrap(),
            Some(basic("bob", "pw"))
        );
        assert_eq!(
            from_docker_config(json, "ghcr.io").unwrap(),
            Some(Credentials::Bearer("tok".into()))
        );
        assert_eq!(from_docker_config(json, "quay.io").unwrap(), None);
        let e = from_docker_config(json, "broken.io")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not base64"), "{e}");
        assert!(from_docker_config(b"not json", "x").is_err());
        assert!(from_docker_config(br#"{"auths": 5}"#, "x").is_err());
    }

    #[test]
    fn precedence_and_secrets_stay_hidden() {
        let options = AuthOptions {
            username: Some("u".into()),
            password: Some("p".into()),
            token: None,
            registry_config: Some("/nonexistent/config.json".into()),
        };
        let (c, from) = resolve(&options, "r.io").unwrap();
        assert_eq!(format!("{c:?}"), "basic auth as \"u\"");
        assert_eq!(from, "--username/--password");
        let only_user = AuthOptions {
            password: None,
            ..options.clone()
        };
        assert!(
            resolve(&only_user, "r.io")
                .unwrap_err()
                .to_string()
                .contains("--password")
        );
        let explicit_missing = AuthOptions {
            username: None,
            password: None,
            ..options
        };
        let e = format!("{:#}", resolve(&explicit_missing, "r.io").unwrap_err());
        assert!(
            e.contains("--registry-config /nonexistent/config.json"),
            "{e}"
        );
    }
}
