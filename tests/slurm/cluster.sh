#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, for the SLURM tests and for trying
# `python run.py -m hydra/launcher=slurm ...` without a cluster.
#
#   bash tests/slurm/cluster.sh up       # install (apt) if needed, start, wait until usable
#   bash tests/slurm/cluster.sh status   # one short line per part
#   bash tests/slurm/cluster.sh down     # stop every daemon this script started
#
# For Debian 12 (Slurm 22.05), run as root, without systemd: every daemon is started by hand
# (Debian's policy-rc.d in containers blocks package-triggered starts anyway). Idempotent: `up` on
# a running cluster only checks it, `down` on a stopped one does nothing.
#
# Parts: munged (authentication), MariaDB on 127.0.0.1 with the slurm_acct_db database, slurmdbd
# (accounting: submitit polls job states with `sacct`; without it a hard-crashed job hangs a
# sweep), slurmctld and slurmd. select/cons_tres with DefMemPerCPU, so that small jobs share the
# node instead of running one after another.
#
# Environment:
#   CLUSTER_CPUS  CPUs the node offers to jobs (default: nproc). More than the machine has lets
#                 more small jobs run at once; they then share the real cores.
set -euo pipefail

PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)
NODE=$(hostname -s)
CPUS=${CLUSTER_CPUS:-$(nproc)}
# MiB offered to jobs: the machine's memory less 1 GiB for the daemons and the submitting process.
MEM_MB=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
CLUSTER=olmoexp
CONF_DIR=/etc/slurm
LOG_DIR=/var/log/slurm
STATE_DIR=/var/lib/slurm
RUN_DIR=/run/slurm
DB_PASS=slurm-local-only  # MariaDB listens on 127.0.0.1 only

