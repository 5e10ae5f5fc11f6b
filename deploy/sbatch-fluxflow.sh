#!/usr/bin/env bash
# Fully batch fluxflow: scheduler, client and workers inside this one SLURM allocation
# (dask-jobqueue's SLURMRunner via `python -m fluxflow.slurm batch`).
#
#   sbatch deploy/sbatch-fluxflow.sh fluxflow run eb1.ms eb2.ms eb3.ms --reffile flux.csv -o out
#
# srun task 0 = Dask scheduler, task 1 = the command (the client), tasks 2.. = one single-threaded
# worker each, so --ntasks = workers + 2. `fluxflow run` is pointed at the scheduler
# automatically; any other command finds it in DASK_SCHEDULER_ADDRESS (distributed.Client() with
# no argument connects there). Scheduler, workers and client use TLS credentials made for this
# job in a private directory under FLUXFLOW_TLS_PARENT (default ~/.fluxflow/tls, must be on a
# filesystem every node of the job sees), deleted at the end; FLUXFLOW_TLS=0 turns TLS off.
# Other settings: FLUXFLOW_PYTHON (default: python3 on PATH, must have fluxflow installed),
# FLUXFLOW_INTERFACE (network interface between nodes, e.g. ib0), FLUXFLOW_DASHBOARD (default
# 127.0.0.1:8787 on the scheduler's node, '' = off). Options given to sbatch on the command
# line override the #SBATCH lines below.
#SBATCH --job-name=fluxflow
#SBATCH --ntasks=6
#SBATCH --cpus-per-task=1
#SBATCH --mem-per-cpu=4G
#SBATCH --time=02:00:00
#SBATCH --output=fluxflow-%j.out
set -euo pipefail

if [[ $# -eq 0 ]]; then
    echo "usage: sbatch $0 fluxflow run MS... [options]   (or any command using Dask)" >&2
    exit 2
fi
PYTHON=${FLUXFLOW_PYTHON:-python3}
opts=(--dashboard-address "${FLUXFLOW_DASHBOARD-127.0.0.1:8787}")
[[ -n ${FLUXFLOW_INTERFACE:-} ]] && opts+=(--interface "$FLUXFLOW_INTERFACE")

if [[ ${FLUXFLOW_TLS:-1} != 0 ]]; then
    TLS_DIR=$("$PYTHON" -m fluxflow.slurm make-tls "${FLUXFLOW_TLS_PARENT:-$HOME/.fluxflow/tls}")
    trap 'rm -rf -- "$TLS_DIR"' EXIT
    opts+=(--tls-directory "$TLS_DIR")
fi

# no --kill-on-bad-exit: a lost worker task is survived (Dask reschedules its tasks)
srun "$PYTHON" -m fluxflow.slurm batch "${opts[@]}" -- "$@"
