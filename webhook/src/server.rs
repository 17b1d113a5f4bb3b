//! The HTTPS server: listeners, TLS, routes, request handling, graceful
//! shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use axum::Router;
use axum::body::Body;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, error, info, warn};

use crate::admission::{self, Reply};
use crate::app::App;
use crate::config::Config;
use crate::metrics;
use crate::policy::Loader;
use crate::reload::{self, TlsStamps};
use crate::source::{self, PolicySource};
use crate::tls;
use crate::workers::Workers;
use straddle_policy_host::Policy;

/// A server with its policy loaded and its sockets bound, not yet serving.
pub struct Server {
    app: Arc<App>,
    config: Config,
    loader: Arc<Loader>,
    tls: Arc<ArcSwap<ServerConfig>>,
    listener: TcpListener,
    probe_listener: Option<TcpListener>,
    tls_stamps: TlsStamps,
    source: PolicySource,
    /// The key of the module serving (see `source::watch`).
    current: String,
}

impl Server {
    /// Loads and validates the policy and the TLS files, then binds. Fails
    /// (and the process should exit) if any of them is unusable, including
    /// a policy that does not list `--cluster`.
    pub async fn bind(config: Config) -> Result<Server> {
        let loader = Arc::new(Loader::new(
            config.runtime_config(),
            &config.cluster,
            config.cache_dir.clone(),
        )?);
        let tls_stamps = TlsStamps::read(&config);
        let mut source = PolicySource::from_config(&config)?;
        let initial = source.initial().await?;
        let loaded = source::load(&loader, initial.module)
            .await
            .with_context(|| format!("loading the policy {}", config.policy.display()))?;
        let tls_config = tls::server_config(
            &config.tls_cert,
            &config.tls_key,
            config.client_ca.as_deref(),
        )?;

        let app = Arc::new(App::new(&config));
        let policy = &loaded.policy;
        info!(
            digest = policy.digest(),
            stretch = %policy.bundle().name,
            spec_digest = %policy.bundle().spec_digest,
            cluster = %config.cluster,
            load_ms = loaded.load_time.as_secs_f64() * 1e3,
            "policy loaded"
        );
        app.active.swap(loaded, &app.metrics);

        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listening on {}", config.listen))?;
        let probe_listener = match config.probe_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("listening on {addr}"))?,
            ),
            None => None,
        };
        Ok(Server {
            app,
            config,
            loader,
            tls: Arc::new(ArcSwap::from_pointee(tls_config)),
            listener,
            probe_listener,
            tls_stamps,
            source,
            current: initial.key,
        })
    }

    /// The HTTPS address (useful with `--listen 127.0.0.1:0`).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener")
    }

    /// The plain-HTTP probe address, if `--probe-listen` was given.
    pub fn probe_addr(&self) -> Option<SocketAddr> {
        self.probe_listener
            .as_ref()
            .map(|l| l.local_addr().expect("a bound listener"))
    }

    pub fn app(&self) -> Arc<App> {
        self.app.clone()
    }

    /// Serves until `shutdown` completes, then drains: reports not ready,
    /// waits `--shutdown-delay`, stops accepting, lets in-flight requests
    /// finish (up to `--shutdown-timeout`) and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let Server {
            app,
            config,
            loader,
            tls,
            listener,
            probe_listener,
            tls_stamps,
            source,
            current,
        } = self;
        let graceful = Arc::new(GracefulShutdown::new());
        let (stop, stopped) = watch::channel(false);

        let watcher = source.interval(&config).map(|interval| {
            tokio::spawn(source::watch(
                source,
                current,
                interval,
                loader,
                app.clone(),
                stopped.clone(),
            ))
        });
        let reloader = tokio::spawn(reload::run(
            config.clone(),
            tls.clone(),
            tls_stamps,
            app.clone(),
            stopped.clone(),
        ));
        let main_router = router(app.clone(), true);
        let workers = Arc::new(Workers::start(
            config.connection_threads(),
            config.max_concurrent_reviews as usize + 4,
        )?);
        let accept = tokio::spawn(accept_loop(
            listener,
            Some(workers.clone()),
            Some(tls),
            main_router,
            graceful.clone(),
            app.clone(),
            config.request_timeout,
            stopped.clone(),
        ));
        let probe = probe_listener.map(|listener| {
            tokio::spawn(accept_loop(
                listener,
                None,
                None,
                router(app.clone(), false),
                graceful.clone(),
                app.clone(),
                config.request_timeout,
                stopped.clone(),
            ))
        });

        shutdown.await;
        info!(
            delay_ms = config.shutdown_delay.as_millis() as u64,
            "shutting down: not ready any more"
        );
        app.shut_down();
        tokio::time::sleep(config.shutdown_delay).await;
        let _ = stop.send(true);
        let _ = accept.await;
        if let Some(probe) = probe {
            let _ = probe.await;
        }
        // The accept loops have returned their handles: this is the last one.
        let graceful = Arc::try_unwrap(graceful).unwrap_or_else(|_| unreachable!());
        info!(
            connections = graceful.count(),
            "listener closed; draining in-flight requests"
        );
        let drained = tokio::time::timeout(config.shutdown_timeout, graceful.shutdown())
            .await
            .is_ok();
        // The accept loop has returned its handle: this is the last one.
        if let Ok(workers) = Arc::try_unwrap(workers) {
            workers.stop().await;
        }
        let _ = reloader.await;
        if let Some(watcher) = watcher {
            let _ = watcher.await;
        }
        if drained {
            info!("drained; bye");
        } else {
            warn!(
                timeout_ms = config.shutdown_timeout.as_millis() as u64,
                "some connections were still open at the shutdown timeout"
            );
        }
        Ok(())
    }
}

