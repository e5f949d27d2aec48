#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, from Debian's `slurm-wlm` and `munge`
# (apt-get install slurm-wlm munge), to try the sbatch example of docs/running.md and for
# tests/slurm.rs. Run as root.
#
#   scripts/slurm-local.sh start    start munged, slurmctld and slurmd; wait until the node is idle
#   scripts/slurm-local.sh stop     stop the daemons this script started
#   scripts/slurm-local.sh status   say what runs, with the node's state
#
# The node is named after `hostname -s`, with the machine's memory and max(CPUs, 8) CPUs (so a
# 4-task job fits on a 2-core machine; the tasks then share the cores), in one partition `debug`.
# No cgroups, no accounting. The configuration goes to $SLURM_CONF (default
# /etc/slurm/slurm.conf; a configuration this script did not write is never overwritten), the
# daemons' state and logs to $A2CID_SLURM_STATE (default /var/spool/a2cid-slurm).
# `start` is idempotent: it leaves running daemons alone unless the configuration changed.
set -euo pipefail

CONF=${SLURM_CONF:-/etc/slurm/slurm.conf}
STATE=${A2CID_SLURM_STATE:-/var/spool/a2cid-slurm}
MARK="# Written by a2cid scripts/slurm-local.sh (single-node cluster); it rewrites this file."
HOST=$(hostname -s)
MUNGE_KEY=/etc/munge/munge.key
MUNGE_SOCKET_DIR=/run/munge

die() {
    echo "slurm-local: $*" >&2
    exit 1
}

# The last lines of a daemon's log, for error messages.
tail_log() {
    local f=$STATE/log/$1.log
    if [ -s "$f" ]; then
        echo "--- last lines of $f:" >&2
        tail -n 20 "$f" >&2
    else
        echo "--- $f is empty or missing" >&2
    fi
}

