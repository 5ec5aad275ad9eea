"""The run's network: pods as network namespaces on a bridge, as in the test harness lab/
(ip netns, veth, a bridge), service VIPs that no interface owns, and the Service +
EndpointSlice policy that the sidecars read."""

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from .system import LOAD_CORE, in_ns, run, stop, wait_for

# Network namespaces of the run: "skb-net" holds the bridge, the others are pods.
NS_PREFIX = "skb-"
NET_NS = NS_PREFIX + "net"
POD_NET = "10.250.0"  # pod IPs: POD_NET.10+; the bridge is POD_NET.1
VIP_NET = "10.251.0"  # service VIPs, owned by no interface (reachable only through capture)
# Pod name -> last octet of its IP.
PODS = {
    "plain": 10,  # no sidecar: direct, nginx and haproxy clients (nginx/haproxy run here)
    "client1": 11,  # with a sidecar: the client of one Skiff hop
    "client2": 12,  # with a sidecar: the client of two Skiff hops
    "upstream": 13,  # no sidecar: the upstream of direct, one hop, nginx and haproxy
    "server": 14,  # with a sidecar: the upstream of two hops
}
HTTP_PORT = 8080  # the upstream's HTTP/1.1 + h2c port
TCP_PORT = 9000  # the upstream's TCP bulk port
SERVICE_HTTP_PORT = 80  # the Services' HTTP port (-> HTTP_PORT); the TCP port keeps its number
NAMESPACE = "default"


def pod_ns(pod):
    return NS_PREFIX + pod


def pod_ip(pod):
    return f"{POD_NET}.{PODS[pod]}"


def vip_of(service):
    return {"upstream": f"{VIP_NET}.10", "server": f"{VIP_NET}.11"}[service]


class Mesh:
    """The run's network: a namespace with a bridge, and a pod (namespace + veth + IP) for each
    of PODS. Everything it started is stopped, and every namespace deleted, by `close()`."""

    def __init__(self, run_dir):
        self.run_dir = run_dir
        self.logs = run_dir / "logs"
        # The sidecars (UID 1337) read the policy: a temp dir, readable whoever owns the work
        # tree; a copy goes to run_dir/policy for the record.
        self.policy = Path(tempfile.mkdtemp(prefix="skiff-bench-policy-"))
        self.policy.chmod(0o755)
        self.procs = []

    def create(self):
        delete_namespaces()
        run(["ip", "netns", "add", NET_NS])
        for argv in (
            ["link", "set", "lo", "up"],
            ["link", "add", "br0", "type", "bridge"],
            ["addr", "add", f"{POD_NET}.1/24", "dev", "br0"],
            ["link", "set", "br0", "up"],
        ):
            run(["ip", "-n", NET_NS, *argv])
        for index, pod in enumerate(PODS, start=1):
            ns, peer = pod_ns(pod), f"v{index}"
            run(["ip", "netns", "add", ns])
            for argv in (
                ["-n", ns, "link", "set", "lo", "up"],
                [
                    "-n",
                    ns,
                    "link",
                    "add",
                    "eth0",
                    "type",
                    "veth",
                    "peer",
                    "name",
                    peer,
                    "netns",
                    NET_NS,
                ],
                ["-n", NET_NS, "link", "set", peer, "master", "br0"],
                ["-n", NET_NS, "link", "set", peer, "up"],
                ["-n", ns, "addr", "add", f"{pod_ip(pod)}/24", "dev", "eth0"],
                ["-n", ns, "link", "set", "eth0", "up"],
                ["-n", ns, "route", "add", "default", "via", f"{POD_NET}.1"],
            ):
                run(["ip", *argv])

    def spawn(self, name, argv, env=None, stdin=subprocess.DEVNULL):
        """Starts a long-running process, output to logs/NAME.log; stopped by close()."""
        self.logs.mkdir(parents=True, exist_ok=True)
        log_file = open(self.logs / f"{name}.log", "ab")
        proc = subprocess.Popen(
            [str(a) for a in argv],
            stdin=stdin,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        proc.log_path = self.logs / f"{name}.log"
        self.procs.append(proc)
        return proc

    def start_upstream(self, pod, bench_bin):
        """`skiff-bench upstream` in `pod`, on the load core, until close()."""
        argv = [
            bench_bin,
            "upstream",
            "--http",
            f"0.0.0.0:{HTTP_PORT}",
            "--tcp",
            f"0.0.0.0:{TCP_PORT}",
        ]
        self.spawn(f"upstream-{pod}", in_ns(pod_ns(pod), argv, core=LOAD_CORE))
        wait_for(
            f"the upstream in pod {pod}",
            lambda: listening(pod_ns(pod), HTTP_PORT) and listening(pod_ns(pod), TCP_PORT),
        )

    def write_policy(self):
        """A Service + EndpointSlice per upstream pod: `upstream` (no sidecar) and `server`."""
        (self.run_dir / "policy").mkdir(parents=True, exist_ok=True)
        for name, pod, vip in (
            ("upstream", "upstream", vip_of("upstream")),
            ("server", "server", vip_of("server")),
        ):
            yaml = service_yaml(name, vip, pod_ip(pod), pod)
            for directory in (self.policy, self.run_dir / "policy"):
                (directory / f"{name}.yaml").write_text(yaml)

    def close(self):
        for proc in self.procs:
            stop(proc)
        delete_namespaces()
        shutil.rmtree(self.policy, ignore_errors=True)


def service_yaml(name, vip, ip, pod):
    """A Kubernetes Service and its EndpointSlice, as `kubectl get -o yaml` would show them."""
    ports = [("http", SERVICE_HTTP_PORT, HTTP_PORT), ("tcp", TCP_PORT, TCP_PORT)]
    service_ports = "".join(
        f"  - name: {port_name}\n    protocol: TCP\n    port: {port}\n    targetPort: {target}\n"
        for port_name, port, target in ports
    )
    slice_ports = "".join(
        f"- name: {port_name}\n  protocol: TCP\n  port: {target}\n"
        for port_name, _, target in ports
    )
    return (
        f"apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {NAMESPACE}\n"
        f"spec:\n  type: ClusterIP\n  clusterIP: {vip}\n  clusterIPs:\n  - {vip}\n"
        f"  selector:\n    app: {name}\n  ports:\n{service_ports}"
        f"---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n"
        f"  name: {name}-b1\n  namespace: {NAMESPACE}\n  labels:\n"
        f"    kubernetes.io/service-name: {name}\naddressType: IPv4\nendpoints:\n"
        f'- addresses:\n  - "{ip}"\n  conditions:\n    ready: true\n  targetRef:\n'
        f"    kind: Pod\n    name: {pod}\n    namespace: {NAMESPACE}\nports:\n{slice_ports}"
    )


def delete_namespaces():
    """Deletes this harness's namespaces (and kills what runs in them): left-overs of a run that
    was killed, or this run's at its end."""
    names = sorted(
        (n for n in os.listdir("/run/netns") if n.startswith(NS_PREFIX))
        if Path("/run/netns").is_dir()
        else [],
        key=lambda n: n == NET_NS,  # pods first
    )
    for ns in names:
        pids = run(["ip", "netns", "pids", ns], check=False).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        for _ in range(50):
            if run(["ip", "netns", "del", ns], check=False).returncode == 0:
                break
            time.sleep(0.1)


def http_status(ns, url):
    result = run(
        in_ns(ns, ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2", url]),
        check=False,
    )
    return result.stdout.strip()


def listening(ns, port):
    out = run(in_ns(ns, ["ss", "-Hltn", f"sport = :{port}"]), check=False).stdout
    return bool(out.strip())
