//! One cluster's certificates, as kubeadm lays them out in spirit: a CA
//! that signs the API server's serving certificate and the clients'
//! certificates (admin in `system:masters`, the controller manager as
//! `system:kube-controller-manager`), and the service-account signing key.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// PEM files written for one cluster.
pub struct ClusterPki {
    pub ca_cert: PathBuf,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    pub admin_cert: PathBuf,
    pub admin_key: PathBuf,
    pub controller_manager_cert: PathBuf,
    pub controller_manager_key: PathBuf,
    pub service_account_key: PathBuf,
    pub service_account_public_key: PathBuf,
}

/// The API server's first service IP (`kubernetes.default`), from
/// `--service-cluster-ip-range` (see `SERVICE_RANGE`).
pub const KUBERNETES_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);

impl ClusterPki {
    /// Writes every file under `dir`; `host_ip` is where the API server
    /// also answers (its advertised address).
    pub fn write(dir: &Path, host_ip: Ipv4Addr) -> Result<ClusterPki> {
        std::fs::create_dir_all(dir)?;
        let file = |name: &str, pem: String| -> Result<PathBuf> {
            let path = dir.join(name);
            std::fs::write(&path, pem).with_context(|| format!("writing {}", path.display()))?;
            Ok(path)
        };

        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.distinguished_name
            .push(DnType::CommonName, "straddle-test-cluster-ca");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key)?;
        let ca_cert_path = file("ca.crt", ca_cert.pem())?;
        let issuer = Issuer::new(ca, ca_key);

        let leaf = |cn: &str,
                    org: Option<&str>,
                    usage: ExtendedKeyUsagePurpose,
                    sans: Vec<SanType>|
         -> Result<(String, String)> {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(Vec::<String>::new())?;
            params.distinguished_name.push(DnType::CommonName, cn);
            if let Some(org) = org {
                params
                    .distinguished_name
                    .push(DnType::OrganizationName, org);
            }
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![usage];
            params.subject_alt_names = sans;
            let cert = params.signed_by(&key, &issuer)?;
            Ok((cert.pem(), key.serialize_pem()))
        };

        let mut sans: Vec<SanType> = [
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ]
        .iter()
        .map(|n| SanType::DnsName((*n).try_into().expect("valid DNS name")))
        .collect();
        for ip in [Ipv4Addr::LOCALHOST, host_ip, KUBERNETES_SERVICE_IP] {
            sans.push(SanType::IpAddress(IpAddr::V4(ip)));
        }
        let (serving_cert, serving_key) = leaf(
            "kube-apiserver",
            None,
            ExtendedKeyUsagePurpose::ServerAuth,
            sans,
        )?;
        let (admin_cert, admin_key) = leaf(
            "straddle-test-admin",
            Some("system:masters"),
            ExtendedKeyUsagePurpose::ClientAuth,
            vec![],
        )?;
        let (kcm_cert, kcm_key) = leaf(
            "system:kube-controller-manager",
            None,
            ExtendedKeyUsagePurpose::ClientAuth,
            vec![],
        )?;
        let sa_key = KeyPair::generate()?;

        Ok(ClusterPki {
            ca_cert: ca_cert_path,
            serving_cert: file("apiserver.crt", serving_cert)?,
            serving_key: file("apiserver.key", serving_key)?,
            admin_cert: file("admin.crt", admin_cert)?,
            admin_key: file("admin.key", admin_key)?,
            controller_manager_cert: file("controller-manager.crt", kcm_cert)?,
            controller_manager_key: file("controller-manager.key", kcm_key)?,
            service_account_key: file("service-account.key", sa_key.serialize_pem())?,
            service_account_public_key: file("service-account.pub", sa_key.public_key_pem())?,
        })
    }
}
