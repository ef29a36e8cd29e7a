"""Guarded batches: a transaction's writes, applied by one Lua call only while a condition holds.

The lean worker builds its start and success writes with RQ's own helpers (so they stay RQ's
writes), records them on a pipeline that is never executed, and sends them to Redis as one
script call that first checks what RQ would have checked with a separate read or a WATCH:

- start: `rq suspend` in force? Then nothing starts and the job goes back to the head of its
  queue, so no job starts after `rq suspend` has returned (RQ checks before each dequeue).
- success: is the job still "started" by us (not canceled, deleted or stopped meanwhile) and
  without dependents? Only then is the lean success applied; otherwise nothing is written and
  the caller takes RQ's own success path, which moves dependents to ready in the same
  transaction as the success (RQ's atomicity), and leaves a canceled or deleted job as RQ does.

A script runs atomically, so the check and the writes cannot be split by another client, and it
costs one round trip like the MULTI/EXEC it replaces.
"""

from __future__ import annotations

from typing import Any

from redis import Redis

_APPLY = """
local i = ARGV_START
while i <= #ARGV do
    local n = tonumber(ARGV[i])
    redis.call(unpack(ARGV, i + 1, i + n))
    i = i + n + 1
end
return 1
"""

# KEYS: suspension key, intermediate list, queue list. ARGV[1]: job id, then the batch.
START = """
if redis.call('EXISTS', KEYS[1]) == 1 then
    redis.call('LREM', KEYS[2], 1, ARGV[1])
    redis.call('LPUSH', KEYS[3], ARGV[1])
    return 0
end
""" + _APPLY.replace("ARGV_START", "2")

# KEYS: job hash, job's dependents set, then the queues to take the next job from (maybe none).
# ARGV[1]: the job key prefix; ARGV[2]: where the worker's idle write begins; then the batch, whose
# tail (from ARGV[2]) is the worker's idle write. Returns 0 (guard failed: nothing written), 1 (the
# end and the idle write applied, no next job) or {queue key, job id, job hash}: the end applied
# and the next job moved into its queue's intermediate list, as a dequeue would; the idle write is
# then left out (the worker stays busy, its counts go with the next start). The finish is thus
# pipelined with the next dequeue; when every queue is empty it is written before the worker blocks.
SUCCESS = """
if redis.call('HGET', KEYS[1], 'status') ~= 'started' or redis.call('SCARD', KEYS[2]) > 0 then
    return 0
end
local function apply(i, last)
    while i <= last do
        local n = tonumber(ARGV[i])
        redis.call(unpack(ARGV, i + 1, i + n))
        i = i + n + 1
    end
end
local idle_at = tonumber(ARGV[2])
apply(3, idle_at - 1)
for k = 3, #KEYS do
    local key = KEYS[k]
    for _ = 1, 10 do
        local id = redis.call('LMOVE', key, key .. ':intermediate', 'LEFT', 'RIGHT')
        if not id then break end
        local job = redis.call('HGETALL', ARGV[1] .. id)
        if #job > 0 then return {key, id, job} end
        redis.call('LREM', key .. ':intermediate', 1, id)  -- deleted while queued: drop the id, as dequeue.py
    end
end
apply(idle_at, #ARGV)
return 1
"""


# Move a job id from the head of one list to the head of another, only if it is still in the
# first. KEYS: from, to. ARGV[1]: job id. The worker takes back a job it put back on `rq suspend`
# (queue -> intermediate); the master puts back a job stuck in an intermediate list (recovery.py).
MOVE_IF_PRESENT = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 1 then
    redis.call('LPUSH', KEYS[2], ARGV[1])
    return 1
end
return 0
"""


class Batches:
    """The two scripts of one worker, loaded once per connection (EVALSHA afterwards)."""

    def __init__(self, connection: Redis):
        self.connection = connection
        self.start_script = connection.register_script(START)
        self.success_script = connection.register_script(SUCCESS)
        self.retake_script = connection.register_script(MOVE_IF_PRESENT)
        self.encoder = connection.connection_pool.get_encoder()

    def recorder(self):
        """A pipeline to record commands on; it is never executed."""
        return self.connection.pipeline(transaction=False)

    def flatten(self, recorded) -> list[Any]:
        """The recorded commands as script arguments: count, command, args ... for each; HSETs
        of one key merged (see merge_hsets)."""
        commands = [[a if isinstance(a, bytes) else self.encoder.encode(a) for a in args]
                    for args, _options in recorded.command_stack]
        recorded.reset()
        flat: list[Any] = []
        for args in merge_hsets(commands):
            flat.append(len(args))
            flat.extend(args)
        return flat

    def drop_expires(self, recorded, absent: list[str]) -> None:
        """Leave out EXPIREs of keys known not to exist when the batch applies (a no-op in Redis)."""
        absent_keys = {self.encoder.encode(k) for k in absent}
        recorded.command_stack[:] = [(args, options) for args, options in recorded.command_stack
                                     if not (str(args[0]).upper() == "EXPIRE" and
                                             self.encoder.encode(args[1]) in absent_keys)]

    def start(self, keys: list[str], job_id: str, recorded) -> bool:
        return bool(self.start_script(keys=keys, args=[job_id, *self.flatten(recorded)]))

    def success(self, keys: list[str], recorded, idle=None, next_from: list[str] = (), job_prefix: str = "rq:job:"):
        """0 if the guard refused (nothing written), 1 if `recorded` and `idle` were written, or
        [queue key, job id, job hash as a flat list] if `recorded` was written and the next job
        taken from `next_from` (in priority order), `idle` left out."""
        flat = self.flatten(recorded)
        idle_flat = self.flatten(idle) if idle is not None else []
        return self.success_script(keys=[*keys, *next_from], args=[job_prefix, 3 + len(flat), *flat, *idle_flat])

    def put_back(self, job_id: str, queue_key: str, pipeline=None) -> None:
        """A job taken but not started goes back to the head of its queue (as if never dequeued)."""
        self.retake_script(keys=[f"{queue_key}:intermediate", queue_key], args=[job_id],
                           client=pipeline if pipeline is not None else self.connection)

    def retake(self, job_id: str, origin: str) -> bool:
        """After `rq resume`: the job put back at the head of its queue is ours again, unless
        another worker took it meanwhile."""
        queue = f"rq:queue:{origin}"
        return bool(self.retake_script(keys=[queue, f"{queue}:intermediate"], args=[job_id]))


def merge_hsets(commands: list[list[bytes]]) -> list[list[bytes]]:
    """An HSET of a key joins the previous HSET of that key when no command in between names the
    key: RQ's helpers write one job hash in several HSETs (a status, then the fields). The fields
    keep their order, so a field written twice keeps its last value, as with separate HSETs."""
    out: list[list[bytes]] = []
    for args in commands:
        if args[0].upper() == b"HSET":
            for earlier in reversed(out):
                if earlier[0].upper() == b"HSET" and earlier[1] == args[1]:
                    earlier.extend(args[2:])
                    break
                if args[1] in earlier[1:]:
                    out.append(args)
                    break
            else:
                out.append(args)
            continue
        out.append(args)
    return out
