"""`horizond`: start the master, or check a config file with --check-config."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import replace

from . import __version__, logs
from .config import Config, ConfigError, ConfigIssue, Env, embedded_default, parse, parse_control

SYSTEM_CONFIG = "/etc/horizond/horizond.toml"
# Read once at start (and kept for reloads and re-exec), never passed on: workers, job code and
# the [notify] command get an environment without them.
SECRET_VARIABLES = ("REDIS_PASSWORD", "REDIS_SENTINEL_PASSWORD")
log = logging.getLogger("horizond")


def env_from(environ) -> Env:
    return Env(
        redis_url=environ.get("REDIS_URL") or None,
        socket_path=environ.get("HORIZOND_SOCKET") or None,
        uid=os.getuid(),
        runtime_dir=environ.get("XDG_RUNTIME_DIR") or None,
        service_dir=environ.get("RUNTIME_DIRECTORY") or None,
    )


def config_path(explicit: str | None, environ) -> tuple[str | None, bool]:
    """(path, required): an explicitly named file must exist; the system default may not."""
    if explicit:
        return explicit, True
    if environ.get("HORIZOND_CONFIG"):
        return environ["HORIZOND_CONFIG"], True
    return SYSTEM_CONFIG, False


def load(explicit: str | None, environ=os.environ) -> Config:
    """Read the config the way the daemon does. Raises ConfigError or OSError."""
    path, required = config_path(explicit, environ)
    env = env_from(environ)
    if not os.path.exists(path) and not required:
        return replace(embedded_default(env), redis_password=environ.get("REDIS_PASSWORD") or None)
    with open(path, "rb") as handle:
        text = handle.read()
    config = parse(text, path, env)  # decodes, naming the first byte that is not UTF-8
    base = os.path.dirname(os.path.abspath(path))
    paths = tuple(p if os.path.isabs(p) else os.path.normpath(os.path.join(base, p)) for p in config.app_paths)
    return replace(config, app_paths=paths, redis_password=redis_password(config, environ),
                   sentinel_password=redis_password(config, environ, "sentinel_password_file",
                                                    "REDIS_SENTINEL_PASSWORD"))


def load_control(explicit: str | None, environ=os.environ) -> dict:
    """The [control] settings as horizonctl needs them: the rest of the file, and any secret
    it names, is never read. Raises ConfigError or OSError."""
    path, required = config_path(explicit, environ)
    env = env_from(environ)
    if not os.path.exists(path) and not required:
        default = embedded_default(env)
        return {"socket_path": default.socket_path, "control_user": None}
    with open(path, "rb") as handle:
        return parse_control(handle.read(), path, env)


def scrub_secrets(environ) -> None:
    """Drop the secrets horizond read from `environ` (os.environ: then from what children inherit).

    $REDIS_URL stays as the operator set it: job code commonly connects with it, and a password
    meant for horizond alone belongs in $REDIS_PASSWORD or [redis] password_file."""
    for name in SECRET_VARIABLES:
        environ.pop(name, None)


def redis_password(config: Config, environ, key: str = "password_file", variable: str = "REDIS_PASSWORD"):
    """$REDIS_PASSWORD wins; else [redis] password_file (e.g. a systemd credential)."""
    if environ.get(variable):
        return environ[variable]
    path = dict(config.redis_files).get(key)
    if not path:
        return None
    path = path.replace("$CREDENTIALS_DIRECTORY", environ.get("CREDENTIALS_DIRECTORY", "$CREDENTIALS_DIRECTORY"))
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError as exc:
        raise ConfigError([ConfigIssue(config.source, "redis", key,
                                       f"cannot read {path}: {exc.strerror}")]) from None
    except UnicodeDecodeError:
        raise ConfigError([ConfigIssue(config.source, "redis", key, f"{path} is not UTF-8 text")]) from None


def summary(config: Config) -> str:
    low = sum(s.min_processes for s in config.supervisors)
    high = sum(s.max_processes for s in config.supervisors)
    return (f"{config.source}: OK: {len(config.supervisors)} supervisors "
            f"({', '.join(s.name for s in config.supervisors)}), {len(config.all_queues())} queues, "
            f"{low}-{high} worker processes")


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
    from .appload import PreloadAborted
    from .control import SocketError
    from .master import Master
    from .redischeck import RedisSetupError

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
    except PreloadAborted:
        return 1  # logged as preload_failed, naming the module


if __name__ == "__main__":
    sys.exit(main())
