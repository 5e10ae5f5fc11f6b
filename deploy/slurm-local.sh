#!/usr/bin/env bash
# Start, stop or inspect a real single-node SLURM (munge + slurmctld + slurmd) for tests and demos.
#
#   deploy/slurm-local.sh start|stop|status [STATE_DIR]     (STATE_DIR default /tmp/fluxflow-slurm)
#
# Runs as root on a Debian/Ubuntu machine without systemd (CI containers): installs the packages
# if missing, starts every daemon by hand, keeps pid files under STATE_DIR and stops by pid only.
# `start` when already running is a no-op; `status` exits 0 when the node answers, 3 otherwise.
#
# Environment: SLURM_LOCAL_CPUS (default 2), SLURM_LOCAL_MEMORY_MB (default 16000),
# SLURM_LOCAL_PARTITION (default debug), SLURM_LOCAL_TIMEOUT (seconds to wait, default 60).
# The slurm.conf it writes (/etc/slurm/slurm.conf, so no client needs SLURM_CONF) is marked; an
# existing slurm.conf without that mark (a real site config) is never overwritten.
set -euo pipefail

CMD=${1:-}
STATE=${2:-${FLUXFLOW_SLURM_STATE:-/tmp/fluxflow-slurm}}
CPUS=${SLURM_LOCAL_CPUS:-2}
MEM_MB=${SLURM_LOCAL_MEMORY_MB:-16000}
PARTITION=${SLURM_LOCAL_PARTITION:-debug}
TIMEOUT=${SLURM_LOCAL_TIMEOUT:-60}
CONF=/etc/slurm/slurm.conf
MARK="# written by fluxflow deploy/slurm-local.sh"
PACKAGES=(munge slurmctld slurmd slurm-client)
export PATH="/usr/sbin:/sbin:$PATH"

say() { echo "slurm-local: $*"; }
die() { echo "slurm-local: error: $*" >&2; exit 1; }

usage() {
    echo "usage: $0 start|stop|status [STATE_DIR]" >&2
    exit 2
}

# pid from a pid file if that process is alive and runs the named program, else nothing.
live_pid() {
    local file=$1 prog=$2 pid
    [[ -r $file ]] || return 1
    pid=$(tr -dc '0-9' <"$file")
    [[ -n $pid ]] || return 1
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$prog" ]] || return 1
    echo "$pid"
}

ctld_up() { timeout 1 bash -c 'exec 3<>/dev/tcp/127.0.0.1/6817' 2>/dev/null; }

node_state() { ctld_up && timeout 10 sinfo -h -o %t 2>/dev/null | head -n1; }

munge_ok() { command -v munge >/dev/null && munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; }

show_logs() {
    local f
    for f in "$STATE"/log/slurmctld.log "$STATE"/log/slurmd.log /var/log/munge/munged.log; do
        [[ -r $f ]] || continue
        echo "----- last lines of $f" >&2
        tail -n 25 "$f" >&2
    done
}

install_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get: install SLURM by hand"
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    local apt=(apt-get install -y -q --no-install-recommends "${missing[@]}")
    if ! "${apt[@]}" </dev/null >"$STATE/log/apt.log" 2>&1; then
        say "apt-get install failed, running apt-get update first"
        apt-get update -q </dev/null >>"$STATE/log/apt.log" 2>&1 || { tail -n 20 "$STATE/log/apt.log" >&2; die "apt-get update failed"; }
        "${apt[@]}" </dev/null >>"$STATE/log/apt.log" 2>&1 || { tail -n 20 "$STATE/log/apt.log" >&2; die "apt-get install failed"; }
    fi
}

start_munge() {
    if munge_ok; then
        return 0
    fi
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge
    install -d -o munge -g munge -m 0700 /var/log/munge
    if [[ ! -s /etc/munge/munge.key ]]; then
        runuser -u munge -- mungekey --create --keyfile=/etc/munge/munge.key
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
    runuser -u munge -- /usr/sbin/munged
    touch "$STATE/run/munged.ours"   # we started it, so `stop` stops it
    local i
    for i in $(seq 1 50); do
        munge_ok && return 0
        sleep 0.1
    done
    show_logs
    die "munged does not answer (munge -n | unmunge)"
}

