#!/usr/bin/env bash
# Installs what the local Kubernetes cluster (deploy/k8s/cluster.sh) needs, pinned, idempotently:
#   etcd, containerd, runc, CNI plugins, conntrack, iptables
#                      Debian packages (etcd-server 3.4, containerd 1.6 with its CRI plugin)
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy, kubectl, crictl
#                      built from the Go module proxy, under .tools/kubernetes-VERSION/bin
#   coredns            built from the Go module proxy, image archive under .tools/kubernetes-VERSION/images
#   metrics-server     built from the Go module proxy, image archive beside CoreDNS's
#   pause              the sandbox image, from the Kubernetes module's build/pause/linux/pause.c
# No image registry is reachable, so every image the cluster runs is a `docker save` archive
# written by scripts/image-archive.py, which cluster.sh imports into its containerd.
# Re-running is cheap: each step is skipped when its output for the pinned version is present.
set -euo pipefail
cd "$(dirname "$0")/.."

KUBERNETES_VERSION=v1.34.4
# The Kubernetes module's zip has no staging/ directory: its 31 `k8s.io/<x> => ./staging/...`
# replacements are pointed at the published modules of the same release instead.
STAGING_VERSION=v0.34.4
CRI_TOOLS_VERSION=v1.34.0
COREDNS_VERSION=v1.14.7
METRICS_SERVER_VERSION=v0.8.1
PAUSE_VERSION=3.10.1
TOOLS=$PWD/.tools
K8S=$TOOLS/kubernetes-$KUBERNETES_VERSION
mkdir -p "$TOOLS/bin" "$K8S/bin" "$K8S/images"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
# Go builds run at the lowest priority: Rust and image builds share the machine.
gobuild() { nice -n 19 env CGO_ENABLED=0 GOFLAGS=-mod=mod go "$@"; }

missing=()
command -v etcd >/dev/null || missing+=(etcd-server)
command -v containerd >/dev/null || missing+=(containerd)
command -v runc >/dev/null || missing+=(runc)
[ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
command -v conntrack >/dev/null || missing+=(conntrack)
command -v iptables >/dev/null || missing+=(iptables)
command -v gcc >/dev/null || missing+=(gcc libc6-dev)
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-k8s: ${missing[*]} (Debian)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# -s -w: no symbol tables (smaller, faster links); the version fields as upstream's
# hack/lib/version.sh stamps them, or every binary reports v0.0.0.
version_ldflags() {
  local version=$1 major minor
  major=${version#v}; major=${major%%.*}
  minor=${version#v*.}; minor=${minor%%.*}
  local flags="-s -w"
  for package in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $package.gitVersion=$version -X $package.gitMajor=$major -X $package.gitMinor=$minor"
    flags+=" -X $package.gitTreeState=clean -X $package.buildDate=1970-01-01T00:00:00Z"
  done
  echo "$flags"
}

KUBERNETES_COMMANDS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
k8s_present() { local c; for c in "${KUBERNETES_COMMANDS[@]}" crictl; do [ -x "$K8S/bin/$c" ] || return 1; done; }
if ! k8s_present; then
  echo "install-k8s: Kubernetes $KUBERNETES_VERSION and crictl $CRI_TOOLS_VERSION (go build, about 10 minutes on 2 cores the first time)"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  (
    cd "$work"
    go mod init k8s-tools.local >/dev/null 2>&1
    go mod edit -require "k8s.io/kubernetes@$KUBERNETES_VERSION"
    gomod=$(nice -n 19 go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
    sed -n 's|^\s*\(k8s\.io/[a-z0-9-]*\) => \./staging/.*|\1|p' "$gomod" | while read -r module; do
      go mod edit -replace "$module=$module@$STAGING_VERSION"
    done
    for c in "${KUBERNETES_COMMANDS[@]}"; do go mod edit -tool "k8s.io/kubernetes/cmd/$c"; done
    go mod edit -require "sigs.k8s.io/cri-tools@$CRI_TOOLS_VERSION" -tool sigs.k8s.io/cri-tools/cmd/crictl
    gobuild mod tidy 2>tidy.log || { tail -20 tidy.log >&2; exit 1; }
    gobuild build -trimpath -ldflags "$(version_ldflags "$KUBERNETES_VERSION")" -o "$K8S/bin/" \
      "${KUBERNETES_COMMANDS[@]/#/k8s.io/kubernetes/cmd/}" sigs.k8s.io/cri-tools/cmd/crictl
  )
  rm -rf "$work"
  trap - EXIT
fi
for c in "${KUBERNETES_COMMANDS[@]}" crictl; do ln -sf "$K8S/bin/$c" "$TOOLS/bin/$c"; done

# go_image NAME MODULE VERSION PACKAGE REFERENCE ENTRYPOINT...: a static binary of PACKAGE, built
# in a throwaway module that requires MODULE@VERSION, as a one-layer image archive.
go_image() {
  local name=$1 module=$2 version=$3 package=$4 reference=$5
  shift 5
  local archive=$K8S/images/$name-$version.tar
  [ -e "$archive" ] && return
  echo "install-k8s: $name $version (go build, image $reference)"
  local work
  work=$(mktemp -d)
  (
    cd "$work"
    go mod init "$name-image.local" >/dev/null 2>&1
    gobuild get "$module@$version" 2>get.log || { tail -20 get.log >&2; exit 1; }
    mkdir rootfs
    gobuild build -trimpath -ldflags "-s -w" -o "rootfs/$name" "$package"
    python3 "$OLDPWD/scripts/image-archive.py" "$archive" "$reference" rootfs --entrypoint "$@"
  )
  rm -rf "$work"
}

go_image coredns github.com/coredns/coredns "$COREDNS_VERSION" github.com/coredns/coredns \
  "k8s.local/coredns:$COREDNS_VERSION" /coredns
go_image metrics-server sigs.k8s.io/metrics-server "$METRICS_SERVER_VERSION" sigs.k8s.io/metrics-server/cmd/metrics-server \
  "k8s.local/metrics-server:$METRICS_SERVER_VERSION" /metrics-server

pause_archive=$K8S/images/pause-$PAUSE_VERSION.tar
if [ ! -e "$pause_archive" ]; then
  echo "install-k8s: pause $PAUSE_VERSION (gcc -static)"
  work=$(mktemp -d)
  source_dir=$(nice -n 19 go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  mkdir "$work/rootfs"
  # The flags of the module's build/pause/Makefile.
  gcc -Os -Wall -Werror -static -DVERSION="v$PAUSE_VERSION-local" -o "$work/rootfs/pause" "$source_dir/build/pause/linux/pause.c"
  python3 scripts/image-archive.py "$pause_archive" "k8s.local/pause:$PAUSE_VERSION" "$work/rootfs" --entrypoint /pause
  rm -rf "$work"
fi
echo "install-k8s: done ($K8S)"
