#!/usr/bin/env bash
# Installs what the end-to-end tests and the demo need on a fresh Debian machine: iptables,
# iproute2 (ip netns), curl, h2load (nghttp2-client), setpriv (util-linux), openssl (s_client
# against the inbound port), tcpdump (to see that sidecars speak TLS on the wire), prometheus
# and promtool (a real server scrapes the sidecars), and the Python venv with grpcio, websockets
# and h2. Idempotent: a machine that has everything installs nothing.
set -euo pipefail

missing=()
for tool in iptables:iptables ip:iproute2 curl:curl h2load:nghttp2-client setpriv:util-linux pgrep:procps openssl:openssl tcpdump:tcpdump prometheus:prometheus promtool:prometheus; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool##*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing packages ${missing[*]}; run as root to install them" >&2
        exit 1
    fi
    echo "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
python3 -c 'import venv' 2>/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; }
"$(dirname "$0")/../tests/setup-venv.sh"
