#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine: installs what the tests start (real
# servers and a browser) when it is missing, then checks formatting and lints and runs
# every test. A missing server fails the run; nothing is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
test -x /usr/sbin/nginx || need+=(nginx)
command -v caddy >/dev/null 2>&1 || need+=(caddy)
command -v ss >/dev/null 2>&1 || need+=(iproute2)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
test -x /usr/sbin/sshd || need+=(openssh-server)
command -v ssh >/dev/null 2>&1 || need+=(openssh-client)
command -v prometheus-alertmanager >/dev/null 2>&1 || need+=(prometheus-alertmanager)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v groff >/dev/null 2>&1 || need+=(groff-base)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
# The network-fault tests (crates/ebb/tests/netfaults.rs) put hosts in network namespaces
# (scripts/testnet.sh): ip, a bridge and veth pairs.
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v setsid >/dev/null 2>&1 || need+=(util-linux)
python3 -c 'import jsonschema' >/dev/null 2>&1 || need+=(python3-jsonschema)
command -v taplo >/dev/null 2>&1 || command -v npm >/dev/null 2>&1 || need+=(npm)
# The etcd state backend's tests (crates/ebb/tests/etcd_state.rs) start a real cluster.
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
if [ ${#need[@]} -gt 0 ]; then
  echo "test.sh: installing ${need[*]} (Debian packages)"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

# Taplo (the TOML toolkit of Even Better TOML) checks pool files against `ebb schema`.
if ! command -v taplo >/dev/null 2>&1; then
  echo "test.sh: installing taplo (npm package @taplo/cli)"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO npm install -g --silent @taplo/cli@0.7.0
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace

# The same engine tests once more with the journal and lock in a real etcd (the harness
# uses the etcd backend when EBB_TEST_ETCD is set): one local etcd in a temp dir.
etcd_dir=$(mktemp -d)
etcd_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
etcd_peer=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
etcd --name t --data-dir "$etcd_dir/data" \
  --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
  --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
  --initial-cluster "t=http://127.0.0.1:$etcd_peer" >"$etcd_dir/etcd.log" 2>&1 &
etcd_pid=$!
trap 'kill $etcd_pid 2>/dev/null; rm -rf "$etcd_dir"' EXIT
for _ in $(seq 1 100); do
  etcdctl --endpoints "http://127.0.0.1:$etcd_port" --command-timeout=1s put /probe 1 >/dev/null 2>&1 && break
  sleep 0.1
done
EBB_TEST_ETCD="http://127.0.0.1:$etcd_port" cargo test -p ebb-engine --test engine
