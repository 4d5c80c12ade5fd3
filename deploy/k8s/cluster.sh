#!/usr/bin/env bash
# A single-node Kubernetes cluster as local processes, for testing the manifests on a real
# API server and kubelet (what upstream's hack/local-up-cluster.sh does, cut to what we need):
#
#   deploy/k8s/cluster.sh up      etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
#                                 containerd (its own socket, root and state), kubelet, kube-proxy
#                                 (iptables), then CoreDNS and metrics-server as Deployments in
#                                 kube-system, and a default StorageClass with four local
#                                 PersistentVolumes; waits for the node and both add-ons Ready
#   deploy/k8s/cluster.sh down    stops everything `up` started and removes what it created:
#                                 pods (CNI teardown), interfaces, iptables chains, mounts,
#                                 cgroups, state directory
#   deploy/k8s/cluster.sh env     prints `export KUBECONFIG=...` for the running cluster
#   deploy/k8s/cluster.sh load-image ARCHIVE...   imports `docker save` archives into its containerd
#   deploy/k8s/cluster.sh smoke   proves the running cluster: a pod from a locally built image
#                                 serves behind a ClusterIP Service, another pod resolves the
#                                 Service through CoreDNS and gets its answer through kube-proxy,
#                                 in a namespace that enforces the restricted Pod Security Standard
#
# Needs root and scripts/install-k8s.sh's tools. Network: the node's address is on an
# interface this script creates (an empty bridge), pods sit on a bridge it creates, and the
# Service range is virtual; every port is picked free on those addresses or loopback. Pods may talk to each
# other, to Services and to the node, never beyond it (the forward chain below drops the rest,
# and CoreDNS answers only for cluster.local: it forwards nothing).
set -Eeuo pipefail
cd "$(dirname "$0")/../.."

KUBERNETES_VERSION=v1.34.4
COREDNS_VERSION=v1.14.7
METRICS_SERVER_VERSION=v0.8.1
PAUSE_VERSION=3.10.1
ROOT=$PWD
K8S=$ROOT/.tools/kubernetes-$KUBERNETES_VERSION
BIN=$K8S/bin
DIR=${K8S_CLUSTER_DIR:-$ROOT/.cluster}
NODE_NAME=k8s-local
# Addresses this script creates and owns: the node (a /32 on an empty bridge), the pods'
# bridge subnet, and the Service range (virtual: kube-proxy's iptables rules only).
NODE_INTERFACE=k8slocal0
NODE_IP=${K8S_NODE_IP:-10.201.0.1}
POD_BRIDGE=k8slocalbr0
POD_CIDR=${K8S_POD_CIDR:-10.202.0.0/24}
POD_GATEWAY=${POD_CIDR%.*}.1
SERVICE_CIDR=${K8S_SERVICE_CIDR:-10.203.0.0/24}
KUBERNETES_SERVICE_IP=${SERVICE_CIDR%.*}.1
DNS_SERVICE_IP=${SERVICE_CIDR%.*}.10
FORWARD_CHAIN=K8S-LOCAL-FORWARD
INPUT_CHAIN=K8S-LOCAL-INPUT
export PATH=$BIN:$PATH
export KUBECONFIG=$DIR/admin.kubeconfig

log() { echo "cluster: $*" >&2; }
die() { log "$*"; exit 1; }

# wait_for SECONDS WHAT COMMAND...: polls COMMAND until it succeeds, at most SECONDS.
wait_for() {
  local timeout=$1 what=$2 deadline
  shift 2
  deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || { log "timed out after ${timeout}s waiting for $what"; return 1; }
    sleep 0.5
  done
}

# free_port ADDRESS: a TCP port free on ADDRESS now (the kernel's pick).
free_port() {
  python3 -c 'import socket,sys; s=socket.socket(); s.bind((sys.argv[1], 0)); print(s.getsockname()[1])' "$1"
}

# start NAME COMMAND...: runs COMMAND in its own session, logs to logs/NAME.log, pid in pids/NAME.
start() {
  local name=$1
  shift
  setsid "$@" >"$DIR/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$DIR/pids/$name"
}

