#!/usr/bin/env bash
# ensure-debian.sh NAME "WHAT SKIPS" "PACKAGES" COMMAND... — installs Debian PACKAGES with apt-get when one of the
# COMMANDs is missing (a COMMAND may list alternatives as a|b). Best effort: when they cannot be installed (no
# root, no apt-get, no network) it says why and that WHAT SKIPS (with the reason); it never fails the build.
set -u
name=$1 skips=$2 packages=$3
shift 3
missing=""
for alternatives in "$@"; do
  found=""
  for bin in ${alternatives//|/ }; do command -v "$bin" >/dev/null 2>&1 && found=1; done
  [ -n "$found" ] || missing="$missing $alternatives"
done
[ -z "$missing" ] && exit 0
log=/tmp/$name.log
echo "$name: missing$missing; installing $packages" >&2
if ! command -v apt-get >/dev/null 2>&1; then
  echo "$name: no apt-get here; $skips" >&2; exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "$name: not root and no password-less sudo; $skips" >&2; exit 0
  fi
fi
export DEBIAN_FRONTEND=noninteractive
# shellcheck disable=SC2086  # PACKAGES is a list
if ! $SUDO apt-get install -y -q $packages >"$log" 2>&1; then
  $SUDO apt-get update -q >>"$log" 2>&1
  $SUDO apt-get install -y -q $packages >>"$log" 2>&1 || echo "$name: apt-get failed (see $log); $skips" >&2
fi
exit 0
