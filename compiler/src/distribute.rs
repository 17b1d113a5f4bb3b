//! `straddle push`, `pull`, `sign`, `keygen`: policy bundles through an OCI
//! registry (the work is in `straddle-oci`; this is flags and messages).
//! Progress goes to standard error; the one value a script wants (the
//! pinned reference) goes to standard output.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use straddle_oci::signature::{self, SigningKey, VerifyingKey};
use straddle_oci::{BundleMeta, PolicyRef, Registry, RegistryFlags};

#[derive(Args)]
pub struct PushArgs {
    /// The compiled policy module (`straddle compile`).
    pub policy: PathBuf,
    /// Where to: REGISTRY/REPOSITORY:TAG (an `oci://` prefix is accepted).
    pub reference: String,
    /// Also sign the pushed digest (cosign format) with --key.
    #[arg(long, requires = "key")]
    pub sign: bool,
    /// Private key (PEM) for --sign (`straddle keygen`).
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    #[command(flatten)]
    pub registry: RegistryFlags,
}

#[derive(Args)]
pub struct PullArgs {
    /// REGISTRY/REPOSITORY:TAG or REGISTRY/REPOSITORY@sha256:…
    pub reference: String,
    /// Where to write the module.
    #[arg(long, short = 'o', default_value = "policy.wasm")]
    pub output: PathBuf,
    /// Public key (PEM, e.g. cosign.pub): refuse a bundle it did not sign.
    #[arg(long, value_name = "FILE")]
    pub verify_key: Option<PathBuf>,
    #[command(flatten)]
    pub registry: RegistryFlags,
}

#[derive(Args)]
pub struct SignArgs {
    /// The bundle to sign: a tag (its current digest is signed) or a digest.
    pub reference: String,
    /// Private key (PEM).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    #[command(flatten)]
    pub registry: RegistryFlags,
}

