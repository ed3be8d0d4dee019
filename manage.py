#!/usr/bin/env python
"""Django's command-line utility for Lookalike."""
import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from django.core.management import execute_from_command_line

    from config.env import SettingsError

    try:
        execute_from_command_line(sys.argv)
    except SettingsError as exc:
        # A bad environment variable: one line naming it and its value, not a traceback.
        sys.exit(f"Error: {exc}")


if __name__ == "__main__":
    main()
