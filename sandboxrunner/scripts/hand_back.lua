#!lua flags=allow-oom
-- A stopping supervisor SID hands back the jobs it still holds (still running when its
-- grace period ended, or when it was told to stop now): each goes back to the front of
-- the wait list, oldest claim first, to run on another supervisor. A hand-back is not a
-- crash: it is counted in the job's `handed_back` field and the queue's `handed_back`
-- stat, never in `stalled`, so it does not count toward max_stalled (a job cut off by
-- deploys runs again each time instead of failing as stalled; a job whose supervisor
-- dies is taken back by requeue_stalled and counted there). SID also leaves the queue's
-- live supervisors. A job asked to cancel (its record's ``cancel``, cancel.lua) is not
-- handed back: it settles as cancelled.
-- KEYS[1] sups   KEYS[2] active list of SID   KEYS[3] wait list   KEYS[4] stats
-- KEYS[5] recent
-- ARGV[1] queue key prefix   ARGV[2] SID   ARGV[3] result ttl ms   ARGV[4] reply channel
-- prefix   ARGV[5] the cancelled error JSON
-- Returns the number of jobs handed back.
-- allow-oom: a stopping supervisor hands its jobs back to a full Redis too.
local qprefix, sid = ARGV[1], ARGV[2]
local handed = 0
local ids = redis.call('LRANGE', KEYS[2], 0, -1)
local records = {}
for i, id in ipairs(ids) do records[i] = qprefix .. 'job:' .. id end
local touched = {qprefix .. 'done:cancelled'}
for i, id in ipairs(ids) do
  local f = redis.call('HMGET', records[i], 'skey', 'cancel')
  if f[2] == '1' then
    touched[#touched + 1] = qprefix .. 'log:' .. id
    if f[1] and f[1] ~= '' then touched[#touched + 1] = qprefix .. 'singleton:' .. f[1] end
  end
end
touch(records)  -- before the first write (see touch in _lib.lua)
touch(touched)
local now, cancelled = now_ms(), 0
for _, id in ipairs(ids) do  -- newest claim first, so the oldest ends up next to pop
  local jkey = qprefix .. 'job:' .. id
  local f = redis.call('HMGET', jkey, 'status', 'sid', 'cancel')
  -- only jobs in flight under SID: settled ones stay settled, and a job SID lost to a
  -- lapsed lease belongs to its new holder
  local held = (f[1] == 'active' and f[2] == sid) or f[1] == 'queued'
  if held and f[3] == '1' then
    settle(qprefix, KEYS[5], '', id, 'cancelled', ARGV[5], tonumber(ARGV[3]), ARGV[4], now,
           redis.call('EXISTS', qprefix .. 'log:' .. id) == 1)
    cancelled = cancelled + 1
  elseif held then
    redis.call('HSET', jkey, 'status', 'queued', 'sid', '')
    redis.call('HINCRBY', jkey, 'handed_back', 1)
    redis.call('RPUSH', KEYS[3], id)
    handed = handed + 1
  end
end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[1], sid)
if handed > 0 then redis.call('HINCRBY', KEYS[4], 'handed_back', handed) end
if cancelled > 0 then
  redis.call('HINCRBY', KEYS[4], 'cancelled', cancelled)
  trim_done(qprefix, 'cancelled', now, tonumber(ARGV[3]))
end
return handed
