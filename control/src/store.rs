//! The policy in force and every proxy's view of it. A source publishes each valid policy as a
//! new [`Snapshot`]; every stream session watches the store and sends its proxy the view of the
//! latest snapshot when that view changed.
//!
//! A view is computed lazily and kept only as its serialised frame, in two parts:
//!
//! - `services`, the bulk of it (every Service, its endpoints, the routes its clients use),
//!   depends on nothing but the client's namespace: it is computed, serialised and
//!   fingerprinted once per (snapshot, namespace), and the same bytes end the frame of every
//!   proxy there;
//! - the head (version, workload, the pod's inbound ports) is a few hundred bytes per
//!   (snapshot, workload, endpoints at the pod's IPs).
//!
//! Pod IPs matter for nothing but recognising the pod's own endpoints (its inbound ports), so
//! views are cached by those endpoints rather than by the IPs: replicas of a workload share one
//! view even when every one of them is an endpoint, as every pod of a real mesh is. Whatever the
//! number of proxies, a snapshot costs one `services` per namespace and one small head per
//! distinct workload.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use skiff_api::config::{InboundPort, InboundSecurity, ProxyConfig, RateLimit, WorkloadRef};
use skiff_api::policy::{ObjectKey, Transport};
use skiff_api::stream::{ControlMessage, FrameDecoder, MAX_CONFIG_FRAME_BYTES};
use skiff_api::Policy;
use tokio::sync::watch;

/// Holds the latest snapshot and tells subscribers when it changes.
#[derive(Debug)]
pub struct Store {
    /// `None` until a first valid policy is published: proxies that connect earlier wait.
    latest: watch::Sender<Option<Arc<Snapshot>>>,
    /// The trust domain of the identities views name (`--trust-domain`): the one the CA signs.
    trust_domain: Arc<str>,
}

/// One validated policy, numbered.
#[derive(Debug)]
pub struct Snapshot {
    /// Increases by one with every publication in this process (the metric and the logs
    /// name it); proxies see content-derived [`View`] versions instead.
    pub version: u64,
    pub policy: Policy,
    /// The trust domain of the identities its views name.
    trust_domain: Arc<str>,
    /// The endpoints of TCP ports at each address, and the workload each belongs to: a pod IP
    /// outside it cannot change a view.
    endpoints_at: HashMap<IpAddr, Vec<(EndpointAt, Option<ObjectKey>)>>,
    /// The endpoints of TCP ports each workload claims, whatever their address.
    owned: HashMap<ObjectKey, Vec<EndpointAt>>,
    /// `services` computed so far, by client namespace. The `OnceLock`s (here and in `views`)
    /// let concurrent sessions wait for a single computation instead of racing.
    services: Cache<String, Services>,
    /// Views computed so far.
    views: Cache<ViewKey, View>,
}

type Cache<K, V> = Mutex<HashMap<K, Arc<OnceLock<Arc<V>>>>>;

/// An endpoint of a TCP port, as far as a view depends on it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct EndpointAt {
    /// Index of the Service and of its port in the policy: when two Services target one pod
    /// port, the first names the inbound port.
    service: usize,
    port: usize,
    /// The pod port it targets: the inbound port.
    target_port: u16,
}

/// Who a view is for: the workload, and the endpoints at its pod IPs that it does not claim
/// (those it claims are the same for every replica), sorted. Equal keys, equal views.
type ViewKey = (WorkloadRef, Vec<EndpointAt>);

/// The `services` of the views of one client namespace, serialised: the end of their frames.
#[derive(Debug)]
struct Services {
    /// The JSON array, and the `}}\n` that closes the frame.
    body: Bytes,
    /// Of the JSON; stands for it in the fingerprint of every view that includes it.
    fingerprint: u64,
}

