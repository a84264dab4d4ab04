#!/usr/bin/env bash
# A real SLURM cluster on this one machine, for the SLURM tests and for trying
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
# sweep), slurmctld and one slurmd per node. select/cons_tres with DefMemPerCPU, so that small
# jobs share a node instead of running one after another.
#
# Nodes: three, each its own slurmd on this machine (Debian's build has MULTIPLE_SLURMD: every
# slurmd is started as `slurmd -N <node>` and listens on its own port, all at 127.0.0.1):
#   $(hostname -s)  port 6818  CLUSTER_CPUS CPUs, the machine's memory less 1 GiB, no GRES
#   gpu1            port 6831  CLUSTER_CPUS CPUs, half of that memory, GRES gpu:2
#   gpu2            port 6832  CLUSTER_CPUS CPUs, half of that memory, GRES gpu:2
# (so the nodes together offer twice the memory there is: keep jobs small). DefMemPerCPU is each
# partition's node memory / CLUSTER_CPUS, so a job asking no memory fits its node.
# Partitions:
#   debug  (Default=YES)  node $(hostname -s): jobs without --partition run here, as before
#   gpu                   nodes gpu[1-2]
# GRES: GPUs by count, no real devices: `GresTypes=gpu` in slurm.conf, `Gres=gpu:2` on the gpu
# nodes and in gres.conf `NodeName=gpu1,gpu2 Name=gpu Count=2 File=<2 stand-in device files>
# Flags=no_gpu_env`. (Slurm 22.05 drops a GPU without File=: the node registers 0 GPUs and goes
# INVAL. The stand-ins are character devices like /dev/null under /var/lib/slurm that no job
# opens; TaskPlugin=task/none binds nothing.) A job asking `--gpus-per-node=2` or `--gres=gpu:2`
# in partition gpu is scheduled and runs with no CUDA device: no_gpu_env keeps SLURM from
# setting CUDA_VISIBLE_DEVICES. A partition's GPUs show in
# `sinfo -h -o "%P %G"` ("debug (null)", "gpu gpu:2").
# Several nodes: `sbatch -p gpu -N 2 --ntasks-per-node=1 ...` runs one task on gpu1
# (SLURM_NODEID=0) and one on gpu2 (SLURM_NODEID=1), both on this machine. Node names resolve
# to 127.0.0.1 through a line that `up` keeps in /etc/hosts (marked "cluster.sh"), so the first
# name of `scontrol show hostnames $SLURM_JOB_NODELIST` (gpu1) works as MASTER_ADDR for every
# task (submitit's TorchDistributedEnvironment takes that name too). `hostname` in a job prints
# this machine's name on every node: a task's node is SLURMD_NODENAME / SLURM_NODEID.
# `down` stops the daemons; the /etc/hosts line, the configuration and the stand-in devices stay.
#
# Environment:
#   CLUSTER_CPUS  CPUs each node offers to jobs (default: nproc). More than the machine has lets
#                 more small jobs run at once; they then share the real cores.
set -euo pipefail

PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)
NODE=$(hostname -s)
CPUS=${CLUSTER_CPUS:-$(nproc)}
# MiB offered to jobs: the machine's memory less 1 GiB for the daemons and the submitting process.
MEM_MB=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
GPU_NODES=(gpu1 gpu2)      # partition gpu; their slurmd ports are 6831, 6832, ...
GPUS_PER_NODE=2            # GRES gpu per gpu node, backed by stand-in device files
GPU_MEM_MB=$((MEM_MB / 2))  # per gpu node
NODES=("$NODE" "${GPU_NODES[@]}")
HOSTS_LINE="127.0.0.1 ${GPU_NODES[*]}  # cluster.sh: SLURM node names"
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
    mkdir -p "$CONF_DIR" "$LOG_DIR" "$STATE_DIR/slurmctld" "$RUN_DIR"
    local n i gpu_lines=""
    for n in "${NODES[@]}"; do mkdir -p "$STATE_DIR/slurmd-$n"; done
    for i in "${!GPU_NODES[@]}"; do
        gpu_lines+="NodeName=${GPU_NODES[$i]} NodeAddr=127.0.0.1 Port=$((6831 + i)) CPUs=$CPUS"
        gpu_lines+=" RealMemory=$GPU_MEM_MB Gres=gpu:$GPUS_PER_NODE State=UNKNOWN"$'\n'
    done
    local gpu_list
    gpu_list=$(IFS=,; echo "${GPU_NODES[*]}")
    local changed=1
    write_if_changed "$CONF_DIR/slurm.conf" "# Written by tests/slurm/cluster.sh: nodes $NODE and ${GPU_NODES[*]}, all on this machine.
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
# Count-only GPUs (gres.conf has no File=): jobs may ask --gpus-per-node, no device is bound.
GresTypes=gpu
# GPUs show in sacct's AllocTRES and scontrol's TRES (gres/gpu=2).
AccountingStorageTRES=gres/gpu
ReturnToService=2
StateSaveLocation=$STATE_DIR/slurmctld
# One slurmd per node on this machine (slurmd -N <node>): %n is the node's name.
SlurmdSpoolDir=$STATE_DIR/slurmd-%n
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd-%n.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd-%n.log
NodeName=$NODE NodeAddr=127.0.0.1 Port=6818 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
${gpu_lines}PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$gpu_list MaxTime=INFINITE State=UP DefMemPerCPU=$((GPU_MEM_MB / CPUS))" && changed=0
    # Slurm 22.05 drops a GPU without File= ("Removing file-less GPU"; the node then registers
    # 0 GPUs and goes INVAL, config_overrides or not): each GPU is a stand-in device file.
    # no_gpu_env: SLURM sets no CUDA_VISIBLE_DEVICES (nor ROCR/GPU_DEVICE_ORDINAL) for it.
    for i in $(seq 0 $((GPUS_PER_NODE - 1))); do
        local dev=$STATE_DIR/fake-gpu$i
        if [ ! -c "$dev" ]; then
            rm -f "$dev"
            # A character device like /dev/null; where mknod is not allowed a plain file does
            # (slurmd then logs "not a valid character or block device" and counts it anyway).
            mknod -m 444 "$dev" c 1 3 2>/dev/null || touch "$dev"
        fi
    done
    write_if_changed "$CONF_DIR/gres.conf" "# Written by tests/slurm/cluster.sh: $GPUS_PER_NODE GPUs per gpu node, no real devices.
