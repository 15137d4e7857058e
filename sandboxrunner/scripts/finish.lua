#!lua flags=allow-oom
-- Settle a batch of jobs held by supervisor SID. A job no longer in SID's active list was
-- taken back (its lease lapsed) or already settled (a timeout): its late outcome is dropped.
-- A failed job with retries left goes to the delayed set instead (see retry_later), waking
-- a blocked supervisor when it is the earliest due (see add_delayed). A job asked to
-- cancel (its record's ``cancel`` field, see cancel.lua) settles as cancelled whatever it
-- reported, and is never retried.
-- KEYS[1] active list of SID   KEYS[2] stats   KEYS[3] recent   KEYS[4] failures   KEYS[5] rate
-- KEYS[6] delayed set   KEYS[7] wait list
-- KEYS[8..] the record of each job settled, in ARGV's order (declared: see _lib.lua)
-- ARGV[1] queue key prefix   ARGV[2] result ttl ms   ARGV[3] history size
-- ARGV[4] reply channel prefix   ARGV[5] the cancelled error JSON (for a job asked to
-- cancel that reported something else)   ARGV[6..] quadruples: id, status (completed,
-- failed or cancelled), body (result or error JSON), '1' if the job wrote log lines else
-- '0' (its log stream then needs no TTL)
-- Returns the number of outcomes recorded.
-- allow-oom: a full Redis still takes outcomes (the results expire after result_ttl and
-- free it); refusing them would keep the jobs in the lease and the callers waiting.
local qprefix, ttl, history, chan = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local now = now_ms()
-- the singleton holders and log streams settle() touches, before the first write (see
-- touch in _lib.lua; the records are in KEYS)
local touched, cancelled = done_keys(qprefix, {'completed', 'failed', 'cancelled'}), {}
for i = 6, #ARGV, 4 do
  local f = redis.call('HMGET', qprefix .. 'job:' .. ARGV[i], 'skey', 'cancel')
  if f[1] and f[1] ~= '' then touched[#touched + 1] = qprefix .. 'singleton:' .. f[1] end
  if ARGV[i + 3] ~= '0' then touched[#touched + 1] = qprefix .. 'log:' .. ARGV[i] end
  cancelled[i] = f[2] == '1'
end
touch(touched)
local recorded, completed, failed = 0, 0, 0
for i = 6, #ARGV, 4 do
  local id, status, body = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if cancelled[i] and status ~= 'cancelled' then status, body = 'cancelled', ARGV[5] end
  if redis.call('LREM', KEYS[1], 1, id) == 1 then
    if status ~= 'failed'
        or not retry_later(qprefix, KEYS[6], KEYS[7], KEYS[2], id, body, now) then
      settle(qprefix, KEYS[3], KEYS[4], id, status, body, ttl, chan, now, ARGV[i + 3] ~= '0')
      if status == 'completed' then completed = completed + 1
      elseif status == 'failed' then failed = failed + 1
      else
        redis.call('HINCRBY', KEYS[2], 'cancelled', 1)
        trim_done(qprefix, 'cancelled', now, ttl)
      end
    end
    recorded = recorded + 1
  end
end
count_settled(KEYS[2], KEYS[5], completed, failed, now)
if completed > 0 then trim_done(qprefix, 'completed', now, ttl) end
if failed > 0 then trim_done(qprefix, 'failed', now, ttl) end
if recorded > 0 then trim_history(KEYS[3], KEYS[4], history, failed) end
return recorded
