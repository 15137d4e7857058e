#!lua
-- Run a failed or cancelled job ID again, under the same id: its record goes back to
-- 'queued' at the head of the wait list (the next claim takes it), no longer expires, and
-- its outcome is cleared; its attempts and the errors of its failed attempts stay (the next
-- run is attempt N + 1), and its retries budget starts afresh (fails = 0). A singleton
-- takes its key again, unless another in-flight job holds it; it leaves the listing index
-- of its old status. Anything else is refused and nothing changes.
-- KEYS[1] the job's record   KEYS[2] wait list   KEYS[3] stats
-- ARGV[1] queue key prefix   ARGV[2] id
-- Returns {outcome, status before, holder}: outcome 'queued' (it runs again), 'refused'
-- (it is not failed or cancelled), 'busy' (HOLDER, another in-flight job, holds its
-- singleton key) or 'missing' (no such record).
-- No allow-oom: a full Redis refuses it up front (OOM) and nothing is written.
local qprefix, id = ARGV[1], ARGV[2]
local f = redis.call('HMGET', KEYS[1], 'status', 'skey')
local status, skey = f[1], f[2]
if not status then return {'missing', '', ''} end
if status ~= 'failed' and status ~= 'cancelled' then return {'refused', status, ''} end
-- the keys built from the prefix, before the first write (see touch in _lib.lua)
local touched = {qprefix .. 'log:' .. id, qprefix .. 'done:' .. status}
if skey and skey ~= '' then touched[#touched + 1] = qprefix .. 'singleton:' .. skey end
touch(touched)
if skey and skey ~= '' then
  local holder = singleton_holder(qprefix, skey)
  if holder and holder ~= id then return {'busy', status, holder} end
  redis.call('SET', qprefix .. 'singleton:' .. skey, id)
end
redis.call('HDEL', KEYS[1], 'end', 'error', 'result', 'cancel', 'progress', 'sid')
redis.call('HSET', KEYS[1], 'status', 'queued', 'fails', 0)
redis.call('HINCRBY', KEYS[1], 'reruns', 1)
redis.call('PERSIST', KEYS[1])
redis.call('ZREM', qprefix .. 'done:' .. status, id)  -- no longer settled
redis.call('PERSIST', qprefix .. 'log:' .. id)
redis.call('RPUSH', KEYS[2], id)
redis.call('HINCRBY', KEYS[3], 'enqueued', 1)
return {'queued', status, ''}
