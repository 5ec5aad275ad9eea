use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose, SanType,
};

use super::*;
use crate::tls::testing::{leaf_params, TestCa};

const WEB: &str = "spiffe://cluster.local/ns/shop/sa/web";

fn now() -> UnixTime {
    UnixTime::now()
}

fn mesh_verifier(root: &TestCa) -> PeerVerifier {
    PeerVerifier::try_new(
        std::slice::from_ref(&root.cert),
        Expect::TrustDomain("cluster.local".into()),
    )
    .unwrap()
}

/// A leaf from `params`, edited by `edit`, signed by `ca`.
fn leaf(ca: &TestCa, edit: impl FnOnce(&mut CertificateParams)) -> Vec<CertificateDer<'static>> {
    let mut params = leaf_params(WEB);
    edit(&mut params);
    ca.leaf(&params).0
}

fn check(
    verifier: &PeerVerifier,
    chain: &[CertificateDer<'_>],
    usage: Usage,
) -> Result<SpiffeId, Refusal> {
    verifier
        .verify(&chain[0], &chain[1..], now(), usage)
        .map_err(|refused| refused.reason)
}

#[test]
fn a_workload_certificate_is_accepted_on_both_sides() {
    let root = TestCa::new("mesh root");
    let verifier = mesh_verifier(&root);
    let web = SpiffeId::parse(WEB).unwrap();
    let chain = leaf(&root, |_| {});
    assert_eq!(check(&verifier, &chain, Usage::Server), Ok(web.clone()));
    assert_eq!(check(&verifier, &chain, Usage::Client), Ok(web.clone()));

    // Through an intermediate, which the peer sends.
    let intermediate = root.intermediate("mesh issuer");
    let chain = leaf(&intermediate, |_| {});
    assert_eq!(chain.len(), 2);
    assert_eq!(check(&verifier, &chain, Usage::Server), Ok(web.clone()));
    assert_eq!(
        check(&verifier, &chain[..1], Usage::Server),
        Err(Refusal::UnknownIssuer),
        "without its intermediate the chain ends nowhere"
    );

    // Two roots during a rotation: a leaf of either is accepted.
    let next = TestCa::new("next mesh root");
    let both = PeerVerifier::try_new(
        &[root.cert.clone(), next.cert.clone()],
        Expect::TrustDomain("cluster.local".into()),
    )
    .unwrap();
    assert_eq!(both.roots(), 2);
    assert_eq!(
        check(&both, &leaf(&next, |_| {}), Usage::Client),
        Ok(web.clone())
    );
    assert_eq!(check(&both, &leaf(&root, |_| {}), Usage::Client), Ok(web));
}

#[test]
fn bad_certificates_are_refused_with_their_reason() {
    let root = TestCa::new("mesh root");
    let verifier = mesh_verifier(&root);
    let untrusted = TestCa::new("someone else's root");
    // Same name as the trusted root, another key.
    let impostor = TestCa::new("mesh root");
    let hour = Duration::from_secs(3600);
    let uris = |uris: &[&str]| -> Vec<SanType> {
        uris.iter()
            .map(|uri| SanType::URI((*uri).try_into().unwrap()))
            .collect()
    };
    let cases: Vec<(&str, Vec<CertificateDer<'static>>, Usage, Refusal)> = vec![
        (
            "expired",
            leaf(&root, |p| {
                p.not_before = (SystemTime::now() - 2 * hour).into();
                p.not_after = (SystemTime::now() - hour).into();
            }),
            Usage::Server,
            Refusal::Expired,
        ),
        (
            "not yet valid",
            leaf(&root, |p| {
                p.not_before = (SystemTime::now() + hour).into();
                p.not_after = (SystemTime::now() + 2 * hour).into();
            }),
            Usage::Client,
            Refusal::NotYetValid,
        ),
        (
            "untrusted CA",
            leaf(&untrusted, |_| {}),
            Usage::Server,
            Refusal::UnknownIssuer,
        ),
        (
            "signed by another key under the root's name",
            leaf(&impostor, |_| {}),
            Usage::Server,
            Refusal::BadSignature,
        ),
        (
            "CA:TRUE leaf",
            leaf(&root, |p| {
                p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained)
            }),
            Usage::Client,
            Refusal::CaAsLeaf,
        ),
        (
            "server-only EKU used by a client",
            leaf(&root, |p| {
                p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth]
            }),
            Usage::Client,
            Refusal::WrongKeyUsage,
        ),
        (
            "client-only EKU used by a server",
            leaf(&root, |p| {
                p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth]
            }),
            Usage::Server,
            Refusal::WrongKeyUsage,
        ),
        (
            "code-signing EKU",
            leaf(&root, |p| {
                p.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning]
            }),
            Usage::Server,
            Refusal::WrongKeyUsage,
        ),
        (
            "key usage without digitalSignature",
            leaf(&root, |p| {
                p.key_usages = vec![KeyUsagePurpose::KeyEncipherment]
            }),
            Usage::Server,
            Refusal::WrongKeyUsage,
        ),
        (
            "two URI SANs",
            leaf(&root, |p| {
                p.subject_alt_names = uris(&[WEB, "spiffe://cluster.local/ns/shop/sa/api"])
            }),
            Usage::Client,
            Refusal::MultipleUriSans,
        ),
        (
            "the same URI SAN twice",
            leaf(&root, |p| p.subject_alt_names = uris(&[WEB, WEB])),
            Usage::Client,
            Refusal::MultipleUriSans,
        ),
        (
            "no SAN",
            leaf(&root, |p| p.subject_alt_names.clear()),
            Usage::Server,
            Refusal::NoSpiffeId,
        ),
        (
            "DNS-only SAN",
            leaf(&root, |p| {
                p.subject_alt_names = vec![SanType::DnsName("web.shop.svc".try_into().unwrap())]
            }),
            Usage::Server,
            Refusal::NoSpiffeId,
        ),
        (
            "non-SPIFFE URI",
            leaf(&root, |p| {
                p.subject_alt_names = uris(&["https://web.shop.svc/"])
            }),
            Usage::Server,
            Refusal::InvalidSpiffeId,
        ),
        (
            "SPIFFE ID that is not a workload's",
            leaf(&root, |p| {
                p.subject_alt_names = uris(&["spiffe://cluster.local/web"])
            }),
            Usage::Server,
            Refusal::InvalidSpiffeId,
        ),
        (
            "percent-encoded SPIFFE path",
            leaf(&root, |p| {
                p.subject_alt_names = uris(&["spiffe://cluster.local/ns/sh%6fp/sa/web"])
            }),
            Usage::Client,
            Refusal::InvalidSpiffeId,
        ),
        (
            "another trust domain",
            leaf(&root, |p| {
                p.subject_alt_names = uris(&["spiffe://other.example/ns/shop/sa/web"])
            }),
            Usage::Client,
            Refusal::ForeignTrustDomain,
        ),
        (
            "a chain through a non-CA",
            {
                // A workload leaf used to sign another leaf.
                let mut signer_params = leaf_params(WEB);
                signer_params
                    .distinguished_name
                    .push(rcgen::DnType::CommonName, "signer");
                let (signer_chain, signer_key) = root.leaf(&signer_params);
                let signer = rcgen::Issuer::from_params(&signer_params, &signer_key);
                let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
                let cert = leaf_params(WEB).signed_by(&key, &signer).unwrap();
                vec![cert.der().clone(), signer_chain[0].clone()]
            },
            Usage::Server,
            Refusal::InvalidChain,
        ),
        (
            "too long a chain",
            {
                let mut chain = leaf(&root, |_| {});
                chain.extend(std::iter::repeat_n(root.cert.clone(), MAX_CHAIN_LENGTH));
                chain
            },
            Usage::Server,
            Refusal::InvalidChain,
        ),
        (
            "not a certificate",
            vec![CertificateDer::from(b"\x30\x03\x02\x01\x00".to_vec())],
            Usage::Server,
            Refusal::Malformed,
        ),
    ];
    for (name, chain, usage, reason) in cases {
        let refused = verifier
            .verify(&chain[0], &chain[1..], now(), usage)
            .expect_err(name);
        assert_eq!(refused.reason, reason, "{name}: {refused}");
        // Through rustls and back: the reason survives the handshake machinery.
        let through = refusal_of(&rustls::Error::from(refused.clone())).unwrap();
        assert_eq!(through.reason, reason, "{name} through rustls");
    }
}