/// The routes. The probe listener (`webhook == false`) has no `/mutate`.
fn router(app: Arc<App>, webhook: bool) -> Router {
    let mut router = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text));
    if webhook {
        router = router.route("/mutate", post(mutate));
    }
    router
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                "not found: the webhook serves POST /mutate, GET /healthz, /readyz, /metrics\n",
            )
        })
        .with_state(app)
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    match app.active.get() {
        Some(policy) if app.ready() => (
            StatusCode::OK,
            format!(
                "ready: stretch {} policy {} cluster {}\n",
                policy.bundle().name,
                policy.digest(),
                app.cluster
            ),
        )
            .into_response(),
        Some(_) => (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "no valid policy loaded\n").into_response(),
    }
}

async fn metrics_text(State(app): State<Arc<App>>) -> Response {
    if let Some(policy) = app.active.get() {
        let started = i64::try_from(policy.instances_started()).unwrap_or(i64::MAX);
        app.metrics.policy_instances_started.set(started);
    }
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        app.metrics.encode(),
    )
        .into_response()
}

/// `POST /mutate`.
async fn mutate(State(app): State<Arc<App>>, request: Request) -> Response {
    let started = Instant::now();
    app.metrics.in_flight.inc();
    let response = review(&app, request).await;
    app.metrics.in_flight.dec();
    app.metrics
        .request_duration
        .observe(started.elapsed().as_secs_f64());
    response
}

