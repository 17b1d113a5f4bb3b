//! The registry flags, shared by `straddle` and `straddle-webhook` so both
//! spell them the same way (ORAS's `--plain-http`, docker's `config.json`).

use std::path::PathBuf;

use clap::Args;

use crate::auth::AuthOptions;
use crate::registry::Connection;

#[derive(Args, Clone, Debug, Default)]
pub struct RegistryFlags {
    /// Talk to the registry over plain HTTP instead of HTTPS (as ORAS's
    /// --plain-http). Only for a registry on loopback or a trusted network.
    #[arg(long, env = "STRADDLE_PLAIN_HTTP")]
    pub plain_http: bool,

    /// PEM file of CA certificates to trust for the registry, besides the
    /// system's (a registry with a private CA).
    #[arg(long, env = "STRADDLE_REGISTRY_CA", value_name = "FILE")]
    pub registry_ca: Option<PathBuf>,

    /// Registry user name (basic auth); needs --password.
    #[arg(long, env = "STRADDLE_REGISTRY_USERNAME")]
    pub username: Option<String>,

    /// Registry password (basic auth); prefer the environment variable.
    #[arg(long, env = "STRADDLE_REGISTRY_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,

    /// A bearer token for the registry (e.g. a cloud registry's access token).
    #[arg(long, env = "STRADDLE_REGISTRY_TOKEN", hide_env_values = true)]
    pub registry_token: Option<String>,

    /// Docker config.json with credentials (`auths`), e.g. a mounted image
    /// pull secret's `.dockerconfigjson`. Default: $DOCKER_CONFIG/config.json
    /// or ~/.docker/config.json, when present.
    #[arg(long, env = "STRADDLE_REGISTRY_CONFIG", value_name = "FILE")]
    pub registry_config: Option<PathBuf>,
}

impl RegistryFlags {
    pub fn connection(&self) -> Connection {
        Connection {
            plain_http: self.plain_http,
            ca_file: self.registry_ca.clone(),
            auth: AuthOptions {
                username: self.username.clone(),
                password: self.password.clone(),
                token: self.registry_token.clone(),
                registry_config: self.registry_config.clone(),
            },
            ..Connection::default()
        }
    }
}
