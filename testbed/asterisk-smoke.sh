#!/usr/bin/env bash
# Reference implementation + smoke test of what a Rust test harness does to run Asterisk
# instances from testbed/asterisk-node/ (see testbed/README.md, "Running an Asterisk instance").
#
#   testbed/asterisk-smoke.sh [N1 N2 ...]   # default: 21 22 -> nodes on 127.0.0.21 and 127.0.0.22
#
# Needs testbed/setup.sh --asterisk-only (or full) to have run. Starts one instance per
# argument, checks boot, AMI login, CLI commands, the messages log, then stops them.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
AO_CACHE="${AO_CACHE:-/var/cache/asterisk-operator}"
ROOT="$AO_CACHE/sid-root"
[[ -x "$ROOT/usr/sbin/asterisk" ]] || { echo "no Asterisk in $ROOT: run testbed/setup.sh --asterisk-only" >&2; exit 1; }
for d in proc dev; do mountpoint -q "$ROOT/$d" || mount --bind "/$d" "$ROOT/$d"; done

nodes=("$@"); [[ ${#nodes[@]} -gt 0 ]] || nodes=(21 22)
RUN="/tmp/ao-tests/smoke-$$"     # inside the root
fail=0; pids=()
die() { echo "FAIL: $*" >&2; fail=1; }
# never leave an instance behind, whatever happens
trap 'for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done' EXIT

render() { # n -> writes $ROOT$RUN/nN/etc/*.conf
  local n=$1 id="n$1" dir="$RUN/n$1" addr="127.0.0.$1"
  mkdir -p "$ROOT$dir"/{etc,db,spool,run,log,cache,keys}
  local f
  for f in "$HERE"/asterisk-node/*.conf; do
    sed -e "s|@ID@|$id|g" -e "s|@DIR@|$dir|g" -e "s|@ADDR@|$addr|g" \
        -e "s|@ENTITYID@|$(printf '02:00:00:00:00:%02x' "$n")|g" "$f" > "$ROOT$dir/etc/$(basename "$f")"
  done
}
cli() { local n=$1; shift; chroot "$ROOT" asterisk -C "$RUN/n$n/etc/asterisk.conf" -rx "$*" </dev/null; }

ami_login() { # addr -> prints the reply block
  local addr=$1
  exec 3<>"/dev/tcp/$addr/5038"
  printf 'Action: Login\r\nUsername: admin\r\nSecret: secret\r\nEvents: off\r\nActionID: l1\r\n\r\nAction: Ping\r\nActionID: p1\r\n\r\nAction: Logoff\r\n\r\n' >&3
  timeout 5 cat <&3 || true
  exec 3<&- 3>&-
}

t0=$(date +%s%N)
for n in "${nodes[@]}"; do
  render "$n"
  setsid chroot "$ROOT" asterisk -C "$RUN/n$n/etc/asterisk.conf" -f -n </dev/null >"$ROOT$RUN/n$n/log/stdout" 2>&1 &
  pids+=($!)
done
for i in "${!nodes[@]}"; do
  n=${nodes[$i]}; ok=0
  for _ in $(seq 150); do   # up to 30 s: the control socket appears a moment after start
    kill -0 "${pids[$i]}" 2>/dev/null || break
    if timeout 30 chroot "$ROOT" asterisk -C "$RUN/n$n/etc/asterisk.conf" -rx 'core waitfullybooted' </dev/null >/dev/null 2>&1; then ok=1; break; fi
    sleep 0.2
  done
  [[ $ok == 1 ]] || { die "n$n did not boot:"; tail -5 "$ROOT$RUN/n$n/log/stdout" >&2; }
done
echo "booted ${#nodes[@]} node(s) in $(( ($(date +%s%N) - t0) / 1000000 )) ms"

for n in "${nodes[@]}"; do
  addr="127.0.0.$n"
  echo "== n$n ($addr)"
  cli "$n" 'core show version' | head -1
  out=$(ami_login "$addr")
  grep -q 'Asterisk Call Manager' <<<"$out" || die "n$n: no AMI banner"
  grep -q 'Message: Authentication accepted' <<<"$out" && echo "AMI login ok" || die "n$n: AMI login failed: $out"
  grep -q 'Ping: Pong' <<<"$out" || die "n$n: AMI Ping failed"
  cli "$n" 'pjsip show transports' | grep -q "$addr:5060" && echo "pjsip transport ok" || die "n$n: no pjsip transport on $addr:5060"
  cli "$n" 'iax2 show peers' | grep -q 'iax2 peers' && echo "iax2 ok" || die "n$n: iax2 show peers failed"
  cli "$n" 'iax2 show netstats' >/dev/null || true
  curl -sf "http://$addr:8088/metrics" | grep -q '^asterisk_core_uptime_seconds' && echo "metrics ok" || die "n$n: no /metrics on $addr:8088"
done

echo "== sockets (service ports must be on the node address)"
ss -lntup | awk 'NR==1 || /"asterisk"/' | tee /tmp/ao-smoke-listen.$$
# res_pjsip's DNS resolver (pjlib) always opens an unconnected UDP socket on an ephemeral port
# on 0.0.0.0 and [::] for its queries: not a service, tolerated. Everything else must be 127.x.
if awk 'NR>1 && /"asterisk"/ {print $1, $5}' /tmp/ao-smoke-listen.$$ \
   | grep -vE ' 127\.' | grep -vE '^udp (0\.0\.0\.0|\[::\]):(3[2-9][0-9]{3}|[4-6][0-9]{4})$' | grep -q .; then
  die "an Asterisk socket is not on loopback"
fi
rm -f /tmp/ao-smoke-listen.$$

for n in "${nodes[@]}"; do cli "$n" 'core stop now' >/dev/null 2>&1 || true; done
for i in "${!pids[@]}"; do
  pid=${pids[$i]}
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then die "n${nodes[$i]}: still running after core stop now, killing"; kill -9 "$pid"; fi
  wait "$pid" 2>/dev/null || true
done

for n in "${nodes[@]}"; do
  log="$ROOT$RUN/n$n/log/messages"
  echo "== n$n: $(grep -c ' ERROR\[' "$log" || true) ERROR, $(grep -c ' WARNING\[' "$log" || true) WARNING lines in $log"
  grep -E ' (ERROR|WARNING)\[' "$log" | sed 's/^/   /' | head -40 || true
done
if [[ $fail == 0 ]]; then rm -rf "${ROOT:?}$RUN"; echo "asterisk smoke: OK"; else echo "asterisk smoke: FAILED (files kept in $ROOT$RUN)"; exit 1; fi