NodeName=$gpu_list Name=gpu Count=$GPUS_PER_NODE File=$STATE_DIR/fake-gpu[0-$((GPUS_PER_NODE - 1))] Flags=no_gpu_env" && changed=0
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

# Node names resolve to 127.0.0.1 (MASTER_ADDR of a multi-node job is the first node's name).
write_hosts() {
    grep -qxF "$HOSTS_LINE" /etc/hosts && return 0
    local rest
    rest=$(grep -v '# cluster.sh: SLURM node names$' /etc/hosts || true)
    # In place (not a new file): /etc/hosts may be a bind mount.
    printf '%s\n%s\n' "$rest" "$HOSTS_LINE" >/etc/hosts
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
    local n
    for n in "${NODES[@]}"; do
        pid_alive "$RUN_DIR/slurmd-$n.pid" || /usr/sbin/slurmd -N "$n"
    done
    if ! wait_for_nodes 60; then
        sinfo -N -o '%N %T %E' >&2 || true
        die "timed out after 60s waiting for nodes ${NODES[*]} to be idle (logs: $LOG_DIR/slurmctld.log, $LOG_DIR/slurmd-*.log)"
    fi
    # slurmctld registers its cluster with slurmdbd when it starts.
    wait_for 60 "cluster $CLUSTER registered in accounting" cluster_registered
}

# Until every node is usable. A node drained before this start (slurmctld keeps the drain and
# its reason across restarts, e.g. from an earlier configuration) is resumed once: if the reason
# still holds, the node drains again at once and `up` fails showing it.
wait_for_nodes() { # seconds
    local deadline=$((SECONDS + $1)) n state ready resumed=" "
    while true; do
        ready=1
        for n in "${NODES[@]}"; do
            state=$(sinfo -h -N -n "$n" -o %T 2>/dev/null | head -1) || state=""
            case "$state" in
                idle|mixed|allocated|completing) ;;
                drained)
                    ready=0
                    if [[ "$resumed" != *" $n "* ]]; then
                        log "node $n was drained ($(sinfo -h -N -n "$n" -o %E | head -1)): resuming it"
                        scontrol update NodeName="$n" State=RESUME || true
                        resumed+="$n "
                    fi ;;
                *) ready=0 ;;
            esac
        done
        [ "$ready" = 1 ] && return 0
        [ "$SECONDS" -ge "$deadline" ] && return 1
        sleep 0.5
    done
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
    local f
    # Every node's slurmd, also of nodes no longer configured; slurmd.pid: this script before
    # it ran one slurmd per node.
    for f in "$RUN_DIR"/slurmd-*.pid "$RUN_DIR/slurmd.pid"; do
        [ -e "$f" ] && stop_pidfile "slurmd ${f##*/}" "$f"
    done
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
    write_hosts
    start_munge
    start_mariadb
    start_slurm "$restart"
    log "up in $((SECONDS - t0))s: cluster $CLUSTER, partition debug (default): node $NODE" \
        "($CPUS CPUs, $MEM_MB MiB); partition gpu: nodes ${GPU_NODES[*]} (each $CPUS CPUs," \
        "$GPU_MEM_MB MiB, gpu:$GPUS_PER_NODE without devices)"
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
    local n
    for n in "${NODES[@]}"; do
        printf '%-10s %s\n' "slurmd $n:" "$(state "$RUN_DIR/slurmd-$n.pid")"
    done
    if pid_alive $RUN_DIR/slurmctld.pid; then
        local nodes
        nodes=$(sinfo -h -N -o '%N %T cpus=%c mem=%mMiB gres=%G' 2>/dev/null | sort -u | paste -sd ';' -) \
            || nodes=unreachable
        echo "nodes:     ${nodes//;/; }"
        echo "partitions: $(sinfo -h -o '%P %D nodes %G' 2>/dev/null | paste -sd ';' - | sed 's/;/; /g')"
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