write_conf() {
    local node=$1 tmp
    if [[ -e $CONF ]] && ! grep -qF "$MARK" "$CONF"; then
        die "$CONF exists and was not written by this script; not overwriting a site configuration"
    fi
    tmp=$(mktemp)
    cat >"$tmp" <<EOF
$MARK (state: $STATE)
ClusterName=fluxflow
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=256
SlurmdParameters=config_overrides
ReturnToService=2
KillWait=5
MinJobAge=60
MailProg=/bin/true
EnforcePartLimits=ALL
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
NodeName=$node NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=$PARTITION Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
    install -d -m 0755 /etc/slurm
    install -m 0644 "$tmp" "$CONF"
    rm -f "$tmp"
}

wait_idle() {
    local deadline=$((SECONDS + TIMEOUT)) st=""
    while ((SECONDS < deadline)); do
        if ctld_up; then
            st=$(timeout 10 sinfo -h -o %t 2>/dev/null | head -n1 || true)
            case $st in
                idle|mix|alloc) return 0 ;;
            esac
        fi
        sleep 0.2
    done
    show_logs
    die "node not idle after ${TIMEOUT}s (state: ${st:-no answer}); logs in $STATE/log"
}

cmd_start() {
    [[ $(id -u) -eq 0 ]] || die "must run as root (try: sudo $0 start $STATE)"
    install -d -m 0755 "$STATE" "$STATE/ctld" "$STATE/d" "$STATE/run" "$STATE/log"
    if live_pid "$STATE/run/slurmctld.pid" slurmctld >/dev/null \
        && live_pid "$STATE/run/slurmd.pid" slurmd >/dev/null && munge_ok; then
        case $(node_state || true) in
            idle|mix|alloc) say "already running (state $STATE)"; return 0 ;;
        esac
    fi
    install_packages
    start_munge
    local node
    node=$(hostname -s)
    write_conf "$node"
    if ! live_pid "$STATE/run/slurmctld.pid" slurmctld >/dev/null; then
        ctld_up && die "another slurmctld already listens on port 6817; stop it first"
        slurmctld -f "$CONF" -c </dev/null || { show_logs; die "slurmctld did not start"; }
    fi
    if ! live_pid "$STATE/run/slurmd.pid" slurmd >/dev/null; then
        slurmd -f "$CONF" -N "$node" </dev/null || { show_logs; die "slurmd did not start"; }
    fi
    wait_idle
    say "running: node $node, $CPUS CPUs, partition $PARTITION (state $STATE)"
}

# TERM the processes named by "pidfile:program" pairs together, wait up to 10 s, then KILL.
stop_pids() {
    local item pids=() files=() pid i alive
    for item in "$@"; do
        files+=("${item%%:*}")
        pid=$(live_pid "${item%%:*}" "${item##*:}") || continue
        kill -TERM "$pid" 2>/dev/null || true
        pids+=("$pid")
    done
    for i in $(seq 1 100); do
        alive=0
        for pid in "${pids[@]}"; do [[ -d /proc/$pid ]] && alive=1; done
        ((alive)) || break
        sleep 0.1
    done
    for pid in "${pids[@]}"; do [[ -d /proc/$pid ]] && kill -KILL "$pid" 2>/dev/null; done
    rm -f "${files[@]}"
}

cmd_stop() {
    [[ $(id -u) -eq 0 ]] || die "must run as root"
    if ctld_up && live_pid "$STATE/run/slurmctld.pid" slurmctld >/dev/null; then
        # job processes outlive slurmd: cancel every job and wait until the queue is empty
        local jobs i
        jobs=$(squeue -h -o %A 2>/dev/null || true)
        if [[ -n $jobs ]]; then
            # shellcheck disable=SC2086
            scancel $jobs 2>/dev/null || true
            for i in $(seq 1 150); do
                [[ -z $(squeue -h -o %A 2>/dev/null) ]] && break
                sleep 0.1
            done
        fi
    fi
    stop_pids "$STATE/run/slurmd.pid:slurmd" "$STATE/run/slurmctld.pid:slurmctld"
    if [[ -e $STATE/run/munged.ours ]]; then
        stop_pids /run/munge/munged.pid:munged
        rm -f "$STATE/run/munged.ours"
    fi
    say "stopped (state $STATE)"
}

cmd_status() {
    local ok=0 pid
    for d in slurmctld slurmd; do
        if pid=$(live_pid "$STATE/run/$d.pid" "$d"); then
            say "$d running, pid $pid"
        else
            say "$d not running"; ok=3
        fi
    done
    if munge_ok; then say "munge ok"; else say "munge not answering"; ok=3; fi
    if [[ $ok -eq 0 ]] && ctld_up; then
        sinfo
        squeue
    else
        ok=3
    fi
    return $ok
}

case $CMD in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) usage ;;
esac
