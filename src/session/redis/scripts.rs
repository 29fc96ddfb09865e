//! The Lua scripts that make each read-modify-write one atomic step at the server.

/// Stores a new session `KEYS[1]` = `ARGV[1]` (expiring in `ARGV[2]` ms) unless the user's set of
/// sessions `KEYS[2]` already holds `ARGV[4]` live ones; then returns 0 and stores nothing.
/// Members are storage keys scored with the latest time they can be alive (`ARGV[3]`, ms since the
/// epoch: the absolute timeout); members past it are removed first. Only a set that still holds
/// `ARGV[4]` members is walked, removing those whose session is gone (logout, idle expiry) as
/// they are counted: a login below the limit costs O(log n) whatever the user's history, and
/// the set never holds more members than the limit, since the walk prunes it there. (The script
/// blocks every replica's Redis calls while it runs, so it must not walk what it need not.) `ARGV[5]` is the storage key, `ARGV[6]` the sessions' key
/// prefix, `ARGV[7]` now (ms).
pub(super) const INSERT: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[7])
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then
  local live = 0
  for _, m in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
    if redis.call('EXISTS', ARGV[6] .. m) == 1 then
      live = live + 1
    else
      redis.call('ZREM', KEYS[2], m)
    end
  end
  if live >= tonumber(ARGV[4]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[5])
local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[2], last[2])
return 1
";

/// Replaces `KEYS[1]` with `ARGV[2]` (expiring in `ARGV[3]` ms) only if it still holds exactly
/// `ARGV[1]`. Returns 1 when replaced, 0 when the key is gone, -1 when it holds another value.
pub(super) const CAS: &str = r"
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
if cur ~= ARGV[1] then return -1 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
";

/// GET and DEL in one step (GETDEL needs Redis 6.2; this works on any version); when there was
/// a session, publishes `ARGV[2]` on channel `ARGV[1]` (its logout event).
pub(super) const TAKE: &str = r"
local v = redis.call('GET', KEYS[1])
if v then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[1], ARGV[2])
end
return v
";

/// Takes lock `KEYS[1]` with token `ARGV[1]` for `ARGV[2]` ms: 1 taken (or already ours: the
/// call may run twice), 0 held by someone else.
pub(super) const LOCK: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then return 1 end
if cur then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
";

/// Deletes lock `KEYS[1]` only if it still holds our token `ARGV[1]` (it may have expired and
/// been taken by someone else).
pub(super) const UNLOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";
