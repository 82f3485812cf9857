#!/usr/bin/env bash
# Installs the Debian packages slurm-wlm and munge when missing, so that tests/experiments/test_slurm.py can start a
# real single-node Slurm. Best effort: when they cannot be installed (no root, no apt-get, no network) it
# says why and the Slurm tests skip with that reason; it never fails the build.
set -u
missing=""
for bin in munged slurmctld slurmd sbatch squeue scontrol scancel; do
  command -v "$bin" >/dev/null 2>&1 || missing="$missing $bin"
done
[ -z "$missing" ] && exit 0
echo "ensure-slurm: missing$missing; installing slurm-wlm and munge" >&2
if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-slurm: no apt-get here; the Slurm tests will skip" >&2; exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "ensure-slurm: not root and no password-less sudo; the Slurm tests will skip" >&2; exit 0
  fi
fi
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y -q slurm-wlm munge >/tmp/ensure-slurm.log 2>&1; then
  $SUDO apt-get update -q >>/tmp/ensure-slurm.log 2>&1
  $SUDO apt-get install -y -q slurm-wlm munge >>/tmp/ensure-slurm.log 2>&1 \
    || echo "ensure-slurm: apt-get failed (see /tmp/ensure-slurm.log); the Slurm tests will skip" >&2
fi
exit 0
