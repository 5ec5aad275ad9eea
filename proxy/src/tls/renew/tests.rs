use std::sync::Mutex;

use rcgen::CertificateSigningRequestParams;
use tokio::time::Instant;

use super::*;
use crate::tls::testing::{leaf_params, TestCa};

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn renewal_is_due_at_seventy_percent_give_or_take_five() {
    let since = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let lifetime = 100 * SECOND;
    let cases = [
        (0.0, 65),
        (0.5, 70),
        (0.25, 67),
        (1.0, 75),
        (-3.0, 65), // out of range is clamped
        (7.0, 75),
    ];
    for (jitter, seconds) in cases {
        let at = renewal_time(since, since + lifetime, jitter);
        let after = at.duration_since(since).unwrap();
        assert_eq!(after.as_secs(), seconds, "jitter {jitter}");
    }
    // 24 h: between 15.6 h and 18 h.
    let day = 24 * 3600 * SECOND;
    let at = renewal_time(since, since + day, 0.999);
    assert!(at.duration_since(since).unwrap() < day.mul_f64(0.75));
    // Already expired (or inverted): due at once.
    assert_eq!(renewal_time(since, since - SECOND, 0.5), since);
}

#[test]
fn retries_are_quick_and_capped_by_the_lifetime() {
    let cases = [
        (24 * 3600 * SECOND, 60 * SECOND),
        (10 * 60 * SECOND, 30 * SECOND),
        (10 * SECOND, SECOND),
        (Duration::ZERO, SECOND),
    ];
    for (lifetime, cap) in cases {
        let backoff = retry_backoff(lifetime);
        assert_eq!(backoff.cap, cap, "{lifetime:?}");
        assert!(backoff.base <= backoff.cap);
    }
}

#[test]
fn the_csr_names_the_identity_when_known() {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let web = SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/web").unwrap();
    let named = CertificateSigningRequestParams::from_pem(&csr(&key, Some(&web)).unwrap()).unwrap();
    assert_eq!(
        named.params.subject_alt_names,
        [SanType::URI(web.to_string().try_into().unwrap())]
    );
    use rcgen::PublicKeyData;
    assert_eq!(named.public_key.der_bytes(), key.der_bytes());
    let first = CertificateSigningRequestParams::from_pem(&csr(&key, None).unwrap()).unwrap();
    assert!(first.params.subject_alt_names.is_empty());
}

fn client(root: &TestCa) -> CertificateClient {
    CertificateClient {
        control_plane: "127.0.0.1:15010".parse().unwrap(),
        tls: ControlPlaneTls::try_new(
            std::slice::from_ref(&root.cert),
            SpiffeId::parse("spiffe://cluster.local/ns/skiff-system/sa/skiff-control").unwrap(),
        )
        .unwrap(),
        workload: WorkloadRef {
            namespace: "shop".into(),
            name: "web".into(),
        },
        token_file: None,
    }
}

#[test]
fn answers_are_checked_against_the_request() {
    let root = TestCa::new("mesh root");
    let client = client(&root);
    let answer = |identity: &str, san: &str| {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let leaf = root.sign(&leaf_params(san), &key);
        let response = CertificateResponse {
            identity: identity.to_string(),
            chain_pem: crate::tls::testing::pem("CERTIFICATE", &leaf),
            trust_bundle_pem: root.pem(),
            not_after_unix: 0,
        };
        (response, key)
    };
    let web = "spiffe://cluster.local/ns/shop/sa/web";
    let (good, key) = answer(web, web);
    let credentials = client.credentials(good, key).unwrap();
    let identity = Identity::try_new(credentials).unwrap();
    assert_eq!(identity.id().to_string(), web);

    for (identity, san, wrong) in [
        ("not a spiffe id", web, "identity \"not a spiffe id\""),
        (
            "spiffe://cluster.local/ns/other/sa/web",
            "spiffe://cluster.local/ns/other/sa/web",
            "outside the workload's namespace",
        ),
        (
            web,
            "spiffe://cluster.local/ns/shop/sa/api",
            "does not name exactly",
        ),
    ] {
        let (response, key) = answer(identity, san);
        match client.credentials(response, key) {
            Err(IssueError::Answer(reason)) => assert!(reason.contains(wrong), "{reason}"),
            other => panic!("{identity} / {san}: {:?}", other.map(|_| ())),
        }
    }
    // A certificate for another key is refused when installed.
    let (response, _) = answer(web, web);
    let other_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let credentials = client.credentials(response, other_key).unwrap();
    assert!(identity.install(credentials).is_err());
}

