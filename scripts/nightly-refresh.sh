#!/bin/sh
# Nightly catalog refresh for cron: import the feed, download images (then retry the failed
# ones once), build the index.
#
#   scripts/nightly-refresh.sh /path/to/feed.csv     (docs/operations.md "Scheduled refresh")
#
# Every command exits 0 (all done), 2 (done, but some rows were skipped or some images
# failed: each is reported) or 1 (unusable input or a failure). The chain goes on after 0 or 2
# and stops at anything else, so a feed with one bad row or one dead image URL still
# refreshes the index. Exits with the worst status seen (2 = look at the report).
# LOOKALIKE_PYTHON overrides the interpreter (default: .venv/bin/python).
set -u
feed=${1:?usage: nightly-refresh.sh FEED}
cd "$(dirname "$0")/.." || exit 1
python=${LOOKALIKE_PYTHON:-.venv/bin/python}
worst=0

step() {
    "$python" manage.py "$@"
    status=$?
    if [ "$status" -ne 0 ] && [ "$status" -ne 2 ]; then
        echo "nightly-refresh: manage.py $1 failed (exit $status); later steps not run" >&2
        exit "$status"
    fi
    if [ "$status" -gt "$worst" ]; then
        worst=$status
    fi
}

step import_catalog --deactivate-missing "$feed"
step download_images
step download_images --only-failed  # a plain run leaves failed downloads alone
step build_index
exit "$worst"
