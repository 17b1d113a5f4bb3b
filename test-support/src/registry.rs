//! A real OCI registry for tests: Debian's `docker-registry` (the CNCF
//! distribution registry, `apt-get install docker-registry`), started on a
//! free loopback port with its storage in a temporary directory, stopped on
//! drop. Shared by the tests of straddle-oci, the webhook and the CLI.
//!
//! Without the binary the tests skip (saying so), unless
//! `STRADDLE_REQUIRE_REGISTRY=1` (set by `.ci/run`): then they fail.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::process::Process;
use crate::scratch::Scratch;

pub const BINARY: &str = "docker-registry";

/// TLS and basic auth, both optional.
#[derive(Clone, Default)]
pub struct Options {
    /// (certificate chain PEM, private key PEM)
    pub tls: Option<(String, String)>,
    /// htpasswd file contents (bcrypt hashes).
    pub htpasswd: Option<String>,
}

pub struct RegistryServer {
    pub addr: SocketAddr,
    pub dir: PathBuf,
    options: Options,
    child: Option<Process>,
    /// Holds `dir`; removed after the child is stopped.
    _scratch: Scratch,
}

/// Whether the registry binary is there; if not, either skip (returns
/// false, after saying so) or fail when CI requires it.
pub fn available() -> bool {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(BINARY).is_file()))
        .unwrap_or(false);
    if !found {
        if std::env::var("STRADDLE_REQUIRE_REGISTRY").as_deref() == Ok("1") {
            panic!(
                "{BINARY} is not installed (apt-get install docker-registry) and STRADDLE_REQUIRE_REGISTRY=1"
            );
        }
        eprintln!("SKIPPED: {BINARY} is not installed (apt-get install docker-registry)");
    }
    found
}

impl RegistryServer {
    pub fn start(name: &str, options: Options) -> RegistryServer {
        let scratch = Scratch::new(&format!("registry-{name}")).unwrap();
        let dir = scratch.path().to_path_buf();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = RegistryServer {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
            options,
            child: None,
            _scratch: scratch,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let mut config = format!(
            "version: 0.1\n\
             log:\n  level: error\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: {}\n  secret: straddle-test-secret\n",
            self.dir.join("storage").display(),
            self.addr
        );
        if let Some((cert, key)) = &self.options.tls {
            std::fs::write(self.dir.join("tls.crt"), cert).unwrap();
            std::fs::write(self.dir.join("tls.key"), key).unwrap();
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                self.dir.join("tls.crt").display(),
                self.dir.join("tls.key").display()
            ));
        }
        if let Some(htpasswd) = &self.options.htpasswd {
            std::fs::write(self.dir.join("htpasswd"), htpasswd).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: straddle-test\n    path: {}\n",
                self.dir.join("htpasswd").display()
            ));
        }
        let config_path = self.dir.join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let mut command = Command::new(BINARY);
        command.arg("serve").arg(&config_path);
        let child = Process::spawn(BINARY, command, &self.dir.join("registry.log"))
            .unwrap_or_else(|e| panic!("starting {BINARY}: {e:#}"));
        self.child = Some(child);
        self.wait_listening();
    }

    fn wait_listening(&mut self) {
        let started = Instant::now();
        loop {
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(100)).is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().exited() {
                panic!(
                    "{BINARY} exited ({status}) before listening:\n{}",
                    std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{BINARY} did not listen on {} within 20 s",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `127.0.0.1:PORT`, the registry part of references.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Stops the server (its storage stays).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill();
        }
    }

    /// Starts it again on the same port and storage.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// The file holding blob `digest` in the registry's storage.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Overwrites blob `digest` with different bytes of the same length, as
    /// a disk error or an attacker with storage access would.
    pub fn corrupt_blob(&self, digest: &str) {
        let path = self.blob_file(digest);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        bytes[0] ^= 0x01;
        std::fs::write(&path, bytes).unwrap();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for RegistryServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A plain-HTTP GET on the registry API with `std::net`, the way any OCI
/// tool speaks it: (status, headers lowercased, body).
pub fn http_get(
    addr: SocketAddr,
    path: &str,
    accept: &str,
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP response");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    (status, headers, body)
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&data[..line_end]).unwrap().trim(), 16)
                .unwrap();
        data = &data[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

pub fn exists(path: &Path) -> bool {
    path.exists()
}