# stop NAME: SIGTERM, then SIGKILL after 20 s, to the process `start NAME` recorded.
stop() {
  local name=$1 pid
  [ -e "$DIR/pids/$name" ] || return 0
  pid=$(cat "$DIR/pids/$name")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    wait_for 20 "$name to exit" bash -c "! kill -0 $pid" || kill -KILL "$pid" 2>/dev/null || true
    wait_for 5 "$name to be killed" bash -c "! kill -0 $pid" || true
  fi
  rm -f "$DIR/pids/$name"
}

running() { [ -e "$DIR/pids/$1" ] && kill -0 "$(cat "$DIR/pids/$1")" 2>/dev/null; }

# cert NAME CN ORG KIND [SAN...]: an ECDSA key and a certificate signed by the cluster CA
# (CA=front-proxy-ca for the aggregation layer's client), KIND server, client or both.
cert() {
  local name=$1 cn=$2 org=$3 kind=$4 ca=${CA:-ca}
  shift 4
  local usage sans=""
  case $kind in
    server) usage=serverAuth ;;
    client) usage=clientAuth ;;
    both) usage=serverAuth,clientAuth ;;
  esac
  for san in "$@"; do sans+="${sans:+,}$san"; done
  local pki=$DIR/pki subject="/CN=$cn"
  [ -n "$org" ] && subject="/O=$org$subject"
  openssl ecparam -genkey -name prime256v1 -noout -out "$pki/$name.key" 2>/dev/null
  openssl req -new -key "$pki/$name.key" -subj "$subject" -out "$pki/$name.csr" 2>/dev/null
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$usage"
    [ -n "$sans" ] && echo "subjectAltName=$sans"
  } >"$pki/$name.ext"
  openssl x509 -req -in "$pki/$name.csr" -CA "$pki/$ca.crt" -CAkey "$pki/$ca.key" -CAcreateserial \
    -days 30 -sha256 -extfile "$pki/$name.ext" -out "$pki/$name.crt" 2>/dev/null
  rm -f "$pki/$name.csr" "$pki/$name.ext"
}

ca() {
  local name=$1 pki=$DIR/pki
  openssl ecparam -genkey -name prime256v1 -noout -out "$pki/$name.key" 2>/dev/null
  openssl req -x509 -new -key "$pki/$name.key" -subj "/CN=k8s-local-$name" -days 30 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$pki/$name.crt" 2>/dev/null
}

# kubeconfig NAME: a kubeconfig for the client certificate pki/NAME.crt.
kubeconfig() {
  local name=$1
  cat >"$DIR/$name.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: k8s-local
  cluster:
    certificate-authority: $DIR/pki/ca.crt
    server: https://$NODE_IP:$API_PORT
users:
- name: $name
  user:
    client-certificate: $DIR/pki/$name.crt
    client-key: $DIR/pki/$name.key
contexts:
- name: k8s-local
  context: {cluster: k8s-local, user: $name}
current-context: k8s-local
EOF
}

