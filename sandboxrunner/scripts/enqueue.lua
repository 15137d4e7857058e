#!lua
-- Enqueue a job, or attach the caller to the in-flight job holding the same singleton key.
-- KEYS[1] wait list   KEYS[2] stats   KEYS[3] sups (live supervisors of the queue)
-- KEYS[4] the job's record   KEYS[5] its singleton holder, for a singleton (declared: the
--   record of an in-flight singleton it attaches to is read before any write, _lib.lua)
-- ARGV[1] queue key prefix   ARGV[2] reply client id ('' = nobody waits)   ARGV[3] lease ms
-- ARGV[4..10] the job (job.PreparedJob.script_args): id, name, data JSON, timeout ms,
--   singleton key ('' = not a singleton), retries, backoff JSON
-- Returns {job id, 1 if attached to an existing job else 0, live supervisors of the queue}
-- A job id that exists already is a retried call whose first try got through (its reply
-- was lost): the caller is attached to it, so a retry never enqueues a job twice.
-- No allow-oom: a full Redis (maxmemory, noeviction) refuses the whole call before it
-- runs (OOM), so nothing of it is written; the caller gets RedisFull.
local qprefix, cid, id = ARGV[1], ARGV[2], ARGV[4]
local skey = ARGV[8]
local now = now_ms()
local live = redis.call('ZCOUNT', KEYS[3], now - tonumber(ARGV[3]), '+inf')
if redis.call('EXISTS', qprefix .. 'job:' .. id) == 1 then
  if cid ~= '' then add_reply(qprefix .. 'job:' .. id, cid) end
  return {id, 1, live}
end
if skey ~= '' then
  local existing = singleton_holder(qprefix, skey)
  if existing then
    if cid ~= '' then add_reply(qprefix .. 'job:' .. existing, cid) end
    return {existing, 1, live}
  end
end
create_job(qprefix, KEYS[1], KEYS[2], id, ARGV[5], ARGV[6], ARGV[7], cid, skey, ARGV[9],
           ARGV[10], now)
return {id, 0, live}
