"""WSGI entry point (gunicorn config.wsgi)."""
import os
import sys

from django.core.wsgi import get_wsgi_application

from config.env import SettingsError

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
try:
    application = get_wsgi_application()
except SettingsError as exc:
    sys.exit(f"Error: {exc}")  # one line naming the bad variable, not a traceback
