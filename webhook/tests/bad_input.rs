//! The bad-input corpus: every case gets a 4xx or a denial with a clear
//! message, promptly; never a panic, a 5xx or a hung connection. The server
//! is healthy and still reviews correctly afterwards.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What a case must get back.
enum Expect {
    /// An HTTP status (not 200) whose text body contains this.
    Status(u16, &'static str),
    /// HTTP 200, a denial whose message contains this.
    Denied(&'static str),
    /// HTTP 200, allowed, no patch.
    Allowed,
    /// HTTP 200, allowed with a patch.
    Patched,
    /// HTTP 200 with some verdict (allowed or denied), or a 4xx naming this.
    Verdict(&'static str),
}

struct Case {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    expect: Expect,
}

fn post(name: &'static str, body: Vec<u8>, expect: Expect) -> Case {
    Case {
        name,
        method: "POST",
        path: "/mutate",
        content_type: Some("application/json"),
        body,
        expect,
    }
}

fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

fn sts() -> Value {
    fixture_json(
        "cp-zk-kafka-only",
        "statefulset-confluent-cp-zookeeper.json",
    )
}

fn good() -> Value {
    review_for(
        &sts(),
        "confluent",
        "CREATE",
        "9a3c6f7e-0000-4000-8000-000000000001",
    )
}

fn with(mut review: Value, pointer: &str, value: Value) -> Value {
    *review
        .pointer_mut(pointer)
        .unwrap_or_else(|| panic!("{pointer}")) = value;
    review
}

fn without(mut review: Value, parent: &str, key: &str) -> Value {
    review
        .pointer_mut(parent)
        .unwrap()
        .as_object_mut()
        .unwrap()
        .remove(key);
    review
}

/// `good()` serialized, with `value` spliced in raw at the `"name"` of the
/// request (for bytes serde_json would never write).
fn raw_name(value: &[u8]) -> Vec<u8> {
    let text = String::from_utf8(bytes(&good())).unwrap();
    let marker = r#""name":"confluent-cp-zookeeper","namespace""#;
    let at = text.find(marker).expect("the request name");
    let mut out = text.as_bytes()[..at].to_vec();
    out.extend_from_slice(b"\"name\":\"");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\",\"namespace\"");
    out.extend_from_slice(&text.as_bytes()[at + marker.len()..]);
    out
}

fn corpus() -> Vec<Case> {
    let big_annotation = "x".repeat(10 << 20);
    let mut ten_mb = sts();
    ten_mb["metadata"]["annotations"] = json!({ "huge": big_annotation });
    let mut five_mb = sts();
    five_mb["metadata"]["annotations"] = json!({ "big": "y".repeat(5 << 20) });
    let nested = {
        // A valid review whose object holds 100,000 nested arrays.
        let marker = "\"deep-marker\"";
        let mut deep = sts();
        deep["data"] = json!("deep-marker");
        let text =
            String::from_utf8(bytes(&review_for(&deep, "confluent", "CREATE", "deep"))).unwrap();
        let depth = 100_000;
        let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        text.replacen(marker, &arrays, 1).into_bytes()
    };
    let good_text = bytes(&good());
    let mut bom = b"\xef\xbb\xbf".to_vec();
    bom.extend_from_slice(&good_text);
    let mut trailing = good_text.clone();
    trailing.extend_from_slice(b"garbage");
    let duplicate_uid = String::from_utf8(good_text.clone())
        .unwrap()
        .replacen(r#""uid":"#, r#""uid":"first","uid":"#, 1)
        .into_bytes();
    let huge_number = String::from_utf8(good_text.clone())
        .unwrap()
        .replacen(r#""replicas":3"#, r#""replicas":1e400"#, 1)
        .into_bytes();
    assert_ne!(huge_number, good_text, "the fixture has replicas: 3");
    // serde_json's raw values skip over strings and numbers without
    // decoding them: the policy's reader must refuse these even in a field
    // it does not read.
    let in_object = |member: &str| {
        let text = String::from_utf8(good_text.clone()).unwrap();
        let marker = r#""serviceName":"#;
        assert!(text.contains(marker), "the fixture has a serviceName");
        text.replacen(marker, &format!("{member},{marker}"), 1)
            .into_bytes()
    };

    let mut sts_without_containers = sts();
    sts_without_containers["spec"]["template"]["spec"]["containers"] = json!([]);

    vec![
        // Routing and framing.
        Case {
            name: "GET /mutate",
            method: "GET",
            path: "/mutate",
            content_type: None,
            body: vec![],
            expect: Expect::Status(405, ""),
        },
        Case {
            name: "PUT /mutate",
            method: "PUT",
            path: "/mutate",
            content_type: Some("application/json"),
            body: good_text.clone(),
            expect: Expect::Status(405, ""),
        },
        Case {
            name: "unknown path",
            method: "POST",
            path: "/validate",
            content_type: Some("application/json"),
            body: good_text.clone(),
            expect: Expect::Status(404, "POST /mutate"),
        },
        Case {
            name: "no content type",
            method: "POST",
            path: "/mutate",
            content_type: None,
            body: good_text.clone(),
            expect: Expect::Status(415, "Content-Type: application/json"),
        },
        Case {
            name: "text/plain",
            method: "POST",
            path: "/mutate",
            content_type: Some("text/plain"),
            body: good_text.clone(),
            expect: Expect::Status(415, "application/json"),
        },
        Case {
            name: "json with charset (control)",
            method: "POST",
            path: "/mutate",
            content_type: Some("application/json; charset=utf-8"),
            body: good_text.clone(),
            expect: Expect::Patched,
        },
        // Not JSON, or not an AdmissionReview.
        post(
            "empty body",
            vec![],
            Expect::Status(400, "EOF while parsing"),
        ),
        post(
            "not json",
            b"hello, webhook".to_vec(),
            Expect::Status(400, "expected value"),
        ),
        post(
            "json array",
            b"[]".to_vec(),
            Expect::Status(400, "not an admission.k8s.io/v1 AdmissionReview"),
        ),
        post(
            "json null",
            b"null".to_vec(),
            Expect::Status(400, "not an admission.k8s.io/v1 AdmissionReview"),
        ),
        post(
            "empty object",
            b"{}".to_vec(),
            Expect::Status(400, "got apiVersion \"\" kind \"\""),
        ),
        post(
            "truncated",
            good_text[..good_text.len() / 2].to_vec(),
            Expect::Status(400, "EOF while parsing"),
        ),
        post(
            "trailing garbage",
            trailing,
            Expect::Status(400, "trailing characters"),
        ),
        post(
            "UTF-8 byte order mark",
            bom,
            Expect::Status(400, "expected value"),
        ),
        post(
            "apiVersion v1beta1",
            bytes(&with(
                good(),
                "/apiVersion",
                json!("admission.k8s.io/v1beta1"),
            )),
            Expect::Status(400, "admissionReviewVersions"),
        ),
        post(
            "envelope kind Pod",
            bytes(&with(good(), "/kind", json!("Pod"))),
            Expect::Status(400, "kind \"Pod\""),
        ),
        post(
            "no request",
            bytes(&without(good(), "", "request")),
            Expect::Status(400, "has no request"),
        ),
        post(
            "request null",
            bytes(&with(good(), "/request", Value::Null)),
            Expect::Status(400, "has no request"),
        ),
        post(
            "no uid",
            bytes(&without(good(), "/request", "uid")),
            Expect::Status(400, "missing field `uid`"),
        ),
        post(
            "empty uid",
            bytes(&with(good(), "/request/uid", json!(""))),
            Expect::Status(400, "no uid"),
        ),
        post(
            "uid is a number",
            bytes(&with(good(), "/request/uid", json!(42))),
            Expect::Status(400, "invalid type"),
        ),
        // Readable uid, unreadable request: a denial the user sees.
        post(
            "no request.kind",
            bytes(&without(good(), "/request", "kind")),
            Expect::Denied("missing field `kind`"),
        ),
        post(
            "unknown operation",
            bytes(&with(good(), "/request/operation", json!("EXPLODE"))),
            Expect::Denied("unknown variant `EXPLODE`"),
        ),
        post(
            "object is a string",
            bytes(&with(good(), "/request/object", json!("a StatefulSet"))),
            Expect::Denied("cannot read the AdmissionReview"),
        ),
        post(
            "object is an array",
            bytes(&with(good(), "/request/object", json!([1, 2]))),
            Expect::Denied("cannot read the AdmissionReview"),
        ),
        post(
            "metadata is a number",
            bytes(&with(good(), "/request/object/metadata", json!(7))),
            // The envelope is fine; the policy refuses the object itself.
            Expect::Denied("cannot read the object (metadata: expected an object, found a number"),
        ),
        post(
            "duplicate uid",
            duplicate_uid,
            Expect::Verdict("duplicate field `uid`"),
        ),
        post(
            "replicas 1e400",
            huge_number,
            Expect::Denied("number out of range"),
        ),
        post(
            "lone surrogate in name",
            raw_name(br"\ud800"),
            Expect::Denied("hex escape"),
        ),
        post(
            "high surrogate alone in the object",
            in_object(r#""unread":"\udafe\/""#),
            Expect::Denied("cannot read the object (spec.unread: lone leading surrogate"),
        ),
        post(
            "low surrogate alone in the object",
            in_object(r#""unread":"\uDC00""#),
            Expect::Denied("cannot read the object (spec.unread: lone trailing surrogate"),
        ),
        post(
            "number out of range in the object",
            in_object(r#""unread":[-1e400]"#),
            Expect::Denied("cannot read the object (spec.unread: number out of range"),
        ),
        post(
            "surrogate pair and tiny number in the object",
            in_object(r#""unread":{"\ud83d\ude00":1e-400}"#),
            // Valid JSON: the review goes on to the policy.
            Expect::Patched,
        ),
        post(
            "invalid UTF-8 in name",
            raw_name(b"zoo\xff\xfekeeper"),
            Expect::Denied("invalid unicode code point"),
        ),
        post(
            "deeply nested JSON",
            nested,
            Expect::Verdict("recursion limit exceeded"),
        ),
        // Missing objects.
        post(
            "CREATE without object",
            bytes(&without(good(), "/request", "object")),
            Expect::Denied("request.object is missing"),
        ),
        post(
            "UPDATE with object null",
            bytes(&with(
                with(good(), "/request/operation", json!("UPDATE")),
                "/request/object",
                Value::Null,
            )),
            Expect::Denied("request.object is missing"),
        ),
        // Readable, but not what the chart renders: the policy says why.
        post(
            "spec is a string",
            bytes(&with(
                good(),
                "/request/object/spec",
                json!("three replicas"),
            )),
            Expect::Denied("cannot read the object"),
        ),
        post(
            "chart container missing",
            bytes(&review_for(
                &sts_without_containers,
                "confluent",
                "CREATE",
                "c",
            )),
            Expect::Denied("not found in spec.template.spec.containers"),
        ),
        // Size.
        post(
            "10 MB object",
            bytes(&review_for(&ten_mb, "confluent", "CREATE", "big")),
            Expect::Status(413, "--max-body-bytes"),
        ),
        post(
            "5 MB object under the body limit",
            bytes(&review_for(&five_mb, "confluent", "CREATE", "five")),
            Expect::Verdict(""),
        ),
        // Harmless oddities: allowed untouched.
        post(
            "cluster-scoped unknown kind",
            bytes(&review_for(
                &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "confluent"}}),
                "",
                "CREATE",
                "ns",
            )),
            Expect::Allowed,
        ),
        post(
            "unnamed object",
            bytes(&review_for(
                &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}),
                "confluent",
                "CREATE",
                "anon",
            )),
            Expect::Allowed,
        ),
        post(
            "unicode name",
            bytes(&review_for(
                &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "zoo\u{1F418}keeper", "namespace": "confluent"}, "spec": {}}),
                "confluent",
                "CREATE",
                "uni",
            )),
            Expect::Allowed,
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_corpus() {
    let mut setup = Setup::new("bad-input", "cluster-0", &compile(CP_TWO));
    setup.config.request_timeout = Duration::from_millis(500);
    let server = setup.start().await;
    let cases = corpus();
    assert!(cases.len() >= 30, "{} cases", cases.len());
    let mut client = server.client().await;
    for case in cases {
        let mut headers = vec![];
        if let Some(ct) = case.content_type {
            headers.push(("content-type", ct));
        }
        let started = Instant::now();
        let answer = match client
            .request(case.method, case.path, &headers, case.body.clone())
            .await
        {
            Ok(answer) => answer,
            Err(_) => {
                // The server may close a connection after an error status
                // (e.g. 413 with an unread body); the answer must still come.
                client = server.client().await;
                client
                    .request(case.method, case.path, &headers, case.body)
                    .await
                    .unwrap_or_else(|e| panic!("{}: {e}", case.name))
            }
        };
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(5),
            "{}: took {took:?}",
            case.name
        );
        let name = case.name;
        let text = answer.text();
        let status = answer.status.as_u16();
        match case.expect {
            Expect::Status(code, needle) => {
                assert_eq!(status, code, "{name}: {text}");
                assert!(text.contains(needle), "{name}: {needle:?} not in {text:?}");
            }
            Expect::Denied(needle) => {
                assert_eq!(status, 200, "{name}: {text}");
                let r = &answer.json()["response"];
                assert_eq!(r["allowed"], false, "{name}: {r}");
                assert!(!r["uid"].as_str().unwrap().is_empty(), "{name}: {r}");
                let message = r["status"]["message"].as_str().unwrap_or("");
                assert!(
                    message.contains(needle),
                    "{name}: {needle:?} not in {message:?}"
                );
            }
            Expect::Allowed | Expect::Patched => {
                assert_eq!(status, 200, "{name}: {text}");
                let r = &answer.json()["response"];
                assert_eq!(r["allowed"], true, "{name}: {r}");
                let patched = matches!(case.expect, Expect::Patched);
                assert_eq!(r.get("patch").is_some(), patched, "{name}: {r}");
            }
            Expect::Verdict(needle) => {
                if status == 200 {
                    let r = &answer.json()["response"];
                    assert!(r["allowed"].is_boolean(), "{name}: {r}");
                    if r["allowed"] == false {
                        let message = r["status"]["message"].as_str().unwrap_or("");
                        assert!(
                            message.contains(needle),
                            "{name}: {needle:?} not in {message:?}"
                        );
                    }
                } else {
                    assert!((400..500).contains(&status), "{name}: {status} {text}");
                    assert!(text.contains(needle), "{name}: {needle:?} not in {text:?}");
                }
            }
        }
    }

    // Still healthy, still correct.
    let mut client = server.client().await;
    assert_eq!(client.get("/healthz").await.unwrap().status, 200);
    assert_eq!(client.get("/readyz").await.unwrap().status, 200);
    let r = client.review(&good()).await.unwrap();
    assert_eq!(r["allowed"], true);
    assert!(r["patch"].is_string());
    let text = client.get("/metrics").await.unwrap().text();
    assert!(
        metric(
            &text,
            r#"straddle_webhook_rejected_requests_total{reason="malformed"}"#
        )
        .unwrap()
            >= 8.0,
        "{text}"
    );
    assert!(
        metric(
            &text,
            r#"straddle_webhook_rejected_requests_total{reason="too_large"}"#
        )
        .unwrap()
            >= 1.0,
        "{text}"
    );
    server.stop().await;
}

/// Reads until the peer closes or `limit` passes; returns what was read and
/// whether the connection was closed.
async fn read_until_closed<S: AsyncReadExt + Unpin>(
    stream: &mut S,
    limit: Duration,
) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (out, false),
        }
    }
}

