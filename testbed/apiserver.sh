#!/usr/bin/env bash
# A real Kubernetes API server for custom resources (apiextensions-apiserver + etcd), all on
# 127.0.0.1, for integration tests. Needs `testbed/setup.sh` (full mode) to have run.
#
#   testbed/apiserver.sh start DIR   # start etcd + apiserver, wait until ready, write DIR/kubeconfig
#   testbed/apiserver.sh stop DIR    # stop both (idempotent), leaves nothing running
#   testbed/apiserver.sh env DIR     # print KEY=VALUE lines (KUBECONFIG=..., ports, ...)
#   testbed/apiserver.sh status DIR  # exit 0 if running and ready
#
# Ports: AO_APISERVER_PORT / AO_ETCD_PORT (client) / AO_ETCD_PEER_PORT, else free ones are picked.
# DIR holds pki/ (CA, serving and client certs, reused across restarts), etcd data, logs,
# pid files, `kubeconfig` and `env`. See testbed/README.md.
set -euo pipefail

AO_CACHE="${AO_CACHE:-/var/cache/asterisk-operator}"
ROOT="$AO_CACHE/sid-root"
APISERVER_BIN="${AO_APISERVER_BIN:-$AO_CACHE/bin/apiextensions-apiserver}"
ETCD_BIN="${AO_ETCD_BIN:-$ROOT/usr/bin/etcd}"
READY_TIMEOUT="${AO_APISERVER_READY_TIMEOUT:-90}"

die() { printf 'apiserver.sh: ERROR: %s\n' "$*" >&2; exit 1; }
log() { printf '[apiserver.sh] %s\n' "$*" >&2; }

