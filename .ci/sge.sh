#!/usr/bin/env bash
# A real single-node Son of Grid Engine for the `cluster` tests: install from Debian, start by hand, stop by PID.
#
#   bash .ci/sge.sh start   # installs gridengine-master/-exec/-client if missing, configures, starts, runs a job
#   bash .ci/sge.sh stop    # stops only the daemons this script started (PIDs in $STATE/*.pid)
#
# There is no systemd on the CI machines: the daemons are started here, not by the
# packages (a policy-rc.d that forbids service starts is in place during the install).
# The one host is this machine under its own name, `hostname`; where that name's
# address reverse-resolves to another name (127.0.0.1 -> localhost), SGE's
# host_aliases file makes both one host, or qmaster refuses every client ("client IP
# resolved to host name localhost. This is not identical to clients host name ...").
# One queue, all.q, with a slot per CPU, no load threshold (a busy shared CI machine
# would put it in alarm state), jobs started by their #! line as dask-jobqueue writes
# them, and a one-second scheduling interval. Root may run jobs (min_uid 0): the tests
# run as root on CI, and this is a throw-away single-node cluster.
# Exit status 0 only when a submitted test job has run to completion.
set -euo pipefail

STATE=${TOMOSWEEP_SGE_STATE:-/tmp/tomosweep-sge}
export SGE_ROOT=/var/lib/gridengine
export SGE_CELL=default
COMMON=$SGE_ROOT/$SGE_CELL/common
SPOOL=/var/spool/gridengine
QUEUE=all.q

log() { echo "[sge.sh] $*" >&2; }
fail() { log "$*"; exit 1; }

install() {
    if command -v qsub >/dev/null && [ -x /usr/sbin/sge_qmaster ] && [ -x /usr/sbin/sge_execd ]; then
        return
    fi
    [ "$(id -u)" -eq 0 ] || fail "Son of Grid Engine is not installed and this is not root: cannot apt-get install it"
    log "installing gridengine-master gridengine-exec gridengine-client"
    export DEBIAN_FRONTEND=noninteractive
    # the packages' postinst initialises the cell from these answers
    printf '%s\n' \
        "gridengine-common shared/gridengineconfig boolean true" \
        "gridengine-common shared/gridenginecell string $SGE_CELL" \
        "gridengine-common shared/gridenginemaster string $(hostname)" | debconf-set-selections
    local own_policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        # the packages would start the daemons through their init scripts; this script starts them
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 0755 /usr/sbin/policy-rc.d
        own_policy=1
    fi
    local status=0
    timeout 120 apt-get update -qq >/dev/null 2>&1 || true
    timeout 300 apt-get install -y -qq --no-install-recommends gridengine-master gridengine-exec gridengine-client \
        >"$STATE/apt.log" 2>&1 || status=$?
    [ -n "$own_policy" ] && rm -f /usr/sbin/policy-rc.d
    [ "$status" -eq 0 ] || fail "apt-get install of gridengine failed (exit $status): $(tail -n 1 "$STATE/apt.log")"
}

resolve_host() {
    # the name SGE knows this host by must resolve; add it for loopback only if it does not
    HOST=$(hostname)
    if ! getent hosts "$HOST" >/dev/null; then
        log "$HOST does not resolve: adding '127.0.0.1 $HOST' to /etc/hosts"
        echo "127.0.0.1 $HOST" >>/etc/hosts
    fi
    local address reverse
    address=$(getent hosts "$HOST" | awk '{print $1; exit}')
    reverse=$(getent hosts "$address" | awk '{print $2; exit}')
    if [ -n "$reverse" ] && [ "$reverse" != "$HOST" ]; then
        echo "$HOST $reverse" >"$COMMON/host_aliases"
    else
        rm -f "$COMMON/host_aliases"
    fi
}

