"""Exit codes shared by every management command (README "Exit codes").

0: all done. 2: done, but some rows were skipped or some items failed (each is reported).
1: unusable input or a failure; nothing (more) was done. Commands raise CommandError with
``returncode=EXIT_PARTIAL`` for 2, a plain CommandError for 1 (catalog.management.base prints
the first without a "CommandError:" prefix, and makes a bad option exit 1, not argparse's 2).
A cron chain goes on while the status is at most 2 (docs/operations.md).
"""

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_PARTIAL = 2
