#!lua
-- Enqueue a job, or attach the caller to the in-flight job holding the same singleton key.
-- KEYS[1] wait list   KEYS[2] stats   KEYS[3] sups (live supervisors of the queue)
-- KEYS[4] the job's record   KEYS[5] its singleton holder, for a singleton (declared: the
--   record of an in-flight singleton it attaches to is read before any write, _lib.lua)
-- The delayed set (qprefix .. 'delayed') is named only in a call with a due time, and
-- touched before the first write: a plain call's arguments stay as short as they can.
-- ARGV[1] queue key prefix   ARGV[2] reply client id ('' = nobody waits)   ARGV[3] lease ms
-- ARGV[4..10] the job (job.PreparedJob.script_args): id, name, data JSON, timeout ms,
--   singleton key ('' = not a singleton), retries, backoff JSON
-- ARGV[11..13] when it is due (job.PreparedJob.schedule_args; absent = now): delay ms
--   ('' = none), run_at epoch ms ('' = none), how far in the past a run_at may be (ms)
-- Returns {job id, 1 if attached to an existing job else 0, live supervisors of the queue},
-- or {job id, 2, live, ms} when run_at is more than the tolerance (ms) in the past by the
-- server's clock: nothing is written.
-- A job due later is 'delayed' (field due) in the delayed set; the claim script moves it
-- to the wait list once due, and add_delayed wakes a supervisor blocked on an empty queue.
-- A job id that exists already is a retried call whose first try got through (its reply
-- was lost), or an idempotency key (job_id=) used again: the caller is attached to it, so
-- neither enqueues a job twice.
-- No allow-oom: a full Redis (maxmemory, noeviction) refuses the whole call before it
-- runs (OOM), so nothing of it is written; the caller gets RedisFull.
local qprefix, cid, id = ARGV[1], ARGV[2], ARGV[4]
local skey = ARGV[8]
local now = now_ms()
local live = redis.call('ZCOUNT', KEYS[3], now - tonumber(ARGV[3]), '+inf')
local due = nil
if ARGV[11] and ARGV[11] ~= '' then due = now + tonumber(ARGV[11]) end
if ARGV[12] and ARGV[12] ~= '' then
  due = tonumber(ARGV[12])
  if due < now - tonumber(ARGV[13]) then return {id, 2, live, now - due} end
end
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
local delayed = qprefix .. 'delayed'
if due then touch({delayed}) end
create_job(qprefix, KEYS[1], KEYS[2], id, ARGV[5], ARGV[6], ARGV[7], cid, skey, ARGV[9],
           ARGV[10], now, delayed, due)
return {id, 0, live}