init_cell() {
    if [ ! -f "$COMMON/bootstrap" ] || [ ! -d "$SPOOL/spooldb" ] || [ -z "$(ls -A "$SPOOL/spooldb" 2>/dev/null)" ]; then
        # the cell was not set up at install time (debconf said no): what the package's postinst does
        log "initialising cell $SGE_CELL"
        mkdir -p "$COMMON" "$SPOOL/qmaster/job_scripts" "$SPOOL/spooldb"
        chown -R sgeadmin:sgeadmin "$SGE_ROOT/$SGE_CELL" "$SPOOL"
        su -s /bin/sh -c "/usr/share/gridengine/scripts/init_cluster $SGE_ROOT $SGE_CELL $SPOOL/spooldb sgeadmin" sgeadmin
    fi
    echo "$HOST" >"$COMMON/act_qmaster"
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local seconds=$1 what=$2
    shift 2
    for _ in $(seq $((seconds * 2))); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.5
    done
    log "$what did not come up within ${seconds}s; last log lines:"
    tail -n 10 "$SPOOL"/qmaster/messages "$SPOOL"/execd/*/messages >&2 2>/dev/null || true
    return 1
}

edit_with() {  # edit_with SED-EXPRESSIONS QCONF-ARGS...: qconf opens its "editor" on a temp file
    local script="$STATE/edit.sh"
    printf '#!/bin/sh\nsed -i %s "$1"\n' "$1" >"$script"
    chmod 0755 "$script"
    shift
    EDITOR="$script" quiet_qconf "$@"
}

quiet_qconf() {  # qconf reports success on stderr too: show its words only when it fails
    local out
    out=$(qconf "$@" 2>&1) || fail "qconf $* failed: $out"
}

configure() {
    qconf -sh 2>/dev/null | grep -qx "$HOST" || quiet_qconf -ah "$HOST"
    qconf -ss 2>/dev/null | grep -qx "$HOST" || quiet_qconf -as "$HOST"
    if ! qconf -sel 2>/dev/null | grep -qx "$HOST"; then
        printf '%s\n' "hostname $HOST" "load_scaling NONE" "complex_values NONE" "user_lists NONE" \
            "xuser_lists NONE" "projects NONE" "xprojects NONE" "usage_scaling NONE" "report_variables NONE" \
            >"$STATE/exechost"
        quiet_qconf -Ae "$STATE/exechost"
    fi
    local queue_edits="-e 's/^hostlist .*/hostlist $HOST/' -e 's/^slots .*/slots $(nproc)/' \
        -e 's/^load_thresholds .*/load_thresholds NONE/' -e 's/^pe_list .*/pe_list NONE/' \
        -e 's|^shell .*|shell /bin/bash|' -e 's/^shell_start_mode .*/shell_start_mode unix_behavior/'"
    if qconf -sql 2>/dev/null | grep -qx "$QUEUE"; then
        edit_with "$queue_edits" -mq "$QUEUE"
    else
        edit_with "$queue_edits" -aq "$QUEUE"
    fi
    edit_with "-e 's/^min_uid .*/min_uid 0/' -e 's/^min_gid .*/min_gid 0/' \
        -e 's/^load_report_time .*/load_report_time 00:00:05/'" -mconf global
    edit_with "-e 's/^schedule_interval .*/schedule_interval 0:0:1/' -e 's/^flush_submit_sec .*/flush_submit_sec 1/' \
        -e 's/^flush_finish_sec .*/flush_finish_sec 1/'" -msconf
}

queue_up() {  # the queue instance has a load report (execd is talking) and no a/u/E/d state
    local line
    line=$(qstat -f -q "$QUEUE" | grep "^$QUEUE@") || return 1
    # columns: name qtype resv/used/tot load_avg arch [states]
    [ "$(awk '{print $4}' <<<"$line")" != "-NA-" ] && [ -z "$(awk '{print $6}' <<<"$line")" ]
}

start() {
    mkdir -p "$STATE"
    install
    [ -x /usr/sbin/sge_qmaster ] || fail "sge_qmaster is not installed"
    resolve_host
    init_cell
    mkdir -p /var/run/gridengine && chown sgeadmin:sgeadmin /var/run/gridengine
    if ! qstat >/dev/null 2>&1; then
        rm -f "$SPOOL/qmaster/qmaster.pid"
        /usr/sbin/sge_qmaster  # daemonises; its pid file names the daemon
        wait_for 30 sge_qmaster qstat || fail "sge_qmaster did not answer qstat within 30 s"
        cp "$SPOOL/qmaster/qmaster.pid" "$STATE/qmaster.pid"
    fi
    configure
    if ! queue_up; then
        local before
        before=$(ls "$SPOOL"/execd/*/execd.pid 2>/dev/null || true)
        rm -f $before
        /usr/sbin/sge_execd
        wait_for 30 sge_execd queue_up || fail "queue $QUEUE@$HOST did not come up within 30 s: $(qstat -f -q "$QUEUE" | tail -n 1)"
        cat "$SPOOL"/execd/*/execd.pid >"$STATE/execd.pid"
    fi
    # a job must run, not only be accepted: -sync y waits for it and returns its exit status
    (cd "$STATE" && timeout 60 qsub -sync y -b y -j y -o "$STATE" -N tomosweep-ci-check /bin/true >/dev/null) \
        || fail "a test job did not run to completion within 60 s on $QUEUE@$HOST"
    log "SGE is up: $(qstat -f -q "$QUEUE" | grep "^$QUEUE@" | awk '{print $1, $3, "slots"}')"
}

stop() {
    # only what this script started, by PID; the execution daemon first so no job is left waiting on it
    for name in execd qmaster; do
        local pidfile="$STATE/$name.pid"
        [ -f "$pidfile" ] || continue
        local pid
        pid=$(cat "$pidfile")
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid"
            for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
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
