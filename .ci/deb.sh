#!/usr/bin/env bash
# Builds the Debian package with cargo-deb, installs it with dpkg, starts
# /usr/bin/lockd from it on a free loopback port, pings it with
# /usr/bin/lockctl, upgrades it in place (dpkg -i again) and checks that the
# fencing-token state survived, verifies the installed systemd units, and
# removes the package. Every process it starts is stopped by PID.
#
# Needs root (dpkg). Refuses to run where a lockd package is installed
# already, so an operator's install is never touched.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

if dpkg-query -W -f='${Status}' lockd 2>/dev/null | grep -q "install ok installed"; then
  echo "deb.sh: a lockd package is installed on this machine; not touching it" >&2
  exit 1
fi
if ! command -v cargo-deb >/dev/null; then
  cargo install --locked --quiet cargo-deb
fi

cargo deb --quiet
deb=$(ls -t target/debian/lockd_*.deb | head -n 1)
echo "deb.sh: built $deb ($(du -k "$deb" | cut -f1) KiB)"

work=$(mktemp -d)
# A state directory of our own: a lockd of this machine may use
# /var/lib/lockd. No package file may live in either.
state=$work/state
pid=
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  dpkg -r lockd >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# Starts /usr/bin/lockd on 127.0.0.1:0 and sets $pid and $addr from its log.
start_lockd() {
  : >"$work/log"
  /usr/bin/lockd --listen 127.0.0.1:0 --state-dir "$state" 2>"$work/log" &
  pid=$!
  addr=
  for _ in $(seq 1 100); do
    addr=$(sed -n 's/^lockd: listening on \([0-9.]*:[0-9]*\)$/\1/p' "$work/log" | head -n 1)
    [ -n "$addr" ] && return 0
    sleep 0.1
  done
  echo "deb.sh: /usr/bin/lockd did not start:" >&2
  cat "$work/log" >&2
  exit 1
}

stop_lockd() {
  kill -TERM "$pid"
  wait "$pid" || { echo "deb.sh: lockd exited $?" >&2; exit 1; }
  pid=
}

# The token a fresh exclusive grant draws.
token() {
  printf 'hello 2\nwg 0 deb-sh\n' | /usr/bin/lockctl --server "$addr" shell \
    | sed -n 's/^\([0-9][0-9]*\) Lock Get Success: deb-sh$/\1/p'
}

dpkg -i "$deb" >/dev/null
for path in /usr/bin/lockd /usr/bin/lockctl /usr/share/man/man8/lockd.8.gz \
  /usr/share/man/man1/lockctl.1.gz /usr/share/man/man7/lockd-protocol.7.gz \
  /usr/lib/sysctl.d/50-lockd.conf /usr/lib/systemd/system/lockd.service.d/usr-bin.conf \
  /usr/share/bash-completion/completions/lockctl /usr/share/zsh/vendor-completions/_lockctl \
  /usr/share/fish/vendor_completions.d/lockctl.fish; do
  [ -e "$path" ] || { echo "deb.sh: $path is not installed" >&2; exit 1; }
done
units=$(dpkg -L lockd | grep -E '/systemd/system/lockd\.(service|socket)$')
[ "$(echo "$units" | wc -l)" = 2 ] || { echo "deb.sh: units missing: $units" >&2; exit 1; }

start_lockd
/usr/bin/lockctl --server "$addr" ping
before=$(token)
stop_lockd
[ -n "$before" ] || { echo "deb.sh: no token from the installed lockd" >&2; exit 1; }

# An upgrade in place: the package owns no state, so the mark stays.
if dpkg -L lockd | grep -q '^/var/'; then
  echo "deb.sh: the package owns files under /var" >&2
  exit 1
fi
dpkg -i "$deb" >/dev/null
[ -s "$state/fencing-token" ] || { echo "deb.sh: $state/fencing-token is gone after the upgrade" >&2; exit 1; }
start_lockd
after=$(token)
stop_lockd
if [ -z "$after" ] || [ "$after" -le "$before" ]; then
  echo "deb.sh: token $after after the upgrade is not above $before" >&2
  exit 1
fi
echo "deb.sh: token $before before the upgrade, $after after: the state survived"

service=$(echo "$units" | grep '\.service$')
socket=$(echo "$units" | grep '\.socket$')
if command -v systemd-analyze >/dev/null; then
  # verify loads the unit with its drop-ins (ExecStart=/usr/bin/lockd).
  systemd-analyze verify "$service" "$socket"
  score=$(systemd-analyze security --offline=true "$service" 2>/dev/null | tail -n 1 || true)
  echo "deb.sh: systemd-analyze security: ${score:-not available}"
else
  echo "deb.sh: no systemd-analyze here (apt-get install systemd): units not verified"
fi

dpkg -r lockd >/dev/null
if [ -e /usr/bin/lockd ] || [ -e /usr/bin/lockctl ]; then
  echo "deb.sh: dpkg -r left binaries behind" >&2
  exit 1
fi
echo "deb.sh: ok"
