"""The [web] table: where the dashboard listens and who may use it.

Pure, like config.py. The one rule that is about safety rather than shape: a
dashboard reachable from other hosts must know who is asking, so a `listen`
outside the loopback needs a users_file or a proxy_user_header (and a proxy
header alone is honoured only from the loopback, see web/auth.py).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from horizond.core.configcheck import Checker
from horizond.core.configcheck import short as _short

KEYS = {"listen", "base_path", "users_file", "proxy_user_header"}
DEFAULT_BASE_PATH = "/horizon"
_PATH = re.compile(r"(/[A-Za-z0-9._~-]+)*")
_HEADER = re.compile(r"[A-Za-z0-9-]+")
_LISTEN = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+):([0-9]{1,5})")


def split_listen(text: str) -> tuple[str, int] | None:
    """("host", port) of "host:port" or "[v6]:port", port 1-65535; None when malformed."""
    match = _LISTEN.fullmatch(text)
    if not match or not 1 <= int(match[2]) <= 65535:
        return None
    return match[1].strip("[]"), int(match[2])


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def web_fields(check: Checker, t: Mapping[str, Any]) -> dict:
    """The Config fields of [web], every problem named by its key."""
    listen = check.get("web", t, "listen", "str", None)
    base_path = check.get("web", t, "base_path", "str", DEFAULT_BASE_PATH)
    users_file = check.get("web", t, "users_file", "str", None)
    header = check.get("web", t, "proxy_user_header", "str", None)
    where = split_listen(listen) if listen is not None else None
    if listen is not None and where is None:
        check.add("web", "listen", f'expected "HOST:PORT" with a port 1-65535, like "127.0.0.1:8750", '
                                   f"got {_short(listen)}")
    if base_path == "/":
        base_path = ""
    if not _PATH.fullmatch(base_path):
        check.add("web", "base_path", f'expected a URL path like "/horizon" (letters, digits, ".", "_", "~", "-" '
                                      f"between slashes, no trailing slash), got {_short(base_path)}")
    if users_file is not None and not users_file.strip():
        check.add("web", "users_file", "expected a file path, got an empty string")
    if header is not None and not _HEADER.fullmatch(header):
        check.add("web", "proxy_user_header", f'expected an HTTP header name like "X-Forwarded-User", '
                                              f"got {_short(header)}")
    if where is not None and not is_loopback(where[0]) and not users_file and not header:
        check.add("web", "listen", f"{listen!r} is reachable from other hosts, and neither users_file nor "
                                   "proxy_user_header is set: anyone who reaches it could retry, delete and clear "
                                   "jobs. Set users_file (add users with `horizonctl web-user add`), or "
                                   "proxy_user_header behind an authenticating proxy, or listen on 127.0.0.1")
    return {"web_listen": listen, "web_base_path": base_path, "web_users_file": users_file,
            "web_proxy_user_header": header}


def to_toml(config) -> dict:
    """[web] of `horizonctl config show`."""
    values = (("listen", config.web_listen), ("base_path", config.web_base_path),
              ("users_file", config.web_users_file), ("proxy_user_header", config.web_proxy_user_header))
    return {k: v for k, v in values if v is not None}


def parse_web(data: Mapping[str, Any], source: str) -> dict:
    """[web] alone (for `horizonctl web-user`): no other table, and no secret, is read."""
    from horizond.core.configcheck import ConfigError

    check = Checker(source)
    table = check.table("", data, "web")
    check.unknown_keys("web", table, KEYS)
    fields = web_fields(check, table)
    if check.issues:
        raise ConfigError(list(dict.fromkeys(check.issues)))
    return fields
