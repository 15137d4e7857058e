#!lua flags=allow-oom
-- Wait for a job from another call or process: return its outcome if it is settled,
-- otherwise add client CID to the clients notified when it settles.
-- KEYS[1] the job record
-- ARGV[1] CID
-- Returns {status, body, name}; status '' when no such job (never enqueued or expired).
-- allow-oom: a caller gets a settled outcome from a full Redis, and may wait for one in
-- flight (a client id added to its record: a few bytes).
local f = redis.call('HMGET', KEYS[1], 'status', 'result', 'error', 'name', 'reply')
local status = f[1]
if not status then return {'', '', ''} end
if status == 'completed' then return {status, f[2] or '', f[4]} end
if status == 'failed' or status == 'cancelled' then return {status, f[3] or '', f[4]} end
local reply = f[5] or ''
if not string.find(' ' .. reply .. ' ', ' ' .. ARGV[1] .. ' ', 1, true) then
  redis.call('HSET', KEYS[1], 'reply', reply .. ' ' .. ARGV[1])
end
return {status, '', f[4]}
