"""Circuit breakers' state in Redis: one hash per breaker, shared by every worker and master.

`{prefix}:breaker:NAME` holds state (closed | open | half_open), until (when an open breaker may
go half-open), cooldown (the current one: it doubles on a failed probe), opened_at, probe (the
job id of the half-open probe), forced ("1": opened by an operator, stays open until closed) and
notified (the opened_at already announced); `{prefix}:breaker:NAME:failures` is a sorted set of
recent failures. Every transition is one script, so two workers (or hosts) cannot both open a
breaker, both take the probe, or both announce it. Times are Redis's clock.
"""

from __future__ import annotations

from redis import Redis

from horizond.core.breakers import Breaker

_NOW = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
"""

# A counted failure. KEYS: hash, failures. ARGV: threshold, window, cooldown, max cooldown, job id.
FAILED = _NOW + """
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if state == 'half_open' and redis.call('HGET', KEYS[1], 'probe') == ARGV[5] then
    local cooldown = math.min(tonumber(redis.call('HGET', KEYS[1], 'cooldown') or ARGV[3]) * 2, tonumber(ARGV[4]))
    redis.call('HSET', KEYS[1], 'state', 'open', 'until', now + cooldown, 'cooldown', cooldown, 'opened_at', now,
               'probe', '')
    return {'open', 'reopened'}
end
if state ~= 'closed' then
    return {state, ''}
end
redis.call('ZADD', KEYS[2], now, ARGV[5] .. ':' .. now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[2], math.ceil(tonumber(ARGV[2]) * 1000))
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[1]) then
    redis.call('HSET', KEYS[1], 'state', 'open', 'until', now + tonumber(ARGV[3]), 'cooldown', ARGV[3],
               'opened_at', now, 'probe', '', 'forced', '0')
    redis.call('DEL', KEYS[2])
    return {'open', 'opened'}
end
return {'closed', ''}
"""

# Before a job of covered queues starts. KEYS: the breakers' hashes, then the queue's intermediate
# list and the queue. ARGV: job id. Returns {1} (start it; {1, NAME...}: it is those breakers'
# probe) or {0, NAME} (held: the job is back at the head of its queue, never run, no try spent).
ADMIT = """
local n = #KEYS - 2
local probes = {}
for i = 1, n do
    local state = redis.call('HGET', KEYS[i], 'state') or 'closed'
    if state == 'open' then
        redis.call('LREM', KEYS[n + 1], 1, ARGV[1])
        redis.call('LPUSH', KEYS[n + 2], ARGV[1])
        return {0, KEYS[i]}
    end
    if state == 'half_open' then
        local probe = redis.call('HGET', KEYS[i], 'probe') or ''
        if probe ~= '' and probe ~= ARGV[1] then
            redis.call('LREM', KEYS[n + 1], 1, ARGV[1])
            redis.call('LPUSH', KEYS[n + 2], ARGV[1])
            return {0, KEYS[i]}
        end
        table.insert(probes, i)
    end
end
local out = {1}
for _, i in ipairs(probes) do
    redis.call('HSET', KEYS[i], 'probe', ARGV[1])
    table.insert(out, KEYS[i])
end
return out
"""

# The probe succeeded. KEYS: hash, failures. ARGV: job id, base cooldown.
SUCCEEDED = """
if redis.call('HGET', KEYS[1], 'state') == 'half_open' and redis.call('HGET', KEYS[1], 'probe') == ARGV[1] then
    redis.call('HSET', KEYS[1], 'state', 'closed', 'probe', '', 'cooldown', ARGV[2], 'forced', '0')
    redis.call('DEL', KEYS[2])
    return 1
end
return 0
"""

# The master's look at every breaker: an open one past its cooldown goes half-open (unless an
# operator forced it open); an opening not yet announced is claimed for announcing (once).
# KEYS: hash, failures for each breaker. ARGV: each breaker's window. Returns per breaker
# {state, until, cooldown, probe, forced, failures in window, announce (1/0), opened_at}.
SAMPLE = _NOW + """
local out = {}
for i = 1, #KEYS, 2 do
    local h = KEYS[i]
    local state = redis.call('HGET', h, 'state') or 'closed'
    if state == 'open' and redis.call('HGET', h, 'forced') ~= '1'
            and now >= tonumber(redis.call('HGET', h, 'until') or 0) then
        redis.call('HSET', h, 'state', 'half_open', 'probe', '')
        state = 'half_open'
    end
    local opened = redis.call('HGET', h, 'opened_at') or ''
    local announce = 0
    if state == 'open' and opened ~= '' and redis.call('HGET', h, 'notified') ~= opened then
        redis.call('HSET', h, 'notified', opened)
        announce = 1
    end
    local window = tonumber(ARGV[(i + 1) / 2])
    local failures = redis.call('ZCOUNT', KEYS[i + 1], now - window, '+inf')
    table.insert(out, {state, redis.call('HGET', h, 'until') or '0', redis.call('HGET', h, 'cooldown') or '',
                       redis.call('HGET', h, 'probe') or '', redis.call('HGET', h, 'forced') or '0', failures,
                       announce, opened, tostring(now)})
