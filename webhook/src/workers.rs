//! Connection threads: one single-threaded async runtime per thread, each
//! serving whole connections (TLS, HTTP and the reviews that finish within
//! the inline deadline), as Envoy runs its workers.
//!
//! A multi-threaded runtime moves tasks between threads and wakes idle ones
//! to steal work: at moderate load that cost more CPU per request than the
//! review itself. Here a connection is handed over once, when it is
//! accepted, and everything it carries stays on that thread.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The connection threads; [`Workers::stop`] ends them.
pub struct Workers {
    workers: Vec<Worker>,
    next: AtomicUsize,
}

struct Worker {
    handle: Handle,
    stop: oneshot::Sender<()>,
    thread: JoinHandle<()>,
}

impl Workers {
    /// Starts `threads` connection threads; each may run up to
    /// `blocking_threads` reviews that ran out of the inline deadline.
    pub fn start(threads: usize, blocking_threads: usize) -> Result<Workers> {
        let mut workers = Vec::with_capacity(threads);
        for index in 0..threads.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .max_blocking_threads(blocking_threads.max(1))
                .thread_name("straddle-review")
                .build()
                .context("starting a connection thread's runtime")?;
            let handle = runtime.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("straddle-conn-{index}"))
                // Tasks spawned through `handle` run while this blocks; the
                // runtime (and what is still on it) is dropped after `stop`.
                .spawn(move || {
                    runtime.block_on(async {
                        let _ = stopped.await;
                    })
                })
                .context("starting a connection thread")?;
            workers.push(Worker {
                handle,
                stop,
                thread,
            });
        }
        Ok(Workers {
            workers,
            next: AtomicUsize::new(0),
        })
    }

    /// Serves an accepted connection on the next thread, round robin. The
    /// socket is registered with that thread's reactor, so its readiness
    /// events wake that thread only.
    pub fn serve<F, Fut>(&self, tcp: TcpStream, peer: SocketAddr, serve: F)
    where
        F: FnOnce(TcpStream, SocketAddr) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let tcp = match tcp.into_std() {
            Ok(tcp) => tcp,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "handing a connection over failed");
                return;
            }
        };
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.workers.len();
        self.workers[index].handle.spawn(async move {
            match TcpStream::from_std(tcp) {
                Ok(tcp) => serve(tcp, peer).await,
                Err(e) => tracing::debug!(%peer, error = %e, "registering a connection failed"),
            }
        });
    }

    /// Ends the threads, dropping the connections still open on them: call
    /// it after the graceful drain.
    pub async fn stop(self) {
        let threads: Vec<JoinHandle<()>> = self
            .workers
            .into_iter()
            .map(|worker| {
                let _ = worker.stop.send(());
                worker.thread
            })
            .collect();
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
    }
}
