"""The targets: the ways of reaching the upstream that the benchmark compares."""

from dataclasses import dataclass, field

from .mesh import HTTP_PORT, SERVICE_HTTP_PORT, TCP_PORT, pod_ip, pod_ns, spiffe_id, vip_of
from .proxies import HAPROXY_PORTS, NGINX_PORTS, Haproxy, Nginx, Skiff


@dataclass
class Target:
    """One way of reaching the upstream: where the load generator runs and what it dials."""

    name: str
    description: str
    ns: str  # the pod the load generator runs in
    h1_url: str
    h2_url: str
    tcp_addr: str
    proxies: list = field(default_factory=list)  # whose CPU and memory count
    # mTLS targets: the server-side sidecar whose handshakes per second are measured, the
    # address `skiff-bench handshakes` dials (a port of its pod, captured to its inbound port),
    # and the SPIFFE ID it must prove.
    handshake_proxy: object = None
    handshake_addr: str = None
    handshake_identity: str = None

    @property
    def h1_addr(self):
        return self.h1_url.split("//", 1)[1].rstrip("/")

    def pids(self):
        return [pid for proxy in self.proxies for pid in proxy.pids()]

    def pid_groups(self):
        """Each proxy's name and pids."""
        return {proxy.name: proxy.pids() for proxy in self.proxies}


def targets(mesh, proxy_bin):
    # Each Skiff target has sidecars of its own, so each is measured on fresh processes.
    client1_sidecar = Skiff(mesh, proxy_bin, "client1")
    client2_sidecar = Skiff(mesh, proxy_bin, "client2")
    server_sidecar = Skiff(mesh, proxy_bin, "server")
    mtls_client_sidecar = Skiff(mesh, proxy_bin, "mtls-client", mtls=True)
    mtls_server_sidecar = Skiff(mesh, proxy_bin, "mtls-server", mtls=True)
    up, one, two = pod_ip("upstream"), vip_of("upstream"), vip_of("server")
    two_mtls = vip_of("mtls-server")
    plain = pod_ns("plain")
    return [
        Target(
            "direct",
            "client -> upstream, no proxy",
            plain,
            f"http://{up}:{HTTP_PORT}/",
            f"http://{up}:{HTTP_PORT}/",
            f"{up}:{TCP_PORT}",
        ),
        Target(
            "skiff-1hop",
            "client sidecar -> upstream pod without a sidecar",
            pod_ns("client1"),
            f"http://{one}:{SERVICE_HTTP_PORT}/",
            f"http://{one}:{SERVICE_HTTP_PORT}/",
            f"{one}:{TCP_PORT}",
            [client1_sidecar],
        ),
        Target(
            "skiff-2hop",
            "client sidecar -> server sidecar -> upstream",
            pod_ns("client2"),
            f"http://{two}:{SERVICE_HTTP_PORT}/",
            f"http://{two}:{SERVICE_HTTP_PORT}/",
            f"{two}:{TCP_PORT}",
            [client2_sidecar, server_sidecar],
        ),
        Target(
            "skiff-2hop-mtls",
            "as skiff-2hop, the sidecars with identities from skiff-control: mTLS between them",
            pod_ns("mtls-client"),
            f"http://{two_mtls}:{SERVICE_HTTP_PORT}/",
            f"http://{two_mtls}:{SERVICE_HTTP_PORT}/",
            f"{two_mtls}:{TCP_PORT}",
            [mtls_client_sidecar, mtls_server_sidecar],
            handshake_proxy=mtls_server_sidecar,
            handshake_addr=f"{pod_ip('mtls-server')}:{TCP_PORT}",
            handshake_identity=spiffe_id("mtls-server"),
        ),
        Target(
            "nginx",
            "client -> nginx on 127.0.0.1 in the client pod -> upstream",
            plain,
            f"http://127.0.0.1:{NGINX_PORTS['h1']}/",
            f"http://127.0.0.1:{NGINX_PORTS['h2']}/",
            f"127.0.0.1:{NGINX_PORTS['tcp']}",
            [Nginx(mesh)],
        ),
        Target(
            "haproxy",
            "client -> haproxy on 127.0.0.1 in the client pod -> upstream",
            plain,
            f"http://127.0.0.1:{HAPROXY_PORTS['h1']}/",
            f"http://127.0.0.1:{HAPROXY_PORTS['h2']}/",
            f"127.0.0.1:{HAPROXY_PORTS['tcp']}",
            [Haproxy(mesh)],
        ),
    ]


def all_proxies(target_list):
    """Each proxy of these targets, once."""
    seen = []
    for target in target_list:
        for proxy in target.proxies:
            if proxy not in seen:
                seen.append(proxy)
    return seen