[[ $# == 2 ]] || { sed -n '2,12p' "$0" >&2; exit 2; }
cmd=$1
mkdir -p "$2"
DIR=$(cd "$2" && pwd)
PKI="$DIR/pki"

alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

port_in_use() { ss -Htlnu "sport = :$1" 2>/dev/null | grep -q .; }
free_port() {
  local p i
  for i in $(seq 200); do
    p=$(( 20000 + RANDOM % 20000 ))
    port_in_use "$p" || { echo "$p"; return 0; }
  done
  die "no free port found"
}

curl_k() { curl -sS --max-time 5 --cacert "$PKI/ca.crt" --cert "$PKI/client.crt" --key "$PKI/client.key" "$@"; }

gen_pki() {
  [[ -f "$PKI/ca.crt" && -f "$PKI/server.crt" && -f "$PKI/client.crt" ]] && return 0
  command -v openssl >/dev/null || die "openssl not found (apt-get install openssl)"
  rm -rf "$PKI"; mkdir -p "$PKI"; chmod 700 "$PKI"
  (
    cd "$PKI"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 \
      -subj "/CN=asterisk-operator-test-ca" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    # serving cert: valid for https://127.0.0.1:PORT and https://localhost:PORT
    openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj "/CN=localhost" 2>/dev/null
    printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n' > server.ext
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -out server.crt -extfile server.ext 2>/dev/null
    # client cert: group system:masters is always authorized (no webhook consulted)
    openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj "/O=system:masters/CN=ao-test-admin" 2>/dev/null
    printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' > client.ext
    openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -out client.crt -extfile client.ext 2>/dev/null
    rm -f ./*.csr ./*.ext ca.srl
  ) || die "openssl failed to create the test PKI in $PKI"
}

write_kubeconfigs() {
  local port=$1 dummy=$2
  # dummy kubeconfig for --kubeconfig/--authentication-kubeconfig/--authorization-kubeconfig:
  # points at an unused loopback port (there is no core API server to delegate to)
  cat > "$DIR/dummy-kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: none
  cluster:
    server: https://127.0.0.1:$dummy
    insecure-skip-tls-verify: true
users:
- name: none
  user:
    token: none
contexts:
- name: none
  context: {cluster: none, user: none}
current-context: none
EOF
  cat > "$DIR/kubeconfig.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: ao-test
  cluster:
    server: https://127.0.0.1:$port
    certificate-authority-data: $(base64 -w0 < "$PKI/ca.crt")
users:
- name: ao-test-admin
  user:
    client-certificate-data: $(base64 -w0 < "$PKI/client.crt")
    client-key-data: $(base64 -w0 < "$PKI/client.key")
contexts:
- name: ao-test
  context:
    cluster: ao-test
    user: ao-test-admin
    namespace: default
current-context: ao-test
EOF
  chmod 600 "$DIR/kubeconfig.tmp"; mv "$DIR/kubeconfig.tmp" "$DIR/kubeconfig"
}

do_stop() {
  # SIGTERM to both at once (each takes ~2 s to shut down cleanly), SIGKILL after 10 s
  local f pid name i pids=()
  for f in apiserver etcd; do
    [[ -f "$DIR/$f.pid" ]] || continue
    pid=$(cat "$DIR/$f.pid")
    if kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid" 2>/dev/null || true; pids+=("$f:$pid"); fi
  done
  for i in $(seq 100); do
    local any=0
    for name in "${pids[@]}"; do kill -0 "${name#*:}" 2>/dev/null && any=1; done
    [[ $any == 1 ]] || break
    sleep 0.1
  done
  for name in "${pids[@]}"; do
    pid=${name#*:}
    if kill -0 "$pid" 2>/dev/null; then log "${name%%:*} (pid $pid) ignored SIGTERM for 10s: SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; fi
    log "stopped ${name%%:*} (pid $pid)"
  done
  rm -f "$DIR/apiserver.pid" "$DIR/etcd.pid"
}

do_start() {
  [[ -x "$APISERVER_BIN" ]] || die "$APISERVER_BIN missing: run testbed/setup.sh (without --asterisk-only)"
  [[ -x "$ETCD_BIN" ]] || die "$ETCD_BIN missing: run testbed/setup.sh (without --asterisk-only)"
  command -v curl >/dev/null || die "curl not found"
  if alive "$DIR/apiserver.pid" || alive "$DIR/etcd.pid"; then
    log "already running in $DIR: restarting"; do_stop
  fi
  gen_pki
  local port=${AO_APISERVER_PORT:-} eport=${AO_ETCD_PORT:-} pport=${AO_ETCD_PEER_PORT:-} dummy
  [[ -n $port ]] || port=$(free_port)
  [[ -n $eport ]] || { eport=$(free_port); while [[ $eport == "$port" ]]; do eport=$(free_port); done; }
  [[ -n $pport ]] || { pport=$(free_port); while [[ $pport == "$port" || $pport == "$eport" ]]; do pport=$(free_port); done; }
  dummy=$(free_port)
  for p in "$port" "$eport" "$pport"; do port_in_use "$p" && die "port $p is already in use"; done
  write_kubeconfigs "$port" "$dummy"
  mkdir -p "$DIR/certs"

  local t0; t0=$(date +%s%N)
  rm -rf "$DIR/etcd-data"
  setsid "$ETCD_BIN" --name ao-test --data-dir "$DIR/etcd-data" \
    --listen-client-urls "http://127.0.0.1:$eport" --advertise-client-urls "http://127.0.0.1:$eport" \
    --listen-peer-urls "http://127.0.0.1:$pport" --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
    --initial-cluster "ao-test=http://127.0.0.1:$pport" --initial-cluster-state new \
    --unsafe-no-fsync --log-level warn \
    </dev/null >"$DIR/etcd.log" 2>&1 &
  echo $! > "$DIR/etcd.pid"
  local i
  for i in $(seq 100); do
    curl -s --max-time 1 "http://127.0.0.1:$eport/health" 2>/dev/null | grep -q '"health":"true"' && break
    alive "$DIR/etcd.pid" || { tail -20 "$DIR/etcd.log" >&2; do_stop; die "etcd exited (log: $DIR/etcd.log)"; }
    sleep 0.1
  done
  curl -s --max-time 1 "http://127.0.0.1:$eport/health" | grep -q '"health":"true"' \
    || { tail -20 "$DIR/etcd.log" >&2; do_stop; die "etcd not healthy after 10s (log: $DIR/etcd.log)"; }

  setsid "$APISERVER_BIN" \
    --etcd-servers "http://127.0.0.1:$eport" \
    --secure-port "$port" --bind-address 127.0.0.1 --cert-dir "$DIR/certs" \
    --tls-cert-file "$PKI/server.crt" --tls-private-key-file "$PKI/server.key" \
    --client-ca-file "$PKI/ca.crt" \
    --kubeconfig "$DIR/dummy-kubeconfig" \
    --authentication-kubeconfig "$DIR/dummy-kubeconfig" \
    --authorization-kubeconfig "$DIR/dummy-kubeconfig" \
    --authentication-skip-lookup --authentication-tolerate-lookup-failure \
    --disable-admission-plugins NamespaceLifecycle,MutatingAdmissionWebhook,ValidatingAdmissionWebhook,ValidatingAdmissionPolicy,MutatingAdmissionPolicy \
    --profiling=false --enable-priority-and-fairness=false \
    </dev/null >"$DIR/apiserver.log" 2>&1 &
  echo $! > "$DIR/apiserver.pid"

  local deadline=$(( $(date +%s) + READY_TIMEOUT )) ready=0
  while (( $(date +%s) < deadline )); do
    alive "$DIR/apiserver.pid" || { tail -30 "$DIR/apiserver.log" >&2; do_stop; die "apiextensions-apiserver exited (log: $DIR/apiserver.log)"; }
    # informer-sync never passes: its informers watch the (absent) core API via the dummy kubeconfig
    if [[ $(curl_k "https://127.0.0.1:$port/readyz?exclude=informer-sync" 2>/dev/null) == ok ]] \
       && curl_k -f "https://127.0.0.1:$port/apis/apiextensions.k8s.io/v1" >/dev/null 2>&1; then
      ready=1; break
    fi
    sleep 0.2
  done
  if [[ $ready != 1 ]]; then
    tail -30 "$DIR/apiserver.log" >&2
    curl_k "https://127.0.0.1:$port/readyz?verbose&exclude=informer-sync" >&2 || true
    do_stop; die "apiextensions-apiserver not ready within ${READY_TIMEOUT}s (log: $DIR/apiserver.log)"
  fi
  cat > "$DIR/env" <<EOF
KUBECONFIG=$DIR/kubeconfig
AO_APISERVER_URL=https://127.0.0.1:$port
AO_APISERVER_PORT=$port
AO_APISERVER_CA=$PKI/ca.crt
AO_APISERVER_CLIENT_CERT=$PKI/client.crt
AO_APISERVER_CLIENT_KEY=$PKI/client.key
AO_ETCD_URL=http://127.0.0.1:$eport
AO_APISERVER_PID=$(cat "$DIR/apiserver.pid")
AO_ETCD_PID=$(cat "$DIR/etcd.pid")
EOF
  log "ready in $(( ($(date +%s%N) - t0) / 1000000 )) ms: https://127.0.0.1:$port (etcd 127.0.0.1:$eport); KUBECONFIG=$DIR/kubeconfig"
}

case "$cmd" in
  start) do_start; cat "$DIR/env" ;;
  stop) do_stop ;;
  env) [[ -f "$DIR/env" ]] || die "no $DIR/env: not started"; cat "$DIR/env" ;;
  status)
    alive "$DIR/apiserver.pid" && alive "$DIR/etcd.pid" && [[ -f "$DIR/env" ]] || { echo "not running"; exit 1; }
    # shellcheck disable=SC1091
    url=$(sed -n 's/^AO_APISERVER_URL=//p' "$DIR/env")
    [[ $(curl_k "$url/readyz?exclude=informer-sync" 2>/dev/null) == ok ]] && echo "ready $url" || { echo "running but not ready"; exit 1; } ;;
  *) die "unknown command '$cmd' (start|stop|env|status)" ;;
esac