pki() {
  mkdir -p "$DIR/pki"
  ca ca
  ca front-proxy-ca
  cert apiserver kube-apiserver "" server "IP:$NODE_IP" "IP:$KUBERNETES_SERVICE_IP" IP:127.0.0.1 \
    DNS:kubernetes DNS:kubernetes.default DNS:kubernetes.default.svc DNS:kubernetes.default.svc.cluster.local
  cert admin kubernetes-admin system:masters client
  cert apiserver-kubelet-client kube-apiserver-kubelet-client "" client
  cert controller-manager system:kube-controller-manager "" client
  cert scheduler system:kube-scheduler "" client
  cert kube-proxy system:kube-proxy system:node-proxier client
  cert kubelet "system:node:$NODE_NAME" system:nodes client
  cert kubelet-serving "$NODE_NAME" "" server "IP:$NODE_IP" "DNS:$NODE_NAME"
  CA=front-proxy-ca cert front-proxy-client front-proxy-client "" client
  openssl ecparam -genkey -name prime256v1 -noout -out "$DIR/pki/sa.key" 2>/dev/null
  openssl ec -in "$DIR/pki/sa.key" -pubout -out "$DIR/pki/sa.pub" 2>/dev/null
  chmod 600 "$DIR"/pki/*.key
}

network_up() {
  # A bridge with no ports: this kernel has no dummy interfaces, and a local address works
  # on a link without carrier.
  ip link add "$NODE_INTERFACE" type bridge
  ip addr add "$NODE_IP/32" dev "$NODE_INTERFACE"
  ip link set "$NODE_INTERFACE" up
  # Pods reach each other and Services (kube-proxy's DNAT targets pods: forwarded bridge to
  # bridge) and the node (input, not forwarded); anything else they send is dropped here, so
  # no pod traffic leaves the machine whatever the forward policy.
  iptables -N "$FORWARD_CHAIN"
  iptables -A "$FORWARD_CHAIN" -i "$POD_BRIDGE" -o "$POD_BRIDGE" -j ACCEPT
  iptables -A "$FORWARD_CHAIN" -i "$POD_BRIDGE" -j DROP
  iptables -A "$FORWARD_CHAIN" -o "$POD_BRIDGE" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
  iptables -I FORWARD 1 -j "$FORWARD_CHAIN"
  # And of the machine itself, pods open connections to the node's address only (the API
  # server, the kubelet); what the node opens to them (probes, the API server's calls) is
  # answered.
  iptables -N "$INPUT_CHAIN"
  iptables -A "$INPUT_CHAIN" -i "$POD_BRIDGE" -d "$NODE_IP" -j ACCEPT
  iptables -A "$INPUT_CHAIN" -i "$POD_BRIDGE" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
  iptables -A "$INPUT_CHAIN" -i "$POD_BRIDGE" -j DROP
  iptables -I INPUT 1 -j "$INPUT_CHAIN"
  # kube-proxy's rules must see pod-to-pod packets that cross the bridge.
  [ "$(cat /proc/sys/net/bridge/bridge-nf-call-iptables)" = 1 ] \
    || die "net.bridge.bridge-nf-call-iptables is 0 (modprobe br_netfilter; sysctl -w net.bridge.bridge-nf-call-iptables=1)"
  [ "$(cat /proc/sys/net/ipv4/ip_forward)" = 1 ] || die "net.ipv4.ip_forward is 0"
  mkdir -p "$DIR/cni/net.d" "$DIR/cni/ipam"
  cat >"$DIR/cni/net.d/10-k8s-local.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "k8s-local",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$POD_BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$DIR/cni/ipam",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$POD_GATEWAY"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    }
  ]
}
EOF
}

containerd_up() {
  mkdir -p "$DIR/containerd"
  cat >"$DIR/containerd/config.toml" <<EOF
version = 2
root = "$DIR/containerd/root"
state = "$DIR/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$DIR/containerd.sock"
[ttrpc]
  address = "$DIR/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$DIR/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "k8s.local/pause:$PAUSE_VERSION"
  # This machine refuses a negative oom_score_adj: runc fails with "failed to update
  # /proc/self/oom_score_adj: Permission denied" unless the CRI plugin keeps it >= its own.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$DIR/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
EOF
  start containerd containerd --config "$DIR/containerd/config.toml"
  wait_for 30 containerd ctr --address "$DIR/containerd.sock" version
  local archive
  for archive in "$K8S/images/pause-$PAUSE_VERSION.tar" "$K8S/images/coredns-$COREDNS_VERSION.tar" \
    "$K8S/images/metrics-server-$METRICS_SERVER_VERSION.tar"; do
    ctr --address "$DIR/containerd.sock" -n k8s.io images import "$archive" >/dev/null
  done
}

control_plane_up() {
  ETCD_PORT=$(free_port 127.0.0.1)
  ETCD_PEER_PORT=$(free_port 127.0.0.1)
  API_PORT=$(free_port "$NODE_IP")
  echo "$API_PORT" >"$DIR/api-port"
  start etcd etcd --name k8s-local --data-dir "$DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "k8s-local=http://127.0.0.1:$ETCD_PEER_PORT"
  wait_for 30 etcd curl -fsS "http://127.0.0.1:$ETCD_PORT/health"

  local pki=$DIR/pki
  start kube-apiserver kube-apiserver \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address "$NODE_IP" --advertise-address "$NODE_IP" --secure-port "$API_PORT" \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" \
    --kubelet-client-certificate "$pki/apiserver-kubelet-client.crt" --kubelet-client-key "$pki/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types InternalIP \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
    --requestheader-client-ca-file "$pki/front-proxy-ca.crt" --requestheader-allowed-names front-proxy-client \
    --requestheader-username-headers X-Remote-User --requestheader-group-headers X-Remote-Group \
    --requestheader-extra-headers-prefix X-Remote-Extra- \
    --proxy-client-cert-file "$pki/front-proxy-client.crt" --proxy-client-key-file "$pki/front-proxy-client.key" \
    --enable-aggregator-routing --profiling=false
  kubeconfig admin
  wait_for 90 "kube-apiserver /readyz" kubectl get --raw /readyz
  # The API server's calls to the kubelet (logs, exec, port-forward), which the kubelet
  # authorizes through the API (webhook mode).
  kubectl create clusterrolebinding kube-apiserver-kubelet-api-admin --clusterrole system:kubelet-api-admin \
    --user kube-apiserver-kubelet-client >/dev/null

  kubeconfig controller-manager
  start kube-controller-manager kube-controller-manager \
    --kubeconfig "$DIR/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$DIR/controller-manager.kubeconfig" --authorization-kubeconfig "$DIR/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$(free_port 127.0.0.1)" --leader-elect=false \
    --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" --use-service-account-credentials \
    --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
    --service-cluster-ip-range "$SERVICE_CIDR" --profiling=false

  kubeconfig scheduler
  start kube-scheduler kube-scheduler \
    --kubeconfig "$DIR/scheduler.kubeconfig" \
    --authentication-kubeconfig "$DIR/scheduler.kubeconfig" --authorization-kubeconfig "$DIR/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$(free_port 127.0.0.1)" --leader-elect=false --profiling=false
}

node_up() {
  kubeconfig kubelet
  : >"$DIR/resolv.conf" # pods with dnsPolicy Default get no upstream resolver
  cat >"$DIR/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: $(free_port "$NODE_IP")
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $(free_port 127.0.0.1)
tlsCertFile: $DIR/pki/kubelet-serving.crt
tlsPrivateKeyFile: $DIR/pki/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $DIR/pki/ca.crt}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://$DIR/containerd.sock
cgroupDriver: cgroupfs
# cgroup v1 here: kubelet 1.34 still runs on it when asked to.
failCgroupV1: false
failSwapOn: false
# See containerd's restrict_oom_score_adj: negative values are refused on this machine.
oomScoreAdj: 0
clusterDomain: cluster.local
clusterDNS: [$DNS_SERVICE_IP]
resolvConf: $DIR/resolv.conf
# No image can be pulled (no registry): never collect the imported ones.
imageGCHighThresholdPercent: 100
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
serializeImagePulls: false
EOF
  start kubelet kubelet --config "$DIR/kubelet.yaml" --kubeconfig "$DIR/kubelet.kubeconfig" \
    --root-dir "$DIR/kubelet" --cert-dir "$DIR/kubelet/pki" \
    --hostname-override "$NODE_NAME" --node-ip "$NODE_IP"

  kubeconfig kube-proxy
  cat >"$DIR/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $DIR/kube-proxy.kubeconfig}
hostnameOverride: $NODE_NAME
mode: iptables
clusterCIDR: $POD_CIDR
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:$(free_port 127.0.0.1)
metricsBindAddress: 127.0.0.1:$(free_port 127.0.0.1)
# NodePorts on the node's own address only.
nodePortAddresses: [$NODE_IP/32]
# Leave the machine's conntrack sysctls as they are.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
  start kube-proxy kube-proxy --config "$DIR/kube-proxy.yaml"
  wait_for 120 "node $NODE_NAME Ready" kubectl wait --for=condition=Ready "node/$NODE_NAME" --timeout=5s
}

# storage_up: a default StorageClass and a few PersistentVolumes on directories of the
# state directory (no provisioner runs here), so that a claim like dev PostgreSQL's binds.
# The directories are world-writable (sticky): pods run as non-root users of their own.
storage_up() {
  local i
  {
    cat <<EOF
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: local
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: WaitForFirstConsumer
EOF
    for i in 1 2 3 4; do
      mkdir -p -m 1777 "$DIR/volumes/pv$i"
      cat <<EOF
---
apiVersion: v1
kind: PersistentVolume
metadata:
  name: local-pv$i
spec:
  storageClassName: local
  capacity: {storage: 10Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  hostPath: {path: $DIR/volumes/pv$i, type: Directory}
EOF
    done
  } | kubectl apply -f - >/dev/null
}

addons_up() {
  local file
  for file in deploy/k8s/cluster/*.yaml; do
    sed -e "s|\${DNS_SERVICE_IP}|$DNS_SERVICE_IP|g" -e "s|\${COREDNS_VERSION}|$COREDNS_VERSION|g" \
      -e "s|\${METRICS_SERVER_VERSION}|$METRICS_SERVER_VERSION|g" "$file" | kubectl apply -f - >/dev/null
  done
  wait_for 180 "CoreDNS Ready" kubectl -n kube-system rollout status deployment/coredns --timeout=5s
  wait_for 180 "metrics-server Ready" kubectl -n kube-system rollout status deployment/metrics-server --timeout=5s
  wait_for 120 "metrics API available" kubectl wait --for=condition=Available apiservice/v1beta1.metrics.k8s.io --timeout=5s
}

up() {
  [ "$(id -u)" = 0 ] || die "needs root (network interfaces, iptables, containerd, kubelet)"
  [ -x "$BIN/kubelet" ] || die "run scripts/install-k8s.sh first"
  [ ! -e "$DIR" ] || die "$DIR exists: run '$0 down' first"
  ! ip link show "$NODE_INTERFACE" >/dev/null 2>&1 || die "interface $NODE_INTERFACE exists: run '$0 down' first"
  ! kube_chains_present || die "iptables has KUBE-* chains (another cluster, or an unfinished '$0 down')"
  local started=$SECONDS
  mkdir -p "$DIR/logs" "$DIR/pids"
  [ -e /var/lib/cni ] || touch "$DIR/created-var-lib-cni"
  trap 'log "up failed: logs in $DIR/logs; run $0 down"' ERR
  pki
  network_up
  containerd_up
  control_plane_up
  node_up
  log "node $NODE_NAME Ready $((SECONDS - started))s after start"
  storage_up
  addons_up
  log "up in $((SECONDS - started))s: export KUBECONFIG=$KUBECONFIG"
}

# kube_chains_present: any iptables chain named KUBE-* (IPv4 or IPv6, any table).
kube_chains_present() {
  local save
  for save in iptables-save ip6tables-save; do
    "$save" 2>/dev/null | grep -q '^:KUBE-' && return 0
  done
  return 1
}

# kube_chains_remove: the jumps from built-in chains to KUBE-* chains, then those chains.
kube_chains_remove() {
  local family table rule chain chains
  for family in iptables ip6tables; do
    for table in filter nat mangle; do
      chains=$("$family-save" -t "$table" 2>/dev/null | sed -n 's/^:\(KUBE-[^ ]*\) .*/\1/p')
      [ -n "$chains" ] || continue
      "$family-save" -t "$table" | grep -E '^-A (INPUT|OUTPUT|FORWARD|PREROUTING|POSTROUTING) .*-j KUBE-' \
        | while read -r rule; do eval "$family -t $table -D ${rule#-A }"; done || true
      for chain in $chains; do "$family" -t "$table" -F "$chain"; done
      for chain in $chains; do "$family" -t "$table" -X "$chain"; done
    done
  done
}