async fn review(app: &Arc<App>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let json = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return refuse(
            app,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content_type",
            "send an AdmissionReview as JSON with Content-Type: application/json".into(),
        );
    }
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > drain_limit(app.max_body_bytes) as u64) {
        // Not worth reading: answer now (the connection is closed after).
        return too_large(app);
    }
    let bytes = match tokio::time::timeout(app.request_timeout, read_body(body, app.max_body_bytes))
        .await
    {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(BodyError::TooLarge)) => return too_large(app),
        Ok(Err(BodyError::Broken(e))) => {
            return refuse(
                app,
                StatusCode::BAD_REQUEST,
                "body",
                format!("reading the request body failed: {e}"),
            );
        }
        Err(_) => {
            return refuse(
                app,
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!(
                    "the request body did not arrive within {:?}",
                    app.request_timeout
                ),
            );
        }
    };
    let Some(policy) = app.active.get() else {
        return refuse(
            app,
            StatusCode::SERVICE_UNAVAILABLE,
            "no_policy",
            "no valid policy is loaded".into(),
        );
    };
    let permit = match tokio::time::timeout(app.queue_timeout, app.slots.clone().acquire_owned())
        .await
    {
        Ok(Ok(permit)) => permit,
        _ => {
            app.metrics
                .policy_errors
                .get_or_create(&metrics::CauseLabels { cause: "busy" })
                .inc();
            return refuse(
                app,
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                format!(
                    "no review slot became free within {:?}; the API server applies the webhook's failurePolicy",
                    app.queue_timeout
                ),
            );
        }
    };
    let started = Instant::now();
    // A review takes tens of microseconds: run it right here, with a short
    // deadline, rather than pay two cross-thread wake-ups for a blocking
    // thread. A module that does not finish in time (or did not recently)
    // runs on a blocking thread with the full deadline, so it cannot hold
    // this thread and the connections it serves for longer than that.
    let mut paused = None;
    let inline = app.inline_deadline().map(|deadline| {
        let reply = admission::handle(&context(app, &policy, Some(deadline)), &bytes);
        if matches!(reply, Reply::Slow) {
            app.metrics.slow_reviews.inc();
            paused = Some((app.pause_inline_reviews(), deadline));
        }
        reply
    });
    let decided = match inline {
        Some(reply) if !matches!(reply, Reply::Slow) => Ok(reply),
        _ => {
            let worker = app.clone();
            tokio::task::spawn_blocking(move || {
                let _permit = permit;
                let started = Instant::now();
                let reply = admission::handle(&context(&worker, &policy, None), &bytes);
                // The same review gave a verdict in under half the inline
                // deadline: the attempt ran out because the thread was
                // descheduled, so reviews need not leave the connection
                // threads (on a busy machine that happened every few
                // seconds, and each pause cost two hand-offs per request).
                if let Some((pause, deadline)) = paused
                    && started.elapsed() < deadline / 2
                    && matches!(&reply, Reply::Review { summary, .. } if summary.verdict != "error")
                {
                    worker.resume_inline_reviews(pause);
                }
                reply
            })
            .await
        }
    };
    if let Ok(Reply::Review { summary, .. }) = &decided {
        log_review(summary, started.elapsed());
    }
    match decided {
        Ok(Reply::Review { body, .. }) => {
            let mut response = Response::new(Body::from(body));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        Ok(Reply::Refused {
            status,
            reason,
            message,
        }) => refuse(
            app,
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            reason,
            message,
        ),
        // `Slow` only comes from an inline attempt, never from this one.
        Ok(Reply::Slow) | Err(_) => {
            error!(error = ?decided.as_ref().err(), "the review task failed");
            refuse(
                app,
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error while reviewing the request".into(),
            )
        }
    }
}

fn context<'a>(
    app: &'a App,
    policy: &'a Policy,
    inline_deadline: Option<Duration>,
) -> admission::Context<'a> {
    admission::Context {
        cluster: &app.cluster,
        policy,
        on_policy_error: app.on_policy_error,
        metrics: &app.metrics,
        inline_deadline,
    }
}

fn log_review(s: &admission::Summary, took: Duration) {
    let micros = took.as_micros() as u64;
    match s.verdict {
        "error" => warn!(
            uid = %s.uid, kind = %s.kind, namespace = %s.namespace, name = %s.name,
            operation = s.operation, dry_run = s.dry_run, verdict = s.verdict, micros,
            message = s.message.as_deref().unwrap_or(""), "policy error"
        ),
        "deny" => info!(
            uid = %s.uid, kind = %s.kind, namespace = %s.namespace, name = %s.name,
            operation = s.operation, dry_run = s.dry_run, verdict = s.verdict, micros,
            message = s.message.as_deref().unwrap_or(""), "denied"
        ),
        _ => debug!(
            uid = %s.uid, kind = %s.kind, namespace = %s.namespace, name = %s.name,
            operation = s.operation, dry_run = s.dry_run, verdict = s.verdict, micros,
            "reviewed"
        ),
    }
}