pid_alive() { # pidfile
    [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

munge_works() {
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1
}

need_root() {
    [ "$(id -u)" = 0 ] || die "must run as root (it starts munged, slurmctld and slurmd); try: sudo $0 $*"
}

need_tools() {
    local missing=()
    for t in munged munge unmunge slurmctld slurmd sinfo scontrol; do
        command -v "$t" >/dev/null 2>&1 || [ -x "/usr/sbin/$t" ] || missing+=("$t")
    done
    [ ${#missing[@]} = 0 ] ||
        die "not installed: ${missing[*]}; install them with: apt-get install -y slurm-wlm munge"
}

write_conf() { # prints "changed" when the file was (re)written
    local cpus mem real
    real=$(nproc)
    cpus=$((real < 8 ? 8 : real))
    mem=$(slurmd -C 2>/dev/null | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' | head -n1)
    [ -n "$mem" ] || mem=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024))
    local want
    want=$(
        cat <<EOF
$MARK
ClusterName=a2cid-local
SlurmctldHost=$HOST
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# The node line's CPUs win over the hardware's (more tasks than cores may share them).
SlurmdParameters=config_overrides
ReturnToService=2
SlurmdTimeout=60
InactiveLimit=0
KillWait=10
NodeName=$HOST CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
    )
    if [ -e "$CONF" ] && ! head -n1 "$CONF" | grep -qxF "$MARK"; then
        die "$CONF exists and was not written by this script; not overwriting it (move it away, or set SLURM_CONF to another path for this script and for sbatch/srun)"
    fi
    if [ -e "$CONF" ] && [ "$(cat "$CONF")" = "$want" ]; then
        return 0
    fi
    mkdir -p "$(dirname "$CONF")"
    printf '%s\n' "$want" >"$CONF.tmp" && mv "$CONF.tmp" "$CONF"
    echo changed
}

start_munge() {
    if munge_works; then
        return 0
    fi
    if [ ! -s "$MUNGE_KEY" ]; then
        echo "slurm-local: creating $MUNGE_KEY"
        mkdir -p "$(dirname "$MUNGE_KEY")"
        if command -v mungekey >/dev/null 2>&1; then
            mungekey --create --keyfile="$MUNGE_KEY" --force
        else
            dd if=/dev/urandom of="$MUNGE_KEY" bs=1 count=1024 status=none
        fi
    fi
    chown munge:munge "$(dirname "$MUNGE_KEY")" "$MUNGE_KEY"
    chmod 700 "$(dirname "$MUNGE_KEY")"
    chmod 400 "$MUNGE_KEY"
    mkdir -p "$MUNGE_SOCKET_DIR" /var/lib/munge /var/log/munge
    chown munge:munge "$MUNGE_SOCKET_DIR" /var/lib/munge /var/log/munge
    chmod 755 "$MUNGE_SOCKET_DIR"
    chmod 700 /var/lib/munge /var/log/munge
    local out
    if ! out=$(runuser -u munge -- munged 2>&1); then
        echo "$out" >&2
        [ -s /var/log/munge/munged.log ] && tail -n 20 /var/log/munge/munged.log >&2
        die "munged did not start (see above)"
    fi
    touch "$STATE/munged.ours"
    for _ in $(seq 50); do
        munge_works && return 0
        sleep 0.1
    done
    [ -s /var/log/munge/munged.log ] && tail -n 20 /var/log/munge/munged.log >&2
    die "munged runs but 'munge -n | unmunge' fails"
}

start_daemon() { # name
    local name=$1 pidfile=$STATE/$1.pid
    if pid_alive "$pidfile"; then
        return 0
    fi
    rm -f "$pidfile"
    local out
    # Both daemons fork into the background once started; -f: our configuration.
    if ! out=$("$name" -f "$CONF" 2>&1); then
        echo "$out" >&2
        tail_log "$name"
        die "$name did not start (exit status above)"
    fi
    for _ in $(seq 100); do
        pid_alive "$pidfile" && return 0
        sleep 0.1
    done
    [ -n "$out" ] && echo "$out" >&2
    tail_log "$name"
    die "$name exited right after starting (its log is above)"
}

stop_daemon() { # name
    local name=$1 pidfile=$STATE/$1.pid
    if pid_alive "$pidfile"; then
        local pid
        pid=$(cat "$pidfile")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; fi
        echo "slurm-local: stopped $name (pid $pid)"
    fi
    rm -f "$pidfile"
}

# When slurmd last registered with slurmctld (seconds since the epoch; 0 if never).
slurmd_registered_at() {
    local t
    t=$(SLURM_CONF=$CONF scontrol show node "$HOST" 2>/dev/null |
        sed -n 's/.*SlurmdStartTime=\([^ ]*\).*/\1/p' | head -n1)
    date -d "$t" +%s 2>/dev/null || echo 0
}

node_state() {
    SLURM_CONF=$CONF sinfo -h -N -n "$HOST" -o '%t' 2>/dev/null | head -n1 || true
}

wait_idle() { # [seconds since the epoch slurmd was started at, when this call started it]
    local since=${1:-0} state="" resumed=""
    for _ in $(seq 300); do
        state=$(node_state)
        case "$state" in
        idle | mix | alloc | comp)
            # The state slurmctld recovered is not enough: slurmd must have registered.
            [ "$(slurmd_registered_at)" -ge "$since" ] && return 0
            ;;
        drain* | down* | drng*)
            # Left down or drained by an earlier run: back to service, once.
            if [ -z "$resumed" ] && [ "$(slurmd_registered_at)" -ge "$since" ]; then
                SLURM_CONF=$CONF scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true
                resumed=1
            fi
            ;;
        esac
        sleep 0.1
    done
    echo "slurm-local: node $HOST is '${state:-unknown}' after 30 s, not idle with slurmd registered" >&2
    SLURM_CONF=$CONF sinfo -R >&2 2>&1 || true
    SLURM_CONF=$CONF scontrol show node "$HOST" >&2 2>&1 || true
    tail_log slurmctld
    tail_log slurmd
    die "the node did not become idle"
}

cmd_start() {
    need_root "$@"
    need_tools
    getent hosts "$HOST" >/dev/null ||
        die "the host name '$HOST' does not resolve (add it to /etc/hosts, e.g. '127.0.0.1 $HOST')"
    mkdir -p "$STATE/ctld" "$STATE/d" "$STATE/log"
    start_munge
    local changed
    changed=$(write_conf)
    if [ "$changed" = changed ]; then
        # A new configuration: daemons running with an old one restart.
        stop_daemon slurmd >/dev/null
        stop_daemon slurmctld >/dev/null
    fi
    start_daemon slurmctld
    local since=0
    pid_alive "$STATE/slurmd.pid" || since=$(($(date +%s) - 1))
    start_daemon slurmd
    wait_idle "$since"
    echo "slurm-local: node $HOST is $(node_state) in partition debug ($CONF)"
}

cmd_stop() {
    need_root "$@"
    stop_daemon slurmd
    stop_daemon slurmctld
    if [ -e "$STATE/munged.ours" ]; then
        local pidfile=/run/munge/munged.pid
        if pid_alive "$pidfile"; then
            kill "$(cat "$pidfile")" 2>/dev/null || true
            echo "slurm-local: stopped munged"
        fi
        rm -f "$STATE/munged.ours"
    fi
}

cmd_status() {
    local rc=0
    if munge_works; then echo "munge: works"; else
        echo "munge: not working"
        rc=1
    fi
    for d in slurmctld slurmd; do
        if pid_alive "$STATE/$d.pid"; then echo "$d: running (pid $(cat "$STATE/$d.pid"))"; else
            echo "$d: not running"
            rc=1
        fi
    done
    echo "node $HOST: $(node_state)"
    return $rc
}

case "${1:-}" in
start) cmd_start "$@" ;;
stop) cmd_stop "$@" ;;
status) cmd_status ;;
*)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