down() {
  [ "$(id -u)" = 0 ] || die "needs root"
  # Nothing may recreate pods while they are torn down.
  stop kube-controller-manager
  stop kube-scheduler
  stop kubelet
  # Pod sandboxes through the CRI, so the CNI plugins release addresses and veths and the
  # runtime unmounts the network namespaces.
  if running containerd; then
    echo "runtime-endpoint: unix://$DIR/containerd.sock" >"$DIR/crictl.yaml"
    local cri=(crictl --config "$DIR/crictl.yaml" --timeout 30s) pods
    pods=$("${cri[@]}" pods -q 2>/dev/null) || true
    [ -z "$pods" ] || "${cri[@]}" stopp $pods >/dev/null 2>&1 || true
    "${cri[@]}" rmp -f -a >/dev/null 2>&1 || true
  fi
  stop kube-proxy
  [ -e "$DIR/kube-proxy.yaml" ] && kube-proxy --cleanup --config "$DIR/kube-proxy.yaml" >/dev/null 2>&1 || true
  # What kube-proxy --cleanup leaves: the kubelet's chains (KUBE-FIREWALL, KUBE-KUBELET-CANARY,
  # KUBE-IPTABLES-HINT). `up` refuses to start beside KUBE- chains, so all of them are ours.
  kube_chains_remove
  stop containerd
  # Shims of this containerd that outlived it (matched by its socket path, killed by pid).
  local pid
  for pid in $(grep -l -s -F "$DIR/containerd.sock" /proc/[0-9]*/cmdline | cut -d/ -f3); do
    kill -KILL "$pid" 2>/dev/null || true
  done
  stop kube-apiserver
  stop etcd
  # Mounts under the state directory, deepest first.
  if [ -e "$DIR" ]; then
    awk -v dir="$DIR/" 'index($5, dir) == 1 { print $5 }' /proc/self/mountinfo | sort -r | while read -r mount; do
      umount "$mount" 2>/dev/null || umount -l "$mount" || true
    done
  fi
  # The kubelet's cgroups (per QoS class and pod) in every hierarchy, deepest first.
  local hierarchy
  for hierarchy in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
    [ -d "$hierarchy" ] && find "$hierarchy" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
  local builtin chain
  for builtin in FORWARD INPUT; do
    chain=K8S-LOCAL-$builtin
    if iptables -S "$chain" >/dev/null 2>&1; then
      while iptables -D "$builtin" -j "$chain" 2>/dev/null; do :; done
      iptables -F "$chain"
      iptables -X "$chain"
    fi
  done
  local link
  for link in "$POD_BRIDGE" "$NODE_INTERFACE"; do
    ! ip link show "$link" >/dev/null 2>&1 || ip link delete "$link"
  done
  # libcni's result cache, when `up` created its directory.
  [ ! -e "$DIR/created-var-lib-cni" ] || rm -rf /var/lib/cni
  rm -rf "$DIR"
  log "down: nothing left"
}

