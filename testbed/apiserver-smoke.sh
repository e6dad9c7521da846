#!/usr/bin/env bash
# Smoke test of testbed/apiserver.sh: start, create a CRD (apiextensions.k8s.io/v1) and a custom
# resource with curl + the client cert, read it back, check schema validation, stop.
#   testbed/apiserver-smoke.sh [DIR]     (default: a temp dir, removed on success)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
DIR=${1:-$(mktemp -d /tmp/ao-apiserver-smoke.XXXXXX)}
fail() { echo "FAIL: $*" >&2; "$HERE/apiserver.sh" stop "$DIR" || true; exit 1; }
trap '"$HERE/apiserver.sh" stop "$DIR" >/dev/null 2>&1 || true' EXIT

t0=$(date +%s%N)
eval "$("$HERE/apiserver.sh" start "$DIR" | sed 's/^/export /')"
echo
echo "started in $(( ($(date +%s%N) - t0) / 1000000 )) ms at $AO_APISERVER_URL"
k() { curl -sS --max-time 10 --cacert "$AO_APISERVER_CA" --cert "$AO_APISERVER_CLIENT_CERT" --key "$AO_APISERVER_CLIENT_KEY" "$@"; }
U=$AO_APISERVER_URL

# requests without the client cert are refused: anonymous -> 500 (the authorization webhook it
# falls back to is the dummy kubeconfig's dead port), bearer token -> 401
code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$AO_APISERVER_CA" "$U/apis")
[[ $code != 2* ]] || fail "anonymous request got HTTP $code"
code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$AO_APISERVER_CA" -H 'Authorization: Bearer x' "$U/apis")
[[ $code == 401 ]] || fail "token request got HTTP $code"

k -f -X POST -H 'Content-Type: application/json' "$U/apis/apiextensions.k8s.io/v1/customresourcedefinitions" -d '{
  "apiVersion":"apiextensions.k8s.io/v1","kind":"CustomResourceDefinition",
  "metadata":{"name":"widgets.smoke.example.com"},
  "spec":{"group":"smoke.example.com","scope":"Namespaced",
    "names":{"plural":"widgets","singular":"widget","kind":"Widget"},
    "versions":[{"name":"v1","served":true,"storage":true,"subresources":{"status":{}},
      "schema":{"openAPIV3Schema":{"type":"object","properties":{
        "spec":{"type":"object","required":["size"],"properties":{"size":{"type":"integer","minimum":1}}},
        "status":{"type":"object","properties":{"ok":{"type":"boolean"}}}}}}}]}}' >/dev/null || fail "create CRD"
for _ in $(seq 100); do
  k "$U/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.smoke.example.com" \
    | grep -q '"type": "Established"' && k -f "$U/apis/smoke.example.com/v1" >/dev/null 2>&1 && break
  sleep 0.1
done
k -f "$U/apis/smoke.example.com/v1" >/dev/null || fail "CRD not served"
echo "CRD established"

k -f -X POST -H 'Content-Type: application/json' "$U/apis/smoke.example.com/v1/namespaces/default/widgets" \
  -d '{"apiVersion":"smoke.example.com/v1","kind":"Widget","metadata":{"name":"w1"},"spec":{"size":3}}' >/dev/null || fail "create CR"
k -f "$U/apis/smoke.example.com/v1/namespaces/default/widgets/w1" | grep -q '"size": 3' || fail "read CR back"
echo "custom resource created and read back"
k -f -X PATCH -H 'Content-Type: application/merge-patch+json' "$U/apis/smoke.example.com/v1/namespaces/default/widgets/w1/status" \
  -d '{"status":{"ok":true}}' | grep -q '"ok": true' || fail "status subresource"
echo "status subresource ok"
code=$(k -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' "$U/apis/smoke.example.com/v1/namespaces/default/widgets" \
  -d '{"apiVersion":"smoke.example.com/v1","kind":"Widget","metadata":{"name":"bad"},"spec":{"size":0}}')
[[ $code == 422 ]] || fail "schema validation: expected 422, got $code"
echo "schema validation rejects size=0 (HTTP 422)"
k -f -X DELETE "$U/apis/smoke.example.com/v1/namespaces/default/widgets/w1" >/dev/null || fail "delete CR"

"$HERE/apiserver.sh" stop "$DIR"
for pid in "$AO_APISERVER_PID" "$AO_ETCD_PID"; do kill -0 "$pid" 2>/dev/null && fail "pid $pid still running after stop"; done
trap - EXIT
[[ $# -ge 1 ]] || rm -rf "$DIR"
echo "apiserver smoke: OK"
