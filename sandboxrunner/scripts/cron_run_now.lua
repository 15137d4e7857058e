#!lua
-- Run a cron job now, outside its schedule, as its next tick would run it: enqueued as a
-- job nobody waits for, unless it is a singleton whose previous run is still in flight
-- (then nothing is enqueued, as a tick would skip). The run is counted in the schedule as
-- a manual run (``manual_runs``, ``manual_at``, ``manual_job``); its ticks (``last``,
-- ``next``, ``runs``, ``skips``) are left as they are. A schedule not in the hash (never
-- synced, or removed) runs nothing.
-- KEYS[1] cron hash   KEYS[2] wait list   KEYS[3] stats   KEYS[4] sups (live supervisors)
-- KEYS[5] the run's record   KEYS[6] its singleton holder, for a singleton (declared: the
--   record of an in-flight singleton run is read before any write, see _lib.lua)
-- ARGV[1] queue key prefix   ARGV[2] lease ms   ARGV[3..9] the run
--   (job.PreparedJob.script_args): job id, name, data JSON, timeout ms, singleton key
--   ('' = none), retries, backoff JSON
-- Returns {outcome, job id, live supervisors of the queue}; outcome is one of
--   queued   the run was enqueued as job id
--   busy     the singleton's previous run (job id) is still in flight: nothing changed
--   missing  no such schedule in the hash: nothing changed
-- No allow-oom: a full Redis refuses it up front (OOM) and nothing is written.
local qprefix, name = ARGV[1], ARGV[4]
local now = now_ms()
local live = redis.call('ZCOUNT', KEYS[4], now - tonumber(ARGV[2]), '+inf')
local s = decode_schedule(redis.call('HGET', KEYS[1], name))
if not s then return {'missing', '', live} end
local id, skey = ARGV[3], ARGV[7]
if skey ~= '' then
  local holder = singleton_holder(qprefix, skey)
  if holder then return {'busy', holder, live} end
end
create_job(qprefix, KEYS[2], KEYS[3], id, name, ARGV[5], ARGV[6], '', skey, ARGV[8],
           ARGV[9], now)
s.manual_runs = (tonumber(s.manual_runs) or 0) + 1
s.manual_at, s.manual_job = now, id
redis.call('HSET', KEYS[1], name, cjson.encode(s))
return {'queued', id, live}
