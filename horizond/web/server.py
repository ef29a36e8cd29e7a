"""`horizond web --config FILE`: the dashboard's process, alone or as the master's child.

Served by waitress (a production WSGI server, pure Python, threaded): the web
process is not the master, so threads are fine here. Started by the master it
gets --parent: the kernel ends it when the master dies (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from horizond import appload, sysutil
from horizond.configfile import load
from horizond.connection.redisconn import RedisSpec
from horizond.core.config import ConfigError
from horizond.core.webconfig import split_listen
from horizond.observe import logs

log = logging.getLogger("horizond.web")
THREADS = 8
REDIS_TIMEOUT = 5.0


def build_parser() -> argparse.ArgumentParser:
    """`horizond web`'s options (scripts/gendocs.py writes the man page from them)."""
    parser = argparse.ArgumentParser(prog="horizond web", description="Serve the dashboard ([web] of the config).")
    parser.add_argument("--config", "-c", metavar="PATH", help="config file (default: as for horizond)")
    parser.add_argument("--parent", type=int, help=argparse.SUPPRESS)  # the master that started it
    parser.add_argument("--log-format", choices=("auto", "json", "text", "journal"), default="auto",
                        help="as for horizond")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.parent:
        sysutil.die_with_parent(args.parent, 15)
    try:
        config = load(args.config)
    except ConfigError as exc:
        for issue in exc.issues:
            print(f"error: {issue}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot read config {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    if not config.web_listen:
        print(f"error: {config.source}: [web] listen is not set: the dashboard is off", file=sys.stderr)
        return 2
    logs.setup(args.log_format, logging.INFO, role="web")
    return serve(config)


def serve(config) -> int:
    import waitress

    from horizond.web.app import create_app

    appload.extend_sys_path(config.app_paths)  # job detail pages unpack arguments of the app's own classes
    host, port = split_listen(config.web_listen)
    redis = RedisSpec.of(config).client(socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT,
                                        client_name=f"horizond-web-{sysutil.hostname()}-{os.getpid()}")
    app = create_app(config, redis)
    app.extensions["daemon"].start()  # the service levels' first read, before the first page asks
    if not config.web_users_file and not config.web_proxy_user_header:
        log.warning("no users_file: anyone who reaches the dashboard on the loopback sees it read-only",
                    extra={"event": "web_open"})
    try:
        server = waitress.create_server(app, host=host, port=port, threads=THREADS, ident="horizond")
    except OSError as exc:
        log.error(f"[web] listen = {config.web_listen!r}: cannot listen: {exc.strerror or exc}",
                  extra={"event": "web_listen_failed"})
        return 1
    log.info("dashboard serving", extra={"event": "web_started", "listen": config.web_listen, "pid": os.getpid(),
                                         "url": f"http://{config.web_listen}{config.web_base_path}/"})
    server.run()
    return 0
