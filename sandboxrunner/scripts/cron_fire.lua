#!lua
-- Fire one tick of a schedule, at most once across all supervisors: the tick must be due
-- by the server clock, later than the schedule's last handled tick and its `since`, and the
-- caller's pattern and tz must be the stored ones. The run is enqueued as a job nobody waits
-- for; a singleton whose previous run is still in flight skips the tick instead. Either way
-- the tick is recorded in this same call, so a crash can neither lose nor repeat it.
-- KEYS[1] cron hash   KEYS[2] wait list   KEYS[3] stats
-- KEYS[4] the run's record   KEYS[5] its singleton holder, for a singleton (declared: the
--   record of an in-flight singleton run is read before any write, see _lib.lua)
-- ARGV[1] queue key prefix   ARGV[2] pattern   ARGV[3] tz   ARGV[4] tick ms
-- ARGV[5] next tick ms   ARGV[6..12] the run (job.PreparedJob.script_args): job id, name
--   (the schedule's), data JSON, timeout ms, singleton key ('' = none), retries, backoff JSON
-- Returns {outcome, job id, server ms}; outcome is one of
--   fired    the run was enqueued as job id
--   skipped  the singleton's previous run (job id) is still in flight
--   done     the tick was already handled (by another supervisor) or precedes `since`
--   early    the server clock has not reached the tick yet
--   changed  the stored pattern or tz differ (a supervisor with other job files synced)
--   gone     no such schedule (removed by the sync of a newer supervisor)
--   lost     no '@sync' field: Redis lost the schedules, the caller syncs again
-- No allow-oom: a full Redis refuses the tick's run before the script runs (OOM), so
-- nothing is written and the tick is tried again.
local qprefix, name, tick = ARGV[1], ARGV[7], tonumber(ARGV[4])
local now = now_ms()
local s = decode_schedule(redis.call('HGET', KEYS[1], name))
if not s then
  if redis.call('HEXISTS', KEYS[1], '@sync') == 0 then return {'lost', '', now} end
  return {'gone', '', now}
end
if s.pattern ~= ARGV[2] or s.tz ~= ARGV[3] then return {'changed', '', now} end
if tick > now then return {'early', '', now} end
if tick <= (tonumber(s.last) or 0) or tick <= (tonumber(s.since) or 0) then
  return {'done', '', now}
end
local outcome, id = 'fired', ARGV[6]
local skey = ARGV[10]
local holder = nil
if skey ~= '' then holder = singleton_holder(qprefix, skey) end
if holder then
  outcome, id = 'skipped', holder
  s.skips = (tonumber(s.skips) or 0) + 1
else
  create_job(qprefix, KEYS[2], KEYS[3], id, name, ARGV[8], ARGV[9], '', skey, ARGV[11],
             ARGV[12], now)
  s.runs = (tonumber(s.runs) or 0) + 1
end
s.last, s.next, s.job, s.skipped = tick, tonumber(ARGV[5]), id, holder ~= nil
redis.call('HSET', KEYS[1], name, cjson.encode(s))
return {outcome, id, now}
