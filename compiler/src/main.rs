//! `straddle`: check, explain and compile stretch specs; preview what the
//! policy does to chart output; render companion manifests.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::Value;
use straddle_compiler::{compile, explain, manifest, preview, render, rollout, spec};
use straddle_policy::Operation;
use straddle_policy_host::{Runtime, RuntimeConfig};

mod distribute;

#[derive(Parser)]
#[command(
    name = "straddle",
    version,
    about = "Stretch Kafka and ZooKeeper across Kubernetes clusters with one spec and one policy module"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum Op {
    Create,
    Update,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a stretch spec (exit 0, or print errors and exit 1).
    Check { spec: PathBuf },
    /// Show per cluster: nodes, IDs, addresses, quorum groups, survivability.
    Explain {
        spec: PathBuf,
        #[arg(long, short = 'o', value_enum, default_value = "text")]
        output: Output,
    },
    /// Compile a spec into one WebAssembly policy module for every cluster.
    Compile {
        spec: PathBuf,
        #[arg(long, short = 'o', default_value = "policy.wasm")]
        output: PathBuf,
        /// Compile the ZooKeeper weights of a rollout stage instead of the
        /// spec's: first-cluster, first-clusters=N or final (see `straddle plan`).
        #[arg(long)]
        stage: Option<String>,
    },
    /// Run a policy module on manifests exactly as the webhook will, and print the result.
    Mutate {
        #[arg(long)]
        policy: PathBuf,
        /// The member cluster to act as.
        #[arg(long)]
        cluster: String,
        /// Multi-document YAML, or `-` for standard input.
        #[arg(long, short = 'f')]
        file: PathBuf,
        /// Namespace for documents without one (like `helm install -n`).
        /// Default: the policy's namespace, when it has exactly one.
        #[arg(long, short = 'n')]
        namespace: Option<String>,
        /// The admission operation to simulate.
        #[arg(long, value_enum, default_value = "create")]
        operation: Op,
        /// Print a unified diff instead of the mutated manifests.
        #[arg(long)]
        diff: bool,
        /// Fail on warnings too (objects that look like the stretched charts
        /// but that the spec does not name), as CI should.
        #[arg(long)]
        strict: bool,
    },
    /// Print the companion manifests a webhook cannot create, for one cluster.
    Render {
        spec: PathBuf,
        #[arg(long)]
        cluster: String,
        /// Print instead the cluster's MutatingAdmissionPolicy and
        /// ValidatingAdmissionPolicy objects (Kubernetes 1.36+): the policy
        /// applied by the API server itself, without the webhook.
        #[arg(long)]
        admission_policy: bool,
    },
    /// Print the ordered steps that grow an existing single-cluster install
    /// into the stretch, with the quorum at every step.
    Plan {
        spec: PathBuf,
        /// The cluster that runs ZooKeeper (and Kafka) today.
        #[arg(long)]
        from_single_cluster: String,
        #[arg(long, short = 'o', value_enum, default_value = "text")]
        output: Output,
    },
    /// Print the JSON Schema of the stretch spec.
    Schema,
    /// Push a policy module to an OCI registry; prints the digest to pin.
    Push(distribute::PushArgs),
    /// Fetch a policy module from an OCI registry, checking every digest.
    Pull(distribute::PullArgs),
    /// Sign a bundle in a registry (cosign-compatible signature).
    Sign(distribute::SignArgs),
    /// Make an ECDSA P-256 key pair for signing bundles.
    Keygen(distribute::KeygenArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn read_text(path: &Path) -> Result<String> {
    if path == Path::new("-") {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("cannot read standard input")?;
        return Ok(s);
    }
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Loads and checks a spec; prints the report and returns None on errors.
fn load(path: &Path) -> Result<Option<compile::Checked>> {
    load_with(path, true)
}

/// As [`load`]; without `warnings`, a spec that passes prints nothing here
/// (`explain` prints its warnings in the explanation itself).
fn load_with(path: &Path, warnings: bool) -> Result<Option<compile::Checked>> {
    let source = read_text(path)?;
    match compile::check(&path.display().to_string(), &source) {
        Ok(checked) => {
            if warnings {
                eprint!("{}", checked.report);
            }
            Ok(Some(checked))
        }
        Err(report) => {
            eprint!("{report}");
            Ok(None)
        }
    }
}

fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Check { spec } => {
            let Some(c) = load(&spec)? else {
                return Ok(ExitCode::FAILURE);
            };
            let nodes: usize = c.topology.groups().map(|g| g.nodes.len()).sum();
            println!(
                "ok: {}: {} clusters, {nodes} nodes",
                c.topology.name,
                c.topology.clusters.len()
            );
        }
        Command::Explain { spec, output } => {
            let Some(c) = load_with(&spec, false)? else {
                return Ok(ExitCode::FAILURE);
            };
            let (_, digest) = compile::plan(&c.topology);
            let e = explain::explain(&c, &digest);
            match output {
                Output::Text => print!("{}", explain::to_text(&e)),
                Output::Json => println!("{}", serde_json::to_string_pretty(&e)?),
            }
        }
        Command::Compile {
            spec,
            output,
            stage,
        } => {
            let Some(mut c) = load(&spec)? else {
                return Ok(ExitCode::FAILURE);
            };
            if let Some(stage) = stage {
                let stage = rollout::Stage::parse(&stage)?;
                c.topology = rollout::at_stage(&c.topology, stage)
                    .map_err(|e| anyhow::anyhow!("--stage: {e}"))?;
            }
            let (plan, digest) = compile::plan(&c.topology);
            let module = straddle_policy_artifact::embed::embed_plan(
                straddle_policy_artifact::POLICY_TEMPLATE,
                &plan,
            )?;
            std::fs::write(&output, &module)
                .with_context(|| format!("cannot write {}", output.display()))?;
            let clusters: Vec<&str> = c
                .topology
                .clusters
                .iter()
                .map(|c| c.name.as_str())
                .collect();
            eprintln!(
                "wrote {} ({} bytes, plan {} bytes) for clusters {}; digest {digest}",
                output.display(),
                module.len(),
                plan.len(),
                clusters.join(", ")
            );
        }
        Command::Mutate {
            policy,
            cluster,
            file,
            namespace,
            operation,
            diff,
            strict,
        } => {
            let options = MutateOptions {
                namespace,
                operation,
                diff,
                strict,
            };
            return mutate(&policy, &cluster, &file, options);
        }
        Command::Render {
            spec,
            cluster,
            admission_policy,
        } => {
            let Some(c) = load(&spec)? else {
                return Ok(ExitCode::FAILURE);
            };
            let Some(ci) = c.topology.cluster_index(&cluster) else {
                let known: Vec<&str> = c
                    .topology
                    .clusters
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect();
                bail!(
                    "cluster {cluster:?} is not in spec.clusters ({})",
                    known.join(", ")
                );
            };
            if admission_policy {
                let objects = straddle_compiler::admission_policy::policies(&c.topology, ci)?;
                print!("{}", manifest::to_yaml(&objects)?);
                return Ok(ExitCode::SUCCESS);
            }
            let objects = render::companions(&c.topology, ci);
            if objects.is_empty() {
                eprintln!(
                    "{cluster} needs no companion objects: {} is configured on the chart's own Services by the policy",
                    c.topology.networking.mode.as_str()
                );
            }
            print!("{}", manifest::to_yaml(&objects)?);
        }
        Command::Plan {
            spec,
            from_single_cluster,
            output,
        } => {
            let Some(c) = load(&spec)? else {
                return Ok(ExitCode::FAILURE);
            };
            let digest_of = |t: &straddle_compiler::topology::Topology| compile::plan(t).1;
            let p = rollout::plan(
                &c.topology,
                &spec.display().to_string(),
                &from_single_cluster,
                &digest_of,
            )?;
            match output {
                Output::Text => print!("{}", rollout::to_text(&p)),
                Output::Json => println!("{}", serde_json::to_string_pretty(&p)?),
            }
        }
        Command::Push(args) => return distribute::push(args),
        Command::Pull(args) => return distribute::pull(args),
        Command::Sign(args) => return distribute::sign(args),
        Command::Keygen(args) => return distribute::keygen(args),
        Command::Schema => {
            let schema = schemars::schema_for!(spec::StretchCluster);
            println!("{}", serde_json::to_string_pretty(&schema)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

struct MutateOptions {
    namespace: Option<String>,
    operation: Op,
    diff: bool,
    strict: bool,
}

fn mutate(
    policy_path: &Path,
    cluster: &str,
    file: &Path,
    options: MutateOptions,
) -> Result<ExitCode> {
    let MutateOptions {
        namespace,
        operation,
        diff,
        strict,
    } = options;
    let bytes = std::fs::read(policy_path)
        .with_context(|| format!("cannot read {}", policy_path.display()))?;
    let runtime = Runtime::new(RuntimeConfig::default())?;
    let policy = runtime
        .load(&bytes)
        .with_context(|| format!("{} is not a usable policy module", policy_path.display()))?;
    let bundle = policy.bundle();
    if !bundle.clusters.iter().any(|c| c == cluster) {
        bail!(
            "cluster {cluster:?} is not a member of stretch {:?} (clusters: {})",
            bundle.name,
            bundle.clusters.join(", ")
        );
    }
    let default_ns = namespace.or_else(|| match bundle.namespaces.as_slice() {
        [only] => Some(only.to_string()),
        _ => None,
    });
    let docs = manifest::parse(&read_text(file)?)?;
    let operation = match operation {
        Op::Create => Operation::Create,
        Op::Update => Operation::Update,
    };
    let outcomes = preview::run(&docs, cluster, default_ns.as_deref(), operation, |req| {
        policy.review(req)
    })?;
    let denials: Vec<String> = outcomes
        .iter()
        .filter_map(|o| {
            o.denial().map(|m| {
                // The policy's messages start with the object already.
                let what = manifest::describe(&o.before, &o.namespace);
                if m.starts_with(&what) {
                    format!("denied: {m}")
                } else {
                    format!("denied: {what}: {m}")
                }
            })
        })
        .collect();
    // Printed as kubectl and Helm print an admission warning.
    let warnings = outcomes.iter().filter_map(|o| o.warning());
    let mut warned = false;
    for w in warnings {
        eprintln!("Warning: {w}");
        warned = true;
    }
    if !denials.is_empty() {
        for d in &denials {
            eprintln!("{d}");
        }
        return Ok(ExitCode::FAILURE);
    }
    if warned && strict {
        eprintln!("error: warnings with --strict");
        return Ok(ExitCode::FAILURE);
    }
    if diff {
        print!("{}", render_diff(&outcomes)?);
    } else {
        let docs: Vec<Value> = outcomes.into_iter().map(|o| o.after).collect();
        print!("{}", manifest::to_yaml(&docs)?);
    }
    Ok(ExitCode::SUCCESS)
}

fn render_diff(outcomes: &[preview::Outcome]) -> Result<String> {
    let mut text = String::new();
    for o in outcomes {
        if o.before == o.after {
            continue;
        }
        let a = manifest::to_yaml(std::slice::from_ref(&o.before))?;
        let b = manifest::to_yaml(std::slice::from_ref(&o.after))?;
        let name = manifest::describe(&o.before, &o.namespace);
        let diff = similar::TextDiff::from_lines(&a, &b);
        text.push_str(
            &diff
                .unified_diff()
                .context_radius(3)
                .header(&format!("a: {name}"), &format!("b: {name}"))
                .to_string(),
        );
    }
    Ok(text)
}
