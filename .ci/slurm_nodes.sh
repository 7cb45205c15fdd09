#!/usr/bin/env bash
# Two more SLURM compute nodes for the `cluster` tests, each in a network namespace of its own.
#
#   bash .ci/slurm_nodes.sh start   # after .ci/slurm.sh start: bridge, namespaces, SLURM restarted with the nodes
#   bash .ci/slurm_nodes.sh stop    # the nodes' slurmd, namespaces and bridge go; SLURM is back on loopback only
#
# A bridge in the host namespace carries a private test subnet ($SUBNET.0/24, host side
# $SUBNET.1); namespaces tsnode1 and tsnode2 each hang on it by a veth pair and run a
# slurmd of their own (`slurmd -N node1`), declared as node1/node2 in a partition `nodes`.
# The controller and the driver stay in the host namespace: slurm.sh is restarted with the
# controller on the bridge address, the only one of the host the namespaces can reach.
# The interface is called $IFACE on the host (the bridge) and in each namespace (the veth
# end there), as a cluster network has one name on the login and the compute nodes: Dask
# workers are started with the driver's `--interface`.
#
# Nothing leaves loopback and the subnet: the namespaces have no default route, the host
# does no NAT or forwarding for them, and IPv6 is off on every link made here (no
# link-local chatter). A node's slurmd listens on all addresses of its namespace, which
# are loopback and its subnet address. slurmctld in the host namespace listens on all of
# the host's addresses as in slurm.sh's single-node setup: SLURM 22.05's
# CommunicationParameters=NoCtldInAddrAny binds the address the host *name* resolves to
# (127.0.0.1 here), which the nodes cannot reach, and NoInAddrAny does the same to slurmd.
# The slurmd of a node enters only the namespace's network (nsenter --net), not a fresh
# mount of /sys as `ip netns exec` makes: slurmd needs the host's /sys/fs/cgroup.
#
# Needs root and `ip netns`. Exit status 0 only when both nodes are idle in SLURM; on any
# failure what was made is taken down again and SLURM is left as slurm.sh made it.
set -euo pipefail
cd "$(dirname "$0")/.."

STATE=${TOMOSWEEP_SLURM_STATE:-/tmp/tomosweep-slurm}
SUBNET=10.213.57
IFACE=tsnet0
NODES=(1 2)
CONTROL_ADDR=$SUBNET.1

log() { echo "[slurm_nodes.sh] $*" >&2; }
fail() { log "$*"; exit 1; }

netns() { echo "tsnode$1"; }

nodes_conf() {
    # one CPU each: the point is where the workers run, not how many
    cat <<EOF
# compute nodes in network namespaces, written by .ci/slurm_nodes.sh
EOF
    for n in "${NODES[@]}"; do
        echo "NodeName=node$n NodeAddr=$SUBNET.$((10 + n)) CPUs=1 RealMemory=4000 State=UNKNOWN"
    done
    echo "PartitionName=nodes Nodes=node[1-${#NODES[@]}] MaxTime=INFINITE State=UP"
}

make_network() {
    ip link add "$IFACE" type bridge
    sysctl -qw "net.ipv6.conf.$IFACE.disable_ipv6=1"
    ip addr add "$CONTROL_ADDR/24" dev "$IFACE"
    ip link set "$IFACE" up
    for n in "${NODES[@]}"; do
        local ns
        ns=$(netns "$n")
        ip netns add "$ns"
        ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
        ip link add "tsveth$n" type veth peer name "$IFACE" netns "$ns"
        sysctl -qw "net.ipv6.conf.tsveth$n.disable_ipv6=1"
        ip link set "tsveth$n" master "$IFACE" up
        ip -n "$ns" link set lo up
        ip -n "$ns" addr add "$SUBNET.$((10 + n))/24" dev "$IFACE"
        ip -n "$ns" link set "$IFACE" up
    done
}

remove_network() {
    for n in "${NODES[@]}"; do
        ip link del "tsveth$n" 2>/dev/null || true  # takes its peer in the namespace with it
        ip netns del "$(netns "$n")" 2>/dev/null || true
    done
    ip link del "$IFACE" 2>/dev/null || true
}

stop_node_daemons() {
    for n in "${NODES[@]}"; do
        local pidfile="$STATE/slurmd-node$n.pid" pid
        [ -f "$pidfile" ] || continue
        pid=$(cat "$pidfile")
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid"
            for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
        fi
        rm -f "$pidfile"
    done
}

nodes_idle() {
    [ "$(sinfo -h -p nodes -o '%T %D' 2>/dev/null)" = "idle ${#NODES[@]}" ]
}

restore_loopback_slurm() {  # restore_loopback_slurm always|if-running
    # the controller listens on the bridge address, which is going: start it on loopback again
    grep -q "^NodeName=node1 " /etc/slurm/slurm.conf 2>/dev/null || return 0
    if [ "$1" = always ] || { [ -f "$STATE/slurmctld.pid" ] && kill -0 "$(cat "$STATE/slurmctld.pid")" 2>/dev/null; }; then
        bash .ci/slurm.sh stop
        bash .ci/slurm.sh start
    fi
}

stop() {  # stop always|if-running
    stop_node_daemons
    remove_network
    restore_loopback_slurm "$1"
    rm -f "$STATE/nodes.conf"
    log "stopped"
}

started=""
undo_unless_started() {
    # quietly: the caller shows the last line, which says why it failed
    [ -n "$started" ] && return
    stop always >/dev/null 2>&1 || true
}

start() {
    [ "$(id -u)" -eq 0 ] || fail "not root: cannot make network namespaces"
    ip netns list >/dev/null 2>&1 || fail "\`ip netns\` is not available here"
    command -v slurmd >/dev/null || fail "SLURM is not installed (run .ci/slurm.sh start first)"
    command -v nsenter >/dev/null || fail "nsenter (util-linux) is not installed"
    stop_node_daemons  # leftovers of an earlier run
    remove_network
    if ip -4 route show root "$SUBNET.0/24" | grep -q .; then
        fail "$SUBNET.0/24 is in use on this host: $(ip -4 route show root "$SUBNET.0/24" | head -n 1)"
    fi
    trap undo_unless_started EXIT
    make_network
    # everything the namespaces can reach is the bridge; no default route means no way out
    for n in "${NODES[@]}"; do
        if ip -n "$(netns "$n")" route show default | grep -q .; then
            fail "$(netns "$n") has a default route"
        fi
    done
    mkdir -p "$STATE"
    nodes_conf >"$STATE/nodes.conf"
    bash .ci/slurm.sh stop
    TOMOSWEEP_SLURM_CONTROL_ADDR=$CONTROL_ADDR TOMOSWEEP_SLURM_NODES_CONF=$STATE/nodes.conf bash .ci/slurm.sh start
    for n in "${NODES[@]}"; do
        mkdir -p "$STATE/spool/d/node$n"  # slurmd makes no missing SlurmdSpoolDir
        nsenter --net="/run/netns/$(netns "$n")" slurmd -N "node$n" || fail "slurmd of node$n did not start"
    done
    for _ in $(seq 120); do
        nodes_idle && break
        sleep 0.25
    done
    if ! nodes_idle; then
        tail -n 5 "$STATE"/log/slurmd-node*.log >&2 || true
        fail "the namespace nodes did not come up within 30 s: $(sinfo -h -p nodes -o '%N %T' 2>&1 | tr '\n' ' ')"
    fi
    started=1
    log "compute nodes up: $(sinfo -h -p nodes -o '%P %N %T') on $IFACE $CONTROL_ADDR/24"
}

case "${1:-}" in
    start) start ;;
    stop) stop if-running ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
