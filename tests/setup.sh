#!/usr/bin/env bash
# System packages the test suite uses, from Debian's archive (run as root; idempotent):
#   chromium  - the report is checked in a real headless browser (tests/test_report.py)
#   munge, slurmctld, slurmd, slurm-client - a real single-node SLURM (tests/slurm_fixture.py
#               starts and stops it with deploy/slurm-local.sh)
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v slurmctld >/dev/null 2>&1 || need+=(munge slurmctld slurmd slurm-client)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