/// One proxy's configuration, ready to send.
#[derive(Debug)]
pub struct View {
    /// A fingerprint of the content: equal views have equal versions, in every snapshot and
    /// every control plane process.
    version: String,
    /// The `config` frame: the head (version, workload, inbound ports) and the namespace's
    /// `services`, which end the frame (the same buffer for every view of the namespace). Two
    /// buffers, so HTTP/2 sends a view in one write when the proxy's frames are large enough.
    /// A parsed `ProxyConfig` is not kept (it is several times larger); [`View::config`] reads
    /// the frame back.
    chunks: [Bytes; 2],
}

/// The version a head is fingerprinted with: the fingerprint then replaces it.
const VERSION_PLACEHOLDER: &str = "0000000000000000";

impl View {
    /// The frame of `workload`'s view: `ProxyConfig`'s fields in the order `version`,
    /// `workload`, `inbound`, `inboundSecurity`, `inboundRateLimit`, `services` (JSON objects
    /// are unordered; `services` goes last so
    /// that the shared buffer ends the frame, and the version first so that a reader finds it
    /// at once), with `services` already serialised. The version fingerprints the head (with
    /// a placeholder version) and the services' fingerprint.
    fn assemble(
        workload: &WorkloadRef,
        services: &Services,
        inbound: &[InboundPort],
        security: &InboundSecurity,
        rate_limit: Option<&RateLimit>,
    ) -> View {
        let rest = format!(
            "\"workload\":{},\"inbound\":{},\"inboundSecurity\":{},\"inboundRateLimit\":{},\"services\":",
            to_json(workload),
            to_json(inbound),
            to_json(security),
            to_json(&rate_limit)
        );
        let head = |version: &str| format!("{{\"config\":{{\"version\":\"{version}\",{rest}");
        let mut fingerprint = Fingerprint::new();
        fingerprint.write(head(VERSION_PLACEHOLDER).as_bytes());
        fingerprint.write(&services.fingerprint.to_le_bytes());
        let version = format!("{:016x}", fingerprint.0);
        View {
            chunks: [Bytes::from(head(&version)), services.body.clone()],
            version,
        }
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    /// The frame, in the order to send.
    pub fn chunks(&self) -> &[Bytes] {
        &self.chunks
    }

    /// The configuration, read back from the frame.
    pub fn config(&self) -> ProxyConfig {
        let mut decoder = FrameDecoder::new(MAX_CONFIG_FRAME_BYTES);
        for chunk in &self.chunks {
            decoder.push(chunk);
        }
        match decoder.next_message() {
            Ok(Some(ControlMessage::Config(config))) => config,
            other => unreachable!("a view's frame is a config frame: {other:?}"),
        }
    }
}

/// Compact JSON, as [`skiff_api::stream::encode`] writes it.
fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    // Configuration types have string keys and no non-finite floats.
    serde_json::to_string(value).expect("configurations serialise")
}

impl Store {
    /// A store whose views name identities in the default trust domain.
    pub fn new() -> Self {
        Store::with_trust_domain(skiff_api::identity::DEFAULT_TRUST_DOMAIN)
    }

    /// A store whose views name identities in `trust_domain`.
    pub fn with_trust_domain(trust_domain: &str) -> Self {
        Store {
            latest: watch::Sender::new(None),
            trust_domain: Arc::from(trust_domain),
        }
    }

