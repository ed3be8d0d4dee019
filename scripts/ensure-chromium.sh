#!/usr/bin/env bash
# Install Debian's chromium + chromium-driver for the browser tests, only when missing.
# Needs root (CI); otherwise explains how to install them or skip the browser tests.
set -euo pipefail

CHROMIUM=/usr/bin/chromium
CHROMEDRIVER=/usr/bin/chromedriver

if [ "${LOOKALIKE_SKIP_BROWSER:-}" = "1" ]; then
    echo "ensure-chromium: LOOKALIKE_SKIP_BROWSER=1, browser tests are skipped"
    exit 0
fi
if [ -x "$CHROMIUM" ] && [ -x "$CHROMEDRIVER" ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "ensure-chromium: $CHROMIUM or $CHROMEDRIVER is missing and this is not root." >&2
    echo "  Install them: sudo apt-get install -y chromium chromium-driver" >&2
    echo "  or skip the browser tests: LOOKALIKE_SKIP_BROWSER=1 make test" >&2
    exit 0  # the browser test itself fails with the same advice unless skipped
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-chromium: no apt-get here; install chromium and chromedriver at" \
        "$CHROMIUM and $CHROMEDRIVER, or set LOOKALIKE_SKIP_BROWSER=1" >&2
    exit 0
fi
echo "ensure-chromium: installing chromium and chromium-driver (Debian packages)"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    chromium chromium-driver >/dev/null
"$CHROMIUM" --version
"$CHROMEDRIVER" --version
