//! `straddle-load`: the webhook's load generator and benchmark.
//!
//! ```sh
//! cargo bench -p straddle-webhook --bench load                 # everything below
//! cargo bench -p straddle-webhook --bench load -- --rate 2000 --duration 10s
//! cargo bench -p straddle-webhook --bench load -- --connect 127.0.0.1:8443 --ca ca.pem --skip-saturation
//! ```
//!
//! By default it builds everything it needs: a CA and server certificate
//! (rcgen), the policy compiled from `examples/cp-two-clusters.yaml`, and
//! the release `straddle-webhook` binary, started as a child process on
//! loopback. Then:
//!
//! 1. **ready time**: the RSS after a start that compiles the module (an
//!    empty `--cache-dir`, as in a new pod); then the binary is started
//!    `--restarts` times with the warm `--cache-dir` (precompiled module);
//!    time from spawn to the first `200` from `/readyz`.
//! 2. **idle RSS** of the server.
//! 3. **fixed rate**: `--rate` requests/s (open loop: request *i* is sent at
//!    `start + i/rate` on the next free connection) for `--duration`, over
//!    `--connections` HTTPS keep-alive connections, with the fixture
//!    StatefulSets (both get a patch). Latency is measured by the client
//!    from sending the request to having the whole response; p50/p99/p99.9/
//!    max, plus the server's RSS during the run, its CPU time per request,
//!    and the server's own `/metrics` histogram over the same requests.
//! 4. **saturation**: closed loop (each connection sends its next request
//!    when the previous answer arrives) on `--saturation-connections`
//!    connections: requests/s and latencies.
//! 5. **floor** (unless `--skip-floor`): the fixed-rate phase again, against
//!    a do-nothing HTTPS server (below), and both p99s side by side.
//! 6. **alternated** (`--pairs`, default 3): more fixed-rate phases of the
//!    webhook and the floor in turn, and the median of their CPU ratios:
//!    one pair of phases moves with the machine's drift between them.
//!
//! With `--connect ADDR --ca FILE` it only generates load against a running
//! server (and reads its `/metrics` there); `--pid` adds RSS and CPU.
//!
//! The floor measures what this machine allows at all: the same requests,
//! at the same rate, on the same kind of connections, against a do-nothing
//! HTTPS server (the webhook's TLS settings, hyper, one async thread, in a
//! process of its own like the webhook; `--floor-in-process` puts it in the
//! generator's) that reads each body and answers with an answer the real
//! webhook gave, without looking at the request. Its latencies are the
//! floor under the webhook's: TLS, HTTP, the loopback, the scheduler and the hypervisor
//! (whose steal time, printed with every phase, moves both). `--floor`
//! runs only that phase.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use hyper::body::Bytes;
use rustls::ClientConfig;
use straddle_test_support::fixture_json;
use straddle_test_support::https::{Client, Pki};
use straddle_test_support::policy::{CP_TWO, compile};
use straddle_test_support::process::Process;
use straddle_test_support::review::review_for;
use straddle_test_support::scratch::Scratch;
use straddle_test_support::webhook_child::{
    ChildServer as Server, cpu_seconds, mib, ms, quantile, rss,
};

