//! straddle-oci against a real registry (Debian's docker-registry, the CNCF
//! distribution registry) on loopback: plain HTTP, basic auth, TLS with a
//! private CA; push, pull, pin, signatures, corruption, interop with plain
//! HTTP calls and the OCI image-manifest rules.

use std::time::{Duration, Instant};

use base64::Engine as _;
use straddle_oci::artifact::{CONFIG_MEDIA_TYPE, LAYER_MEDIA_TYPE, MANIFEST_MEDIA_TYPE};
use straddle_oci::auth::AuthOptions;
use straddle_oci::signature::{self, PAYLOAD_MEDIA_TYPE, SIGNATURE_ANNOTATION, SigningKey};
use straddle_oci::{BundleMeta, Connection, PolicyRef, Registry, sha256_digest};
use straddle_test_support::registry as support;
use support::{Options, RegistryServer, header, http_get};

fn meta() -> BundleMeta {
    BundleMeta {
        name: "kafka-stretch".into(),
        spec_digest: sha256_digest(b"spec"),
        clusters: vec!["east".into(), "west".into(), "witness".into()],
        namespaces: vec!["kafka".into()],
        compiler_version: "0.1.0".into(),
    }
}

/// Module bytes: the registry and this crate treat them as opaque (the
/// webhook and CLI tests push real compiled policies).
fn module(n: u8) -> Vec<u8> {
    let mut m = b"\0asm\x0d\x00\x01\x00".to_vec();
    m.extend(std::iter::repeat_n(n, 200_000));
    m
}

fn plain() -> Connection {
    Connection {
        plain_http: true,
        ..Connection::default()
    }
}

fn reference(server: &RegistryServer, rest: &str) -> PolicyRef {
    PolicyRef::parse(&format!("oci://{}/{rest}", server.host())).unwrap()
}

#[tokio::test]
async fn push_pull_pin_and_retag() {
    if !support::available() {
        return;
    }
    let server = RegistryServer::start("push-pull", Options::default());
    let tag = reference(&server, "straddle/policy:v1");
    let registry = Registry::connect(&plain(), &tag).unwrap();

    let started = Instant::now();
    let pushed = registry.push(&tag, &module(1), &meta()).await.unwrap();
    let push_time = started.elapsed();
    assert_eq!(pushed.reused_blobs, 0);
    assert_eq!(
        pushed.pinned.digest(),
        Some(pushed.manifest_digest.as_str())
    );

    let started = Instant::now();
    let by_tag = registry.pull(&tag).await.unwrap();
    let pull_time = started.elapsed();
    assert_eq!(by_tag.module, module(1));
    assert_eq!(by_tag.manifest_digest, pushed.manifest_digest);
    assert_eq!(by_tag.meta, meta());
    let by_digest = registry.pull(&pushed.pinned).await.unwrap();
    assert_eq!(by_digest.module, module(1));
    eprintln!("push {push_time:?}, pull {pull_time:?} (200 kB, loopback)");
    assert!(push_time < Duration::from_secs(5) && pull_time < Duration::from_secs(5));

    // Same bundle again: same digest, nothing uploaded.
    let again = registry.push(&tag, &module(1), &meta()).await.unwrap();
    assert_eq!(again.manifest_digest, pushed.manifest_digest);
    assert_eq!(again.reused_blobs, 2);

    // The tag moves; the pinned digest still names the first bundle.
    let second = registry.push(&tag, &module(2), &meta()).await.unwrap();
    assert_ne!(second.manifest_digest, pushed.manifest_digest);
    assert_eq!(
        registry.resolve(&tag).await.unwrap(),
        second.manifest_digest
    );
    assert_eq!(
        registry.pull(&pushed.pinned).await.unwrap().module,
        module(1)
    );
    assert_eq!(registry.pull(&tag).await.unwrap().module, module(2));

    // Unknown names say so.
    let e = format!(
        "{:#}",
        registry.pull(&tag.tagged("nope")).await.unwrap_err()
    );
    assert!(e.contains("does not exist"), "{e}");
    let missing = reference(&server, "no/such/repo:v1");
    let e = format!("{:#}", registry.pull(&missing).await.unwrap_err());
    assert!(e.contains("does not exist"), "{e}");
}