smoke() {
  local work
  work=$(mktemp -d)
  mkdir "$work/rootfs"
  (cd deploy/k8s/cluster/smoke && nice -n 19 env CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$work/rootfs/smoke" .)
  python3 scripts/image-archive.py "$work/smoke.tar" k8s.local/smoke:1 "$work/rootfs" --entrypoint /smoke
  ctr --address "$DIR/containerd.sock" -n k8s.io images import "$work/smoke.tar" >/dev/null
  rm -rf "$work"
  kubectl delete namespace k8s-smoke --ignore-not-found --wait >/dev/null
  kubectl apply -f deploy/k8s/cluster/smoke/smoke.yaml >/dev/null
  local status=0
  kubectl -n k8s-smoke wait --for=condition=complete job/smoke-client --timeout=120s >/dev/null || status=1
  kubectl -n k8s-smoke logs job/smoke-client || status=1
  # The namespace's Pod Security admission must refuse a pod that does not meet the
  # restricted profile (here: one with no securityContext at all).
  local refused
  if refused=$(kubectl -n k8s-smoke run unrestricted --image=k8s.local/smoke:1 --restart=Never --dry-run=server 2>&1); then
    log "smoke: a pod without a securityContext was admitted in a restricted namespace"
    status=1
  elif grep -q 'violates PodSecurity "restricted' <<<"$refused"; then
    log "smoke: a pod without a securityContext is refused: $(grep -o 'violates PodSecurity "restricted:[^"]*"' <<<"$refused")"
  else
    log "smoke: a pod without a securityContext is refused, but not by Pod Security: $refused"
    status=1
  fi
  kubectl delete namespace k8s-smoke --wait >/dev/null
  [ "$status" = 0 ] && log "smoke: passed" || log "smoke: FAILED"
  return "$status"
}

case ${1:-} in
  up) up ;;
  down) down ;;
  env) echo "export KUBECONFIG=$KUBECONFIG" ;;
  load-image)
    shift
    for archive in "$@"; do ctr --address "$DIR/containerd.sock" -n k8s.io images import "$archive"; done
    ;;
  smoke) smoke ;;
  *) echo "usage: $0 up|down|env|smoke|load-image ARCHIVE..." >&2; exit 64 ;;
esac
