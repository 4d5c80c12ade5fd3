#!/bin/sh
# The stand-in's entrypoint: upstream's contract. A first argument that is a flag runs the agent;
# `agent` gets the image's data and config directories; the agent runs as the consul user.
set -e
case "${1:-}" in -*) set -- agent "$@" ;; esac
if [ "${1:-}" = agent ]; then
  shift
  set -- consul agent -data-dir=/consul/data -config-dir=/consul/config "$@"
  [ "$(id -u)" = 0 ] && exec setpriv --reuid=consul --regid=consul --init-groups "$@"
elif [ -n "${1:-}" ] && consul "$1" --help >/dev/null 2>&1; then
  set -- consul "$@"
fi
exec "$@"
