//! The policy in force and every proxy's view of it. A source publishes each valid policy as a
//! new [`Snapshot`]; every stream session watches the store and sends its proxy the view of the
//! latest snapshot when that view changed.
//!
//! Views are computed lazily, once per (snapshot, workload, relevant pod IPs), and kept
//! serialised, so thousands of proxies of a few workloads cost one computation and one
//! serialisation each. A pod IP is relevant only if some endpoint in the policy has it:
//! [`skiff_api::proxy_config`] uses pod IPs for nothing but recognising the pod's own endpoints
//! (its inbound ports), so pods whose IPs match no endpoint share their workload's view.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use skiff_api::config::{ProxyConfig, WorkloadRef};
use skiff_api::stream::{encode, ControlMessage};
use skiff_api::Policy;
use tokio::sync::watch;

/// Holds the latest snapshot and tells subscribers when it changes.
#[derive(Debug)]
pub struct Store {
    /// `None` until a first valid policy is published: proxies that connect earlier wait.
    latest: watch::Sender<Option<Arc<Snapshot>>>,
}

/// One validated policy, numbered.
#[derive(Debug)]
pub struct Snapshot {
    /// Increases by one with every publication in this process (the metric and the logs
    /// name it); proxies see content-derived [`View`] versions instead.
    pub version: u64,
    pub policy: Policy,
    /// Every endpoint address in the policy: a pod IP outside it cannot change a view.
    endpoint_ips: HashSet<IpAddr>,
    /// Views computed from this snapshot so far. The `OnceLock` lets concurrent sessions of
    /// one workload wait for a single computation instead of racing.
    views: Mutex<HashMap<ViewKey, Arc<OnceLock<Arc<View>>>>>,
}

/// Who a view is for: the workload and its relevant pod IPs (sorted).
type ViewKey = (WorkloadRef, Vec<IpAddr>);

/// One proxy's configuration, ready to send.
#[derive(Debug)]
pub struct View {
    /// Its `version` is a fingerprint of the content: equal views have equal versions, in
    /// every snapshot and every control plane process.
    pub config: ProxyConfig,
    /// The `config` frame, serialised once for every proxy that receives this view.
    pub frame: Bytes,
}

impl View {
    /// Computes the view and names it by its content.
    fn compute(policy: &Policy, workload: &WorkloadRef, pod_ips: &[IpAddr]) -> View {
        let mut config = skiff_api::proxy_config(policy, workload, pod_ips);
        config.version = String::new();
        let mut fingerprint = Fingerprint::new();
        serde_json::to_writer(&mut fingerprint, &config).expect("configs serialise");
        config.version = format!("{:016x}", fingerprint.0);
        let frame = Bytes::from(encode(&ControlMessage::Config(config.clone())));
        View { config, frame }
    }

    pub fn version(&self) -> &str {
        &self.config.version
    }
}

impl Store {
    pub fn new() -> Self {
        Store {
            latest: watch::Sender::new(None),
        }
    }

    /// Makes `policy` the one in force and returns its snapshot version.
    pub fn publish(&self, policy: Policy) -> u64 {
        let endpoint_ips = policy
            .services
            .iter()
            .flat_map(|service| &service.ports)
            .flat_map(|port| &port.endpoints)
            .map(|endpoint| endpoint.addr.ip())
            .collect();
        let mut snapshot = Snapshot {
            version: 0,
            policy,
            endpoint_ips,
            views: Mutex::default(),
        };
        let mut version = 0;
        self.latest.send_modify(|latest| {
            version = latest.as_ref().map_or(1, |s| s.version + 1);
            snapshot.version = version;
            *latest = Some(Arc::new(snapshot));
        });
        version
    }

    /// The snapshot in force, if any policy was valid yet.
    pub fn current(&self) -> Option<Arc<Snapshot>> {
        self.latest.borrow().clone()
    }

    /// Watches publications; the receiver sees the current snapshot as already seen.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Snapshot>>> {
        self.latest.subscribe()
    }
}

impl Default for Store {
    fn default() -> Self {
        Store::new()
    }
}

impl Snapshot {
    /// The view of the proxy serving `workload` at `pod_ips`, computed on first use.
    pub fn view(&self, workload: &WorkloadRef, pod_ips: &[IpAddr]) -> Arc<View> {
        let mut ips: Vec<IpAddr> = pod_ips
            .iter()
            .filter(|ip| self.endpoint_ips.contains(ip))
            .copied()
            .collect();
        ips.sort();
        ips.dedup();
        let cell = {
            let mut views = self
                .views
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            views.entry((workload.clone(), ips)).or_default().clone()
        };
        cell.get_or_init(|| Arc::new(View::compute(&self.policy, workload, pod_ips)))
            .clone()
    }
}

