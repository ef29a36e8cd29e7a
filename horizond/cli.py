"""`horizond`: start the master, or check a config file with --check-config."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from horizond import __version__, sysutil
from horizond.configfile import SYSTEM_CONFIG, load, scrub_secrets
from horizond.core.config import Config, ConfigError
from horizond.observe import logs

log = logging.getLogger("horizond")


def summary(config: Config) -> str:
    low = sum(s.min_processes for s in config.supervisors)
    high = sum(s.max_processes for s in config.supervisors)
    return (f"{config.source}: OK: {len(config.supervisors)} supervisors "
            f"({', '.join(s.name for s in config.supervisors)}), {len(config.all_queues())} queues, "
            f"{low}-{high} worker processes; fleet node {config.fleet_node or sysutil.hostname()!r}"
            f"{'' if config.fleet_node else ' (the host name)'}, heartbeat {config.fleet_heartbeat:g} s")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="horizond", description="Supervise RQ worker processes.")
    parser.add_argument("--config", "-c", metavar="PATH",
                        help=f"config file (default: $HORIZOND_CONFIG, else {SYSTEM_CONFIG})")
    parser.add_argument("--check-config", action="store_true", help="validate the config file and exit")
    parser.add_argument("--log-format", choices=("auto", "json", "text", "journal"), default="auto",
                        help="auto: native journald fields under systemd, JSON lines on stderr otherwise")
    parser.add_argument("--log-level", default="info", type=str.upper,
                        choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    parser.add_argument("--version", action="version", version=f"horizond {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["web"]:  # `horizond web --config FILE`: the dashboard alone
        from horizond.web.server import main as web_main

        return web_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        config = load(args.config)
    except ConfigError as exc:
        for issue in exc.issues:
            print(f"error: {issue}", file=sys.stderr)
        print(f"{len(exc.issues)} error(s); nothing started.", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot read config {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    if args.check_config:
        print(summary(config) if not config.embedded else
              f"no config file found; the embedded default would run ({summary(config).split(': OK: ')[1]})")
        return 0
    level = getattr(logging, args.log_level)
    logs.setup(args.log_format, level)
    if config.embedded:
        log.warning("no config file found: running the embedded default (supervisor 'default' on queue 'default')",
                    extra={"event": "embedded_config", "looked_for": SYSTEM_CONFIG})
    from horizond.appload import PreloadAborted
    from horizond.connection.redischeck import RedisSetupError
    from horizond.control.server import SocketError
    from horizond.fleet.member import FleetConflict
    from horizond.supervise.master import Master

    environ = dict(os.environ)  # reloads and re-exec still see the secrets; children do not
    scrub_secrets(os.environ)
    try:
        master = Master(config, lambda: load(args.config, environ), level, environ=environ)
        return master.run()
    except SocketError as exc:
        log.error(str(exc), extra={"event": "control_socket_failed"})
        return 1
    except RedisSetupError as exc:
        log.error(str(exc), extra={"event": "redis_setup_failed"})
        return 2
    except FleetConflict as exc:
        log.error(str(exc), extra={"event": "fleet_node_duplicate"})
        return 1
    except PreloadAborted:
        return 1  # logged as preload_failed, naming the module


if __name__ == "__main__":
    sys.exit(main())
