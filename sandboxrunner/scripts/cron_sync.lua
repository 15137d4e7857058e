-- Make the schedules of one queue those of a starting supervisor (the newest start wins):
-- add its schedules, keep the state (since, last run) of those whose pattern and tz are
-- unchanged, restart `since` of those that changed (no catch-up from the old pattern), and
-- delete every other schedule (its job is gone or has no cron any more). The '@sync'
-- field records the sync; a hash without it means Redis lost the schedules.
-- KEYS[1] cron hash of the queue
-- ARGV[1] SID   ARGV[2..] groups of 5: name, pattern, tz, next tick ms, error ('' = none)
-- Returns {names added or changed, names removed}
local sid = ARGV[1]
local now = now_ms()
local given = {}
local added = {}
for i = 2, #ARGV, 5 do
  local name, pattern, tz = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  given[name] = true
  local s = decode_schedule(redis.call('HGET', KEYS[1], name))
  if not s or s.pattern ~= pattern or s.tz ~= tz then
    added[#added + 1] = name
    s = s or {last = 0, job = '', skipped = false, runs = 0, skips = 0}
    s.pattern, s.tz, s.since = pattern, tz, now
  end
  s.next, s.error = tonumber(ARGV[i + 3]), ARGV[i + 4]
  s.synced_by, s.synced_at = sid, now
  redis.call('HSET', KEYS[1], name, cjson.encode(s))
end
local removed = {}
for _, name in ipairs(redis.call('HKEYS', KEYS[1])) do
  if name ~= '@sync' and not given[name] then
    redis.call('HDEL', KEYS[1], name)
    removed[#removed + 1] = name
  end
end
redis.call('HSET', KEYS[1], '@sync', cjson.encode({sid = sid, at = now}))
return {added, removed}
