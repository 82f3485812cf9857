#!/usr/bin/env bash
# Installs Debian's chromium and chromium-driver when missing, so that tests/experiments/test_report_browser.py can
# open report.html in a real headless browser. Best effort: when they cannot be installed (no root, no apt-get, no
# network) it says why and that test skips with the reason; it never fails the build.
set -u
missing=""
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || missing="$missing chromium"
command -v chromedriver >/dev/null 2>&1 || missing="$missing chromedriver"
[ -z "$missing" ] && exit 0
echo "ensure-chromium: missing$missing; installing chromium and chromium-driver" >&2
if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-chromium: no apt-get here; the browser test will skip" >&2; exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "ensure-chromium: not root and no password-less sudo; the browser test will skip" >&2; exit 0
  fi
fi
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y -q chromium chromium-driver >/tmp/ensure-chromium.log 2>&1; then
  $SUDO apt-get update -q >>/tmp/ensure-chromium.log 2>&1
  $SUDO apt-get install -y -q chromium chromium-driver >>/tmp/ensure-chromium.log 2>&1 \
    || echo "ensure-chromium: apt-get failed (see /tmp/ensure-chromium.log); the browser test will skip" >&2
fi
exit 0
