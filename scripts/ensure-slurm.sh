#!/usr/bin/env bash
# Installs the Debian packages slurm-wlm and munge when missing, so that tests/launch/test_slurm.py can start a
# real single-node Slurm (best effort, see ensure-debian.sh: the Slurm tests skip with the reason).
exec "$(dirname "$0")/ensure-debian.sh" ensure-slurm "the Slurm tests will skip" "slurm-wlm munge" \
  munged slurmctld slurmd sbatch squeue scontrol scancel
