#!lua flags=allow-oom
-- Settle a batch of jobs held by supervisor SID. A job no longer in SID's active list was
-- taken back (its lease lapsed) or already settled (a timeout): its late outcome is dropped.
-- A failed job with retries left goes to the delayed set instead (see retry_later), waking
-- a blocked supervisor when it is the earliest due (see add_delayed). A job asked to
-- cancel (its record's ``cancel`` field, see cancel.lua) settles as cancelled whatever it
-- reported, and is never retried.
-- KEYS[1] active list of SID   KEYS[2] stats   KEYS[3] recent   KEYS[4] failures   KEYS[5] rate
-- KEYS[6] delayed set   KEYS[7] wait list   KEYS[8] durations (see below)
-- KEYS[9..] the record of each job settled, in ARGV's order (declared: see _lib.lua)
-- ARGV[1] queue key prefix   ARGV[2] result ttl ms   ARGV[3] history size
-- ARGV[4] reply channel prefix   ARGV[5] the cancelled error JSON (for a job asked to
-- cancel that reported something else)   ARGV[6..] quadruples: id, status (completed,
-- failed or cancelled), body (result or error JSON), '1' if the job wrote log lines else
-- '0' (its log stream then needs no TTL)
-- Each attempt recorded is observed in its job name's duration histogram, from its claim
-- (the record's ``start``) to now: durations.py holds the layout and its reading.
-- Returns the number of outcomes recorded.
-- allow-oom: a full Redis still takes outcomes (the results expire after result_ttl and
-- free it); refusing them would keep the jobs in the lease and the callers waiting.
local qprefix, ttl, history, chan = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]

-- durations.BUCKETS_MS and durations.NAMES_MAX (a test checks they agree)
local DURATION_BUCKETS_MS = {5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000,
                             60000, 300000, 900000, 3600000}
local DURATION_NAMES_MAX = 200
local observed = {}  -- job name -> {sum = ms, buckets = {field suffix -> n}}: this batch

-- Observe one attempt of job NAME claimed at START ms (nil for a record without them).
local function observe(name, start, now)
  if not name or not start then return end
  local ms = math.max(0, now - start)
  local bucket = 'inf'
  for _, bound in ipairs(DURATION_BUCKETS_MS) do
    if ms <= bound then bucket = tostring(bound) break end
  end
  local o = observed[name] or {sum = 0, buckets = {}}
  observed[name] = o
  o.sum = o.sum + ms
  o.buckets[bucket] = (o.buckets[bucket] or 0) + 1
end

-- Whether the durations hash KEY may take NAME, the first time NAME hit one of its
-- buckets: a name it holds already, or a new one while it holds under the cap.
local function admit_name(key, name)
  if redis.call('HEXISTS', key, name .. ':sum') == 1 then return true end
  if redis.call('HINCRBY', key, '#names', 1) <= DURATION_NAMES_MAX then return true end
  redis.call('HINCRBY', key, '#names', -1)
  return false
end

-- Add this batch's observations to the durations hash KEY: per name, one HINCRBY per
-- bucket hit and one for the sum (a new bucket field first checks the name: admit_name).
local function record_durations(key)
  for name, o in pairs(observed) do
    local admitted = nil  -- not asked yet
    for bucket, n in pairs(o.buckets) do
      local field = name .. ':' .. bucket
      if redis.call('HINCRBY', key, field, n) == n and admitted == nil then
        admitted = admit_name(key, name)
        if not admitted then
          redis.call('HDEL', key, field)
          break
        end
      end
    end
    if admitted ~= false then redis.call('HINCRBY', key, name .. ':sum', o.sum) end
  end
end

local now = now_ms()
-- the singleton holders and log streams settle() touches, before the first write (see
-- touch in _lib.lua; the records are in KEYS)
local touched, cancelled = done_keys(qprefix, {'completed', 'failed', 'cancelled'}), {}
local ran = {}  -- name and start of each job, for its duration
local known = {}  -- skey and reply of each job, for settle (one read of the record)
for i = 6, #ARGV, 4 do
  local f = redis.call('HMGET', qprefix .. 'job:' .. ARGV[i], 'skey', 'cancel', 'name',
                       'start', 'reply')
  if f[1] and f[1] ~= '' then touched[#touched + 1] = qprefix .. 'singleton:' .. f[1] end
  if ARGV[i + 3] ~= '0' then touched[#touched + 1] = qprefix .. 'log:' .. ARGV[i] end
  cancelled[i] = f[2] == '1'
  ran[i] = {f[3], tonumber(f[4])}
  known[i] = {f[1], f[5]}
end
touch(touched)
local recorded, completed, failed = 0, 0, 0
for i = 6, #ARGV, 4 do
  local id, status, body = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if cancelled[i] and status ~= 'cancelled' then status, body = 'cancelled', ARGV[5] end
  if redis.call('LREM', KEYS[1], 1, id) == 1 then
    observe(ran[i][1], ran[i][2], now)
    if status ~= 'failed'
        or not retry_later(qprefix, KEYS[6], KEYS[7], KEYS[2], id, body, now) then
      settle(qprefix, KEYS[3], KEYS[4], id, status, body, ttl, chan, now, ARGV[i + 3] ~= '0',
             known[i])
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
record_durations(KEYS[8])
if completed > 0 then trim_done(qprefix, 'completed', now, ttl) end
if failed > 0 then trim_done(qprefix, 'failed', now, ttl) end
if recorded > 0 then trim_history(KEYS[3], KEYS[4], history, failed) end
return recorded
