"""Settings for the leaderboard site: one module, read from the environment, with embedded
defaults (SQLite file, a broker that needs no server, a local media folder) so that `make demo`
runs with nothing set. See the configuration table in README.md.
"""
from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from runner.spec import celery_broker_settings

BASE_DIR = Path(__file__).resolve().parent.parent
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


def env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def envbool(name: str, default: bool) -> bool:
    """The variable as a boolean: one of TRUE_WORDS or FALSE_WORDS (any case, spaces ignored);
    ``default`` when unset or empty. ImproperlyConfigured, naming the variable and the words it
    takes, for anything else (a typo such as DEBUG=flase must not quietly mean false)."""
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    word = value.strip().lower()
    if word not in TRUE_WORDS + FALSE_WORDS:
        raise ImproperlyConfigured(f"{name}={value!r} is not a boolean: use one of {', '.join(TRUE_WORDS)} "
                                   f"(true) or {', '.join(FALSE_WORDS)} (false)")
    return word in TRUE_WORDS


def envint(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def envlist(name: str, default: str) -> list[str]:
    return [item.strip() for item in env(name, default).split(",") if item.strip()]


VAR_DIR = Path(env("LEADERBOARD_VAR", str(BASE_DIR / "var")))

DEBUG = envbool("DEBUG", False)
DEV_SECRET_KEY = "django-insecure-embedded-default-do-not-use-in-production"
SECRET_KEY = env("SECRET_KEY", DEV_SECRET_KEY)
ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", "127.0.0.1,localhost,[::1],testserver")
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", "")
SITE_URL = env("SITE_URL", "http://127.0.0.1:8000")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "drf_spectacular",
    "leaderboard.accounts",
    "leaderboard.benchmarks",
    "leaderboard.submissions",
    "leaderboard.runners",
    "leaderboard.jobs",
    "leaderboard.boards",
]

