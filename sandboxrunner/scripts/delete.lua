#!lua flags=allow-oom
-- Delete job ID. Settled (completed, failed, cancelled): its record and log stream go, and
-- it leaves the history lists and its listing index (done:STATUS). Queued, delayed or
-- throttled: it leaves the wait list and both sets (and the slot it reserved in its rate
-- limit's window), frees its singleton key, its record and log stream go, and its waiting
-- callers are told (``ID \n deleted \n ERROR``: they raise JobDeleted). Queued but in no
-- list: a supervisor's BLMOVE just moved it to the head of its lease and the claim
-- pipelined behind it has not run yet; it is deleted all the same, and that claim finds no
-- record and drops the id (logged by the fetcher). Active: refused, nothing changes (a
-- running job is cancelled first: cancel.lua).
-- KEYS[1] the job's record   KEYS[2] wait list   KEYS[3] delayed set   KEYS[4] throttled set
-- KEYS[5] stats   KEYS[6] recent   KEYS[7] failures   KEYS[8] done:completed
-- KEYS[9] done:failed   KEYS[10] done:cancelled   KEYS[11] the job's log stream
-- ARGV[1] queue key prefix   ARGV[2] id   ARGV[3] reply channel prefix
-- ARGV[4] the deleted error JSON (ErrorInfo) its waiting callers get
-- Returns {outcome, status before, job name}: outcome 'deleted' (it had settled),
-- 'dequeued' (it had not run: removed, callers told), 'running' (active: refused) or
-- 'missing' (no record).
-- allow-oom: a full Redis still lets a job be deleted (that frees memory).
local qprefix, id = ARGV[1], ARGV[2]
local f = redis.call('HMGET', KEYS[1], 'status', 'skey', 'name', 'reply')
local status, skey, name, reply = f[1], f[2], f[3], f[4]
if not status then return {'missing', '', ''} end
if status == 'active' then return {'running', status, name or ''} end
local settled = status == 'completed' or status == 'failed' or status == 'cancelled'
-- the keys built from the prefix, before the first write (see touch in _lib.lua)
local touched = {}
if not settled and skey and skey ~= '' then touched[1] = qprefix .. 'singleton:' .. skey end
if not settled and name then touched[#touched + 1] = qprefix .. 'limit:' .. name end
touch(touched)
if settled then
  for key = 8, 10 do redis.call('ZREM', KEYS[key], id) end
else
  redis.call('LREM', KEYS[2], 1, id)
  redis.call('ZREM', KEYS[3], id)
  redis.call('ZREM', KEYS[4], id)
  if name then redis.call('ZREM', qprefix .. 'limit:' .. name, 'r:' .. id) end
  if skey and skey ~= '' and redis.call('GET', qprefix .. 'singleton:' .. skey) == id then
    redis.call('DEL', qprefix .. 'singleton:' .. skey)
  end
  redis.call('HINCRBY', KEYS[5], 'deleted', 1)
end
-- a job run again by retry.lua may still be in the history lists
redis.call('LREM', KEYS[6], 0, id)
redis.call('LREM', KEYS[7], 0, id)
redis.call('DEL', KEYS[1], KEYS[11])
if not settled and reply and reply ~= '' then
  local message = id .. '\ndeleted\n' .. ARGV[4]
  for cid in string.gmatch(reply, '%S+') do
    redis.call('SPUBLISH', ARGV[3] .. cid, message)
  end
end
if settled then return {'deleted', status, name or ''} end
return {'dequeued', status, name or ''}
