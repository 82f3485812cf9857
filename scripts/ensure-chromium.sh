#!/usr/bin/env bash
# Installs Debian's chromium and chromium-driver when missing, so that tests/reporting/test_report_browser.py can
# open report.html in a real headless browser (best effort, see ensure-debian.sh: the test skips with the reason).
exec "$(dirname "$0")/ensure-debian.sh" ensure-chromium "the browser test will skip" "chromium chromium-driver" \
  "chromium|chromium-browser" chromedriver
