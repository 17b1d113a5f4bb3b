//! Self-managed certificates, the pure part: generation (the chain verifies
//! with rustls' WebPKI verifier for every Service name), the Secret's data
//! round trip, and renewal decisions over simulated time.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use serde_json::json;
use straddle_webhook::certs::{
    self, CA_CRT, CA_KEY, CertSet, Identity, Lifetimes, Renewal, TLS_CRT, TLS_KEY,
};
use straddle_webhook::certs_kube::ca_bundle_patch;

const DAY: Duration = Duration::from_secs(24 * 3600);

fn identity() -> Identity {
    Identity {
        service: "straddle-webhook".into(),
        namespace: "straddle-system".into(),
    }
}

fn t0() -> SystemTime {
    // A fixed start, so the simulation does not depend on today's date.
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000)
}

fn data(set: &CertSet) -> BTreeMap<&'static str, Vec<u8>> {
    certs::encode(set).into_iter().collect()
}

fn pem_count(pem: &str) -> usize {
    pem.matches("-----BEGIN CERTIFICATE-----").count()
}

#[test]
fn generated_chain_verifies_for_every_service_name_and_only_while_valid() {
    let set = certs::create(&identity(), Lifetimes::default(), t0()).unwrap();
    certs::verify_serving(&set, &identity(), t0()).unwrap();
    certs::verify_serving(&set, &identity(), t0() + 89 * DAY).unwrap();
    let err = certs::verify_serving(&set, &identity(), t0() + 91 * DAY).unwrap_err();
    assert!(
        format!("{err:#}").contains("straddle-webhook.straddle-system.svc"),
        "{err:#}"
    );
    // Another Service's names are not covered.
    let other = Identity {
        service: "other".into(),
        namespace: "straddle-system".into(),
    };
    assert!(certs::verify_serving(&set, &other, t0()).is_err());
    // The key belongs to the certificate; a CA and a leaf, PEM.
    assert_eq!(pem_count(&set.ca_bundle_pem), 1);
    assert_eq!(pem_count(&set.tls_cert_pem), 1);
    let (not_before, not_after) = certs::validity(&set.tls_cert_pem).unwrap();
    assert!(not_before <= t0() && not_after == t0() + 90 * DAY);
    // Private keys never reach Debug output.
    assert!(!format!("{set:?}").contains("PRIVATE KEY"));
}

#[test]
fn secret_data_round_trip() {
    let set = certs::create(&identity(), Lifetimes::default(), t0()).unwrap();
    let stored = data(&set);
    assert_eq!(
        stored.keys().copied().collect::<Vec<_>>(),
        [CA_CRT, CA_KEY, TLS_CRT, TLS_KEY]
    );
    let decoded = certs::decode(|k| stored.get(k).map(Vec::as_slice)).unwrap();
    assert_eq!(decoded.as_ref(), Some(&set));
    // Reading back what was stored changes nothing at the same time.
    let (again, renewal) =
        certs::next(decoded.as_ref(), &identity(), Lifetimes::default(), t0()).unwrap();
    assert_eq!((again, renewal), (set.clone(), None));

    // The chart's empty Secret: nothing yet.
    assert_eq!(certs::decode(|_| None), Ok(None));
    assert_eq!(certs::decode(|_| Some(&b""[..])), Ok(None));
    // Half a set is named and replaced.
    let partial = |k: &str| (k == CA_CRT).then_some(stored[CA_CRT].as_slice());
    assert_eq!(certs::decode(partial), Err("no ca.key".to_string()));
    let (fresh, renewal) =
        certs::next_from_secret(partial, &identity(), Lifetimes::default(), t0()).unwrap();
    assert_eq!(renewal, Some(Renewal::Replaced("no ca.key".into())));
    certs::verify_serving(&fresh, &identity(), t0()).unwrap();
    let garbage = |k: &str| (k != "x").then_some(&b"\xff\xfe"[..]);
    assert!(certs::decode(garbage).unwrap_err().contains("is not PEM"));
}

