"""The Lua scripts under engine/lua/, called by SHA with a reload when Redis has forgotten them.

Each call touches the keys of one user only (one hash tag), so it runs unchanged on Redis
Cluster; the one exception is ingest.lua on a single Redis, where one call appends for many
users (engine/streams.py `append_all`), each user's part atomic on its own. Calls go out as
EVALSHA; after a Redis restart the script cache is empty, so a NOSCRIPT reply loads the script
and the call is repeated (nothing ran the first time).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from redis import Redis
from redis.client import Pipeline
from redis.cluster import ClusterPipeline
from redis.exceptions import NoScriptError

_LUA_DIR = Path(__file__).resolve().parent / "lua"


class Script:
    """One Lua script, known by name (the file name without `.lua`)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.source = (_LUA_DIR / f"{name}.lua").read_text()
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    def __call__(self, client: Redis, keys: list[str], args: list[Any]) -> Any:
        """Run the script now and return its reply."""
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            client.script_load(self.source)
            return client.evalsha(self.sha, len(keys), *keys, *args)

    def queue(self, pipe: Pipeline | ClusterPipeline, keys: list[str], args: list[Any]) -> None:
        """Add a call to a pipeline; run the pipeline with `execute_scripts`.

        A Redis Cluster pipeline refuses `evalsha` by name, and finds the keys of a command
        queued by `execute_command` by asking a node (COMMAND GETKEYS, one round trip per
        call); so there the call names its node itself: the master of its keys' slot.
        """
        if isinstance(pipe, ClusterPipeline):
            pipe.execute_command("EVALSHA", self.sha, len(keys), *keys, *args,
                                 target_nodes=pipe.get_node_from_key(keys[0]))
        else:
            pipe.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)


INGEST = Script("ingest")
OPEN = Script("open")
CLOSE = Script("close")
REMOVE = Script("remove")
ACKDEL = Script("ackdel")
LEASE = Script("lease")
RELEASE = Script("release")
FORGET = Script("forget")
BUCKET = Script("bucket")
ALL = (INGEST, OPEN, CLOSE, REMOVE, ACKDEL, LEASE, RELEASE, FORGET, BUCKET)


def load_all(client: Redis) -> None:
    """Load every script into Redis's cache (at start-up and after a NOSCRIPT)."""
    for script in ALL:
        client.script_load(script.source)


def execute_scripts(client: Redis, pipe: Pipeline) -> list[Any]:
    """Execute a pipeline made only of script calls, reloading the scripts on NOSCRIPT.

    Errors come back in place of replies (as exception objects) rather than raised, so that one
    bad call does not hide the replies of the others. Connection errors are raised.
    """
    commands = _queued(pipe)
    replies = pipe.execute(raise_on_error=False)
    if any(isinstance(reply, NoScriptError) for reply in replies):
        load_all(client)
        for args, options in commands:
            pipe.execute_command(*args, **options)
        replies = pipe.execute(raise_on_error=False)
    return replies


def _queued(pipe: Pipeline | ClusterPipeline) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """The commands queued in a pipeline, to queue them again. A Redis Cluster pipeline keeps
    them in its execution strategy (redis-py 8.1) rather than in `command_stack`."""
    if isinstance(pipe, ClusterPipeline):
        return [(c.args, dict(c.options)) for c in pipe._execution_strategy.command_queue]
    return [(args, dict(options)) for args, options in pipe.command_stack]
