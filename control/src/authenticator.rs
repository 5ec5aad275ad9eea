//! Who may have which certificate. A request for a workload's certificate is signed only for
//! the identity that workload may have (its service account), and only when the request proves
//! it comes from that workload: a bearer token, or the workload's own current certificate.

use skiff_api::config::WorkloadRef;
use skiff_api::identity::SpiffeId;
use skiff_api::policy::ObjectKey;
use skiff_api::Policy;

use crate::store::Store;

/// The service account of a workload the policy does not declare, as of a pod without
/// `serviceAccountName`.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";

/// How a bearer token is checked.
///
/// Whatever the variant, a request made over a connection whose (verified) client certificate
/// carries the workload's identity is a renewal and needs no token: that certificate is proof
/// enough, and the proxy may have dropped or never had a token by then.
///
/// One variant today. `TokenReview` becomes the second with the Kubernetes issue: the token is
/// then the pod's projected service-account token (audience `skiff`), sent by the control plane
/// to the API server's TokenReview; the review's user
/// (`system:serviceaccount:<namespace>:<service-account>`) and its pod-name extra must be the
/// workload asked for, and the identity signed is that service account's. That variant needs an
/// API client (so [`Authenticator::authenticate`] is already `async`); nothing of Kubernetes
/// enters this module before then.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Authenticator {
    /// File mode: the token is the `bootstrapToken` of the workload's Workload in the policy
    /// in force.
    #[default]
    BootstrapToken,
}

/// What a certificate request carries to prove who sent it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Credentials<'a> {
    /// `Authorization: Bearer <token>`.
    pub bearer: Option<&'a str>,
    /// The SPIFFE ID of the client certificate of the connection, already verified against
    /// the trust bundle.
    pub client: Option<&'a SpiffeId>,
}

/// Why a request is not authenticated as the workload it names.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no policy has been published yet, so no workload is known")]
    NoPolicy,
    #[error("no bearer token and no client certificate")]
    NoCredentials,
    #[error(
        "workload {0} is not declared in the policy, so no bootstrap token can authenticate it"
    )]
    UnknownWorkload(WorkloadRef),
    #[error("Workload {0} has no bootstrapToken, so only its current certificate can renew it")]
    NoBootstrapToken(WorkloadRef),
    #[error("wrong bootstrap token for workload {0}")]
    WrongToken(WorkloadRef),
    #[error(
        "the client certificate is {client}, not {identity}, the identity of workload {workload}"
    )]
    OtherIdentity {
        client: Box<SpiffeId>,
        workload: WorkloadRef,
        identity: Box<SpiffeId>,
    },
}

impl Authenticator {
    /// The identity `workload` may have, if `credentials` prove the request comes from it.
    pub async fn authenticate(
        &self,
        store: &Store,
        trust_domain: &str,
        workload: &WorkloadRef,
        credentials: Credentials<'_>,
    ) -> Result<SpiffeId, Refusal> {
        let snapshot = store.current().ok_or(Refusal::NoPolicy)?;
        let identity = workload_identity(&snapshot.policy, trust_domain, workload);
        if credentials.client == Some(&identity) {
            return Ok(identity);
        }
        if let Some(token) = credentials.bearer {
            return match self {
                Authenticator::BootstrapToken => {
                    check_bootstrap_token(&snapshot.policy, workload, token).map(|()| identity)
                }
            };
        }
        match credentials.client {
            Some(client) => Err(Refusal::OtherIdentity {
                client: Box::new(client.clone()),
                workload: workload.clone(),
                identity: Box::new(identity),
            }),
            None => Err(Refusal::NoCredentials),
        }
    }
}

fn check_bootstrap_token(
    policy: &Policy,
    workload: &WorkloadRef,
    token: &str,
) -> Result<(), Refusal> {
    let declared = policy
        .workload(&ObjectKey::new(&workload.namespace, &workload.name))
        .ok_or_else(|| Refusal::UnknownWorkload(workload.clone()))?;
    let expected = declared
        .bootstrap_token
        .as_deref()
        .ok_or_else(|| Refusal::NoBootstrapToken(workload.clone()))?;
    if same_secret(token, expected) {
        Ok(())
    } else {
        Err(Refusal::WrongToken(workload.clone()))
    }
}

