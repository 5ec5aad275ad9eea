#!/usr/bin/env bash
# Instructions per request of one skiff-proxy binary, counted by valgrind's callgrind: unlike
# timings, the count does not depend on what else the machine is doing, so two builds can be
# compared on a noisy 2-core machine. Used for the optimisation log in bench/RESULTS.md.
#
#   bench/instructions.sh [PROXY_BINARY]        (default target/release/skiff-proxy; needs root)
#
# Two pods in network namespaces: a client with the sidecar, an upstream (skiff-bench) without
# one. The proxy runs under callgrind, serves N requests (h2load), and is stopped; the count for
# 1,000 requests is subtracted from the count for 6,000, so start-up and shut-down cancel out.
set -euo pipefail
cd "$(dirname "$0")/.."
proxy=$(realpath "${1:-target/release/skiff-proxy}")
upstream=$(realpath target/release/skiff-bench)
command -v valgrind >/dev/null || apt-get install -y -qq valgrind >/dev/null
id=skins$$
work=$(mktemp -d)
cleanup() {
    pkill -f "callgrind-out-file=$work/" 2>/dev/null || true
    pkill -f "$upstream upstream --http 10.79.0.3" 2>/dev/null || true
    for ns in $id-net $id-a $id-b; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

ip netns add $id-net
ip -n $id-net link add br0 type bridge
ip -n $id-net addr add 10.79.0.1/24 dev br0
ip -n $id-net link set br0 up
for pod in a b; do
    ip=$([ $pod = a ] && echo 10.79.0.2 || echo 10.79.0.3)
    ip netns add $id-$pod
    ip link add $id-$pod type veth peer name eth0 netns $id-$pod
    ip link set $id-$pod netns $id-net
    ip -n $id-net link set $id-$pod master br0 up
    ip -n $id-$pod addr add $ip/24 dev eth0
    ip -n $id-$pod link set eth0 up
    ip -n $id-$pod link set lo up
    ip -n $id-$pod route add default via 10.79.0.1
done
cat > "$work/policy.yaml" <<'YAML'
apiVersion: v1
kind: Service
metadata: {name: up, namespace: default}
spec:
  clusterIP: 10.96.79.10
  ports:
  - {name: http, port: 80, targetPort: 8080}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: up-1, namespace: default, labels: {kubernetes.io/service-name: up}}
addressType: IPv4
endpoints:
- addresses: [10.79.0.3]
ports:
- {name: http, port: 8080}
YAML
# The proxy runs as UID 1337 and writes its callgrind file here.
chmod 1777 "$work"; chmod 644 "$work/policy.yaml"
ip netns exec $id-a "$proxy" init >/dev/null 2>&1
ip netns exec $id-b "$upstream" upstream --http 10.79.0.3:8080 --tcp 10.79.0.3:9000 >/dev/null 2>&1 &

# count MODE N: total instructions of the proxy serving N requests (h1 | h2).
count() {
    local out="$work/callgrind.$1.$2"
    ip netns exec $id-a setpriv --reuid=1337 --regid=1337 --clear-groups \
        valgrind --tool=callgrind --callgrind-out-file="$out" "$proxy" run --policy "$work/policy.yaml" \
        --workload client --pod-ip 10.79.0.2 --drain-period 1s >"$work/proxy.log" 2>&1 &
    for _ in $(seq 150); do
        ip netns exec $id-a curl -sf -o /dev/null http://127.0.0.1:15021/healthz/ready && break
        sleep 0.2
    done
    if [ "$1" = h1 ]; then
        ip netns exec $id-a h2load --h1 -c 8 -n "$2" http://10.96.79.10/ >"$work/load.log" 2>&1
    else
        ip netns exec $id-a h2load -c 2 -m 32 -n "$2" http://10.96.79.10/ >"$work/load.log" 2>&1
    fi
    grep -q "$2 succeeded" "$work/load.log" || { cat "$work/load.log" >&2; exit 1; }
    pkill -TERM -f "callgrind-out-file=$out" || true
    while pgrep -f "callgrind-out-file=$out" >/dev/null; do sleep 0.2; done
    awk '/^(summary|totals):/ {print $2; exit}' "$out"
}
for mode in h1 h2; do
    small=$(count $mode 1000)
    large=$(count $mode 6000)
    echo "$mode: $(( (large - small) / 5000 )) instructions per request ($(basename "$proxy"))"
done
