#!/usr/bin/env bash
# CI's one-node Slurm cluster for the Slurm test.
#
#   scripts/slurm/cluster.sh start STATE_DIR   # install (if needed), configure, start, wait for idle
#   scripts/slurm/cluster.sh stop  STATE_DIR   # stop the daemons recorded in STATE_DIR/*.pid
#
# Debian 12 (slurm-wlm 22.05), run as root, no systemd: munged, slurmctld and slurmd run
# in the foreground (-F/-D) as background jobs of this script, their pids kept in
# STATE_DIR/{munged,slurmctld,slurmd}.pid. Config goes to /etc/slurm/slurm.conf so that
# plain sbatch/squeue/sinfo work from any later process. State, spool and logs live in
# STATE_DIR. No accounting (no slurmdbd): use squeue/scontrol, not sacct.
set -euo pipefail

usage() { echo "usage: $0 start|stop STATE_DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
cmd=$1
mkdir -p "$2"
S=$(cd "$2" && pwd)

# A recorded pid counts only while it still names that daemon (guards against pid
# reuse) and is not a zombie (a container's pid 1 may reap late).
alive() {
    local pid
    pid=$(cat "$S/$1.pid" 2>/dev/null) || return 1
    case $(ps -o stat=,comm= -p "$pid" 2>/dev/null) in
        Z*) return 1 ;;
        *" $1") return 0 ;;
        *) return 1 ;;
    esac
}

stop() {
    local d pid
    for d in slurmd slurmctld munged; do
        if alive $d; then
            pid=$(cat "$S/$d.pid")
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 100); do alive $d || break; sleep 0.1; done
            if alive $d; then echo "$d ($pid) needed SIGKILL" >&2; kill -KILL "$pid" || true; fi
        fi
        rm -f "$S/$d.pid"
    done
    echo "slurm cluster in $S stopped"
}

wait_idle() {
    local state
    for _ in $(seq 60); do
        { alive slurmctld && alive slurmd; } || return 1
        state=$(sinfo -h -o %T 2>/dev/null || true)
        [ "$state" = idle ] && return 0
        sleep 1
    done
    return 1
}

install_pkgs() {
    command -v slurmctld >/dev/null && return 0
    # Keep the packages' postinst from starting daemons of their own (Docker images
    # usually ship such a policy-rc.d already).
    local policy=/usr/sbin/policy-rc.d own_policy=
    if [ ! -e $policy ]; then printf '#!/bin/sh\nexit 101\n' >$policy; chmod +x $policy; own_policy=1; fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
    [ -z "$own_policy" ] || rm -f $policy
}

setup_munge() {
    install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge
    install -d -o munge -g munge -m 0755 /var/log/munge /run/munge
    if [ ! -e /etc/munge/munge.key ]; then
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    # munged refuses a key readable by others or a key/dir not owned by its user.
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
}

write_conf() {
    local host cpus mem
    host=$(hostname -s)
    cpus=$(nproc)
    mem=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
    mkdir -p /etc/slurm "$S/ctld" "$S/spool" "$S/log" "$S/run"
    # Addresses are pinned to 127.0.0.1 so the hostname need not resolve.
    cat >/etc/slurm/slurm.conf <<EOF
# Written by scripts/slurm/cluster.sh for state dir $S
ClusterName=neurodex-ci
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
StateSaveLocation=$S/ctld
SlurmdSpoolDir=$S/spool
SlurmctldPidFile=$S/run/slurmctld.pid
SlurmdPidFile=$S/run/slurmd.pid
SlurmctldLogFile=$S/log/slurmctld.log
SlurmdLogFile=$S/log/slurmd.log
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    # No cgroup plugin is used, but slurm 22.05's slurmctld and slurmd still parse
    # cgroup.conf whenever it exists (fatal if invalid), so replace any stale one.
    cat >/etc/slurm/cgroup.conf <<EOF
CgroupAutomount=no
ConstrainCores=no
ConstrainRAMSpace=no
EOF
}

start() {
    # Already up from this STATE_DIR (and answering, whether idle or busy): nothing to do.
    if alive munged && alive slurmctld && alive slurmd && sinfo -h >/dev/null 2>&1; then
        echo "slurm cluster in $S already running"; exit 0
    fi
    stop >/dev/null
    install_pkgs
    setup_munge
    write_conf
    setsid setpriv --reuid=munge --regid=munge --init-groups munged -F >"$S/log/munged.out" 2>&1 &
    echo $! >"$S/munged.pid"
    for _ in $(seq 50); do munge -n </dev/null >/dev/null 2>&1 && break; sleep 0.1; done
    setsid slurmctld -D >"$S/log/slurmctld.out" 2>&1 &
    echo $! >"$S/slurmctld.pid"
    setsid slurmd -D >"$S/log/slurmd.out" 2>&1 &
    echo $! >"$S/slurmd.pid"
    if wait_idle; then
        echo "slurm cluster up: $(sinfo -h -o '%P %N %c cpus %T'); conf /etc/slurm/slurm.conf; logs in $S/log"
        exit 0
    fi
    echo "slurm cluster did not become idle; sinfo: $(sinfo -h -o '%N %T %E' 2>&1 || true)" >&2
    for f in "$S"/log/*; do echo "== $f" >&2; tail -n 20 "$f" >&2; done
    stop >&2
    exit 1
}

case $cmd in
    start) start ;;
    stop) stop ;;
    *) usage ;;
esac