enum BodyError {
    TooLarge,
    Broken(axum::Error),
}

/// How much of an oversized body is read and thrown away before answering
/// 413, so that the client, still sending, reliably gets the answer (closing
/// with unread data would reset the connection under it).
fn drain_limit(max_body_bytes: usize) -> usize {
    max_body_bytes.saturating_mul(4)
}

/// Reads a body of at most `max` bytes. A larger one is drained (up to
/// [`drain_limit`]) and refused.
async fn read_body(mut body: Body, max: usize) -> Result<Bytes, BodyError> {
    let mut first: Option<Bytes> = None;
    let mut rest: Vec<u8> = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(BodyError::Broken)?.into_data() else {
            continue; // trailers
        };
        seen = seen.saturating_add(data.len());
        if seen > max {
            if seen > drain_limit(max) {
                return Err(BodyError::TooLarge);
            }
            continue;
        }
        match &first {
            None if rest.is_empty() => first = Some(data),
            _ => {
                if let Some(first) = first.take() {
                    rest.reserve(first.len() + data.len());
                    rest.extend_from_slice(&first);
                }
                rest.extend_from_slice(&data);
            }
        }
    }
    if seen > max {
        return Err(BodyError::TooLarge);
    }
    Ok(first.unwrap_or_else(|| Bytes::from(rest)))
}

fn too_large(app: &App) -> Response {
    refuse(
        app,
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!(
            "the request body is larger than --max-body-bytes ({} bytes)",
            app.max_body_bytes
        ),
    )
}

fn refuse(app: &App, status: StatusCode, reason: &'static str, message: String) -> Response {
    app.metrics.rejected(reason);
    debug!(status = status.as_u16(), reason, %message, "request refused");
    (status, message + "\n").into_response()
}

/// Accepts connections until `stopped` flips, serving each on its own task:
/// on one of `workers`' threads, or on this runtime. With `tls`, the current
/// TLS configuration is taken per connection, so a reloaded certificate
/// applies to the next handshake.
#[allow(clippy::too_many_arguments)]
async fn accept_loop(
    listener: TcpListener,
    workers: Option<Arc<Workers>>,
    tls: Option<Arc<ArcSwap<ServerConfig>>>,
    router: Router,
    graceful: Arc<GracefulShutdown>,
    app: Arc<App>,
    handshake_timeout: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped.wait_for(|stop| *stop) => break,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = tls.as_ref().map(|tls| TlsAcceptor::from(tls.load_full()));
        let service = router.clone();
        let watcher = graceful.watcher();
        let app = app.clone();
        let connection = move |tcp, peer| {
            connection(
                tcp,
                peer,
                acceptor,
                service,
                watcher,
                app,
                handshake_timeout,
            )
        };
        match &workers {
            Some(workers) => workers.serve(tcp, peer, connection),
            None => {
                tokio::spawn(connection(tcp, peer));
            }
        }
    }
}

/// One accepted connection: the TLS handshake (with `acceptor`), then HTTP.
async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: Option<TlsAcceptor>,
    service: Router,
    watcher: Watcher,
    app: Arc<App>,
    handshake_timeout: Duration,
) {
    match acceptor {
        Some(acceptor) => {
            let stream = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    app.metrics.tls_handshake_failures.inc();
                    debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    app.metrics.tls_handshake_failures.inc();
                    debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            serve(stream, service, watcher, handshake_timeout).await;
        }
        None => serve(tcp, service, watcher, handshake_timeout).await,
    }
}

async fn serve<IO>(io: IO, router: Router, watcher: Watcher, header_timeout: Duration)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let service = TowerToHyperService::new(router);
    let connection = builder.serve_connection(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(connection.into_owned()).await {
        debug!(error = %e, "connection ended with an error");
    }
}