/// What any OCI tool sees, with nothing but HTTP/1.1 over a socket: the
/// manifest by tag and digest, its digest header, the blobs; the manifest
/// deserializes as an OCI image manifest (oci-spec) and obeys its rules.
#[tokio::test]
async fn interop_plain_http_and_oci_manifest_rules() {
    if !support::available() {
        return;
    }
    let server = RegistryServer::start("interop", Options::default());
    let tag = reference(&server, "straddle/policy:v1");
    let registry = Registry::connect(&plain(), &tag).unwrap();
    let key = SigningKey::generate();
    let pushed = registry.push(&tag, &module(3), &meta()).await.unwrap();
    registry.sign(&pushed.pinned, &key).await.unwrap();

    let (status, headers, manifest) = http_get(
        server.addr,
        "/v2/straddle/policy/manifests/v1",
        MANIFEST_MEDIA_TYPE,
    );
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "docker-content-digest"),
        Some(pushed.manifest_digest.as_str())
    );
    assert_eq!(header(&headers, "content-type"), Some(MANIFEST_MEDIA_TYPE));
    assert_eq!(sha256_digest(&manifest), pushed.manifest_digest);
    let (status, _, by_digest) = http_get(
        server.addr,
        &format!("/v2/straddle/policy/manifests/{}", pushed.manifest_digest),
        MANIFEST_MEDIA_TYPE,
    );
    assert_eq!((status, &by_digest), (200, &manifest));

    // The OCI image manifest rules.
    let parsed: oci_spec::image::ImageManifest = serde_json::from_slice(&manifest).unwrap();
    assert_eq!(parsed.schema_version(), 2);
    assert_eq!(
        parsed
            .media_type()
            .as_ref()
            .map(|m| m.to_string())
            .as_deref(),
        Some(MANIFEST_MEDIA_TYPE)
    );
    assert_eq!(parsed.config().media_type().to_string(), CONFIG_MEDIA_TYPE);
    assert_eq!(parsed.layers().len(), 1);
    assert_eq!(
        parsed.layers()[0].media_type().to_string(),
        LAYER_MEDIA_TYPE
    );
    let annotations = parsed.annotations().clone().unwrap();
    assert_eq!(annotations["dev.straddle.clusters"], "east,west,witness");
    assert_eq!(annotations["dev.straddle.stretch"], "kafka-stretch");
    assert_eq!(
        annotations["dev.straddle.spec-digest"],
        sha256_digest(b"spec")
    );
    assert_eq!(annotations["dev.straddle.compiler-version"], "0.1.0");
    let descriptors = std::iter::once(parsed.config()).chain(parsed.layers());
    for d in descriptors {
        let (status, _, blob) = http_get(
            server.addr,
            &format!("/v2/straddle/policy/blobs/{}", d.digest()),
            "*/*",
        );
        assert_eq!(status, 200, "blob {}", d.digest());
        assert_eq!(blob.len() as u64, d.size(), "size of {}", d.digest());
        assert_eq!(sha256_digest(&blob), d.digest().to_string());
        if d.media_type().to_string() == LAYER_MEDIA_TYPE {
            assert_eq!(blob, module(3));
        } else {
            let config: serde_json::Value = serde_json::from_slice(&blob).unwrap();
            assert_eq!(config["architecture"], "wasm");
            assert_eq!(
                config["layerDigests"][0],
                sha256_digest(&module(3)).as_str()
            );
        }
    }

    // The signature, where cosign looks for it, verifiable with p256 alone.
    let sig_tag = signature::signature_tag(&pushed.manifest_digest).unwrap();
    let (status, _, sig_manifest) = http_get(
        server.addr,
        &format!("/v2/straddle/policy/manifests/{sig_tag}"),
        MANIFEST_MEDIA_TYPE,
    );
    assert_eq!(status, 200);
    let sig_manifest: oci_spec::image::ImageManifest =
        serde_json::from_slice(&sig_manifest).unwrap();
    let layer = &sig_manifest.layers()[0];
    assert_eq!(layer.media_type().to_string(), PAYLOAD_MEDIA_TYPE);
    let sig_b64 = &layer.annotations().as_ref().unwrap()[SIGNATURE_ANNOTATION];
    let (_, _, payload) = http_get(
        server.addr,
        &format!("/v2/straddle/policy/blobs/{}", layer.digest()),
        "*/*",
    );
    let json: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(
        json["critical"]["image"]["docker-manifest-digest"],
        pushed.manifest_digest.as_str()
    );
    assert_eq!(
        json["critical"]["identity"]["docker-reference"],
        tag.repository_name().as_str()
    );
    assert_eq!(json["critical"]["type"], "cosign container image signature");
    use p256::ecdsa::signature::Verifier as _;
    use p256::pkcs8::DecodePublicKey as _;
    let public =
        p256::ecdsa::VerifyingKey::from_public_key_pem(&key.verifying_key().to_pem()).unwrap();
    let der = base64::engine::general_purpose::STANDARD
        .decode(sig_b64)
        .unwrap();
    let sig = p256::ecdsa::Signature::from_der(&der).unwrap();
    public
        .verify(&payload, &sig)
        .expect("the signature verifies with the public key alone");
}