#[test]
fn unusable_contents_are_replaced_with_the_reason() {
    let lifetimes = Lifetimes::default();
    let set = certs::create(&identity(), lifetimes, t0()).unwrap();
    let other = certs::create(&identity(), lifetimes, t0()).unwrap();

    // A CA key that is not the CA's.
    let mixed = CertSet {
        ca_key_pem: other.ca_key_pem.clone(),
        ..set.clone()
    };
    let (fixed, renewal) = certs::next(Some(&mixed), &identity(), lifetimes, t0()).unwrap();
    assert!(
        matches!(&renewal, Some(Renewal::Replaced(why)) if why.contains("CA key")),
        "{renewal:?}"
    );
    certs::verify_serving(&fixed, &identity(), t0()).unwrap();

    // A serving certificate from another CA: renewed from the stored CA.
    let foreign = CertSet {
        tls_cert_pem: other.tls_cert_pem.clone(),
        tls_key_pem: other.tls_key_pem.clone(),
        ..set.clone()
    };
    let (fixed, renewal) = certs::next(Some(&foreign), &identity(), lifetimes, t0()).unwrap();
    assert!(
        matches!(renewal, Some(Renewal::ServingRenewed(_))),
        "{renewal:?}"
    );
    assert_eq!(fixed.ca_bundle_pem, set.ca_bundle_pem);
    certs::verify_serving(&fixed, &identity(), t0()).unwrap();

    // A Service renamed (another release name): a certificate for the new names.
    let renamed = Identity {
        service: "straddle".into(),
        namespace: "straddle-system".into(),
    };
    let (fixed, renewal) = certs::next(Some(&set), &renamed, lifetimes, t0()).unwrap();
    assert!(
        matches!(&renewal, Some(Renewal::ServingRenewed(why)) if why.contains("straddle.straddle-system.svc")),
        "{renewal:?}"
    );
    certs::verify_serving(&fixed, &renamed, t0()).unwrap();

    // Not PEM at all.
    let broken = CertSet {
        ca_bundle_pem: "not a certificate".into(),
        ..set
    };
    let (_, renewal) = certs::next(Some(&broken), &identity(), lifetimes, t0()).unwrap();
    assert!(matches!(renewal, Some(Renewal::Replaced(_))), "{renewal:?}");
}

#[test]
fn renewal_at_two_thirds_of_the_serving_lifetime() {
    let lifetimes = Lifetimes::default();
    let set = certs::create(&identity(), lifetimes, t0()).unwrap();
    let (same, renewal) = certs::next(Some(&set), &identity(), lifetimes, t0() + 59 * DAY).unwrap();
    assert_eq!((&same, renewal), (&set, None));
    let (renewed, renewal) =
        certs::next(Some(&set), &identity(), lifetimes, t0() + 61 * DAY).unwrap();
    assert!(
        matches!(renewal, Some(Renewal::ServingRenewed(_))),
        "{renewal:?}"
    );
    // Same CA (the caBundle does not change), a new key and certificate.
    assert_eq!(renewed.ca_bundle_pem, set.ca_bundle_pem);
    assert_eq!(renewed.ca_key_pem, set.ca_key_pem);
    assert_ne!(renewed.tls_key_pem, set.tls_key_pem);
    certs::verify_serving(&renewed, &identity(), t0() + 61 * DAY).unwrap();
    certs::verify_serving(&renewed, &identity(), t0() + 150 * DAY).unwrap();
    // Long past expiry (the webhook was stopped): renewed as well.
    let (late, renewal) =
        certs::next(Some(&set), &identity(), lifetimes, t0() + 200 * DAY).unwrap();
    assert!(matches!(renewal, Some(Renewal::ServingRenewed(_))));
    certs::verify_serving(&late, &identity(), t0() + 200 * DAY).unwrap();
}