    /// Makes `policy` the one in force and returns its snapshot version.
    pub fn publish(&self, policy: Policy) -> u64 {
        let (endpoints_at, owned) = index_endpoints(&policy);
        let mut snapshot = Snapshot {
            version: 0,
            trust_domain: self.trust_domain.clone(),
            endpoints_at,
            owned,
            policy,
            services: Mutex::default(),
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

/// The endpoints of every TCP port of `policy` (the only ones a view looks at), by address and
/// by the workload that claims them.
#[allow(clippy::type_complexity)]
fn index_endpoints(
    policy: &Policy,
) -> (
    HashMap<IpAddr, Vec<(EndpointAt, Option<ObjectKey>)>>,
    HashMap<ObjectKey, Vec<EndpointAt>>,
) {
    let mut by_address: HashMap<IpAddr, Vec<_>> = HashMap::new();
    let mut owned: HashMap<ObjectKey, Vec<_>> = HashMap::new();
    for (s, service) in policy.services.iter().enumerate() {
        for (p, port) in service.ports.iter().enumerate() {
            if port.transport != Transport::Tcp {
                continue;
            }
            for endpoint in &port.endpoints {
                let at = EndpointAt {
                    service: s,
                    port: p,
                    target_port: endpoint.addr.port(),
                };
                if let Some(owner) = &endpoint.workload {
                    owned.entry(owner.clone()).or_default().push(at.clone());
                }
                by_address
                    .entry(endpoint.addr.ip())
                    .or_default()
                    .push((at, endpoint.workload.clone()));
            }
        }
    }
    for list in owned.values_mut() {
        list.sort();
        list.dedup();
    }
    (by_address, owned)
}

impl Snapshot {
    /// The view of the proxy serving `workload` at `pod_ips`, computed on first use.
    pub fn view(&self, workload: &WorkloadRef, pod_ips: &[IpAddr]) -> Arc<View> {
        let me = ObjectKey::new(&workload.namespace, &workload.name);
        let mut found: Vec<EndpointAt> = pod_ips
            .iter()
            .filter_map(|ip| self.endpoints_at.get(ip))
            .flatten()
            .filter(|(_, owner)| owner.as_ref() != Some(&me))
            .map(|(at, _)| at.clone())
            .collect();
        found.sort();
        found.dedup();
        cached(&self.views, (workload.clone(), found.clone()), || {
            let services = self.services(&workload.namespace);
            let inbound = self.inbound(&me, &found);
            let security = skiff_api::view::inbound_security(&self.policy, workload);
            let rate_limit = skiff_api::view::inbound_rate_limit(&self.policy, workload);
            View::assemble(
                workload,
                &services,
                &inbound,
                &security,
                rate_limit.as_ref(),
            )
        })
    }

    /// What [`skiff_api::proxy_config`] puts in `services` for a client in `namespace`: it
    /// depends on the client's namespace only (routes of other namespaces apply to their own
    /// clients), so it is computed for a workload of that namespace that claims nothing.
    fn services(&self, namespace: &str) -> Arc<Services> {
        cached(&self.services, namespace.to_string(), || {
            let anyone = WorkloadRef {
                namespace: namespace.to_string(),
                name: String::new(),
            };
            let services =
                skiff_api::proxy_config(&self.policy, &anyone, &[], &self.trust_domain).services;
            let mut body = to_json(&services).into_bytes();
            let mut fingerprint = Fingerprint::new();
            fingerprint.write(&body);
            body.extend_from_slice(b"}}\n");
            Services {
                body: Bytes::from(body),
                fingerprint: fingerprint.0,
            }
        })
    }

    /// The inbound ports [`skiff_api::proxy_config`] gives the workload `me` at a pod with the
    /// endpoints `found` (besides those `me` claims): every target port of these endpoints,
    /// named after the first Service (in policy order) that targets it.
    fn inbound(&self, me: &ObjectKey, found: &[EndpointAt]) -> Vec<InboundPort> {
        let mut mine: Vec<&EndpointAt> = self.owned.get(me).into_iter().flatten().collect();
        mine.extend(found);
        mine.sort();
        let mut inbound = BTreeMap::new();
        for at in mine {
            let service = &self.policy.services[at.service];
            inbound
                .entry(at.target_port)
                .or_insert_with(|| InboundPort {
                    port: at.target_port,
                    service: service.key.to_string(),
                    protocol: service.ports[at.port].protocol,
                });
        }
        inbound.into_values().collect()
    }
}

/// The value cached under `key`, computed by `compute` on first use; concurrent callers wait
/// for the one computation. The lock is held only to find the cell, never while computing.
fn cached<K: Hash + Eq, V>(cache: &Cache<K, V>, key: K, compute: impl FnOnce() -> V) -> Arc<V> {
    let cell = cache
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .entry(key)
        .or_default()
        .clone();
    cell.get_or_init(|| Arc::new(compute())).clone()
}

/// 64-bit FNV-1a: stable across processes and Rust releases, which `std`'s hasher does not
/// promise, and collision-safe enough to tell configurations apart.
struct Fingerprint(u64);

impl Fingerprint {
    fn new() -> Self {
        Fingerprint(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_api::stream::encode;

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

    /// The frame a view sends, in one piece.
    fn frame(view: &View) -> Vec<u8> {
        view.chunks().concat()
    }

    /// The view must be what `proxy_config` gives, and its frame one line of the same JSON as
    /// `encode` writes (fields in another order).
    fn assert_is_direct(
        snapshot: &Snapshot,
        view: &View,
        workload: &WorkloadRef,
        pod_ips: &[IpAddr],
    ) {
        let mut direct = skiff_api::proxy_config(
            &snapshot.policy,
            workload,
            pod_ips,
            skiff_api::identity::DEFAULT_TRUST_DOMAIN,
        );
        direct.version = view.version().to_string();
        assert_eq!(view.config(), direct);
        let frame = frame(view);
        let encoded = encode(&ControlMessage::Config(direct));
        assert_eq!(frame.len(), encoded.len());
        assert_eq!(
            frame.iter().position(|b| *b == b'\n'),
            Some(frame.len() - 1)
        );
        let json = |bytes: &[u8]| serde_json::from_slice::<serde_json::Value>(bytes).unwrap();
        assert_eq!(json(&frame), json(&encoded));
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
        assert_eq!(a.config().workload, web());
        assert_eq!(a.version().len(), 16);
        assert_eq!(
            a.config().version,
            a.version(),
            "the frame carries the version"
        );
        let frame = frame(&a);
        let frame = std::str::from_utf8(&frame).unwrap();
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
            server.config().inbound.len(),
            1,
            "10.0.0.7 is an endpoint: {:?}",
            server.config()
        );
        assert_ne!(server.version(), client_a.version());
        // The shared view is exactly what the pod's own IPs would give.
        for (pod_ip, view) in [(ip("10.0.0.6"), &client_b), (ip("10.0.0.7"), &server)] {
            assert_is_direct(&snapshot, view, &web(), &[pod_ip]);
        }
    }

    /// Services `shop/echo` (port 80) and `shop/admin` (port 81), both targeting port 8080 of
    /// the pods 10.0.0.7 and 10.0.0.8, which the Workload `shop/echo` claims when `claimed`.
    fn replicated(claimed: bool) -> Policy {
        let mut text = String::new();
        for (name, vip, port) in [("admin", "10.96.0.11", 81), ("echo", "10.96.0.10", 80)] {
            text += &format!(
                "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: shop}}\n\
                 spec: {{clusterIP: {vip}, ports: [{{name: http, port: {port}, targetPort: 8080}}]}}\n\
                 ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
                 metadata: {{name: {name}-1, namespace: shop, labels: {{kubernetes.io/service-name: {name}}}}}\n\
                 addressType: IPv4\nendpoints: [{{addresses: [10.0.0.7]}}, {{addresses: [10.0.0.8]}}]\n\
                 ports: [{{name: http, port: 8080}}]\n"
            );
        }
        if claimed {
            text += "---\napiVersion: skiff.dev/v1alpha1\nkind: Workload\n\
                     metadata: {name: echo, namespace: shop}\n\
                     spec: {serviceAccount: echo, addresses: [10.0.0.7, 10.0.0.8]}\n";
        }
        skiff_api::load(&[("policy.yaml".to_string(), text)])
            .unwrap()
            .policy
    }

    #[test]
    fn replicas_that_are_endpoints_share_one_view() {
        let ip = |text: &str| -> IpAddr { text.parse().unwrap() };
        let echo = WorkloadRef {
            namespace: "shop".into(),
            name: "echo".into(),
        };
        for claimed in [false, true] {
            let store = Store::new();
            store.publish(replicated(claimed));
            let snapshot = store.current().unwrap();
            let a = snapshot.view(&echo, &[ip("10.0.0.7")]);
            let b = snapshot.view(&echo, &[ip("10.0.0.8")]);
            assert!(Arc::ptr_eq(&a, &b), "claimed: {claimed}");
            let config = a.config();
            assert_eq!(config.inbound.len(), 1, "{:?}", config.inbound);
            assert_eq!(
                config.inbound[0].service, "shop/admin",
                "the first Service names a shared target port"
            );
            for pod_ip in [ip("10.0.0.7"), ip("10.0.0.8")] {
                assert_is_direct(&snapshot, &a, &echo, &[pod_ip]);
            }
            // A replica that serves nothing has a view of its own, without inbound ports,
            // unless the Workload claims the endpoints (then every replica's are its own).
            let idle = snapshot.view(&echo, &[ip("10.0.0.9")]);
            assert_eq!(Arc::ptr_eq(&a, &idle), claimed);
        }
    }

    #[test]
    fn services_are_shared_within_a_namespace_and_differ_across() {
        // A consumer route in namespace `web` applies to clients in `web` only.
        let text = "apiVersion: v1\nkind: Service\nmetadata: {name: echo, namespace: shop}\n\
            spec: {clusterIP: 10.96.0.10, ports: [{name: http, port: 80, targetPort: 8080}, \
            {name: dns, port: 53, protocol: UDP}]}\n\
            ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
            metadata: {name: echo-1, namespace: shop, labels: {kubernetes.io/service-name: echo}}\n\
            addressType: IPv4\nendpoints: [{addresses: [10.0.0.7]}]\n\
            ports: [{name: http, port: 8080}, {name: dns, port: 53, protocol: UDP}]\n\
            ---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
            metadata: {name: pin, namespace: web}\n\
            spec: {parentRefs: [{group: \"\", kind: Service, name: echo, namespace: shop, port: 80}], \
            rules: [{backendRefs: [{name: echo, namespace: shop, port: 80}], \
            timeouts: {request: 1s}}]}\n";
        let loaded = skiff_api::load(&[("policy.yaml".to_string(), text.to_string())]);
        let policy = match loaded {
            Ok(loaded) => loaded.policy,
            Err(problems) => panic!("{}", problems[0]),
        };
        let store = Store::new();
        store.publish(policy);
        let snapshot = store.current().unwrap();
        let ip = |text: &str| -> IpAddr { text.parse().unwrap() };
        let workload = |namespace: &str, name: &str| WorkloadRef {
            namespace: namespace.into(),
            name: name.into(),
        };
        let shop_a = workload("shop", "a");
        let shop_b = workload("shop", "b");
        let web_a = workload("web", "a");
        let a = snapshot.view(&shop_a, &[ip("10.0.0.5")]);
        let b = snapshot.view(&shop_b, &[ip("10.0.0.7")]);
        let web = snapshot.view(&web_a, &[]);
        assert_eq!(
            a.chunks()[1].as_ptr(),
            b.chunks()[1].as_ptr(),
            "one namespace, one services"
        );
        assert_ne!(
            a.chunks()[1],
            web.chunks()[1],
            "the consumer route is web's only"
        );
        assert_ne!(a.version(), b.version(), "other workload, other version");
        assert_is_direct(&snapshot, &a, &shop_a, &[ip("10.0.0.5")]);
        assert_is_direct(&snapshot, &b, &shop_b, &[ip("10.0.0.7")]);
        assert_is_direct(&snapshot, &web, &web_a, &[]);
        assert_eq!(
            b.config().inbound.len(),
            1,
            "the UDP port is not an inbound port"
        );
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