#[derive(Parser, Debug)]
#[command(name = "straddle-load", about = "Load generator for straddle-webhook")]
struct Args {
    /// Requests per second in the fixed-rate phase.
    #[arg(long, default_value_t = 2000)]
    rate: u32,
    /// Length of the fixed-rate and saturation phases.
    #[arg(long, default_value = "10s", value_parser = straddle_webhook::config::parse_duration)]
    duration: Duration,
    /// Connections in the fixed-rate phase.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Connections in the saturation phase.
    #[arg(long, default_value_t = 16)]
    saturation_connections: usize,
    /// Restarts measured for the ready time.
    #[arg(long, default_value_t = 5)]
    restarts: usize,
    /// Skip the saturation phase.
    #[arg(long)]
    skip_saturation: bool,
    /// Load an already running server instead of starting one.
    #[arg(long, requires = "ca")]
    connect: Option<SocketAddr>,
    /// CA bundle to verify `--connect`'s certificate with.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// The running server's pid, for RSS and CPU figures with `--connect`.
    #[arg(long)]
    pid: Option<u32>,
    /// Extra flags for the started server.
    #[arg(long, allow_hyphen_values = true)]
    server_arg: Vec<String>,
    /// Only the floor: load the do-nothing HTTPS server, not the webhook.
    #[arg(long, conflicts_with = "connect")]
    floor: bool,
    /// Skip the floor phase after the webhook's.
    #[arg(long)]
    skip_floor: bool,
    /// After the floor: this many more fixed-rate phases of each server,
    /// alternated (webhook, floor, webhook, ...), for the CPU ratio's spread.
    #[arg(long, default_value_t = 3)]
    pairs: usize,
    /// Run the floor in the generator's process (threads named `floor`),
    /// as before 2026-12-07, rather than in a process of its own.
    #[arg(long)]
    floor_in_process: bool,
    /// With `--connect`: send one request (the first fixture), write the
    /// answer's body to this file and stop (a floor's answer, for
    /// `budget.sh`).
    #[arg(long, requires = "connect")]
    record_answer: Option<PathBuf>,
    /// Internal: be the floor server with this certificate, key and answer;
    /// prints its address, then serves until killed.
    #[arg(long, hide = true, num_args = 3, value_names = ["CERT", "KEY", "ANSWER"])]
    serve_floor: Option<Vec<PathBuf>>,
    /// Ignored (cargo bench passes it).
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some([cert, key, answer]) = args.serve_floor.as_deref() {
        return floor::serve_in_this_process(cert, key, answer);
    }
    // The generator gets one core's worth of threads; the server the rest.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

struct Target {
    addr: SocketAddr,
    tls: Arc<ClientConfig>,
    pid: Option<u32>,
    /// Serves `/metrics` (not the floor server).
    metrics: bool,
    /// "webhook" or "floor", in the report.
    label: &'static str,
    _server: Option<Server>,
    /// The floor server's process, when it has one.
    _floor: Option<Process>,
}

async fn run(args: Args) -> Result<()> {
    let objects: Vec<Bytes> = [
        "statefulset-confluent-cp-zookeeper.json",
        "statefulset-confluent-cp-kafka.json",
    ]
    .iter()
    .enumerate()
    .map(|(i, file)| {
        let object = fixture_json("cp-zk-kafka-only", file);
        Bytes::from(
            serde_json::to_vec(&review_for(
                &object,
                "confluent",
                "CREATE",
                &format!("load-{i}"),
            ))
            .unwrap(),
        )
    })
    .collect();

    let dir = Scratch::new("load")?;
    // Certificates for the started webhook and, later, the floor server.
    let pki = Pki::new();
    let (cert, key) = pki.write(dir.path());
    let target = match args.connect {
        Some(addr) => {
            let ca = std::fs::read_to_string(args.ca.as_ref().unwrap())?;
            Target {
                addr,
                tls: client_config(&ca)?,
                pid: args.pid,
                metrics: true,
                label: "webhook",
                _server: None,
                _floor: None,
            }
        }
        None if args.floor => {
            std::fs::write(dir.join("policy.wasm"), compile(CP_TWO))?;
            let server = Server::start(dir.path(), &dir.join("cache"), &args.server_arg).await?;
            let webhook = Target {
                addr: server.addr,
                tls: pki.client_config(None, false),
                pid: Some(server.pid),
                metrics: true,
                label: "webhook",
                _server: Some(server),
                _floor: None,
            };
            let floor = floor_target(
                &webhook,
                &objects[0],
                (&cert, &key),
                dir.path(),
                args.floor_in_process,
            )
            .await?;
            if let Some(server) = webhook._server {
                server.stop().await?;
            }
            floor
        }
        None => {
            std::fs::write(dir.join("policy.wasm"), compile(CP_TWO))?;
            let cache = dir.join("cache");
            // The first start compiles the module, as a new pod's does,
            // and warms the cache; then the ready times of restarts.
            let cold = Server::start(dir.path(), &cache, &args.server_arg).await?;
            tokio::time::sleep(Duration::from_secs(2)).await;
            println!(
                "== idle after a start that compiled the module: RSS {:.1} MiB (startup {:.0} ms)",
                mib(rss(cold.pid)?.0),
                cold.startup_ms
            );
            cold.stop().await?;
            let mut ready = Vec::new();
            for _ in 0..args.restarts {
                let started = Instant::now();
                let server = Server::start(dir.path(), &cache, &args.server_arg).await?;
                ready.push((started.elapsed(), server.startup_ms));
                server.stop().await?;
            }
            ready.sort_by_key(|r| r.0);
            println!(
                "== ready time with a cached precompiled module ({} restarts)",
                ready.len()
            );
            println!(
                "   spawn -> /readyz 200: min {:.1} ms, median {:.1} ms, max {:.1} ms (in-process startup median {:.1} ms)",
                ms(ready[0].0),
                ms(ready[ready.len() / 2].0),
                ms(ready[ready.len() - 1].0),
                ready[ready.len() / 2].1
            );
            let server = Server::start(dir.path(), &cache, &args.server_arg).await?;
            let tls = pki.client_config(None, false);
            Target {
                addr: server.addr,
                tls,
                pid: Some(server.pid),
                metrics: true,
                label: "webhook",
                _server: Some(server),
                _floor: None,
            }
        }
    };

    if let Some(pid) = target.pid {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (rss, hwm) = rss(pid)?;
        println!(
            "== idle: RSS {:.1} MiB (peak so far {:.1} MiB)",
            mib(rss),
            mib(hwm)
        );
    }

    if let Some(file) = &args.record_answer {
        let mut client = Client::connect(target.addr, target.tls.clone()).await?;
        std::fs::write(file, client.mutate(objects[0].clone()).await?.body)?;
        return Ok(());
    }

    let measured = warm_up_and_fixed_rate(&target, &objects, &args, true).await?;
    let mut saturated = None;
    if !args.skip_saturation && !args.floor {
        saturated = Some(
            saturation(
                &target,
                &objects,
                args.duration,
                args.saturation_connections,
            )
            .await?,
        );
    }
    if let Some(pid) = target.pid {
        let (rss, hwm) = rss(pid)?;
        println!(
            "== after: RSS {:.1} MiB, peak {:.1} MiB",
            mib(rss),
            mib(hwm)
        );
    }
    if target._server.is_none() || args.floor || args.skip_floor {
        if let Some(server) = target._server {
            server.stop().await?;
        }
        return Ok(());
    }
    let floor = floor_target(
        &target,
        &objects[0],
        (&cert, &key),
        dir.path(),
        args.floor_in_process,
    )
    .await?;
    let floor_measured = warm_up_and_fixed_rate(&floor, &objects, &args, true).await?;
    let floor_saturated = match saturated {
        Some(_) => {
            Some(saturation(&floor, &objects, args.duration, args.saturation_connections).await?)
        }
        None => None,
    };
    if let (Some(w), Some(f)) = (measured.cpu_us, floor_measured.cpu_us) {
        println!(
            "== webhook vs floor, server CPU per request at {} requests/s: {w:.1} vs {f:.1} µs ({:.2}x)",
            args.rate,
            w / f
        );
    }
    if let (Some(w), Some(f)) = (saturated, floor_saturated) {
        println!(
            "== webhook vs floor, saturation: {w:.0} vs {f:.0} requests/s ({:.2}x)",
            w / f
        );
    }
    println!(
        "== webhook vs floor at {} requests/s: p50 {:.3} vs {:.3} ms, p99 {:.3} vs {:.3} ms (steal {:.1}% vs {:.1}%)",
        args.rate,
        measured.p50_ms,
        floor_measured.p50_ms,
        measured.p99_ms,
        floor_measured.p99_ms,
        measured.steal_pct,
        floor_measured.steal_pct
    );
    alternated(&target, &floor, &objects, &args).await?;
    if let Some(server) = target._server {
        server.stop().await?;
    }
    Ok(())
}

/// `--pairs` more fixed-rate phases of each server, alternated, so that
/// the machine's drift (other tenants, the hypervisor) falls on both: one
/// line per pair, then the median and range of the CPU ratio.
async fn alternated(
    webhook: &Target,
    floor: &Target,
    objects: &[Bytes],
    args: &Args,
) -> Result<()> {
    if args.pairs == 0 {
        return Ok(());
    }
    println!(
        "== alternated: {} pairs of fixed-rate phases ({} requests/s for {:?}), webhook then floor",
        args.pairs, args.rate, args.duration
    );
    let mut ratios = Vec::with_capacity(args.pairs);
    for pair in 1..=args.pairs {
        // Each as the main phases: a warm-up, then the measured phase.
        let w = warm_up_and_fixed_rate(webhook, objects, args, false).await?;
        let f = warm_up_and_fixed_rate(floor, objects, args, false).await?;
        let (Some(w_cpu), Some(f_cpu)) = (w.cpu_us, f.cpu_us) else {
            return Ok(()); // no CPU figures for a server given with --connect
        };
        ratios.push(w_cpu / f_cpu);
        println!(
            "   pair {pair}: CPU per request {w_cpu:.1} vs {f_cpu:.1} µs ({:.2}x); p50 {:.3} vs {:.3} ms, p99 {:.3} vs {:.3} ms; steal {:.1}% vs {:.1}%",
            w_cpu / f_cpu,
            w.p50_ms,
            f.p50_ms,
            w.p99_ms,
            f.p99_ms,
            w.steal_pct,
            f.steal_pct
        );
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "== webhook vs floor, server CPU per request at {} requests/s, alternated: median {:.2}x (range {:.2}-{:.2}x over {} pairs)",
        args.rate,
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1],
        ratios.len()
    );
    Ok(())
}