/// Slow and broken clients: every connection ends promptly (with an answer
/// where HTTP allows one), none hangs, and the server keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_broken_connections_never_hang() {
    let mut setup = Setup::new("slow", "cluster-0", &compile(CP_TWO));
    setup.config.request_timeout = Duration::from_millis(300);
    let server = setup.start().await;
    let tls = pki().client_config(None, false);

    // A body that never finishes: 408 after --request-timeout.
    let mut stream = tls_connect(server.addr, tls.clone()).await.unwrap();
    stream
        .write_all(b"POST /mutate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"apiVersion\"")
        .await
        .unwrap();
    let started = Instant::now();
    let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(3)).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // Headers that never finish: the connection is closed.
    let mut stream = tls_connect(server.addr, tls.clone()).await.unwrap();
    stream
        .write_all(b"POST /mutate HTTP/1.1\r\nhost: loc")
        .await
        .unwrap();
    let (_, closed) = read_until_closed(&mut stream, Duration::from_secs(3)).await;
    assert!(closed, "a half-sent header must not hold the connection");

    // A TCP connection that never says hello: closed after the handshake timeout.
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let (_, closed) = read_until_closed(&mut tcp, Duration::from_secs(3)).await;
    assert!(closed, "a silent TCP connection must be closed");

    // Plain HTTP on the TLS port: refused at once.
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let (_, closed) = read_until_closed(&mut tcp, Duration::from_secs(3)).await;
    assert!(closed && started.elapsed() < Duration::from_secs(1));

    // A declared 100 MB body: refused at once, without waiting for it.
    let mut stream = tls_connect(server.addr, tls.clone()).await.unwrap();
    stream
        .write_all(b"POST /mutate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 100000000\r\n\r\n{")
        .await
        .unwrap();
    let started = Instant::now();
    let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(3)).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("--max-body-bytes"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    // A megabyte of headers: refused (431) or closed, not buffered forever.
    let mut stream = tls_connect(server.addr, tls.clone()).await.unwrap();
    let mut request = b"POST /mutate HTTP/1.1\r\nhost: localhost\r\n".to_vec();
    for i in 0..1000 {
        request.extend_from_slice(format!("x-filler-{i}: {}\r\n", "z".repeat(1000)).as_bytes());
    }
    request.extend_from_slice(b"\r\n");
    let _ = stream.write_all(&request).await;
    let (answer, closed) = read_until_closed(&mut stream, Duration::from_secs(3)).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(closed, "{text}");
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 431"),
        "{text}"
    );

    // Still serving.
    let mut client = server.client().await;
    let r = client.review(&good()).await.unwrap();
    assert_eq!(r["allowed"], true);
    let text = client.get("/metrics").await.unwrap().text();
    assert!(
        metric(
            &text,
            r#"straddle_webhook_rejected_requests_total{reason="body_timeout"}"#
        ) == Some(1.0),
        "{text}"
    );
    assert!(
        metric(&text, "straddle_webhook_tls_handshake_failures_total").unwrap() >= 2.0,
        "{text}"
    );
    server.stop().await;
}