#[test]
fn the_control_plane_must_be_exactly_its_identity() {
    let root = TestCa::new("mesh root");
    let control =
        SpiffeId::parse("spiffe://cluster.local/ns/skiff-system/sa/skiff-control").unwrap();
    let verifier = PeerVerifier::try_new(
        std::slice::from_ref(&root.cert),
        Expect::Identity(control.clone()),
    )
    .unwrap();
    let chain = leaf(&root, |p| {
        p.subject_alt_names = vec![SanType::URI(control.to_string().try_into().unwrap())]
    });
    assert_eq!(check(&verifier, &chain, Usage::Server), Ok(control));
    // A workload of the same mesh is not the control plane.
    let refused = verifier
        .verify(&leaf(&root, |_| {})[0], &[], now(), Usage::Server)
        .unwrap_err();
    assert_eq!(refused.reason, Refusal::IdentityMismatch);
    assert_eq!(
        refused.to_string(),
        "spiffe://cluster.local/ns/shop/sa/web is not spiffe://cluster.local/ns/skiff-system/sa/skiff-control (identity-mismatch)"
    );
}

#[test]
fn labels_are_distinct_and_lower_kebab_case() {
    let mut labels: Vec<&str> = Refusal::ALL.iter().map(|r| r.label()).collect();
    assert!(labels
        .iter()
        .all(|l| l.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')));
    labels.sort();
    labels.dedup();
    assert_eq!(labels.len(), Refusal::ALL.len());
}

#[test]
fn an_empty_or_broken_trust_bundle_is_refused() {
    let expect = Expect::TrustDomain("cluster.local".into());
    assert!(PeerVerifier::try_new(&[], expect.clone()).is_err());
    let junk = CertificateDer::from(vec![0x30, 0x00]);
    assert!(PeerVerifier::try_new(&[junk], expect).is_err());
}