/// The identity `workload` may have: `spiffe://<trust-domain>/ns/<namespace>/sa/<its Workload's
/// serviceAccount>`, or the namespace's `default` service account when the policy does not
/// declare it (such a workload can renew, never bootstrap, a certificate).
pub fn workload_identity(policy: &Policy, trust_domain: &str, workload: &WorkloadRef) -> SpiffeId {
    let service_account = policy
        .workload(&ObjectKey::new(&workload.namespace, &workload.name))
        .map_or(DEFAULT_SERVICE_ACCOUNT, |w| w.service_account.as_str());
    SpiffeId::new(trust_domain, &workload.namespace, service_account)
}

/// Compares two secrets in time independent of where they differ: their SHA-256 digests
/// (equal length whatever the inputs) are compared without an early exit.
fn same_secret(given: &str, expected: &str) -> bool {
    let given = ring::digest::digest(&ring::digest::SHA256, given.as_bytes());
    let expected = ring::digest::digest(&ring::digest::SHA256, expected.as_bytes());
    given
        .as_ref()
        .iter()
        .zip(expected.as_ref())
        .fold(0u8, |difference, (a, b)| difference | (a ^ b))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(yaml: &str) -> Store {
        let store = Store::new();
        let files = vec![("workloads.yaml".to_string(), yaml.to_string())];
        store.publish(skiff_api::load(&files).expect("valid policy").policy);
        store
    }

    const POLICY: &str = "\
apiVersion: skiff.dev/v1alpha1
kind: Workload
metadata: {name: web, namespace: shop}
spec: {serviceAccount: web-sa, bootstrapToken: s3cret-bootstrap-token}
---
apiVersion: skiff.dev/v1alpha1
kind: Workload
metadata: {name: db, namespace: shop}
spec: {serviceAccount: db}
";

    fn workload(namespace: &str, name: &str) -> WorkloadRef {
        WorkloadRef {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    #[tokio::test]
    async fn a_token_or_the_workloads_own_certificate_authenticates_it() {
        let store = store(POLICY);
        let web = workload("shop", "web");
        let web_id = SpiffeId::new("td", "shop", "web-sa");
        let db_id = SpiffeId::new("td", "shop", "db");
        let auth = Authenticator::BootstrapToken;
        let check =
            |workload: WorkloadRef, bearer: Option<&'static str>, client: Option<SpiffeId>| {
                let store = &store;
                let auth = &auth;
                async move {
                    let credentials = Credentials {
                        bearer,
                        client: client.as_ref(),
                    };
                    auth.authenticate(store, "td", &workload, credentials).await
                }
            };
        assert_eq!(
            check(web.clone(), Some("s3cret-bootstrap-token"), None).await,
            Ok(web_id.clone())
        );
        assert_eq!(
            check(web.clone(), Some("s3cret-bootstrap-token!"), None).await,
            Err(Refusal::WrongToken(web.clone()))
        );
        assert_eq!(
            check(web.clone(), Some(""), None).await,
            Err(Refusal::WrongToken(web.clone()))
        );
        assert_eq!(
            check(web.clone(), None, None).await,
            Err(Refusal::NoCredentials)
        );
        // Renewal: its own certificate, with or without (even a wrong) token.
        assert_eq!(
            check(web.clone(), None, Some(web_id.clone())).await,
            Ok(web_id.clone())
        );
        assert_eq!(
            check(web.clone(), Some("old"), Some(web_id.clone())).await,
            Ok(web_id.clone())
        );
        // Another workload's certificate.
        assert_eq!(
            check(web.clone(), None, Some(db_id.clone())).await,
            Err(Refusal::OtherIdentity {
                client: Box::new(db_id.clone()),
                workload: web.clone(),
                identity: Box::new(web_id.clone()),
            })
        );
        // A workload without a token renews only.
        let db = workload("shop", "db");
        assert_eq!(
            check(db.clone(), Some("s3cret-bootstrap-token"), None).await,
            Err(Refusal::NoBootstrapToken(db.clone()))
        );
        assert_eq!(
            check(db.clone(), None, Some(db_id.clone())).await,
            Ok(db_id)
        );
        // An undeclared workload has the default service account and no token.
        let ghost = workload("shop", "ghost");
        assert_eq!(
            check(ghost.clone(), Some("s3cret-bootstrap-token"), None).await,
            Err(Refusal::UnknownWorkload(ghost.clone()))
        );
        let default = SpiffeId::new("td", "shop", "default");
        assert_eq!(check(ghost, None, Some(default.clone())).await, Ok(default));
        // Nothing before a policy.
        let empty = Store::new();
        let refused = auth
            .authenticate(&empty, "td", &web, Credentials::default())
            .await;
        assert_eq!(refused, Err(Refusal::NoPolicy));
    }

    #[test]
    fn secrets_compare_equal_only_when_equal() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
        assert!(!same_secret("", "a"));
    }
}
