"""The base of every Lookalike management command: exit codes as README "Exit codes" says.

Django's commands exit 2 on a bad option (argparse) and print "CommandError: ..." before a
run that was done with skipped items. Ours exit 1 on a bad option (unusable input: usage and
the error on stderr), and a partial run (``CommandError(..., returncode=EXIT_PARTIAL)``)
prints its summary without the "CommandError:" prefix, which reads like a crash, and exits 2.
Called through ``call_command`` nothing changes: both raise ``CommandError`` as before.
"""

from __future__ import annotations

import sys
from typing import Any, NoReturn

from django.core.management.base import BaseCommand, CommandError, CommandParser

from catalog.exitcodes import EXIT_FAILED, EXIT_PARTIAL


class LookalikeCommand(BaseCommand):
    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.error = _usage_error(parser)  # type: ignore[method-assign]
        return parser

    def execute(self, *args: Any, **options: Any) -> Any:
        try:
            return super().execute(*args, **options)
        except CommandError as exc:
            if (not getattr(self, "_called_from_command_line", False)
                    or exc.returncode != EXIT_PARTIAL or options.get("traceback")):
                raise
            self.stderr.write(str(exc))
            raise SystemExit(EXIT_PARTIAL) from exc


def _usage_error(parser: CommandParser) -> Any:
    def error(message: str) -> NoReturn:
        if not parser.called_from_command_line:
            raise CommandError(f"Error: {message}")
        parser.print_usage(sys.stderr)
        parser.exit(EXIT_FAILED, f"{parser.prog}: error: {message}\n")

    return error