log() { echo "cluster.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

pid_alive() { # pid file -> 0 when its process runs
    [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

wait_for() { # seconds, description, command...
    local seconds=$1 what=$2; shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then die "timed out after ${seconds}s waiting for $what"; fi
        sleep 0.5
    done
}

install_packages() {
    local missing=()
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || die "packages missing (${missing[*]}); run as root to install them"
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Writes $2 to $1 when it differs; returns 0 when the file changed.
write_if_changed() {
    local path=$1 content=$2
    if [ -f "$path" ] && [ "$(cat "$path")" == "$content" ]; then return 1; fi
    printf '%s\n' "$content" >"$path"
    return 0
}

write_configs() {
    mkdir -p "$CONF_DIR" "$LOG_DIR" "$STATE_DIR/slurmctld" "$STATE_DIR/slurmd" "$RUN_DIR"
    local changed=1
    write_if_changed "$CONF_DIR/slurm.conf" "# Written by tests/slurm/cluster.sh: a single-node cluster.
ClusterName=$CLUSTER
SlurmctldHost=$NODE
SlurmUser=root
AuthType=auth/munge
# A requeued job (time limit, preemption) may start again after 20 s instead of the default 120 s.
AuthInfo=cred_expire=20
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$((MEM_MB / CPUS))
# The node may declare more CPUs than the machine has (CLUSTER_CPUS).
SlurmdParameters=config_overrides
ReturnToService=2
StateSaveLocation=$STATE_DIR/slurmctld
SlurmdSpoolDir=$STATE_DIR/slurmd
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP" && changed=0
    write_if_changed "$CONF_DIR/slurmdbd.conf" "# Written by tests/slurm/cluster.sh.
AuthType=auth/munge
DbdHost=$NODE
DbdAddr=127.0.0.1
SlurmUser=root
LogFile=$LOG_DIR/slurmdbd.log
PidFile=$RUN_DIR/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db" && changed=0
    chmod 600 "$CONF_DIR/slurmdbd.conf"  # slurmdbd refuses a readable file holding a password
    return $changed
}

start_munge() {
    mkdir -p /run/munge
    chown munge:munge /run/munge
    chmod 755 /run/munge
    pid_alive /run/munge/munged.pid && return 0
    runuser -u munge -- /usr/sbin/munged
    wait_for 10 munged munge -n
}

start_mariadb() {
    mkdir -p /run/mysqld
    chown mysql:root /run/mysqld
    if ! mariadb-admin ping >/dev/null 2>&1; then
        # Detached from this shell: it outlives the script.
        setsid /usr/sbin/mariadbd --user=mysql --bind-address=127.0.0.1 \
            --pid-file=/run/mysqld/mysqld.pid --log-error=$LOG_DIR/mariadb.log \
            </dev/null >/dev/null 2>&1 &
        wait_for 60 MariaDB mariadb-admin ping
    fi
    mariadb -uroot <<SQL
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
SQL
}

start_slurm() {
    local restart=$1
    if [ "$restart" = 1 ]; then stop_slurm; fi
    if ! pid_alive $RUN_DIR/slurmdbd.pid; then
        /usr/sbin/slurmdbd
        wait_for 30 "slurmdbd (log: $LOG_DIR/slurmdbd.log)" sacctmgr -n show cluster
    fi
    pid_alive $RUN_DIR/slurmctld.pid || /usr/sbin/slurmctld
    pid_alive $RUN_DIR/slurmd.pid || /usr/sbin/slurmd
    wait_for 60 "node $NODE to be idle (logs: $LOG_DIR/slurm{ctld,d}.log)" node_idle
    # slurmctld registers its cluster with slurmdbd when it starts.
    wait_for 60 "cluster $CLUSTER registered in accounting" cluster_registered
}

node_idle() {
    sinfo -h -N -n "$NODE" -o %T 2>/dev/null | grep -Eq '^(idle|mixed|allocated)$'
}

cluster_registered() {
    sacctmgr -n -P show cluster format=cluster 2>/dev/null | grep -qx "$CLUSTER"
}

stop_pidfile() { # name, pid file
    local name=$1 pidfile=$2
    pid_alive "$pidfile" || return 0
    local pid
    pid=$(cat "$pidfile")
    kill "$pid"
    for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.5; done
    log "$name (pid $pid) did not stop within 30s; killing it"
    kill -9 "$pid" 2>/dev/null || true
}

stop_slurm() {
    stop_pidfile slurmd $RUN_DIR/slurmd.pid
    stop_pidfile slurmctld $RUN_DIR/slurmctld.pid
    stop_pidfile slurmdbd $RUN_DIR/slurmdbd.pid
}

cmd_up() {
    [ "$(id -u)" -eq 0 ] || die "run as root (the daemons and their state live in /etc, /var, /run)"
    local t0=$SECONDS
    install_packages
    local restart=0
    if write_configs && pid_alive $RUN_DIR/slurmctld.pid; then
        log "configuration changed: restarting the SLURM daemons"
        restart=1
    fi
    start_munge
    start_mariadb
    start_slurm "$restart"
    log "up in $((SECONDS - t0))s: node $NODE ($CPUS CPUs, $MEM_MB MiB), partition debug, cluster $CLUSTER"
    cmd_status
}

cmd_down() {
    stop_slurm
    if mariadb-admin ping >/dev/null 2>&1; then
        mariadb-admin shutdown
    fi
    stop_pidfile munged /run/munge/munged.pid
    log "down"
}

cmd_status() {
    local state
    state() { if pid_alive "$1"; then echo "running (pid $(cat "$1"))"; else echo stopped; fi; }
    echo "munged:    $(state /run/munge/munged.pid)"
    echo "mariadb:   $(state /run/mysqld/mysqld.pid)"
    echo "slurmdbd:  $(state $RUN_DIR/slurmdbd.pid)"
    echo "slurmctld: $(state $RUN_DIR/slurmctld.pid)"
    echo "slurmd:    $(state $RUN_DIR/slurmd.pid)"
    if pid_alive $RUN_DIR/slurmctld.pid; then
        echo "node:      $(sinfo -h -N -o '%N %T cpus=%c mem=%mMiB' 2>/dev/null || echo unreachable)"
        echo "jobs:      $(squeue -h 2>/dev/null | wc -l) queued or running"
        return 0
    fi
    return 3  # like `service status`: not running
}

case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
