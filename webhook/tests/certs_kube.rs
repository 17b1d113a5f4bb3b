//! Self-managed certificates against an in-process stand-in for the API
//! server, through kube-rs' real client (request building, serialization,
//! error mapping): kube's documented way to test without a cluster is a
//! `tower::Service` in place of the HTTP connection. The stand-in keeps one
//! Secret and one MutatingWebhookConfiguration with the API server's rules
//! that matter here: `resourceVersion` conflicts on update (409), JSON Patch
//! with `test` operations (applied with the json-patch crate; a failed test
//! is 422), and everything else forbidden (403), as the chart's RBAC has it.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::{Value, json};
use straddle_webhook::certs::{self, CertSet, Identity, Renewal};
use straddle_webhook::certs_kube::{CertManager, SelfManagedCerts};

const NS: &str = "straddle-system";
const SECRET: &str = "straddle-webhook-certs";
const CONFIG: &str = "straddle-webhook";
const DAY: Duration = Duration::from_secs(24 * 3600);

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000)
}

#[derive(Default)]
struct State {
    secret: Option<Value>,
    config: Value,
    resource_version: u64,
    /// `METHOD path` of every request, in order.
    log: Vec<String>,
}

#[derive(Clone)]
struct FakeApi(Arc<Mutex<State>>);

impl FakeApi {
    /// The chart's objects: an empty Secret and a configuration with one
    /// webhook and no caBundle.
    fn new() -> FakeApi {
        let state = State {
            secret: Some(json!({
                "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": SECRET, "namespace": NS, "resourceVersion": "1"}
            })),
            config: json!({
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "MutatingWebhookConfiguration",
                "metadata": {"name": CONFIG, "resourceVersion": "1"},
                "webhooks": [{
                    "name": "mutate.straddle.dev",
                    "admissionReviewVersions": ["v1"],
                    "sideEffects": "None",
                    "clientConfig": {"service": {"name": "straddle-webhook", "namespace": NS, "path": "/mutate", "port": 443}}
                }]
            }),
            resource_version: 1,
            log: Vec::new(),
        };
        FakeApi(Arc::new(Mutex::new(state)))
    }

    fn client(&self) -> kube::Client {
        let api = self.clone();
        let service = tower::service_fn(move |request: Request<kube::client::Body>| {
            let api = api.clone();
            async move { Ok::<_, Infallible>(api.handle(request).await) }
        });
        kube::Client::new(service, NS)
    }

    async fn handle(&self, request: Request<kube::client::Body>) -> Response<Full<Bytes>> {
        let (parts, body) = request.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let path = parts.uri.path().to_owned();
        let secret_path = format!("/api/v1/namespaces/{NS}/secrets/{SECRET}");
        let config_path =
            format!("/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{CONFIG}");
        let mut state = self.0.lock().unwrap();
        state.log.push(format!("{} {path}", parts.method));
        let body: Value = if body.is_empty() {
            Value::Null
        } else {
            match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(e) => return status(StatusCode::BAD_REQUEST, &e.to_string()),
            }
        };
        match (&parts.method, path.as_str()) {
            (&Method::GET, p) if p == secret_path => match &state.secret {
                Some(secret) => ok(secret),
                None => status(
                    StatusCode::NOT_FOUND,
                    "secrets \"straddle-webhook-certs\" not found",
                ),
            },
            (&Method::PUT, p) if p == secret_path => {
                let Some(current) = &state.secret else {
                    return status(StatusCode::NOT_FOUND, "not found");
                };
                if body["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"] {
                    return status(StatusCode::CONFLICT, "the object has been modified");
                }
                state.resource_version += 1;
                let mut stored = body;
                stored["metadata"]["resourceVersion"] = json!(state.resource_version.to_string());
                state.secret = Some(stored.clone());
                ok(&stored)
            }
            (&Method::GET, p) if p == config_path => ok(&state.config),
            (&Method::PATCH, p) if p == config_path => {
                let content_type = parts
                    .headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok());
                if content_type != Some("application/json-patch+json") {
                    return status(StatusCode::UNSUPPORTED_MEDIA_TYPE, "expected a JSON Patch");
                }
                let patch: json_patch::Patch = match serde_json::from_value(body) {
                    Ok(p) => p,
                    Err(e) => return status(StatusCode::BAD_REQUEST, &e.to_string()),
                };
                let mut config = state.config.clone();
                if let Err(e) = json_patch::patch(&mut config, &patch) {
                    return status(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string());
                }
                state.resource_version += 1;
                config["metadata"]["resourceVersion"] = json!(state.resource_version.to_string());
                state.config = config.clone();
                ok(&config)
            }
            _ => status(
                StatusCode::FORBIDDEN,
                &format!("{} {path} is not allowed", parts.method),
            ),
        }
    }

    fn log(&self) -> Vec<String> {
        std::mem::take(&mut self.0.lock().unwrap().log)
    }

    fn secret_set(&self) -> CertSet {
        let state = self.0.lock().unwrap();
        let data = state.secret.as_ref().unwrap()["data"].clone();
        let decoded: BTreeMap<String, Vec<u8>> = data
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(v.as_str().unwrap())
                    .unwrap();
                (k.clone(), bytes)
            })
            .collect();
        certs::decode(|k| decoded.get(k).map(Vec::as_slice))
            .unwrap()
            .unwrap()
    }

    fn ca_bundle(&self) -> Option<String> {
        let state = self.0.lock().unwrap();
        let encoded = state.config["webhooks"][0]["clientConfig"]["caBundle"].as_str()?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        Some(String::from_utf8(bytes).unwrap())
    }
}

