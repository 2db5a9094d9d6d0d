"""`python -m engine [run|health|init-db|replay-dead-letters|settings]`."""

from __future__ import annotations

import argparse
import sys

from engine.errors import ConfigError, StartupCheckError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine",
                                     description="Tributary engine: streams to the database.")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("run", help="run the engine (the default)")
    health = commands.add_parser("health", help="exit 0 when an engine is alive, 1 otherwise")
    health.add_argument("--any-host", action="store_true",
                        help="accept a live engine on any host, not only this one")
    commands.add_parser("init-db", help="create the tables and record the schema version")
    replay = commands.add_parser("replay-dead-letters",
                                 help="put dead letters back into their user's stream")
    replay.add_argument("--user", help="only this user's dead letters")
    replay.add_argument("--id", type=int, action="append", help="only these dead letter ids")
    commands.add_parser("settings", help="print every setting with its default (.env.example)")
    args = parser.parse_args(argv)

    from engine.settings import Settings, env_example

    if args.command == "settings":
        print(env_example())
        return 0
    try:
        settings = Settings.load()
        from engine.logs import setup_logging

        setup_logging(settings.LOG_LEVEL, settings.LOG_FORMAT)
        if args.command == "health":
            from engine.health import check

            healthy, message = check(settings, any_host=args.any_host)
            print(message)
            return 0 if healthy else 1
        if args.command == "init-db":
            from engine.db import create_db
            from engine.schema import apply_schema

            print(f"schema version {apply_schema(create_db(settings.DATABASE_URL))} is in place")
            return 0
        if args.command == "replay-dead-letters":
            from engine.connections import connect_redis
            from engine.db import create_db
            from engine.deadletters import replay as replay_letters

            count = replay_letters(settings, create_db(settings.DATABASE_URL),
                                   connect_redis(settings), user_id=args.user, ids=args.id)
            print(f"replayed {count} dead letter(s)")
            return 0
        from engine.sweeper import Sweeper

        return Sweeper(settings).run()
    except (ConfigError, StartupCheckError) as exc:
        print(f"tributary engine: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
