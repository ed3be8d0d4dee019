"""Lookalike settings, driven by environment variables with safe defaults."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from marshmallow.validate import OneOf

from catalog.conf import CATALOG_KEYS
from config.env import EnvReader, lookalike_from_env
from similarity.conf import SIMILARITY_KEYS

BASE_DIR = Path(__file__).resolve().parent.parent


env = EnvReader()


# Everything the app writes (SQLite database, images, indexes) lives under one directory.
DATA_DIR = Path(env.str("LOOKALIKE_DATA_DIR", "") or BASE_DIR / "var").resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)

# Per machine, shared by every data directory (the demo's and a shop's): exported ONNX models
# and the embedding runtime `auto` measured for each model on this CPU (both keyed by the
# model identity and library versions, so sharing them is safe).
MODEL_CACHE_DIR = Path(
    env.str("LOOKALIKE_MODEL_CACHE_DIR", "")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lookalike"
).resolve()

DEBUG = env.bool("DEBUG", default=False)


def _secret_key() -> str:
    """SECRET_KEY from the environment, else one generated once and kept in the data dir."""
    key = env.str("SECRET_KEY", "")
    if key:
        return key
    key_file = DATA_DIR / "secret_key"
    if not key_file.exists():
        # Written aside and linked into place: concurrent first starts (several gunicorn
        # workers) agree on one key and never read a half-written file.
        tmp = DATA_DIR / f".secret_key.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(50))
        try:
            os.link(tmp, key_file)  # fails if another process got there first
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return key_file.read_text().strip()


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS")

if not DEBUG:
    SESSION_COOKIE_SECURE = env.bool("SECURE_COOKIES", default=False)
    CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
    SECURE_CONTENT_TYPE_NOSNIFF = True
    X_FRAME_OPTIONS = "DENY"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "django_q",
    "catalog",
    "similarity",
    "demo",
]

MIDDLEWARE = [
    "similarity.observability.middleware.RequestMetricsMiddleware",
    # /healthz, /readyz, /metrics: answered whatever the Host header (probes use IP:port).
    "similarity.observability.middleware.ProbeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, so it sees view and rendering exceptions first: the database down is a 503 JSON.
    "similarity.api.fallback.DatabaseUnavailableMiddleware",
]

ROOT_URLCONF = "config.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "config.wsgi.application"

DATABASES = {
    "default": dj_database_url.parse(
        env.str("DATABASE_URL", "") or f"sqlite:///{DATA_DIR / 'db.sqlite3'}",
        conn_max_age=env.int("DATABASE_CONN_MAX_AGE", 60),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Concurrent readers while a build or download writes; wait instead of "database is locked".
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL;PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)  # whitenoise warns about a missing directory
MEDIA_URL = "media/"
MEDIA_ROOT = DATA_DIR / "media"
# Images ("default"), published index builds ("indexes") and supplier match runs ("matching":
# uploads, reports, thumbnails; private) go through Django's storage API: this machine's
# MEDIA_ROOT, DATA_DIR/index and DATA_DIR/matching unless LOOKALIKE_STORAGE_DIR (a directory
# every node mounts) or LOOKALIKE_S3_BUCKET (django-storages[s3]; AWS_* credentials from the
# environment) is set. docs/scaling.md "Storage" describes each.
STORAGE_DIR = env.str("LOOKALIKE_STORAGE_DIR", "")
S3_BUCKET = env.str("LOOKALIKE_S3_BUCKET", "")
STORAGES: dict[str, dict[str, Any]] = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "indexes": {"BACKEND": "similarity.storages.LocalIndexStorage"},
    "matching": {"BACKEND": "similarity.storages.LocalMatchingStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
if STORAGE_DIR:
    for _alias, _subdir in (("default", "media"), ("indexes", "index"), ("matching", "matching")):
        STORAGES[_alias] = {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": Path(STORAGE_DIR).resolve() / _subdir},
        }
if S3_BUCKET:
    for _alias, _prefix in (("default", "media"), ("indexes", "index"), ("matching", "matching")):
        STORAGES[_alias] = {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": S3_BUCKET,
                "location": _prefix,
                "endpoint_url": env.str("LOOKALIKE_S3_ENDPOINT_URL", "") or None,
                "region_name": env.str("LOOKALIKE_S3_REGION", "") or None,
                "file_overwrite": True,  # an article's image keeps its name when replaced
                # Supplier files are never public, whatever the bucket's default says.
                "default_acl": "private" if _alias == "matching" else None,
                "querystring_auth": _alias == "matching"
                or env.bool("LOOKALIKE_S3_SIGNED_URLS", default=True),
            },
        }
WHITENOISE_USE_FINDERS = True  # serve admin assets without a collectstatic step
# Serve downloaded images from Django itself (fine for admin use; put a web server in front
# of MEDIA_ROOT for storefront traffic and set this to false).
SERVE_MEDIA = env.bool("LOOKALIKE_SERVE_MEDIA", default=True)

# Upload size limit for external image queries, enforced before decoding.
DATA_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440

# One namespaced dict; read through catalog_settings() / similarity_settings(), never directly.
# Only the LOOKALIKE_<KEY> variables that are set go in: the defaults live in the conf modules'
# settings classes, and every key declared there can be set from the environment (its type).
LOOKALIKE: dict[str, object] = lookalike_from_env(env, {**SIMILARITY_KEYS, **CATALOG_KEYS})

# The API: read access follows LOOKALIKE["API_AUTH"] (open or token), rebuilds are staff-only.
REST_FRAMEWORK: dict[str, object] = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["similarity.api.permissions.ReadAccess"],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    # drf-spectacular's, plus the error statuses each view declares (error_statuses).
    "DEFAULT_SCHEMA_CLASS": "similarity.api.schema.ApiAutoSchema",
    "EXCEPTION_HANDLER": "similarity.api.errors.api_exception_handler",
    # DRF's JSON parser with a nesting depth limit (deep JSON is a 400, not a 500).
    "DEFAULT_PARSER_CLASSES": [
        "similarity.api.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    # Client IPs for the upload throttle: 0 uses REMOTE_ADDR only and ignores X-Forwarded-For
    # (which any client can send); N trusts the N-th address from the right of that header,
    # i.e. the one added by the outermost of N reverse proxies you run.
    "NUM_PROXIES": env.int("LOOKALIKE_NUM_PROXIES", 0),
}
if int(REST_FRAMEWORK["NUM_PROXIES"]) < 0:  # type: ignore[call-overload]
    raise ImproperlyConfigured(
        f"LOOKALIKE_NUM_PROXIES must be >= 0; got {REST_FRAMEWORK['NUM_PROXIES']!r}"
    )
SPECTACULAR_SETTINGS: dict[str, object] = {
    "TITLE": "Lookalike API",
    "DESCRIPTION": "Visually similar catalog articles, by article, uploaded photo or text.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema and docs follow LOOKALIKE_API_AUTH like every other read endpoint.
    "SERVE_PERMISSIONS": ["similarity.api.permissions.ReadAccess"],
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI assets from the drf-spectacular-sidecar package: no CDN needed.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "similarity.api.schema.postprocess_schema",
    ],
}
INSTALLED_APPS += ["drf_spectacular_sidecar"]  # static files only

REDIS_URL = env.str("REDIS_URL", "")
Q_TIMEOUT = env.int("LOOKALIKE_Q_TIMEOUT", 6 * 3600)
Q_CLUSTER: dict[str, object] = {
    "name": "lookalike",
    "workers": env.int("LOOKALIKE_Q_WORKERS", 1),
    "timeout": Q_TIMEOUT,
    "retry": (Q_TIMEOUT or 0) + 60,  # Q_TIMEOUT is None for a bad value: env.seal() says so
    "max_attempts": 1,
    "save_limit": 250,
    "label": "Background tasks",
    "catch_up": False,
    # Named clusters (`Q_CLUSTER_NAME=embed manage.py qcluster`, LOOKALIKE_EMBED_CLUSTER): a
    # worker started with a name takes that queue; django-q2 requires this key to start one.
    "ALT_CLUSTERS": {},
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_LEVEL = (env.str("LOG_LEVEL", "INFO", validate=OneOf(LOG_LEVELS)) or "INFO").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "catalog": {"handlers": ["console"], "level": LOG_LEVEL},
        "similarity": {"handlers": ["console"], "level": LOG_LEVEL},
        # Server errors (500s, with their traceback) go to stderr even with DEBUG off; Django's
        # default only mails them to ADMINS.
        "django.request": {"handlers": ["console"], "level": "ERROR", "propagate": False},
    },
}

# Observability (docs/operations.md): /metrics answers loopback clients only, or any client
# that sends "Authorization: Bearer <METRICS_TOKEN>" when this is set.
METRICS_TOKEN = env.str("METRICS_TOKEN", "")

# Every bad value above, reported together in one line naming each variable and its value.
env.seal()

if not DEBUG and SECRET_KEY.startswith("django-insecure"):
    raise ImproperlyConfigured("SECRET_KEY is the insecure development key; set SECRET_KEY.")