fn ok(value: &Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(value.to_string())))
        .unwrap()
}

fn status(code: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": message, "reason": code.canonical_reason(), "code": code.as_u16()
    });
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// One webhook replica: its own directory for the certificate files.
struct Replica {
    manager: CertManager,
    dir: PathBuf,
}

impl Replica {
    fn new(api: &FakeApi, name: &str) -> Replica {
        let dir = std::env::temp_dir().join(format!(
            "straddle-certs-kube-{}-{name}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let flags = SelfManagedCerts {
            self_managed_certs: true,
            cert_secret: Some(SECRET.into()),
            webhook_config: Some(CONFIG.into()),
            service_name: Some("straddle-webhook".into()),
            namespace: None, // the client's default namespace
            ca_validity: 1825 * DAY,
            cert_validity: 90 * DAY,
            cert_check_interval: Duration::from_secs(60),
        };
        let manager = CertManager::new(
            api.client(),
            &flags,
            &dir.join("tls.crt"),
            &dir.join("tls.key"),
        )
        .unwrap();
        Replica { manager, dir }
    }

    /// The set this replica serves (its files) with the bundle the API
    /// server trusts.
    fn served(&self, api: &FakeApi) -> CertSet {
        CertSet {
            ca_bundle_pem: api.ca_bundle().expect("caBundle set"),
            ca_key_pem: String::new(),
            tls_cert_pem: std::fs::read_to_string(self.dir.join("tls.crt")).unwrap(),
            tls_key_pem: std::fs::read_to_string(self.dir.join("tls.key")).unwrap(),
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn identity() -> Identity {
    Identity {
        service: "straddle-webhook".into(),
        namespace: NS.into(),
    }
}

#[tokio::test]
async fn first_start_fills_the_secret_and_the_ca_bundle_then_changes_nothing() {
    let api = FakeApi::new();
    let replica = Replica::new(&api, "a");
    let done = replica.manager.reconcile(t0()).await.unwrap();
    assert_eq!(done.renewal, Some(Renewal::Created));
    assert!(done.ca_bundle_patched && done.files_written);
    let stored = api.secret_set();
    assert_eq!(
        api.ca_bundle().as_deref(),
        Some(stored.ca_bundle_pem.as_str())
    );
    // What the API server trusts verifies what the replica serves.
    certs::verify_serving(&replica.served(&api), &identity(), t0()).unwrap();
    assert_eq!(
        api.log(),
        [
            format!("GET /api/v1/namespaces/{NS}/secrets/{SECRET}"),
            format!("PUT /api/v1/namespaces/{NS}/secrets/{SECRET}"),
            format!(
                "GET /apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{CONFIG}"
            ),
            format!(
                "PATCH /apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{CONFIG}"
            ),
        ]
    );
    let mode = |name: &str| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(replica.dir.join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("tls.key"), 0o600);

    // Again, an hour later: reads only.
    let again = replica
        .manager
        .reconcile(t0() + Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(again.renewal, None);
    assert!(!again.ca_bundle_patched && !again.files_written);
    assert!(api.log().iter().all(|r| r.starts_with("GET ")));
    assert_eq!(api.secret_set(), stored);
}

#[tokio::test]
async fn replicas_starting_together_agree_on_one_ca() {
    let api = FakeApi::new();
    let (a, b) = (Replica::new(&api, "a"), Replica::new(&api, "b"));
    let (ra, rb) = tokio::join!(a.manager.reconcile(t0()), b.manager.reconcile(t0()));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    // Exactly one created the certificates; the other lost the update race
    // (409), reread and took them.
    let created = [&ra, &rb].iter().filter(|r| r.renewal.is_some()).count();
    assert_eq!(created, 1, "{ra:?} {rb:?}");
    let log = api.log();
    assert_eq!(
        log.iter().filter(|r| r.starts_with("PUT ")).count(),
        2,
        "{log:?}"
    );
    assert_eq!(a.served(&api), b.served(&api));
    certs::verify_serving(&a.served(&api), &identity(), t0()).unwrap();
}

#[tokio::test]
async fn renewal_and_ca_rotation_at_simulated_times() {
    let api = FakeApi::new();
    let (a, b) = (Replica::new(&api, "a"), Replica::new(&api, "b"));
    a.manager.reconcile(t0()).await.unwrap();
    b.manager.reconcile(t0()).await.unwrap();
    let first = api.secret_set();
    api.log();

    // Day 61 of 90: replica a renews the serving certificate; the CA and
    // the caBundle stay. Replica b picks it up on its next check.
    let day61 = t0() + 61 * DAY;
    let renewed = a.manager.reconcile(day61).await.unwrap();
    assert!(
        matches!(renewed.renewal, Some(Renewal::ServingRenewed(_))),
        "{renewed:?}"
    );
    assert!(!renewed.ca_bundle_patched && renewed.files_written);
    let second = api.secret_set();
    assert_eq!(second.ca_bundle_pem, first.ca_bundle_pem);
    assert_ne!(second.tls_cert_pem, first.tls_cert_pem);
    // b, not yet rechecked, still serves the old certificate: still trusted.
    certs::verify_serving(&b.served(&api), &identity(), day61).unwrap();
    let picked = b.manager.reconcile(day61).await.unwrap();
    assert_eq!(picked.renewal, None);
    assert!(picked.files_written);
    assert_eq!(a.served(&api), b.served(&api));

    // Past two thirds of the CA's five years: a new CA, trusted next to the
    // old one before anything it signed is served.
    let year4 = t0() + 1300 * DAY;
    let rotated = a.manager.reconcile(year4).await.unwrap();
    assert_eq!(rotated.renewal, Some(Renewal::CaRotated));
    assert!(rotated.ca_bundle_patched);
    let bundle = api.ca_bundle().unwrap();
    assert_eq!(bundle.matches("BEGIN CERTIFICATE").count(), 2);
    assert!(bundle.ends_with(&first.ca_bundle_pem));
    certs::verify_serving(&a.served(&api), &identity(), year4).unwrap();
    b.manager.reconcile(year4).await.unwrap();
    assert_eq!(a.served(&api), b.served(&api));
    let log = api.log();
    let patches = log.iter().filter(|r| r.starts_with("PATCH ")).count();
    assert_eq!(
        patches, 1,
        "only the rotation patches the caBundle: {log:?}"
    );
}

#[tokio::test]
async fn missing_secret_and_forbidden_calls_are_explained() {
    let api = FakeApi::new();
    api.0.lock().unwrap().secret = None;
    let replica = Replica::new(&api, "a");
    let err = replica.manager.reconcile(t0()).await.unwrap_err();
    let message = format!("{err:#}");
    assert!(
        message.contains(&format!("Secret {NS}/{SECRET}"))
            && message.contains("kubectl -n straddle-system create secret generic"),
        "{message}"
    );

    // A configuration the RBAC does not cover (another name): forbidden.
    let api = FakeApi::new();
    let mut flags_replica = Replica::new(&api, "b");
    let flags = SelfManagedCerts {
        self_managed_certs: true,
        cert_secret: Some(SECRET.into()),
        webhook_config: Some("someone-elses".into()),
        service_name: Some("straddle-webhook".into()),
        namespace: Some(NS.into()),
        ..Default::default()
    };
    flags_replica.manager = CertManager::new(
        api.client(),
        &SelfManagedCerts {
            ca_validity: 1825 * DAY,
            cert_validity: 90 * DAY,
            ..flags
        },
        &flags_replica.dir.join("tls.crt"),
        &flags_replica.dir.join("tls.key"),
    )
    .unwrap();
    let err = flags_replica.manager.reconcile(t0()).await.unwrap_err();
    let message = format!("{err:#}");
    assert!(
        message.contains("MutatingWebhookConfiguration someone-elses"),
        "{message}"
    );
    assert!(message.contains("not allowed"), "{message}");
    // Nothing is served from a CA the API server was not told about.
    assert!(!flags_replica.dir.join("tls.crt").exists());
}