end
return out
"""

# An operator's `horizonctl breaker open|close NAME`. KEYS: hash, failures. ARGV: open|close, cooldown.
FORCE = _NOW + """
if ARGV[1] == 'open' then
    local cooldown = redis.call('HGET', KEYS[1], 'cooldown') or ARGV[2]
    redis.call('HSET', KEYS[1], 'state', 'open', 'until', now + tonumber(cooldown), 'cooldown', cooldown,
               'opened_at', now, 'probe', '', 'forced', '1')
else
    redis.call('HSET', KEYS[1], 'state', 'closed', 'probe', '', 'cooldown', ARGV[2], 'forced', '0')
    redis.call('DEL', KEYS[2])
end
return 1
"""


def keys(prefix: str, breaker: Breaker) -> tuple[str, str]:
    base = f"{prefix}:breaker:{breaker.name}"
    return base, f"{base}:failures"


def failed(redis: Redis, prefix: str, breaker: Breaker, job_id: str) -> tuple[str, str]:
    """Count a failure; (state after it, "opened" / "reopened" / "")."""
    state, change = _run(redis, FAILED, keys(prefix, breaker), [breaker.failures, breaker.window, breaker.cooldown,
                                                                  breaker.max_cooldown, job_id])
    return _text(state), _text(change)


def admit(redis: Redis, prefix: str, breakers: tuple[Breaker, ...], job_id: str, queue_key: str) -> tuple[bool, list]:
    """(True, probe hashes) to start the job; (False, [the holding breaker's hash]) if it went back."""
    hashes = [keys(prefix, b)[0] for b in breakers]
    reply = _run(redis, ADMIT, [*hashes, f"{queue_key}:intermediate", queue_key], [job_id])
    return bool(reply[0]), [_text(h) for h in reply[1:]]


def succeeded(redis: Redis, prefix: str, breaker: Breaker, job_id: str) -> bool:
    return bool(_run(redis, SUCCEEDED, keys(prefix, breaker), [job_id, breaker.cooldown]))


def sample(redis: Redis, prefix: str, breakers: tuple[Breaker, ...]) -> dict[str, dict]:
    """name -> {state, opens_in, cooldown, probe, forced, failures, announce, opened_at} (one call)."""
    if not breakers:
        return {}
    flat = [k for b in breakers for k in keys(prefix, b)]
    rows = _run(redis, SAMPLE, flat, [b.window for b in breakers])
    out = {}
    for b, row in zip(breakers, rows, strict=True):
        state, until, cooldown, probe, forced, failures, announce, opened, now = (_text(v) for v in row)
        state = state if state in ("closed", "open", "half_open") else "closed"  # junk another client wrote
        out[b.name] = {"state": state, "opens_in": None if state != "open" or forced == "1" else
                       max(0.0, _number(until) - _number(now)), "cooldown": _number(cooldown) or b.cooldown,
                       "probe": probe or None, "forced": forced == "1", "failures": int(_number(failures)),
                       "threshold": b.failures, "window": b.window, "queues": list(b.queues),
                       "announce": announce == "1", "opened_at": _number(opened) or None}
    return out


def peek(redis: Redis, prefix: str, breakers: tuple[Breaker, ...]) -> list[dict]:
    """Each breaker's state as stored, changing nothing (the dashboard: it never moves a breaker
    on or claims an announcement; the masters do)."""
    if not breakers:
        return []
    with redis.pipeline(transaction=False) as pipe:
        for b in breakers:
            pipe.hgetall(keys(prefix, b)[0])
            pipe.zcard(keys(prefix, b)[1])
        raw = pipe.execute()
    rows = []
    for b, fields, failures in zip(breakers, raw[0::2], raw[1::2], strict=True):
        f = {_text(k): _text(v) for k, v in fields.items()}
        rows.append({"name": b.name, "state": f.get("state", "closed"), "queues": list(b.queues),
                     "failures": failures, "threshold": b.failures, "window": b.window,
                     "forced": f.get("forced") == "1", "probe": f.get("probe") or None})
    return rows


def force(redis: Redis, prefix: str, breaker: Breaker, action: str) -> None:
    _run(redis, FORCE, keys(prefix, breaker), [action, breaker.cooldown])


def _run(redis: Redis, script: str, keys_: list | tuple, args: list):
    """EVALSHA (the script is loaded once per Redis, on the first NOSCRIPT): the admission runs
    before every job of a covered queue, so its text is not sent each time as EVAL would."""
    return redis.register_script(script)(keys=list(keys_), args=args)


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        return 0.0
    return value if value == value and abs(value) != float("inf") else 0.0


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