/// Records one real answer from the webhook and starts the floor server
/// with the webhook's certificate and key (the webhook stays up, idle): in
/// a process of its own, as the webhook is (and as the issue's nginx was),
/// with its answer and log in `dir`, unless `in_process`.
async fn floor_target(
    webhook: &Target,
    object: &Bytes,
    (cert, key): (&Path, &Path),
    dir: &Path,
    in_process: bool,
) -> Result<Target> {
    let answer = Client::connect(webhook.addr, webhook.tls.clone())
        .await?
        .mutate(object.clone())
        .await?
        .body;
    println!(
        "== floor: a do-nothing HTTPS server that answers every request with a recorded {}-byte webhook answer ({})",
        answer.len(),
        if in_process {
            "in this process"
        } else {
            "its own process"
        }
    );
    let (addr, process) = if in_process {
        (floor::start(cert, key, answer)?, None)
    } else {
        let answer_file = dir.join("floor-answer.json");
        std::fs::write(&answer_file, &answer)?;
        let (addr, process) = floor::spawn(cert, key, &answer_file, dir).await?;
        (addr, Some(process))
    };
    Ok(Target {
        addr,
        tls: webhook.tls.clone(),
        pid: process.as_ref().map(Process::pid),
        metrics: false,
        label: "floor",
        _server: None,
        _floor: process,
    })
}