/// 64-bit FNV-1a over the serialised view: stable across processes and Rust releases, which
/// `std`'s hasher does not promise, and collision-safe enough to tell configurations apart.
struct Fingerprint(u64);

impl Fingerprint {
    fn new() -> Self {
        Fingerprint(0xcbf2_9ce4_8422_2325)
    }
}

impl std::io::Write for Fingerprint {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        for byte in bytes {
            self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Service `shop/echo` on `port`, with one endpoint, 10.0.0.7:8080.
    fn policy(port: u16) -> Policy {
        let text = format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: echo, namespace: shop}}\n\
             spec: {{clusterIP: 10.96.0.10, ports: [{{name: http, port: {port}, targetPort: 8080}}]}}\n\
             ---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: echo-1, namespace: shop, labels: {{kubernetes.io/service-name: echo}}}}\n\
             addressType: IPv4\nendpoints: [{{addresses: [10.0.0.7]}}]\nports: [{{name: http, port: 8080}}]\n"
        );
        skiff_api::load(&[("policy.yaml".to_string(), text)])
            .unwrap()
            .policy
    }

    fn web() -> WorkloadRef {
        WorkloadRef {
            namespace: "shop".into(),
            name: "web".into(),
        }
    }

    const POD: [IpAddr; 1] = [IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 5))];

    #[test]
    fn every_publication_gets_the_next_version() {
        let store = Store::new();
        assert!(store.current().is_none(), "nothing before a first policy");
        assert_eq!(store.publish(policy(80)), 1);
        assert_eq!(store.publish(policy(81)), 2);
        assert_eq!(store.current().unwrap().version, 2);
    }

    #[test]
    fn a_view_is_computed_once_per_workload_and_named_by_its_content() {
        let store = Store::new();
        store.publish(policy(80));
        let first = store.current().unwrap();
        let a = first.view(&web(), &POD);
        let b = first.view(&web(), &POD);
        assert!(
            Arc::ptr_eq(&a, &b),
            "one computation per (workload, pod ips)"
        );
        assert_eq!(a.config.workload, web());
        assert_eq!(a.version().len(), 16);
        let frame = std::str::from_utf8(&a.frame).unwrap();
        assert!(frame.starts_with("{\"config\":{\"version\":\""), "{frame}");
        assert!(frame.ends_with("}\n"));

        store.publish(policy(80));
        let same = store.current().unwrap().view(&web(), &POD);
        assert_eq!(same.version(), a.version(), "same content, same version");

        store.publish(policy(81));
        let changed = store.current().unwrap().view(&web(), &POD);
        assert_ne!(changed.version(), a.version(), "new content, new version");
    }

    #[test]
    fn pod_ips_matter_only_when_they_are_endpoints() {
        let store = Store::new();
        store.publish(policy(80));
        let snapshot = store.current().unwrap();
        let ip = |text: &str| -> IpAddr { text.parse().unwrap() };
        let client_a = snapshot.view(&web(), &[ip("10.0.0.5")]);
        let client_b = snapshot.view(&web(), &[ip("10.0.0.6")]);
        assert!(
            Arc::ptr_eq(&client_a, &client_b),
            "one view for replicas that serve nothing"
        );
        let server = snapshot.view(&web(), &[ip("10.0.0.7")]);
        assert_eq!(
            server.config.inbound.len(),
            1,
            "10.0.0.7 is an endpoint: {:?}",
            server.config
        );
        assert_ne!(server.version(), client_a.version());
        // The shared view is exactly what the pod's own IPs would give.
        for (pod_ips, view) in [(ip("10.0.0.6"), &client_b), (ip("10.0.0.7"), &server)] {
            let mut direct = skiff_api::proxy_config(&snapshot.policy, &web(), &[pod_ips]);
            direct.version = view.config.version.clone();
            assert_eq!(direct, view.config);
        }
    }

    #[tokio::test]
    async fn every_subscriber_sees_the_latest_snapshot() {
        let store = Store::new();
        let mut subscribers: Vec<_> = (0..3).map(|_| store.subscribe()).collect();
        store.publish(policy(80));
        store.publish(policy(81));
        for subscriber in &mut subscribers {
            subscriber.changed().await.unwrap();
            let latest = subscriber.borrow_and_update().clone().unwrap();
            assert_eq!(latest.version, 2, "intermediate snapshots may be skipped");
        }
    }
}
