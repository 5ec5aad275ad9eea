"""The run's network: pods as network namespaces on a bridge, as in the test harness lab/
(ip netns, veth, a bridge), service VIPs that no interface owns, the Service + EndpointSlice
policy that the sidecars read, and the control plane that gives the mTLS pods' sidecars their
identities and configuration."""

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
# SKIFF_BENCH_NS_PREFIX gives a run prefixes of its own (a run deletes every namespace that
# starts with its prefix, at its start and end).
NS_PREFIX = os.environ.get("SKIFF_BENCH_NS_PREFIX", "skb-")
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
    "mtls-client": 15,  # with a sidecar (identity from the control plane): client of mTLS 2 hops
    "mtls-server": 16,  # with a sidecar (identity from the control plane): upstream of mTLS 2 hops
}
# The pods whose sidecars run in control-plane mode: they have a Workload (identity, bootstrap
# token) in the control plane's policy and speak mTLS to each other.
MTLS_PODS = ("mtls-client", "mtls-server")
HTTP_PORT = 8080  # the upstream's HTTP/1.1 + h2c port
TCP_PORT = 9000  # the upstream's TCP bulk port
SERVICE_HTTP_PORT = 80  # the Services' HTTP port (-> HTTP_PORT); the TCP port keeps its number
NAMESPACE = "default"
# The control plane, in the bridge's namespace on the bridge address: every pod reaches it, and
# sidecars (UID 1337) are never captured, as in lab/src/control.rs.
CONTROL_API = f"{POD_NET}.1:15010"
CONTROL_ADMIN = f"{POD_NET}.1:15014"
CONTROL_IDENTITY = "spiffe://cluster.local/ns/skiff-system/sa/skiff-control"
TRUST_DOMAIN = "cluster.local"
SIDECAR_UID = 1337


def pod_ns(pod):
    return NS_PREFIX + pod


def pod_ip(pod):
    return f"{POD_NET}.{PODS[pod]}"


def vip_of(service):
    return {
        "upstream": f"{VIP_NET}.10",
        "server": f"{VIP_NET}.11",
        "mtls-server": f"{VIP_NET}.12",
    }[service]


def spiffe_id(pod):
    """The identity of an mTLS pod's sidecar: its Workload's service account is the pod's name."""
    return f"spiffe://{TRUST_DOMAIN}/ns/{NAMESPACE}/sa/{pod}"


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
        # The control plane's own: the mTLS pods' Service and their Workloads, so the sidecars
        # of the plaintext targets read exactly what they read before it existed. Beside it its
        # CA directory (`ca-bundle.pem` is what the sidecars trust) and the bootstrap tokens.
        self.control_dir = Path(tempfile.mkdtemp(prefix="skiff-bench-control-"))
        self.control_dir.chmod(0o755)
        self.control_policy = self.control_dir / "policy"
        self.ca_dir = self.control_dir / "ca"
        self.tokens = self.control_dir / "tokens"
        self.control = None
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
        """A Service + EndpointSlice per upstream pod: `upstream` (no sidecar) and `server`, read
        by the plaintext sidecars; `mtls-server` and a Workload per mTLS pod, read by the control
        plane (copies of both in run_dir)."""
        (self.run_dir / "policy").mkdir(parents=True, exist_ok=True)
        for name, pod, vip in (
            ("upstream", "upstream", vip_of("upstream")),
            ("server", "server", vip_of("server")),
        ):
            yaml = service_yaml(name, vip, pod_ip(pod), pod)
            for directory in (self.policy, self.run_dir / "policy"):
                (directory / f"{name}.yaml").write_text(yaml)
        files = {
            "mtls-server.yaml": service_yaml(
                "mtls-server", vip_of("mtls-server"), pod_ip("mtls-server"), "mtls-server"
            )
        }
        self.tokens.mkdir(mode=0o755, exist_ok=True)
        for pod in MTLS_PODS:
            token = f"skiff-bench-{pod}-{os.urandom(12).hex()}"
            files[f"workload-{pod}.yaml"] = workload_yaml(pod, token)
            write_secret(self.token_file(pod), token, SIDECAR_UID)
        for directory in (self.control_policy, self.run_dir / "control-policy"):
            directory.mkdir(parents=True, exist_ok=True)
            for name, yaml in files.items():
                (directory / name).write_text(yaml)

    def token_file(self, pod):
        """The bootstrap token of an mTLS pod's Workload (`--bootstrap-token-file`)."""
        return self.tokens / pod

    def ca_bundle(self):
        """The control plane's trust bundle (`--ca-bundle` of the mTLS sidecars)."""
        return self.ca_dir / "ca-bundle.pem"

    def start_control_plane(self, control_bin):
        """`skiff-control` in the bridge's namespace, on the load core, until close(): it
        generates a root in ca_dir on first start, signs the mTLS sidecars' certificates and
        streams them their configuration. Idle during the measurements but for its polls."""
        argv = [
            control_bin,
            "--policy",
            self.control_policy,
            "--listen",
            CONTROL_API,
            "--admin",
            CONTROL_ADMIN,
            "--ca-dir",
            self.ca_dir,
        ]
        env = dict(os.environ, SKIFF_LOG="info", NO_COLOR="1")
        self.control = self.spawn("skiff-control", in_ns(NET_NS, argv, core=LOAD_CORE), env=env)
        wait_for(
            "the control plane to be ready",
            lambda: http_status(NET_NS, f"http://{CONTROL_ADMIN}/healthz/ready") == "200"
            and self.ca_bundle().exists(),
            self.control,
        )

    def close(self):
        for proc in self.procs:
            stop(proc)
        delete_namespaces()
        shutil.rmtree(self.policy, ignore_errors=True)
        shutil.rmtree(self.control_dir, ignore_errors=True)


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


def workload_yaml(pod, token):
    """The pod's `skiff.dev/v1alpha1` Workload: its identity (service account = the pod's name)
    and the token its sidecar bootstraps its first certificate with (lab/src/policy.rs
    `render_workload`)."""
    return (
        f"apiVersion: skiff.dev/v1alpha1\nkind: Workload\nmetadata:\n  name: {pod}\n"
        f"  namespace: {NAMESPACE}\nspec:\n  serviceAccount: {pod}\n"
        f'  addresses: ["{pod_ip(pod)}"]\n  bootstrapToken: {token}\n'
    )


def write_secret(path, text, uid):
    """Writes `text` to `path`, readable by `uid` only."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)
    os.chown(path, uid, uid)


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