#[derive(Args)]
pub struct KeygenArgs {
    /// Writes PREFIX.key (private, mode 0600) and PREFIX.pub (public).
    #[arg(long, default_value = "straddle")]
    pub prefix: PathBuf,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// What the module says about itself, for the manifest's annotations.
fn bundle_meta(module: &[u8], path: &Path) -> Result<BundleMeta> {
    let plan = straddle_policy_artifact::embed::read_plan(module)
        .with_context(|| format!("{} is not a compiled policy module", path.display()))?;
    if plan.is_empty() {
        bail!(
            "{} carries no plan (the bare template?); compile a spec with `straddle compile`",
            path.display()
        );
    }
    let bundle = straddle_policy::Plan::parse(&plan)
        .and_then(|p| p.bundle())
        .map_err(|e| {
            anyhow::anyhow!("{}: the embedded plan does not read: {e:?}", path.display())
        })?;
    Ok(BundleMeta {
        name: bundle.name.to_string(),
        spec_digest: bundle.spec_digest.to_string(),
        clusters: bundle.clusters.iter().map(|c| c.to_string()).collect(),
        namespaces: bundle.namespaces.iter().map(|c| c.to_string()).collect(),
        compiler_version: bundle.compiler_version.to_string(),
    })
}

fn read_key(path: &Path) -> Result<SigningKey> {
    let pem =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    SigningKey::from_pem(&pem).with_context(|| format!("--key {}", path.display()))
}

pub fn push(args: PushArgs) -> Result<ExitCode> {
    let reference = PolicyRef::parse(&args.reference)?;
    let module = std::fs::read(&args.policy)
        .with_context(|| format!("cannot read {}", args.policy.display()))?;
    let meta = bundle_meta(&module, &args.policy)?;
    let key = match (&args.sign, &args.key) {
        (true, Some(path)) => Some(read_key(path)?),
        (false, Some(_)) => bail!("--key is for --sign: add --sign to sign the pushed bundle"),
        _ => None,
    };
    eprintln!(
        "pushing {} ({} bytes; stretch {}, clusters {}, spec {}) to {reference}",
        args.policy.display(),
        module.len(),
        meta.name,
        meta.clusters.join(", "),
        meta.spec_digest
    );
    let started = Instant::now();
    let registry = Registry::connect(&args.registry.connection(), &reference)?;
    runtime()?.block_on(async {
        let pushed = registry.push(&reference, &module, &meta).await?;
        eprintln!(
            "pushed {reference} in {:.0} ms ({} of 2 blobs already there)\n  manifest digest {}\n  layer digest    {}",
            started.elapsed().as_secs_f64() * 1e3,
            pushed.reused_blobs,
            pushed.manifest_digest,
            pushed.layer_digest,
        );
        if let Some(key) = &key {
            let (_, sig_ref) = registry.sign(&pushed.pinned, key).await?;
            eprintln!("signed {}: signature at {sig_ref}", pushed.manifest_digest);
        }
        eprintln!("run this exact bundle in every cluster with --policy oci://{}", pushed.pinned);
        println!("oci://{}", pushed.pinned);
        Ok(ExitCode::SUCCESS)
    })
}

pub fn pull(args: PullArgs) -> Result<ExitCode> {
    let reference = PolicyRef::parse(&args.reference)?;
    let verify_key = match &args.verify_key {
        Some(path) => {
            let pem = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            Some(
                VerifyingKey::from_pem(&pem)
                    .with_context(|| format!("--verify-key {}", path.display()))?,
            )
        }
        None => None,
    };
    let started = Instant::now();
    let registry = Registry::connect(&args.registry.connection(), &reference)?;
    let pulled = runtime()?.block_on(async {
        let pulled = registry.pull(&reference).await?;
        if let Some(key) = &verify_key {
            let signatures = registry
                .signatures(&reference, &pulled.manifest_digest)
                .await?;
            signature::verify(key, &signatures, &pulled.manifest_digest)
                .with_context(|| format!("refusing {reference}"))?;
        }
        anyhow::Ok(pulled)
    })?;
    write_atomically(&args.output, &pulled.module)?;
    eprintln!(
        "pulled {reference} in {:.0} ms: {} bytes, stretch {}, clusters {}\n  manifest digest {}{}",
        started.elapsed().as_secs_f64() * 1e3,
        pulled.module.len(),
        pulled.meta.name,
        pulled.meta.clusters.join(", "),
        pulled.manifest_digest,
        match &args.verify_key {
            Some(k) => format!("\n  signature verified with {}", k.display()),
            None => String::new(),
        }
    );
    eprintln!("wrote {}", args.output.display());
    println!("oci://{}", pulled.pinned);
    Ok(ExitCode::SUCCESS)
}

pub fn sign(args: SignArgs) -> Result<ExitCode> {
    let reference = PolicyRef::parse(&args.reference)?;
    let key = read_key(&args.key)?;
    let registry = Registry::connect(&args.registry.connection(), &reference)?;
    let (digest, sig_ref) = runtime()?.block_on(registry.sign(&reference, &key))?;
    eprintln!(
        "signed {} ({digest}): signature at {sig_ref}",
        reference.pinned(&digest)
    );
    println!("oci://{}", reference.pinned(&digest));
    Ok(ExitCode::SUCCESS)
}

pub fn keygen(args: KeygenArgs) -> Result<ExitCode> {
    let private = PathBuf::from(format!("{}.key", args.prefix.display()));
    let public = PathBuf::from(format!("{}.pub", args.prefix.display()));
    for path in [&private, &public] {
        if path.exists() && !args.force {
            bail!(
                "{} exists; pass --force to overwrite it, or choose another --prefix",
                path.display()
            );
        }
    }
    let key = SigningKey::generate();
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&private)
            .with_context(|| format!("cannot write {}", private.display()))?;
        file.write_all(key.to_pem().as_bytes())?;
    }
    std::fs::write(&public, key.verifying_key().to_pem())
        .with_context(|| format!("cannot write {}", public.display()))?;
    eprintln!(
        "wrote {} (private: keep it secret, sign with `straddle push --sign --key {}`)\nwrote {} \
         (public: give it to the webhook as --verify-key, or to `cosign verify --key`)",
        private.display(),
        private.display(),
        public.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("straddle-tmp");
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .with_context(|| format!("cannot write {}", path.display()))
}
