"""Who is asking: sessions, the proxy header, CSRF tokens and the login rate limit.

Sessions live in Redis (`P:web:session:SHA256(token)`, 12 h), so several dashboard
processes and a restart share them; the cookie holds only the random token
(HttpOnly, SameSite=Strict, Secure under HTTPS). A user's role is read from the
users_file on every request (re-read when its mtime changes), so `web-user remove`
ends that user's sessions at once. CSRF tokens are an HMAC of the session under a
secret kept in Redis (`P:web:secret`); the login form carries one bound to a
pre-login cookie. Failed logins are counted per user name and per client address
(`P:web:loginfail:*`, 15 minutes): over the limit, the login is refused before
the password is even checked.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
from dataclasses import dataclass

from redis import Redis

from horizond.control import webusers
from horizond.core.config import Config

SESSION_TTL = 12 * 3600
FAIL_WINDOW = 15 * 60
FAIL_LIMIT_USER = 5
FAIL_LIMIT_ADDRESS = 20
_DUMMY = webusers.hash_password(secrets.token_hex(8))  # unknown users cost a hash too: no timing oracle


@dataclass(frozen=True)
class Identity:
    name: str
    role: str  # admin | viewer
    csrf: str  # "" for the anonymous viewer, who may not change anything
    how: str  # session | proxy | anonymous

    @property
    def admin(self) -> bool:
        return self.role == "admin"


class RateLimited(Exception):
    def __init__(self, retry_after: int):
        super().__init__(f"too many failed logins; try again in {retry_after} s")
        self.retry_after = retry_after


def loopback(address: str | None) -> bool:
    try:
        return ipaddress.ip_address(address or "").is_loopback
    except ValueError:
        return False


class Auth:
    def __init__(self, config: Config, redis: Redis):
        self.config = config
        self.redis = redis
        self.prefix = f"{config.redis_prefix}:web"
        self._users: dict[str, webusers.User] = {}
        self._users_stamp: tuple | None = None
        self._secret: bytes | None = None

    @property
    def open(self) -> bool:
        """No users_file and no proxy header: loopback only (the config check saw to it), read-only."""
        return not self.config.web_users_file and not self.config.web_proxy_user_header

    def users(self) -> dict[str, webusers.User]:
        path = self.config.web_users_file
        if not path:
            return {}
        try:
            st = os.stat(path)
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            stamp = None
        if stamp != self._users_stamp:
            self._users, self._users_stamp = webusers.load(path), stamp
        return self._users

    def secret(self) -> bytes:
        if self._secret is None:
            key = f"{self.prefix}:secret"
            self.redis.set(key, secrets.token_hex(32), nx=True)
            self._secret = self.redis.get(key)
        return self._secret

    def sign(self, what: str) -> str:
        return hmac.new(self.secret(), what.encode(), hashlib.sha256).hexdigest()

    def _session_key(self, token: str) -> str:
        return f"{self.prefix}:session:{hashlib.sha256(token.encode()).hexdigest()}"

    def identify(self, token: str | None, remote: str | None, header_value: str | None) -> Identity | None:
        header = self.config.web_proxy_user_header
        if header and header_value and loopback(remote):
            user = self.users().get(header_value)
            return Identity(header_value, user.role if user else "viewer", self.sign(f"proxy:{header_value}"), "proxy")
        if token:
            name = self.redis.hget(self._session_key(token), "user")
            user = self.users().get(name.decode()) if name else None
            if user:
                return Identity(user.name, user.role, self.sign(f"session:{token}"), "session")
        if self.open:
            return Identity("anonymous", "viewer", "", "anonymous")
        return None

    def check_csrf(self, identity: Identity, sent: str | None) -> bool:
        return bool(identity.csrf) and bool(sent) and hmac.compare_digest(identity.csrf, sent)

    def login_token(self, nonce: str) -> str:
        return self.sign(f"login:{nonce}")

    def login(self, name: str, password: str, remote: str | None) -> str | None:
        """A new session token, or None for a wrong name or password. Raises RateLimited."""
        keys = [f"{self.prefix}:loginfail:user:{name[:64]}", f"{self.prefix}:loginfail:addr:{remote or '?'}"]
        counts = self.redis.mget(keys)
        for key, count, limit in zip(keys, counts, (FAIL_LIMIT_USER, FAIL_LIMIT_ADDRESS), strict=True):
            if count and int(count) >= limit:
                raise RateLimited(max(1, self.redis.ttl(key)))
        user = self.users().get(name)
        if not webusers.verify(password, user.hash if user else _DUMMY) or user is None:
            with self.redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.incr(key)
                    pipe.expire(key, FAIL_WINDOW, nx=True)
                pipe.execute()
            return None
        self.redis.delete(keys[0])
        token = secrets.token_urlsafe(32)
        self.redis.hset(self._session_key(token), mapping={"user": name})
        self.redis.expire(self._session_key(token), SESSION_TTL)
        return token

    def logout(self, token: str | None) -> None:
        if token:
            self.redis.delete(self._session_key(token))
