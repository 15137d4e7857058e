#!lua flags=allow-oom
-- Take back the jobs of a supervisor whose lease lapsed: each goes back to the front of the
-- wait list, or fails as stalled once it was taken back more than MAX_STALLED times. A job
-- asked to cancel (its record's ``cancel``, cancel.lua) settles as cancelled instead.
-- KEYS[1] sups   KEYS[2] active list of the dead SID   KEYS[3] wait list   KEYS[4] stats
-- KEYS[5] recent   KEYS[6] failures   KEYS[7] rate
-- ARGV[1] queue key prefix   ARGV[2] dead SID   ARGV[3] lease ms   ARGV[4] max stalled
-- ARGV[5] result ttl ms   ARGV[6] history size   ARGV[7] reply channel prefix
-- ARGV[8] the stalled error JSON   ARGV[9] the cancelled error JSON
-- Returns {requeued, failed} (cancelled ones are neither), or {-1, -1} when SID is alive
-- after all.
-- allow-oom: a full Redis still takes back a dead supervisor's jobs (ids move between
-- lists), so they run elsewhere.
local qprefix, sid = ARGV[1], ARGV[2]
local now = now_ms()
local last = redis.call('ZSCORE', KEYS[1], sid)
if last and tonumber(last) >= now - tonumber(ARGV[3]) then return {-1, -1} end
local requeued, failed = 0, 0
local ids = redis.call('LRANGE', KEYS[2], 0, -1)
-- the records, and the singleton holders settle() reads, before the first write (see
-- touch in _lib.lua)
local records, holders = {}, done_keys(qprefix, {'failed', 'cancelled'})
for i, id in ipairs(ids) do records[i] = qprefix .. 'job:' .. id end
touch(records)
for _, jkey in ipairs(records) do
  local skey = redis.call('HGET', jkey, 'skey')
  if skey and skey ~= '' then holders[#holders + 1] = qprefix .. 'singleton:' .. skey end
end
touch(holders)
for _, id in ipairs(ids) do  -- newest claim first, so the oldest ends up next to pop
  local jkey = qprefix .. 'job:' .. id
  local st = redis.call('HGET', jkey, 'status')
  if (st == 'active' or st == 'queued') and redis.call('HGET', jkey, 'cancel') == '1' then
    settle(qprefix, KEYS[5], KEYS[6], id, 'cancelled', ARGV[9], tonumber(ARGV[5]), ARGV[7],
           now, true)
    redis.call('HINCRBY', KEYS[4], 'cancelled', 1)
    trim_done(qprefix, 'cancelled', now, tonumber(ARGV[5]))
  elseif st == 'active' or st == 'queued' then
    local stalled = (tonumber(redis.call('HGET', jkey, 'stalled')) or 0) + 1
    redis.call('HSET', jkey, 'stalled', stalled)
    redis.call('HINCRBY', KEYS[4], 'stalled', 1)
    if stalled > tonumber(ARGV[4]) then
      settle(qprefix, KEYS[5], KEYS[6], id, 'failed', ARGV[8], tonumber(ARGV[5]), ARGV[7],
             now, true)
      failed = failed + 1
    else
      redis.call('HSET', jkey, 'status', 'queued', 'sid', '')
      redis.call('RPUSH', KEYS[3], id)
      requeued = requeued + 1
    end
  end
end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[1], sid)
count_settled(KEYS[4], KEYS[7], 0, failed, now)
if failed > 0 then
  trim_history(KEYS[5], KEYS[6], tonumber(ARGV[6]), failed)
  trim_done(qprefix, 'failed', now, tonumber(ARGV[5]))
end
return {requeued, failed}
