#!/usr/bin/env bash
# Installs what `make bench` needs on a fresh Debian machine, and nothing when it is all there:
# the proxies compared (nginx with its stream module, haproxy), the load generators (h2load
# from nghttp2-client; oha through `cargo install --locked`), the pod plumbing (iproute2,
# iptables, setpriv and taskset from util-linux, curl, procps), linux-perf when the archive has
# it (optional: only `run.py --perf` uses it), and the venv with matplotlib.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if [ "$(id -u)" -ne 0 ]; then
    echo "make bench needs root (network namespaces, iptables, taskset of other users' processes)" >&2
    exit 1
fi

export PATH="$PATH:/usr/sbin:/sbin"
missing=()
for tool in nginx:nginx haproxy:haproxy h2load:nghttp2-client ip:iproute2 iptables:iptables \
    setpriv:util-linux taskset:util-linux curl:curl pgrep:procps; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool##*:}")
done
# nginx proxies TCP with its stream module, a separate package on Debian.
[ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || missing+=(libnginx-mod-stream)
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    echo "installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! command -v perf >/dev/null 2>&1; then
    [ ${#missing[@]} -gt 0 ] || apt-get update -qq || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf >/dev/null 2>&1 \
        || echo "linux-perf not available: run.py --perf will skip the profile" >&2
fi

cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
if ! command -v oha >/dev/null 2>&1 && [ ! -x "$cargo_bin/oha" ]; then
    echo "installing oha (cargo install oha --locked; a few minutes)" >&2
    cargo install oha --locked --quiet
fi

"$here/setup-venv.sh" >/dev/null