#[tokio::test]
async fn signatures_missing_wrong_and_good() {
    if !support::available() {
        return;
    }
    let server = RegistryServer::start("signatures", Options::default());
    let tag = reference(&server, "straddle/policy:v1");
    let registry = Registry::connect(&plain(), &tag).unwrap();
    let pushed = registry.push(&tag, &module(4), &meta()).await.unwrap();
    let (ours, theirs) = (SigningKey::generate(), SigningKey::generate());
    let digest = &pushed.manifest_digest;

    // Missing.
    let none = registry.signatures(&tag, digest).await.unwrap();
    let e = signature::verify(&ours.verifying_key(), &none, digest)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not signed"), "{e}");

    // Wrong key.
    registry.sign(&tag, &theirs).await.unwrap();
    let sigs = registry.signatures(&tag, digest).await.unwrap();
    let e = signature::verify(&ours.verifying_key(), &sigs, digest)
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not match the key"), "{e}");

    // Signed by us too (appended, cosign-style): accepted.
    registry.sign(&pushed.pinned, &ours).await.unwrap();
    let sigs = registry.signatures(&tag, digest).await.unwrap();
    assert_eq!(sigs.len(), 2);
    signature::verify(&ours.verifying_key(), &sigs, digest).unwrap();

    // A signature of one bundle does not cover another.
    let other = registry
        .push(&tag.tagged("v2"), &module(5), &meta())
        .await
        .unwrap();
    let e = signature::verify(&ours.verifying_key(), &sigs, &other.manifest_digest)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not this bundle"), "{e}");
}

#[tokio::test]
async fn corrupted_blob_is_refused() {
    if !support::available() {
        return;
    }
    let server = RegistryServer::start("corrupt", Options::default());
    let tag = reference(&server, "straddle/policy:v1");
    let registry = Registry::connect(&plain(), &tag).unwrap();
    let pushed = registry.push(&tag, &module(6), &meta()).await.unwrap();
    server.corrupt_blob(&pushed.layer_digest);
    let e = format!("{:#}", registry.pull(&pushed.pinned).await.unwrap_err());
    assert!(
        e.contains("do not match their digest") || e.contains("corrupted"),
        "{e}"
    );
}

fn bcrypt_htpasswd(user: &str, password: &str) -> String {
    let hash = bcrypt::hash_with_result(password, 5).unwrap();
    format!(
        "{user}:{}\n",
        hash.format_for_version(bcrypt::Version::TwoY)
    )
}

