"""WSGI entry point: `flask --app wsgi <command>` for the operator commands, and `wsgi:app` for
a gevent-capable WSGI server (run production web processes with `python -m webapp`, which
patches the standard library for gevent before anything else)."""

from webapp import create_app

app = create_app()
