#!/usr/bin/env bash
# A real single-node SLURM for the `cluster` tests: install from Debian, start by hand, stop by PID.
#
#   bash .ci/slurm.sh start   # installs slurmctld/slurmd/munge if missing, writes slurm.conf, starts daemons
#   bash .ci/slurm.sh stop    # stops only the daemons this script started (PIDs in $STATE/*.pid)
#
# There is no systemd on the CI machines, and no cgroups: the configuration uses
# proctrack/linuxproc and task/none. The node is this machine at 127.0.0.1, with
# all of its CPUs and 90 % of its memory, in one default partition called `debug`.
# .ci/slurm_nodes.sh adds compute nodes in network namespaces: it starts this script with
# TOMOSWEEP_SLURM_CONTROL_ADDR (the controller's address on their bridge) and
# TOMOSWEEP_SLURM_NODES_CONF (a file of node and partition lines appended to slurm.conf).
set -euo pipefail

STATE=${TOMOSWEEP_SLURM_STATE:-/tmp/tomosweep-slurm}
CONF=/etc/slurm/slurm.conf
MARK="# written by tomosweep .ci/slurm.sh"

log() { echo "[slurm.sh] $*" >&2; }

install() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
        && command -v munged >/dev/null; then
        return
    fi
    if [ "$(id -u)" -ne 0 ]; then
        log "SLURM is not installed and this is not root: cannot apt-get install it"
        exit 1
    fi
    log "installing slurmctld slurmd slurm-client munge"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null || true
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
}

write_conf() {
    if [ -f "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
        log "$CONF exists and was not written by this script: leaving it alone"
        return
    fi
    local host cpus mem_mb
    host=$(hostname -s)
    cpus=$(nproc)
    mem_mb=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
    mkdir -p /etc/slurm "$STATE/spool/ctld" "$STATE/spool/d/$host" "$STATE/log"
    cat >"$CONF" <<EOF
$MARK
ClusterName=tomosweep-ci
SlurmctldHost=$host(${TOMOSWEEP_SLURM_CONTROL_ADDR:-127.0.0.1})
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/spool/ctld
SlurmdSpoolDir=$STATE/spool/d/%n
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd-%n.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
MailProg=/bin/true
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
KillWait=5
InactiveLimit=0
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    if [ -n "${TOMOSWEEP_SLURM_NODES_CONF:-}" ]; then
        cat "$TOMOSWEEP_SLURM_NODES_CONF" >>"$CONF"
    fi
}

start_munge() {
    if munge -n </dev/null >/dev/null 2>&1; then
        return  # a munged is already answering
    fi
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    chmod 0755 /run/munge
    [ -f /etc/munge/munge.key ] || { dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; }
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
    # munged forks; its pid file names the daemon
    su -s /bin/sh munge -c "munged --pid-file=/run/munge/munged.pid"
    cp /run/munge/munged.pid "$STATE/munged.pid"
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local seconds=$1 what=$2
    shift 2
    for _ in $(seq $((seconds * 4))); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.25
    done
    log "$what did not come up within ${seconds}s; last log lines:"
    tail -n 20 "$STATE"/log/*.log >&2 || true
    return 1
}

start() {
    install
    mkdir -p "$STATE"
    write_conf
    start_munge
    if ! scontrol ping 2>/dev/null | grep -q "is UP"; then
        slurmctld -i   # -i: ignore state files from an earlier run
        wait_for 30 slurmctld sh -c 'scontrol ping | grep -q "is UP"'
    fi
    if ! sinfo -h -o %T 2>/dev/null | grep -qE "idle|mixed|allocated"; then
        slurmd
        wait_for 30 slurmd sh -c 'sinfo -h -o %T | grep -qE "idle|mixed|allocated"'
    fi
    log "SLURM is up: $(sinfo -h -o '%P %D %c CPUs %m MB %T')"
}

stop() {
    # only what this script started, by PID; slurmd first so jobs end before the controller
    local pidfile
    for pidfile in "$STATE"/slurmd-*.pid "$STATE/slurmctld.pid" "$STATE/munged.pid"; do
        [ -f "$pidfile" ] || continue
        local pid
        pid=$(cat "$pidfile")
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid"
            for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
        fi
        rm -f "$pidfile"
    done
    log "stopped"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
