"""Reading the config the way the daemon does: which file, the environment, secrets from files.

Shared by `horizond` (the whole file) and `horizonctl` (only [control]): file and environment
I/O lives here so the parser in core/config.py stays pure.
"""

from __future__ import annotations

import os
from dataclasses import replace

from horizond.core.config import Config, ConfigError, ConfigIssue, Env, embedded_default, parse, parse_control

SYSTEM_CONFIG = "/etc/horizond/horizond.toml"
# Read once at start (and kept for reloads and re-exec), never passed on: workers, job code and
# the [notify] command get an environment without them.
SECRET_VARIABLES = ("REDIS_PASSWORD", "REDIS_SENTINEL_PASSWORD")


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
    users = config.web_users_file and os.path.join(base, config.web_users_file)  # relative to the file
    return replace(config, app_paths=paths, web_users_file=users, redis_password=redis_password(config, environ),
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


def load_web(explicit: str | None, environ=os.environ) -> dict:
    """[web] as `horizonctl web-user` needs it (users_file resolved like the daemon resolves it);
    nothing else in the file, and no secret, is read. Raises ConfigError or OSError."""
    import tomllib

    from horizond.core.webconfig import parse_web

    path, _ = config_path(explicit, environ)
    with open(path, "rb") as handle:
        text = handle.read()
    try:
        data = tomllib.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError) as exc:
        raise ConfigError([ConfigIssue(path, "", None, f"not a readable TOML file: {exc}")]) from None
    fields = parse_web(data, path)
    if fields["web_users_file"]:
        fields["web_users_file"] = os.path.join(os.path.dirname(os.path.abspath(path)), fields["web_users_file"])
    return fields
