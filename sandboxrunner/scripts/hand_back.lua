#!lua flags=allow-oom
-- A stopping supervisor SID hands back the jobs it still holds (still running when its
-- grace period ended, or when it was told to stop now): each goes back to the front of
-- the wait list, oldest claim first, to run on another supervisor. A hand-back is not a
-- crash: it is counted in the job's `handed_back` field and the queue's `handed_back`
-- stat, never in `stalled`, so it does not count toward max_stalled (a job cut off by
-- deploys runs again each time instead of failing as stalled; a job whose supervisor
-- dies is taken back by requeue_stalled and counted there). SID also leaves the queue's
-- live supervisors.
-- KEYS[1] sups   KEYS[2] active list of SID   KEYS[3] wait list   KEYS[4] stats
-- ARGV[1] queue key prefix   ARGV[2] SID
-- Returns the number of jobs handed back.
-- allow-oom: a stopping supervisor hands its jobs back to a full Redis too.
local qprefix, sid = ARGV[1], ARGV[2]
local handed = 0
local ids = redis.call('LRANGE', KEYS[2], 0, -1)
local records = {}
for i, id in ipairs(ids) do records[i] = qprefix .. 'job:' .. id end
touch(records)  -- before the first write (see touch in _lib.lua)
for _, id in ipairs(ids) do  -- newest claim first, so the oldest ends up next to pop
  local jkey = qprefix .. 'job:' .. id
  local f = redis.call('HMGET', jkey, 'status', 'sid')
  -- only jobs in flight under SID: settled ones stay settled, and a job SID lost to a
  -- lapsed lease belongs to its new holder
  if (f[1] == 'active' and f[2] == sid) or f[1] == 'queued' then
    redis.call('HSET', jkey, 'status', 'queued', 'sid', '')
    redis.call('HINCRBY', jkey, 'handed_back', 1)
    redis.call('RPUSH', KEYS[3], id)
    handed = handed + 1
  end
end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[1], sid)
if handed > 0 then redis.call('HINCRBY', KEYS[4], 'handed_back', handed) end
return handed