/// What the fixed-rate phase measured.
struct Measured {
    p50_ms: f64,
    p99_ms: f64,
    steal_pct: f64,
    /// Server CPU per request, µs.
    cpu_us: Option<f64>,
}

/// CPU seconds the server has used: its process, or for a floor server in
/// this process (`--floor-in-process`) the threads named `floor`.
fn server_cpu(target: &Target) -> Result<Option<f64>> {
    if let Some(pid) = target.pid {
        return cpu_seconds(pid).map(Some);
    }
    if target.label != "floor" {
        return Ok(None);
    }
    let mut ticks = 0.0;
    for task in std::fs::read_dir("/proc/self/task")? {
        let Ok(stat) = std::fs::read_to_string(task?.path().join("stat")) else {
            continue;
        };
        if !stat.contains("(floor)") {
            continue;
        }
        let after_name = &stat[stat.rfind(')').context("stat")? + 2..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        ticks += fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    }
    Ok(Some(ticks / 100.0)) // USER_HZ is 100 on Linux
}

/// A short warm-up (1 s at up to 1,000 requests/s; `budget.sh` counts it),
/// then the fixed-rate phase (printed with `report`).
async fn warm_up_and_fixed_rate(
    target: &Target,
    objects: &[Bytes],
    args: &Args,
    report: bool,
) -> Result<Measured> {
    fixed_rate(
        target,
        objects,
        args.rate.min(1000),
        Duration::from_secs(1),
        args.connections,
        false,
    )
    .await?;
    fixed_rate(
        target,
        objects,
        args.rate,
        args.duration,
        args.connections,
        report,
    )
    .await
}

fn client_config(ca_pem: &str) -> Result<Arc<ClientConfig>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    let mut config = ClientConfig::builder_with_provider(straddle_webhook::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Open loop at `rate`: request i is due at start + i/rate and goes out on
/// the next free connection.
async fn fixed_rate(
    target: &Target,
    objects: &[Bytes],
    rate: u32,
    duration: Duration,
    connections: usize,
    report: bool,
) -> Result<Measured> {
    let total = (f64::from(rate) * duration.as_secs_f64()) as usize;
    let before = scrape(target).await?;
    let cpu_before = server_cpu(target)?;
    // The pacer hands request i to connection i mod n at its due time.
    let mut senders = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let mut client = Client::connect(target.addr, target.tls.clone()).await?;
        let objects = objects.to_vec();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Instant)>();
        senders.push(tx);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut lag = Duration::ZERO;
            while let Some((i, due)) = rx.recv().await {
                lag = lag.max(due.elapsed());
                let sent = Instant::now();
                let answer = client.mutate(objects[i % objects.len()].clone()).await?;
                latencies.push((sent, sent.elapsed()));
                anyhow::ensure!(
                    answer.status == 200 && answer.body.windows(6).any(|w| w == b"\"patch"),
                    "bad answer: {}",
                    answer.text()
                );
            }
            Ok::<_, anyhow::Error>((latencies, lag))
        }));
    }
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
    let pacing = tokio::spawn(pace(total, interval, senders));
    let steal_before = steal()?;
    let mut rss_peak = 0;
    let mut timeline: Vec<(Instant, Duration)> = Vec::with_capacity(total);
    let mut lag = Duration::ZERO;
    let sampling = async {
        let Some(pid) = target.pid else {
            return std::future::pending().await;
        };
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if let Ok((rss, _)) = rss(pid) {
                rss_peak = rss_peak.max(rss);
            }
        }
    };
    let collect = async {
        for task in tasks {
            let (l, g) = task.await??;
            timeline.extend(l);
            lag = lag.max(g);
        }
        Ok::<_, anyhow::Error>(())
    };
    let began = Instant::now();
    tokio::select! {
        r = collect => r?,
        _ = sampling => unreachable!(),
    }
    let took = began.elapsed();
    pacing.await??;
    if let Some(path) = std::env::var_os("STRADDLE_LOAD_TIMELINE").filter(|_| report) {
        // One line per request: when it was sent (µs from the first) and
        // its latency (µs), for finding out whether slow answers cluster.
        timeline.sort_by_key(|(sent, _)| *sent);
        let first = timeline.first().map_or(began, |(sent, _)| *sent);
        let lines: String = timeline
            .iter()
            .map(|(sent, took)| {
                format!(
                    "{} {}\n",
                    sent.duration_since(first).as_micros(),
                    took.as_micros()
                )
            })
            .collect();
        std::fs::write(&path, lines).context("writing STRADDLE_LOAD_TIMELINE")?;
    }
    let mut latencies: Vec<Duration> = timeline.iter().map(|(_, took)| *took).collect();
    latencies.sort();
    let cpu = match cpu_before {
        Some(before) => server_cpu(target)?.map(|now| now - before),
        None => None,
    };
    let measured = Measured {
        p50_ms: ms(quantile(&latencies, 0.5)),
        p99_ms: ms(quantile(&latencies, 0.99)),
        steal_pct: (steal()? - steal_before) / took.as_secs_f64() / cores() as f64 * 100.0,
        cpu_us: cpu.map(|cpu| cpu / total as f64 * 1e6),
    };
    if !report {
        return Ok(measured);
    }
    let after = scrape(target).await?;
    println!(
        "== fixed rate, {}: {rate} requests/s for {duration:?} on {connections} keep-alive connections (fixture StatefulSets, each patched)",
        target.label
    );
    println!(
        "   {} requests in {:.2} s = {:.0} requests/s, 0 failures; worst schedule lag {:.2} ms",
        latencies.len(),
        took.as_secs_f64(),
        latencies.len() as f64 / took.as_secs_f64(),
        ms(lag)
    );
    println!(
        "   CPU stolen by the hypervisor during the run: {:.1}%",
        measured.steal_pct
    );
    print_latencies("   client", &mut latencies);
    if let Some(cpu) = cpu {
        println!(
            "   server CPU {:.1} µs per request ({:.0}% of one core); RSS peak during the run {:.1} MiB",
            cpu / total as f64 * 1e6,
            cpu / took.as_secs_f64() * 100.0,
            mib(rss_peak)
        );
    }
    compare_histogram(&before, &after, &latencies);
    Ok(measured)
}