MIDDLEWARE = [
    "leaderboard.errors.JsonErrorsForApiMiddleware",  # outermost: sees every response under /api/
    "leaderboard.text.RefuseNulMiddleware",  # before any view can hand a NUL to the database
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Common and frame options above the page cache's early answer, so that answer gets their
    # headers (Content-Length, X-Frame-Options) as the view's does; neither reads the session.
    "django.middleware.common.CommonMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "leaderboard.boards.middleware.PageCacheMiddleware",  # cached pages for anonymous GETs, answered here
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "leaderboard.urls"
WSGI_APPLICATION = "leaderboard.wsgi.application"

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

DATABASES = {
    "default": dj_database_url.parse(
        env("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}"), conn_max_age=envint("DB_CONN_MAX_AGE", 60)
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web server, the site worker and beat share the file: WAL lets readers run beside one
    # writer, IMMEDIATE transactions take the write lock up front instead of failing mid-way.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "home"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"
# plotly.js ships inside the plotly package: the site serves that copy (no CDN, works offline).
STATICFILES_DIRS = [BASE_DIR / "static", ("plotly", Path(__import__("plotly").__file__).parent / "package_data")]
MEDIA_ROOT = Path(env("MEDIA_ROOT", str(VAR_DIR / "media")))
MEDIA_URL = "/media/"
# Production runs `collectstatic` and sets STATIC_MANIFEST=1: hashed, compressed files served by
# WhiteNoise with far-future caching. Without it, WhiteNoise serves straight from the finders.
STATIC_MANIFEST = envbool("STATIC_MANIFEST", False)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if STATIC_MANIFEST
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = not STATIC_MANIFEST
if env("AWS_STORAGE_BUCKET_NAME"):
    STORAGES["default"] = {"BACKEND": "storages.backends.s3.S3Storage"}
    AWS_S3_ENDPOINT_URL = env("AWS_S3_ENDPOINT_URL") or None
    AWS_DEFAULT_ACL = None
    AWS_QUERYSTRING_AUTH = True

# Uploads: files above this size are streamed to disk, never held in memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
MAX_ARTIFACT_BYTES = envint("MAX_ARTIFACT_BYTES", 1024 * 1024 * 1024)
MAX_SOURCE_BYTES = envint("MAX_SOURCE_BYTES", 256 * 1024)
SUBMISSIONS_PER_DAY = envint("SUBMISSIONS_PER_DAY", 10)
SUBMISSIONS_CONCURRENT = envint("SUBMISSIONS_CONCURRENT", 3)

# The job lifecycle (DESIGN.md "Lifecycle"). A lease shorter than two heartbeats is refused by a
# system check (leaderboard/checks.py): one late heartbeat would lose a healthy runner its job.
JOB_LEASE_SECONDS = envint("JOB_LEASE_SECONDS", 120)
JOB_HEARTBEAT_SECONDS = envint("JOB_HEARTBEAT_SECONDS", 20)
JOB_DISPATCH_TIMEOUT_SECONDS = envint("JOB_DISPATCH_TIMEOUT_SECONDS", 900)
JOB_MAX_ATTEMPTS = envint("JOB_MAX_ATTEMPTS", 3)
JOB_MAX_DISPATCHES = envint("JOB_MAX_DISPATCHES", 5)
REAPER_INTERVAL_SECONDS = envint("REAPER_INTERVAL_SECONDS", 15)
RUNNER_OFFLINE_AFTER_SECONDS = envint("RUNNER_OFFLINE_AFTER_SECONDS", 120)

# Celery: the broker is the wake-up, the database the truth. Only ids travel.
_broker = celery_broker_settings(env("CELERY_BROKER_URL", f"filesystem://{VAR_DIR / 'broker'}"))
CELERY_BROKER_URL = _broker["broker_url"]
CELERY_BROKER_TRANSPORT_OPTIONS = _broker["broker_transport_options"]
CELERY_TASK_DEFAULT_QUEUE = "site"
CELERY_TASK_ALWAYS_EAGER = False
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_IGNORE_RESULT = True
CELERY_BEAT_SCHEDULE = {
    "reap-jobs": {
        "task": "leaderboard.reap_jobs",
        "schedule": float(REAPER_INTERVAL_SECONDS),
        "options": {"queue": "site", "expires": float(REAPER_INTERVAL_SECONDS)},
    },
}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "leaderboard.accounts.auth.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticatedOrReadOnly"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_THROTTLE_RATES": {},
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Leaderboard API",
    "DESCRIPTION": "Submit classifiers, optimizers and denoisers; read leaderboards and results.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": "/api/v1",
    # separate request components, so a file field is documented as a binary part, not a URI
    "COMPONENT_SPLIT_REQUEST": True,
}

# Production hardening, on whenever DEBUG is off (check --deploy passes with production vars).
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if envbool("BEHIND_TLS_PROXY", False) else None
SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", False)
SESSION_COOKIE_SECURE = envbool("SECURE_COOKIES", not DEBUG and SECURE_SSL_REDIRECT)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_SECONDS > 0
SECURE_HSTS_PRELOAD = SECURE_HSTS_SECONDS > 0
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
                   "json": {"()": "leaderboard.logging.JsonFormatter"}},
    "handlers": {"console": {"class": "logging.StreamHandler",
                             "formatter": "json" if env("LOG_FORMAT", "plain") == "json" else "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}
CELERY_TASK_ROUTES = {"leaderboard.*": {"queue": "site"}}
# The page cache for visitors (leaderboard/boards/cache.py). CACHE_URL redis://host:6379/1 shares it
# between web processes; the default keeps one per process, which is correct too (cached pages are
# keyed by the boards' version in the database), only less effective.
CACHE_URL = env("CACHE_URL")
CACHES = {
    "default": {"BACKEND": "leaderboard.redis_cache.RedisCache", "LOCATION": CACHE_URL,
                "KEY_PREFIX": env("CACHE_KEY_PREFIX", "leaderboard")}
    if CACHE_URL.startswith(("redis://", "rediss://"))
    else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "leaderboard-pages",
          "OPTIONS": {"MAX_ENTRIES": 2000}},
}
PAGE_CACHE_ALIAS = "default"
PAGE_CACHE_SECONDS = envint("PAGE_CACHE_SECONDS", 300)  # 0 turns the page cache off
# After a board changes, visitors get the previous render for at most this long while the site
# worker renders the new one (leaderboard/boards/tasks.py); after it, a missing render is made for them.
PAGE_CACHE_STALE_SECONDS = envint("PAGE_CACHE_STALE_SECONDS", 5)
PAGE_CACHE_MAX_BYTES = envint("PAGE_CACHE_MAX_BYTES", 2 * 1024 * 1024)  # larger pages (big exports) are not kept
RELEASE = env("RELEASE")  # e.g. the deployed git commit; part of the page cache's keys

# /metrics answers only with `Authorization: Bearer <METRICS_TOKEN>` when this is set.
METRICS_TOKEN = env("METRICS_TOKEN")
RUNNER_REGISTRATION_CODE_HOURS = envint("RUNNER_REGISTRATION_CODE_HOURS", 24)
