#!/usr/bin/env bash
# Runs a command with a Docker engine answering on the default socket: the one already running,
# or a dockerd this script starts (as root; state in /var/lib/docker, so images and the build
# cache outlive it) and stops again when the command ends. Its log is left in $TMPDIR.
set -euo pipefail

if docker info >/dev/null 2>&1; then
  exec "$@"
fi
command -v dockerd >/dev/null || { echo "with-docker: no dockerd; run scripts/install-docker.sh" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "with-docker: starting dockerd needs root" >&2; exit 1; }

log=$(mktemp "${TMPDIR:-/tmp}/dockerd-XXXXXX.log")
dockerd >"$log" 2>&1 &
dockerd_pid=$!
stop() {
  kill -TERM "$dockerd_pid" 2>/dev/null || true
  # dockerd stops its containers first (their stop timeouts), then exits.
  wait "$dockerd_pid" 2>/dev/null || true
}
trap stop EXIT
echo "with-docker: started dockerd (pid $dockerd_pid, log $log)" >&2
# Until it answers, or 60 s: a bound on a hung start, not a wait for a guess.
for _ in $(seq 1 120); do
  docker info >/dev/null 2>&1 && break
  kill -0 "$dockerd_pid" 2>/dev/null || { tail -20 "$log" >&2; exit 1; }
  sleep 0.5
done
docker info >/dev/null 2>&1 || { echo "with-docker: dockerd did not answer in 60 s" >&2; tail -20 "$log" >&2; exit 1; }
"$@"
