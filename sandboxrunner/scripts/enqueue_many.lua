#!lua
-- Enqueue a batch of calls of one job in one call, all or nothing (bulk.py): the script
-- runs whole or not at all, and without allow-oom a full Redis (maxmemory, noeviction)
-- refuses the whole call before it runs.
-- KEYS[1] wait list   KEYS[2] stats   KEYS[3] sups (live supervisors of the queue)
-- ARGV[1] queue key prefix   ARGV[2] lease ms   ARGV[3] job name   ARGV[4] timeout ms
-- ARGV[5] retries   ARGV[6] backoff JSON   ARGV[7] '1' if the job is a singleton
-- ARGV[8..] per call: id, data JSON, and for a singleton its key
-- Returns {live supervisors of the queue, 1 if the batch was there already else 0, then
-- per call that attached to a job in flight holding its singleton key (one enqueued
-- before, or one earlier in this batch): its position (0-based) and that job's id}.
-- A batch whose first id exists already is a retry whose first try got through (its reply
-- was lost): being atomic, all of that try was written, and nothing is written again. A
-- singleton batch's first call may have attached instead: there each call's own id is
-- looked for (one found was written by the first try, and is reported as its own holder).
local qprefix, name, single = ARGV[1], ARGV[3], ARGV[7] == '1'
local step = single and 3 or 2
local now = now_ms()
local live = redis.call('ZCOUNT', KEYS[3], now - tonumber(ARGV[2]), '+inf')
if #ARGV < 8 then return {live, 0} end
if not single and redis.call('EXISTS', qprefix .. 'job:' .. ARGV[8]) == 1 then
  return {live, 1}
end
-- every record and singleton holder it may touch, before the first write (see touch in
-- _lib.lua); a chunk at a time: Lua unpacks at most a few thousand values at once
local chunk = {}
for i = 8, #ARGV, step do
  chunk[#chunk + 1] = qprefix .. 'job:' .. ARGV[i]
  if single then chunk[#chunk + 1] = qprefix .. 'singleton:' .. ARGV[i + 2] end
  if #chunk >= 1000 then
    touch(chunk)
    chunk = {}
  end
end
touch(chunk)
local out, queued = {live, 0}, {}
local function flush()
  if #queued > 0 then redis.call('LPUSH', KEYS[1], unpack(queued)) end
  queued = {}
end
for i = 8, #ARGV, step do
  local id, skey = ARGV[i], single and ARGV[i + 2] or ''
  local holder = nil
  if single and redis.call('EXISTS', qprefix .. 'job:' .. id) == 1 then
    holder = id
  elseif single then
    holder = singleton_holder(qprefix, skey)
  end
  if holder then
    out[#out + 1] = (i - 8) / step
    out[#out + 1] = holder
  else
    write_record(qprefix, id, name, ARGV[i + 1], ARGV[4], '', skey, ARGV[5], ARGV[6], now)
    queued[#queued + 1] = id
    if #queued >= 1000 then flush() end
  end
end
flush()
redis.call('HINCRBY', KEYS[2], 'enqueued', (#ARGV - 7) / step - (#out - 2) / 2)
return out
