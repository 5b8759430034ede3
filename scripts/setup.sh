#!/usr/bin/env bash
# natkit's one set-up command: Debian packages the tests and the lab use,
# a virtualenv in .venv with natkit and its test tools, then natkit's main job
# on its embedded defaults and the traversal matrix in the simulated internet
# (skip those last steps with --no-demo).
# Idempotent: run it as often as you like; it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

DEMO=1
for arg in "$@"; do
  case "$arg" in
    --no-demo) DEMO=0 ;;
    *) echo "usage: $0 [--no-demo]" >&2; exit 2 ;;
  esac
done

PYTHON=${PYTHON:-python3}
# Debian packages: third-party peers for interop tests, tools for the lab,
# and a C compiler for bench/stunload.c (the STUN load generator).
# miniupnpd-nftables is named before miniupnpd so apt picks the nftables backend;
# miniupnpc (upnpc) and natpmpc are the Debian clients the lab compares natkit with;
# redis-server backs the Redis store tests, chromium is the browser TURN/ICE peer.
# SIP peers: sip-tester (sipp), kamailio (registrar/proxy; its main package
# holds usrloc, registrar, auth, tm, sl, rr, ctl/kamcmd), kamailio-outbound-modules
# (RFC 5626 edge), and baresip-core (the baresip program and its modules g711,
# ausine, aufile, sndfile, ctrl_tcp, stun, outbound; not the "baresip" metapackage,
# whose recommends pull in GTK, GStreamer and FFmpeg front-ends).
# rtpengine-daemon is the media relay bench/media_relay.py compares natkit's with
# (userspace forwarding; the kernel module is not installed).
DEB_PACKAGES=(python3-venv stun-server stun-client coturn gcc libc6-dev tshark nftables
  miniupnpd-nftables miniupnpd miniupnpc natpmpc redis-server chromium
  sip-tester kamailio kamailio-outbound-modules baresip-core rtpengine-daemon)

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else return 1
  fi
}

install_debian_packages() {
  command -v dpkg-query >/dev/null 2>&1 || { say "not Debian: skipping system packages"; return 0; }
  local missing=()
  for pkg in "${DEB_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing Debian packages: ${missing[*]}"
  # Packages such as coturn, stun-server and kamailio would start system services
  # on install; the tests start their own instances, so forbid that while we install.
  local policy=/usr/sbin/policy-rc.d made_policy=0
  if [ ! -e "$policy" ]; then
    as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod +x $policy" && made_policy=1
  fi
  local rc=0
  # tshark must not ask whether non-root users may capture.
  echo "wireshark-common wireshark-common/install-setuid boolean false" \
    | as_root debconf-set-selections 2>/dev/null || true
  # miniupnpd must not start at boot: the lab runs its own instances in namespaces.
  echo "miniupnpd miniupnpd/start_daemon boolean false" \
    | as_root debconf-set-selections 2>/dev/null || true
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq || rc=$?
  [ $rc -eq 0 ] && { as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null || rc=$?; }
  [ $made_policy -eq 1 ] && as_root rm -f "$policy"
  if [ $rc -ne 0 ]; then
    say "could not install ${missing[*]} (need root or sudo); interop tests will report them missing"
  fi
}

make_venv() {
  if [ ! -x .venv/bin/python ]; then
    say "creating .venv"
    "$PYTHON" -m venv .venv
  fi
  local stamp=.venv/.natkit-installed
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    say "installing natkit and its test tools into .venv"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e '.[test]'
    touch "$stamp"
  fi
}

install_debian_packages
make_venv

if [ "$DEMO" -eq 1 ]; then
  say "natkit demo: a local STUN server pair and natcheck against it"
  .venv/bin/natkit demo
  say "natkit lab matrix: every traversal claim of DESIGN.md as a scenario in the simulated internet"
  exec .venv/bin/natkit lab matrix --report build/matrix
fi
