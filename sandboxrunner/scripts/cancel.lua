#!lua flags=allow-oom
-- Cancel job ID. Queued, delayed or throttled: removed from the wait list and both sets
-- and settled as cancelled at once (its singleton freed, its callers told: settle in
-- _lib.lua). Queued but in no list: a supervisor's BLMOVE just moved it to the head of its
-- lease and the claim pipelined behind it has not run yet; it is settled as cancelled all
-- the same, and that claim hands out only a head still 'queued', so it never runs.
-- Active: its record gets ``cancel`` = 1 and its id goes into the cancel set of the
-- supervisor holding it, which reads (and clears) that set with its next heartbeat and
-- stops the job (process mode: kills its child; thread mode: sets ctx.cancelled and
-- cancels an async handler's task); finish.lua then settles it as cancelled whatever the
-- handler reported, and never retries it. Settled: nothing changes.
-- KEYS[1] the job's record   KEYS[2] wait list   KEYS[3] delayed set   KEYS[4] throttled set
-- KEYS[5] stats   KEYS[6] recent
-- ARGV[1] queue key prefix   ARGV[2] id   ARGV[3] result ttl ms   ARGV[4] history size
-- ARGV[5] reply channel prefix   ARGV[6] the cancelled error JSON (ErrorInfo)
-- Returns {outcome, status before}: outcome 'cancelled' (settled now), 'cancelling' (its
-- supervisor stops it), 'settled' (already completed, failed or cancelled: no change) or
-- 'missing' (no such record: never enqueued, or expired).
-- allow-oom: a full Redis still lets a job be cancelled (it frees memory in the end).
local qprefix, id = ARGV[1], ARGV[2]
local f = redis.call('HMGET', KEYS[1], 'status', 'sid', 'skey')
local status, sid, skey = f[1], f[2], f[3]
if not status then return {'missing', ''} end
if status == 'completed' or status == 'failed' or status == 'cancelled' then
  return {'settled', status}
end
-- the keys built from the prefix, before the first write (see touch in _lib.lua)
local touched = {qprefix .. 'log:' .. id, qprefix .. 'done:cancelled'}
if skey and skey ~= '' then touched[#touched + 1] = qprefix .. 'singleton:' .. skey end
if status == 'active' then touched[#touched + 1] = qprefix .. 'cancel:' .. sid end
touch(touched)
if status == 'active' then
  redis.call('HSET', KEYS[1], 'cancel', 1)
  redis.call('SADD', qprefix .. 'cancel:' .. sid, id)
  -- cleared by SID's next heartbeat; should SID be dead, gone with the job's result
  redis.call('PEXPIRE', qprefix .. 'cancel:' .. sid, tonumber(ARGV[3]))
  return {'cancelling', status}
end
redis.call('LREM', KEYS[2], 1, id)
redis.call('ZREM', KEYS[3], id)
redis.call('ZREM', KEYS[4], id)
local now = now_ms()
settle(qprefix, KEYS[6], '', id, 'cancelled', ARGV[6], tonumber(ARGV[3]), ARGV[5], now,
       redis.call('EXISTS', qprefix .. 'log:' .. id) == 1)
redis.call('LTRIM', KEYS[6], 0, tonumber(ARGV[4]) - 1)
redis.call('HINCRBY', KEYS[5], 'cancelled', 1)
trim_done(qprefix, 'cancelled', now, tonumber(ARGV[3]))
return {'cancelled', status}
