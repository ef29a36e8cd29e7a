"""The fleet's Redis keys (under `[redis] prefix`) and the Lua scripts that guard them.

Every key is built here, in the style of the rest of horizond (`{prefix}:fleet:...`):

| key | type | written by | read by |
|---|---|---|---|
| `P:fleet:leader` | string, PX lease | LEASE (SET NX PX), renewed/released by compare-and-set | LEASE |
| `P:fleet:epoch` | integer | LEASE (INCR on every takeover) | LEASE, GRANT (fencing) |
| `P:fleet:grant:{node}` | JSON, PX grant ttl | the leader, through GRANT | that node, each beat |
| `P:fleet:demand:{node}` | JSON, PX 3 beats | each node, each beat | the leader |
| `P:fleet:roster` | hash node -> JSON | each node, each beat; the leader removes a dead one | the leader |
| `P:fleet:dead:{node}` | JSON, 1 day | the leader, after settling a dead node | that node on its return |
| `P:fleet:desired` | hash (helper A's) | fleet commands | each node: `scale:{SUP}` |
"""

from __future__ import annotations


def leader_key(prefix: str) -> str:
    return f"{prefix}:fleet:leader"


def epoch_key(prefix: str) -> str:
    return f"{prefix}:fleet:epoch"


def grant_key(prefix: str, node: str) -> str:
    return f"{prefix}:fleet:grant:{node}"


def demand_key(prefix: str, node: str) -> str:
    return f"{prefix}:fleet:demand:{node}"


def roster_key(prefix: str) -> str:
    return f"{prefix}:fleet:roster"


def dead_key(prefix: str, node: str) -> str:
    return f"{prefix}:fleet:dead:{node}"


def desired_key(prefix: str) -> str:
    return f"{prefix}:fleet:desired"


# Acquire or renew the lease. KEYS: leader, epoch. ARGV: my id, lease ms, the highest epoch I saw.
# Returns {state, epoch, holder}: state 1 = renewed (mine), 2 = taken over (epoch INCRed), 0 = held
# by `holder`. The epoch never goes back below what a node saw, even after Redis lost its data.
LEASE = """
local epoch = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
local seen = tonumber(ARGV[3]) or 0
if epoch < seen then
    epoch = seen
    redis.call('SET', KEYS[2], epoch)
end
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return {1, epoch, holder}
end
if not holder and redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
    return {2, redis.call('INCR', KEYS[2]), ARGV[1]}
end
return {0, epoch, holder or ''}
"""

# Release the lease if it is still mine (a clean exit: a successor takes over at its next beat).
# KEYS: leader. ARGV: my id. Returns 1 if released.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""

# Write grants only while I hold the lease under this very epoch (fencing: a stale leader, paused
# past its lease, writes nothing). KEYS: leader, epoch, then one grant key per node.
# ARGV: my id, my epoch, grant ttl ms, then one JSON per grant key. Returns 1 if written.
GRANT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] or redis.call('GET', KEYS[2]) ~= ARGV[2] then
    return 0
end
for i = 3, #KEYS do
    redis.call('SET', KEYS[i], ARGV[i + 1], 'PX', ARGV[3])
end
return 1
"""
