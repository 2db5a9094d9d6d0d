"""WSGI entry point: `flask --app wsgi <command>` for the operator commands, and `wsgi:app` for
a gevent-capable WSGI server (run production web processes with `python -m webapp`, which
patches the standard library for gevent before anything else).

Being an entry point, it installs the log handler (on stderr, so that a command's own output on
stdout stays clean), with the scrubbing every Tributary line gets."""

import sys

from engine.logs import setup_logging
from engine.settings import Settings
from webapp import create_app

settings = Settings.load()
setup_logging(settings.LOG_LEVEL, settings.LOG_FORMAT, stream=sys.stderr)
app = create_app(settings=settings)
