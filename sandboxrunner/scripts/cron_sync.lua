#!lua flags=allow-oom
-- Sync one queue's schedules with those of a starting supervisor. The rule: a supervisor
-- changes only schedules of jobs it has loaded, never those of jobs it could not have loaded.
--   * its cron jobs of this queue are added; the state (since, last run) of those whose
--     pattern and tz are unchanged is kept; a changed one restarts `since` (no catch-up from
--     the old pattern), so older supervisors with the old pattern stop firing it ('changed');
--   * a schedule of a job it has that is not a cron job of this queue (its cron was removed,
--     or it moved queue) is deleted, so older supervisors stop firing it ('gone');
--   * a schedule of a job it does not have at all (another version or project, or a job
--     file deleted) is kept untouched: whoever has the job goes on firing it; its
--     `synced_by` is then not the newest '@sync' sid, which `sandboxrunner cron` shows.
-- The '@sync' field records the newest sync; a hash without it means Redis lost the
-- schedules.
-- KEYS[1] cron hash of the queue
-- ARGV[1] SID   ARGV[2] JSON array: names of the jobs it has that are not cron jobs of
--   this queue   ARGV[3..] groups of 5: name, pattern, tz, next tick ms, error ('' = none)
-- Returns {names added or changed, names removed, names kept without this supervisor}
-- allow-oom: a supervisor starts on a full Redis (its schedules are a few hundred bytes)
-- and drains it.
local sid = ARGV[1]
local now = now_ms()
local without_cron = {}
for _, name in ipairs(cjson.decode(ARGV[2])) do without_cron[name] = true end
local given = {}
local added = {}
for i = 3, #ARGV, 5 do
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
local removed, kept = {}, {}
for _, name in ipairs(redis.call('HKEYS', KEYS[1])) do
  if name ~= '@sync' and not given[name] then
    if without_cron[name] then
      redis.call('HDEL', KEYS[1], name)
      removed[#removed + 1] = name
    else
      kept[#kept + 1] = name
    end
  end
end
redis.call('HSET', KEYS[1], '@sync', cjson.encode({sid = sid, at = now}))
return {added, removed, kept}
