//! Which proxies are connected and what each runs: the records behind `GET /v1/proxies`
//! (`skiff proxy-status`) and `GET /v1/proxies/{namespace}/{name}/config` (`skiff
//! proxy-config`). A record lives as long as its stream.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use skiff_api::config::WorkloadRef;
use skiff_api::stream::{Hello, Nack, ProxyStatus};

use crate::metrics::Metrics;
use crate::store::View;

/// Every open stream, by a connection number.
#[derive(Debug)]
pub struct Proxies {
    next_id: AtomicU64,
    connected: Mutex<BTreeMap<u64, Connected>>,
    /// Keeps `skiff_control_connected_proxies` equal to the number of records.
    metrics: Arc<Metrics>,
}

#[derive(Debug)]
struct Connected {
    status: ProxyStatus,
    /// The view last sent, for `proxy-config`.
    sent: Option<Arc<View>>,
}

/// One stream's record; updated by its session and removed when dropped.
#[derive(Debug)]
pub struct Registration {
    id: u64,
    proxies: Arc<Proxies>,
}

impl Proxies {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Proxies {
            next_id: AtomicU64::new(0),
            connected: Mutex::default(),
            metrics,
        }
    }

    /// Records a proxy that opened a stream with `hello`.
    pub fn register(self: &Arc<Self>, hello: &Hello) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let now = SystemTime::now();
        let status = ProxyStatus {
            workload: hello.workload.clone(),
            pod_ips: hello.pod_ips.clone(),
            proxy_version: hello.proxy_version.clone(),
            connected_since: now,
            last_seen: now,
            sent_version: None,
            acked_version: None,
            last_nack: None,
        };
        self.lock().insert(id, Connected { status, sent: None });
        self.metrics.proxy_connected();
        Registration {
            id,
            proxies: self.clone(),
        }
    }

    /// Every connected proxy, by workload and pod IPs.
    pub fn list(&self) -> Vec<ProxyStatus> {
        let mut list: Vec<ProxyStatus> = self.lock().values().map(|c| c.status.clone()).collect();
        list.sort_by(|a, b| {
            (&a.workload, &a.pod_ips, a.connected_since).cmp(&(
                &b.workload,
                &b.pod_ips,
                b.connected_since,
            ))
        });
        list
    }

    /// The view last sent to a connected proxy of `workload` (the one at `pod_ip` if given;
    /// otherwise the most recently connected).
    pub fn sent_view(&self, workload: &WorkloadRef, pod_ip: Option<IpAddr>) -> Option<Arc<View>> {
        self.lock()
            .values()
            .rev()
            .filter(|c| &c.status.workload == workload)
            .filter(|c| pod_ip.is_none_or(|ip| c.status.pod_ips.contains(&ip)))
            .find_map(|c| c.sent.clone())
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, Connected>> {
        self.connected
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Registration {
    pub fn sent(&self, view: Arc<View>) {
        self.update(|c| {
            c.status.sent_version = Some(view.version().to_string());
            c.sent = Some(view);
        });
    }

    pub fn acked(&self, version: String) {
        self.update(|c| {
            c.status.last_seen = SystemTime::now();
            c.status.acked_version = Some(version);
        });
    }

    pub fn nacked(&self, version: String, reason: String) {
        self.update(|c| {
            c.status.last_seen = SystemTime::now();
            c.status.last_nack = Some(Nack { version, reason });
        });
    }

    fn update(&self, change: impl FnOnce(&mut Connected)) {
        if let Some(connected) = self.proxies.lock().get_mut(&self.id) {
            change(connected);
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.proxies.lock().remove(&self.id);
        self.proxies.metrics.proxy_disconnected();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(name: &str, ip: &str) -> Hello {
        Hello {
            workload: WorkloadRef {
                namespace: "shop".into(),
                name: name.into(),
            },
            pod_ips: vec![ip.parse().unwrap()],
            proxy_version: "test".into(),
            last_applied: None,
        }
    }

    #[test]
    fn records_live_as_long_as_their_stream() {
        let metrics = Arc::new(Metrics::default());
        let proxies = Arc::new(Proxies::new(metrics.clone()));
        let web = proxies.register(&hello("web", "10.0.0.5"));
        let api = proxies.register(&hello("api", "10.0.0.6"));
        assert_eq!(metrics.connected_proxies(), 2);
        web.acked("v1".into());
        api.nacked("v2".into(), "bad route".into());
        let list = proxies.list();
        assert_eq!(list[0].workload.name, "api", "sorted by workload");
        assert_eq!(list[0].last_nack.as_ref().unwrap().reason, "bad route");
        assert_eq!(list[1].acked_version.as_deref(), Some("v1"));
        drop(web);
        assert_eq!(proxies.list().len(), 1);
        assert_eq!(metrics.connected_proxies(), 1);
    }
}