#[tokio::test]
async fn basic_auth_flags_and_docker_config() {
    if !support::available() {
        return;
    }
    let server = RegistryServer::start(
        "basic-auth",
        Options {
            htpasswd: Some(bcrypt_htpasswd("alice", "s3cr3t")),
            ..Options::default()
        },
    );
    let tag = reference(&server, "straddle/policy:v1");
    let with = |auth: AuthOptions| Connection {
        plain_http: true,
        auth,
        ..Connection::default()
    };
    let none = AuthOptions {
        registry_config: Some(server.path("absent-is-fine-when-default.json")),
        ..AuthOptions::default()
    };
    // An explicit --registry-config that does not exist is an error...
    assert!(Registry::connect(&with(none), &tag).is_err());

    // ...anonymous gets a message about credentials.
    let empty_config = server.path("empty.json");
    std::fs::write(&empty_config, r#"{"auths": {}}"#).unwrap();
    let anonymous = Registry::connect(
        &with(AuthOptions {
            registry_config: Some(empty_config),
            ..AuthOptions::default()
        }),
        &tag,
    )
    .unwrap();
    let e = format!(
        "{:#}",
        anonymous.push(&tag, &module(7), &meta()).await.unwrap_err()
    );
    assert!(
        e.contains("refused the credentials") && e.contains("--registry-config"),
        "{e}"
    );

    let wrong = Registry::connect(
        &with(AuthOptions {
            username: Some("alice".into()),
            password: Some("wrong".into()),
            ..AuthOptions::default()
        }),
        &tag,
    )
    .unwrap();
    let e = format!(
        "{:#}",
        wrong.push(&tag, &module(7), &meta()).await.unwrap_err()
    );
    assert!(
        e.contains("refused the credentials (--username/--password)"),
        "{e}"
    );

    let right = Registry::connect(
        &with(AuthOptions {
            username: Some("alice".into()),
            password: Some("s3cr3t".into()),
            ..AuthOptions::default()
        }),
        &tag,
    )
    .unwrap();
    let pushed = right.push(&tag, &module(7), &meta()).await.unwrap();

    // The same credentials from a Docker config.json (a pull secret's shape).
    let config = server.path("config.json");
    let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cr3t");
    std::fs::write(
        &config,
        format!(
            r#"{{"auths": {{"{}": {{"auth": "{auth}"}}}}}}"#,
            server.host()
        ),
    )
    .unwrap();
    let from_file = Registry::connect(
        &with(AuthOptions {
            registry_config: Some(config),
            ..AuthOptions::default()
        }),
        &tag,
    )
    .unwrap();
    let pulled = from_file.pull(&tag).await.unwrap();
    assert_eq!(pulled.manifest_digest, pushed.manifest_digest);
}

#[tokio::test]
async fn tls_with_a_private_ca() {
    if !support::available() {
        return;
    }
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "straddle test registry CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let server = RegistryServer::start(
        "tls",
        Options {
            tls: Some((leaf.pem(), key.serialize_pem())),
            htpasswd: Some(bcrypt_htpasswd("bob", "pw")),
        },
    );
    let tag = reference(&server, "straddle/policy:v1");
    let auth = AuthOptions {
        username: Some("bob".into()),
        password: Some("pw".into()),
        ..AuthOptions::default()
    };

    // Without the CA: a TLS error that names the fix.
    let untrusting = Registry::connect(
        &Connection {
            auth: auth.clone(),
            ..Connection::default()
        },
        &tag,
    )
    .unwrap();
    let e = format!(
        "{:#}",
        untrusting
            .push(&tag, &module(8), &meta())
            .await
            .unwrap_err()
    );
    assert!(e.contains("--registry-ca"), "{e}");

    // Plain HTTP against a TLS registry: says so.
    let plain_to_tls = Registry::connect(
        &Connection {
            plain_http: true,
            auth: auth.clone(),
            ..Connection::default()
        },
        &tag,
    )
    .unwrap();
    assert!(plain_to_tls.push(&tag, &module(8), &meta()).await.is_err());

    // With the CA (and basic auth over TLS): works.
    let ca_file = server.path("ca.pem");
    std::fs::write(&ca_file, &ca_pem).unwrap();
    let trusting = Registry::connect(
        &Connection {
            ca_file: Some(ca_file),
            auth,
            ..Connection::default()
        },
        &tag,
    )
    .unwrap();
    let pushed = trusting.push(&tag, &module(8), &meta()).await.unwrap();
    assert_eq!(
        trusting.pull(&pushed.pinned).await.unwrap().module,
        module(8)
    );
}