#[test]
fn the_token_is_read_at_every_request() {
    let root = TestCa::new("mesh root");
    let mut client = client(&root);
    let path = std::env::temp_dir().join(format!("skiff-token-{}", std::process::id()));
    client.token_file = Some(path.clone());
    assert!(matches!(client.read_token(), Err(IssueError::Token { .. })));
    std::fs::write(&path, "first\n").unwrap();
    assert_eq!(client.read_token().unwrap().as_deref(), Some("first"));
    std::fs::write(&path, "rotated").unwrap();
    assert_eq!(client.read_token().unwrap().as_deref(), Some("rotated"));
    std::fs::write(&path, "  \n").unwrap();
    assert_eq!(client.read_token().unwrap(), None);
    let _ = std::fs::remove_file(&path);
}

#[tokio::test(start_paused = true)]
async fn renewal_waits_for_its_time_retries_failures_and_installs_the_new_certificate() {
    let root = TestCa::new("mesh root");
    let web = SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/web").unwrap();
    let identity =
        Arc::new(Identity::try_new(root.credentials(&web, 100 * SECOND, &[&root])).unwrap());
    let first_not_after = identity.not_after();

    let start = Instant::now();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let renewing = {
        let (identity, calls, root, web) = (identity.clone(), calls.clone(), root, web.clone());
        tokio::spawn(async move {
            let renewed = identity.clone();
            renew_forever(&renewed, move || {
                let call = {
                    let mut calls = calls.lock().unwrap();
                    calls.push(Instant::now());
                    calls.len()
                };
                let credentials = root.credentials(&web, 200 * SECOND, &[&root]);
                async move {
                    match call {
                        1 | 2 => Err(IssueError::Timeout),
                        _ => Ok(credentials),
                    }
                }
            })
            .await
        })
    };
    for _ in 0..1000 {
        if calls.lock().unwrap().len() >= 4 {
            break;
        }
        tokio::time::sleep(SECOND).await;
    }
    renewing.abort();
    let calls: Vec<Duration> = calls.lock().unwrap().iter().map(|at| *at - start).collect();
    assert!(calls.len() >= 4, "{calls:?}");
    // Due at 65-75 s of its 100 s.
    assert!(
        calls[0] >= 64 * SECOND && calls[0] <= 76 * SECOND,
        "{calls:?}"
    );
    // Failures are retried after back-off delays (base 0.5 s, doubling).
    assert!(calls[1] - calls[0] <= SECOND / 2, "{calls:?}");
    assert!(calls[2] - calls[1] <= SECOND, "{calls:?}");
    // The new certificate (200 s) is renewed at 65-75% of its own lifetime.
    let next = calls[3] - calls[2];
    assert!(next >= 128 * SECOND && next <= 151 * SECOND, "{calls:?}");

    assert!(identity.not_after() > first_not_after);
    let mut metrics = String::new();
    identity.render_metrics(&mut metrics);
    for line in [
        "skiff_certificate_renewals_total{result=\"success\"} 2",
        "skiff_certificate_renewals_total{result=\"failure\"} 2",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_refused_certificate_is_a_failed_renewal_and_the_current_one_stays() {
    let root = TestCa::new("mesh root");
    let web = SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/web").unwrap();
    let identity =
        Arc::new(Identity::try_new(root.credentials(&web, 100 * SECOND, &[&root])).unwrap());
    let leaf = identity.certified_key().cert[0].clone();
    let renewing = {
        let identity = identity.clone();
        let stranger = TestCa::new("not our root");
        tokio::spawn(async move {
            let renewed = identity.clone();
            renew_forever(&renewed, move || {
                // Chains to a root the bundle does not hold.
                let mut credentials = stranger.credentials(&web, 100 * SECOND, &[&stranger]);
                credentials.trust_bundle = vec![root.cert.clone()];
                async move { Ok(credentials) }
            })
            .await
        })
    };
    tokio::time::sleep(90 * SECOND).await;
    renewing.abort();
    assert_eq!(identity.certified_key().cert[0], leaf);
    let mut metrics = String::new();
    identity.render_metrics(&mut metrics);
    assert!(metrics.contains("skiff_certificate_renewals_total{result=\"success\"} 0"));
    assert!(!metrics.contains("skiff_certificate_renewals_total{result=\"failure\"} 0"));
}
