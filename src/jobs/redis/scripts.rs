//! The redis job store's atomic operations, each one Lua script: redis runs a script whole, so a
//! compare-and-set or a lease never interleaves with another replica's.

use redis::Script;
use std::sync::LazyLock;

/// Writes a new job (its hash, its expiry, its place in the index and the running set), leases it
/// to its writer and marks it as the running job of its owner's query; unless that query already has a running job:
/// then nothing is written and that job's id is returned.
pub(super) static INSERT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local running = redis.call('GET', KEYS[3])
if running and redis.call('HGET', ARGV[11] .. running, 'final') == '0' then return running end
redis.call('HSET', KEYS[1], 'version', ARGV[1], 'final', ARGV[2], 'doc', ARGV[3], 'format', ARGV[10])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[6])
redis.call('SET', KEYS[3], ARGV[6], 'PX', ARGV[4])
redis.call('SET', KEYS[4], ARGV[8], 'PX', ARGV[9])
redis.call('SADD', KEYS[5], ARGV[6])
redis.call('PUBLISH', ARGV[7], ARGV[6] .. ':' .. ARGV[1])
return false
",
    )
});

/// Replaces a job unless it is unknown, final, not older than the write (compare-and-set), stored in
/// a newer format (minus that format), or, for an owner's write, leased to another replica. A final write ends the
/// job's claim on its query.
pub(super) static PUBLISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local stored = redis.call('HMGET', KEYS[1], 'version', 'final', 'format')
if not stored[1] then return 0 end
if tonumber(stored[3] or '1') > tonumber(ARGV[8]) then return -tonumber(stored[3]) end
if stored[2] == '1' then return 0 end
if tonumber(stored[1]) >= tonumber(ARGV[1]) then return 0 end
if ARGV[7] ~= '' then
  local holder = redis.call('GET', KEYS[2])
  if holder and holder ~= ARGV[7] then return 0 end
end
redis.call('HSET', KEYS[1], 'version', ARGV[1], 'final', ARGV[2], 'doc', ARGV[3], 'format', ARGV[8])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
if ARGV[2] == '1' then
  redis.call('SREM', KEYS[4], ARGV[6])
end
if redis.call('GET', KEYS[3]) == ARGV[6] then
  if ARGV[2] == '1' then
    redis.call('DEL', KEYS[3])
  else
    redis.call('PEXPIRE', KEYS[3], ARGV[4])
  end
end
redis.call('PUBLISH', ARGV[5], ARGV[6] .. ':' .. ARGV[1])
return 1
",
    )
});

/// Keeps the holder's lease on a running job: extends it, or takes it again if it lapsed while
/// nobody else took it. 0 once the job is final or gone, or another replica holds the lease.
pub(super) static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HGET', KEYS[2], 'final') ~= '0' then return 0 end
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
",
    )
});

/// Gives the lease up, only if the caller holds it.
pub(super) static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
",
    )
});

/// Takes an orphaned job (running, its lease lapsed) and the leases on the tokens it polls
/// (`KEYS[3..]`), all or nothing: 1 when taken, 0 when the job ended or is leased again, -1 when
/// another replica holds one of its tokens (that replica takes the job instead).
pub(super) static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HGET', KEYS[2], 'final') ~= '0' then return 0 end
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
for i = 3, #KEYS do
  local holder = redis.call('GET', KEYS[i])
  if holder and holder ~= ARGV[1] then return -1 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
for i = 3, #KEYS do redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2]) end
return 1
",
    )
});

/// Keeps the caller's leases on tokens: extends its own, takes lapsed ones; answers how many another
/// replica holds.
pub(super) static HOLD_TOKENS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local elsewhere = 0
for i = 1, #KEYS do
  local holder = redis.call('GET', KEYS[i])
  if holder == ARGV[1] then
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
  elseif not holder then
    redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2])
  else
    elsewhere = elsewhere + 1
  end
end
return elsewhere
",
    )
});

/// Gives up the caller's leases on tokens, leaving any other replica's.
pub(super) static RELEASE_TOKENS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then redis.call('DEL', KEYS[i]) end
end
return 0
",
    )
});