/// Two simulated years, checked every day, with a short-lived CA: whatever
/// the Secret holds verifies that day, and yesterday's serving certificate
/// (still served by a replica that has not reread the Secret) verifies
/// against today's bundle while it has not expired: rotations never break a
/// replica that lags a day behind.
#[test]
fn two_years_of_daily_checks_with_ca_rotation() {
    let lifetimes = Lifetimes {
        ca: 120 * DAY,
        serving: 30 * DAY,
    };
    let mut set = certs::create(&identity(), lifetimes, t0()).unwrap();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut last_ca_rotation = 0;
    for day in 1..=730u32 {
        let now = t0() + DAY * day;
        let (next, renewal) = certs::next(Some(&set), &identity(), lifetimes, now).unwrap();
        certs::verify_serving(&next, &identity(), now)
            .unwrap_or_else(|e| panic!("day {day}: {e:#}"));
        let (_, yesterday_expires) = certs::validity(&set.tls_cert_pem).unwrap();
        if now < yesterday_expires {
            let lagging = CertSet {
                ca_bundle_pem: next.ca_bundle_pem.clone(),
                ..set.clone()
            };
            certs::verify_serving(&lagging, &identity(), now)
                .unwrap_or_else(|e| panic!("day {day}: a lagging replica breaks: {e:#}"));
        }
        // Never more than the signing CA and one older CA.
        assert!(pem_count(&next.ca_bundle_pem) <= 2, "day {day}");
        let kind = match &renewal {
            None => "kept",
            Some(Renewal::ServingRenewed(_)) => "serving",
            Some(Renewal::CaRotated) => "ca",
            Some(Renewal::BundlePruned) => "pruned",
            Some(other) => panic!("day {day}: {other:?}"),
        };
        *counts.entry(kind).or_default() += 1;
        if kind == "ca" {
            assert_eq!(
                pem_count(&next.ca_bundle_pem),
                2,
                "day {day}: old CA still trusted"
            );
            last_ca_rotation = day;
        }
        // The old CA expires 40 days after the rotation (120 - 80): then
        // it leaves the bundle.
        if last_ca_rotation > 0 && day > last_ca_rotation + 41 {
            assert_eq!(
                pem_count(&next.ca_bundle_pem),
                1,
                "day {day}: expired CA kept"
            );
        }
        set = next;
    }
    // CA every 80 days (2/3 of 120), serving about every 20 days between.
    assert_eq!(counts["ca"], 9, "{counts:?}");
    assert!((20..=30).contains(&counts["serving"]), "{counts:?}");
}

#[test]
fn ca_bundle_patch_sets_every_webhook_once() {
    let bundle = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    let mut config = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "straddle-webhook"},
        "webhooks": [
            {"name": "a.straddle.dev", "admissionReviewVersions": ["v1"], "sideEffects": "None",
             "clientConfig": {"service": {"name": "s", "namespace": "n"}}},
            {"name": "b.straddle.dev", "admissionReviewVersions": ["v1"], "sideEffects": "None",
             "clientConfig": {"service": {"name": "s", "namespace": "n"}, "caBundle": "b2xk"}},
        ]
    });
    let typed: MutatingWebhookConfiguration = serde_json::from_value(config.clone()).unwrap();
    let patch = ca_bundle_patch(&typed, bundle).unwrap().unwrap();
    let patch: json_patch::Patch = serde_json::from_value(patch).unwrap();
    json_patch::patch(&mut config, &patch).unwrap();
    let patched: MutatingWebhookConfiguration = serde_json::from_value(config.clone()).unwrap();
    for webhook in patched.webhooks.as_ref().unwrap() {
        assert_eq!(
            webhook.client_config.ca_bundle.as_ref().unwrap().0,
            bundle.as_bytes()
        );
    }
    assert_eq!(ca_bundle_patch(&patched, bundle).unwrap(), None);
    // The name guard: the same patch on a reordered list fails.
    let mut reordered =
        json!({"webhooks": [config["webhooks"][1].clone(), config["webhooks"][0].clone()]});
    reordered["webhooks"][0]["clientConfig"]
        .as_object_mut()
        .unwrap()
        .remove("caBundle");
    let first = ca_bundle_patch(&typed, bundle).unwrap().unwrap();
    let first: json_patch::Patch = serde_json::from_value(first).unwrap();
    assert!(json_patch::patch(&mut reordered, &first).is_err());
    // No webhooks: a clear error.
    let empty: MutatingWebhookConfiguration =
        serde_json::from_value(json!({"metadata": {"name": "x"}, "webhooks": []})).unwrap();
    assert!(
        ca_bundle_patch(&empty, bundle)
            .unwrap_err()
            .to_string()
            .contains("no webhooks")
    );
}

#[test]
fn lifetimes_parse_with_units() {
    assert_eq!(certs::parse_lifetime("90d"), Ok(90 * DAY));
    assert_eq!(
        certs::parse_lifetime("12h"),
        Ok(Duration::from_secs(12 * 3600))
    );
    assert_eq!(certs::parse_lifetime("1m"), Ok(Duration::from_secs(60)));
    assert!(certs::parse_lifetime("0d").is_err());
    assert!(
        certs::parse_lifetime("90")
            .unwrap_err()
            .contains("unknown unit")
    );
    assert!(certs::parse_lifetime("soon").is_err());
    assert!(certs::parse_lifetime("99999999999999999999d").is_err());
}