/// Hands request i to connection i mod n at `start + i * interval`.
///
/// A periodic timerfd on the generator's own async thread: tokio's timer
/// ticks in milliseconds (requests would go out in bursts), and a separate
/// sleeping thread would add a thread wake-up per request on the same two
/// CPUs as the server under test.
async fn pace(
    total: usize,
    interval: Duration,
    senders: Vec<tokio::sync::mpsc::UnboundedSender<(usize, Instant)>>,
) -> Result<()> {
    use rustix::time::{
        Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec, timerfd_create,
        timerfd_settime,
    };
    fn timespec(d: Duration) -> Timespec {
        Timespec {
            tv_sec: d.as_secs() as _,
            tv_nsec: d.subsec_nanos() as _,
        }
    }
    let lead = Duration::from_millis(20);
    let timer = timerfd_create(
        TimerfdClockId::Monotonic,
        TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
    )?;
    let start = Instant::now() + lead;
    timerfd_settime(
        &timer,
        TimerfdTimerFlags::empty(),
        &Itimerspec {
            it_interval: timespec(interval),
            it_value: timespec(lead),
        },
    )?;
    // SAFETY: an OwnedFd, moved in: open, and the same fd, until dropped.
    let timer = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(timer, tokio::io::Interest::READABLE)
    }
    .map_err(|e| anyhow::anyhow!("registering the pacing timer: {e}"))?;
    let mut next = 0;
    while next < total {
        let mut ready = timer.readable().await?;
        let mut expirations = [0u8; 8];
        match rustix::io::read(ready.get_inner(), &mut expirations) {
            Ok(8) => {
                // Ticks missed while busy are sent now, late (the lag shows it).
                for _ in 0..u64::from_ne_bytes(expirations) {
                    if next == total {
                        break;
                    }
                    let due = start + interval * next as u32;
                    if senders[next % senders.len()].send((next, due)).is_err() {
                        return Ok(()); // a connection failed; its task reports why
                    }
                    next += 1;
                }
            }
            Ok(n) => anyhow::bail!("timerfd read {n} bytes"),
            Err(rustix::io::Errno::AGAIN) => ready.clear_ready(),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Closed loop: as fast as the server answers.
async fn saturation(
    target: &Target,
    objects: &[Bytes],
    duration: Duration,
    connections: usize,
) -> Result<f64> {
    let cpu_before = server_cpu(target)?;
    let steal_before = steal()?;
    let end = Instant::now() + duration;
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let mut client = Client::connect(target.addr, target.tls.clone()).await?;
        let objects = objects.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = 0;
            while Instant::now() < end {
                let sent = Instant::now();
                let answer = client.mutate(objects[i % objects.len()].clone()).await?;
                latencies.push(sent.elapsed());
                anyhow::ensure!(answer.status == 200, "bad answer: {}", answer.text());
                i += 1;
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let began = Instant::now();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let took = began.elapsed();
    let steal_pct = (steal()? - steal_before) / took.as_secs_f64() / cores() as f64 * 100.0;
    println!(
        "== saturation, {}: closed loop on {connections} keep-alive connections for {duration:?}",
        target.label
    );
    println!(
        "   {} requests in {:.2} s = {:.0} requests/s, 0 failures",
        latencies.len(),
        took.as_secs_f64(),
        latencies.len() as f64 / took.as_secs_f64()
    );
    println!("   CPU stolen by the hypervisor during the run: {steal_pct:.1}%");
    print_latencies("   client", &mut latencies);
    if let (Some(now), Some(before)) = (server_cpu(target)?, cpu_before) {
        let cpu = now - before;
        println!(
            "   server CPU {:.1} µs per request ({:.0}% of the machine's {} cores)",
            cpu / latencies.len() as f64 * 1e6,
            cpu / took.as_secs_f64() * 100.0 / cores() as f64,
            cores()
        );
    }
    Ok(latencies.len() as f64 / took.as_secs_f64())
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn print_latencies(who: &str, latencies: &mut [Duration]) {
    latencies.sort();
    println!(
        "{who} latency: p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
        ms(quantile(latencies, 0.5)),
        ms(quantile(latencies, 0.9)),
        ms(quantile(latencies, 0.99)),
        ms(quantile(latencies, 0.999)),
        ms(*latencies.last().unwrap())
    );
}

type Histogram = Vec<(f64, f64)>;

/// `straddle_webhook_request_duration_seconds` buckets (le, cumulative count);
/// none from the floor server.
async fn scrape(target: &Target) -> Result<Histogram> {
    if !target.metrics {
        return Ok(Vec::new());
    }
    let mut client = Client::connect(target.addr, target.tls.clone()).await?;
    let text = client.get("/metrics").await?.text();
    let mut buckets = Vec::new();
    for line in text.lines() {
        let Some(rest) =
            line.strip_prefix("straddle_webhook_request_duration_seconds_bucket{le=\"")
        else {
            continue;
        };
        let (le, count) = rest.split_once("\"} ").context("bucket line")?;
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse()?
        };
        buckets.push((le, count.split_whitespace().next().unwrap_or("0").parse()?));
    }
    Ok(buckets)
}

/// The server's histogram over the phase versus what the client measured:
/// same count; per bucket bound, the share of requests the server finished
/// within it is at least the share the client saw (the client's time adds
/// TLS, HTTP and the loopback to the server's).
fn compare_histogram(before: &Histogram, after: &Histogram, client: &[Duration]) {
    if after.is_empty() {
        return;
    }
    let count = after.last().map_or(0.0, |b| b.1) - before.last().map_or(0.0, |b| b.1);
    println!(
        "   server /metrics (request_duration_seconds over the same requests): count {count:.0} (client sent {})",
        client.len()
    );
    let quantile_bound = |q: f64| {
        let want = q * count;
        after
            .iter()
            .zip(before)
            .find(|((_, a), (_, b))| a - b >= want)
            .map_or(f64::INFINITY, |((le, _), _)| *le)
    };
    println!(
        "   server p50 <= {} ms, p99 <= {} ms (bucket upper bounds)",
        quantile_bound(0.5) * 1e3,
        quantile_bound(0.99) * 1e3
    );
    let mut agree = true;
    let mut table = String::from("   le(ms) server% client%:");
    for ((le, a), (_, b)) in after.iter().zip(before) {
        if !le.is_finite() || *le > 0.01 {
            continue;
        }
        let server = (a - b) / count;
        let within =
            client.partition_point(|d| d.as_secs_f64() <= *le) as f64 / client.len() as f64;
        table.push_str(&format!(
            " {}:{:.1}/{:.1}",
            le * 1e3,
            server * 100.0,
            within * 100.0
        ));
        agree &= server + 1e-9 >= within;
    }
    println!("{table}");
    println!(
        "   agreement: counts {}, server time <= client time in every bucket: {}",
        if count as usize == client.len() {
            "equal"
        } else {
            "DIFFER"
        },
        if agree { "yes" } else { "NO" }
    );
}

/// Seconds of CPU time stolen by the hypervisor, all CPUs (`/proc/stat`).
fn steal() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let cpu = stat.lines().next().context("/proc/stat")?;
    let steal: f64 = cpu.split_whitespace().nth(8).context("steal")?.parse()?;
    Ok(steal / 100.0)
}

mod floor {
    //! The do-nothing server of `--floor`.

    use std::net::SocketAddr;
    use std::path::Path;
    use std::process::Command;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use anyhow::{Context, Result, bail};
    use http_body_util::{BodyExt, Full};
    use hyper::body::{Bytes, Incoming};
    use hyper_util::rt::TokioIo;
    use straddle_test_support::process::Process;
    use tokio_rustls::TlsAcceptor;

    const LISTENING: &str = "floor listening on ";

    /// Starts this binary as the floor server (`--serve-floor`); its
    /// address comes from its log, `dir/floor.log`.
    pub async fn spawn(
        cert: &Path,
        key: &Path,
        answer: &Path,
        dir: &Path,
    ) -> Result<(SocketAddr, Process)> {
        let mut command = Command::new(std::env::current_exe()?);
        command.arg("--serve-floor").args([cert, key, answer]);
        let log = dir.join("floor.log");
        let mut process = Process::spawn("floor", command, &log)?;
        let started = Instant::now();
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(rest) = text.split(LISTENING).nth(1) {
                let addr = rest.lines().next().unwrap_or_default();
                return Ok((addr.parse().context("the floor's address")?, process));
            }
            if process.exited().is_some() || started.elapsed() > Duration::from_secs(10) {
                bail!("the floor server did not start: {}", process.log_tail(2000));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `--serve-floor CERT KEY ANSWER`: the floor server, until this
    /// process is killed.
    pub fn serve_in_this_process(cert: &Path, key: &Path, answer: &Path) -> Result<()> {
        let addr = start(cert, key, std::fs::read(answer)?.into())?;
        println!("{LISTENING}{addr}");
        loop {
            std::thread::park();
        }
    }

    /// Starts the server on its own thread and runtime (one async worker,
    /// like the webhook's default on two CPUs); it lives until the process
    /// ends.
    pub fn start(cert: &Path, key: &Path, answer: Bytes) -> Result<SocketAddr> {
        let tls = straddle_webhook::tls::server_config(cert, key, None)?;
        let acceptor = TlsAcceptor::from(Arc::new(tls));
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("floor")
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("floor".into())
            .spawn(move || runtime.block_on(serve(listener, acceptor, answer)))
            .context("starting the floor server")?;
        Ok(addr)
    }

    async fn serve(listener: std::net::TcpListener, acceptor: TlsAcceptor, answer: Bytes) {
        let listener = tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = tcp.set_nodelay(true);
            let (acceptor, answer) = (acceptor.clone(), answer.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service =
                    hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                        let answer = answer.clone();
                        async move {
                            request.into_body().collect().await?;
                            let mut response = hyper::Response::new(Full::new(answer));
                            response.headers_mut().insert(
                                hyper::header::CONTENT_TYPE,
                                hyper::header::HeaderValue::from_static("application/json"),
                            );
                            Ok::<_, hyper::Error>(response)
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    }
}
