-- Shared helpers, prepended to every script by store.py, below its #!lua flags line (Lua
-- scripts cannot import).
--
-- In a Redis Cluster, a script runs on the master of its KEYS' slot, and every key it
-- builds from the queue's key prefix shares that slot (the queue's hash tag). While the
-- slot migrates to another master, a key that has already moved stops the script at its
-- first access ("Script attempted to access a non local key"), and Lua does not undo what
-- the script wrote before. So every script reads each key it touches outside KEYS (job
-- records and singleton holders whose ids it learns inside) before its first write,
-- `touch` below: a moved key stops it before it changed anything, and the caller sends it
-- again once the slot has moved (routing.py). Keys known before the call are declared in
-- KEYS instead: Redis then refuses the whole call (TRYAGAIN) while some have moved.

-- Read KEYS (a table of key names, possibly empty) before any write: see above.
local function touch(keys)
  if #keys > 0 then redis.call('EXISTS', unpack(keys)) end
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Count N settled jobs in the per-second ring of the last minute (60 fields at most).
local function count_rate(rate_key, now, n)
  local second = math.floor(now / 1000)
  local slot = second % 60
  local cur = redis.call('HGET', rate_key, slot)
  if cur then
    local sec, count = string.match(cur, '^(%d+):(%d+)$')
    if tonumber(sec) == second then n = tonumber(count) + n end
  end
  redis.call('HSET', rate_key, slot, second .. ':' .. n)
end

-- Count the jobs a script settled: once per script call, not once per job.
local function count_settled(stats, rate, completed, failed, now)
  if completed > 0 then redis.call('HINCRBY', stats, 'completed', completed) end
  if failed > 0 then redis.call('HINCRBY', stats, 'failed', failed) end
  if completed + failed > 0 then count_rate(rate, now, completed + failed) end
end

-- Settle one job: record the outcome, release its singleton key, expire the record (and
-- its log stream when LOGGED: a job that wrote no line has none), keep it in the capped
-- history lists and in the listing index of its status (``done:STATUS``: its caller
-- touches that key first and trims it, trim_done) and notify every waiting client. The
-- caller counts it (count_settled).
-- recent, failures: keys of the job's queue (failures only for STATUS 'failed': a
-- cancelled job is no failure); qprefix: the queue's key prefix. KNOWN: the record's skey
-- and reply fields as {skey, reply} when the caller read them already (each call from a
-- script costs Redis a few microseconds beyond the command), else nil.
local function settle(qprefix, recent, failures, id, status, body, ttl_ms, channel_prefix,
                      now, logged, known)
  local jkey = qprefix .. 'job:' .. id
  local field = 'result'
  if status ~= 'completed' then field = 'error' end
  redis.call('HSET', jkey, 'status', status, 'end', now, field, body)
  local fields = known or redis.call('HMGET', jkey, 'skey', 'reply')
  local skey, reply = fields[1], fields[2]
  if skey and skey ~= '' then
    local holder = qprefix .. 'singleton:' .. skey
    if redis.call('GET', holder) == id then redis.call('DEL', holder) end
  end
  redis.call('PEXPIRE', jkey, ttl_ms)
  if logged then redis.call('PEXPIRE', qprefix .. 'log:' .. id, ttl_ms) end
  redis.call('LPUSH', recent, id)
  if status == 'failed' then redis.call('LPUSH', failures, id) end
  redis.call('ZADD', qprefix .. 'done:' .. status, now, id)
  if reply and reply ~= '' then
    local message = id .. '\n' .. status .. '\n' .. body
    for cid in string.gmatch(reply, '%S+') do
      redis.call('SPUBLISH', channel_prefix .. cid, message)
    end
  end
end

-- The keys of the listing indexes of settled jobs (keys.py: done:STATUS), for touch.
local function done_keys(qprefix, statuses)
  local out = {}
  for i, status in ipairs(statuses) do out[i] = qprefix .. 'done:' .. status end
  return out
end

-- Drop from the listing index of STATUS the jobs settled more than TTL_MS ago (their
-- records expired): once per script call, so the index never outgrows the records; and
-- let the whole index expire TTL_MS after its newest entry, when every record it names
-- has expired too (no settlement may come to trim it).
local function trim_done(qprefix, status, now, ttl_ms)
  local key = qprefix .. 'done:' .. status
  redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. (now - ttl_ms))
  redis.call('PEXPIRE', key, ttl_ms)
end

-- Cap the history lists after settling; FAILED: how many of the jobs failed (only then
-- did the failures list grow).
local function trim_history(recent, failures, history, failed)
  redis.call('LTRIM', recent, 0, history - 1)
  if failed > 0 then redis.call('LTRIM', failures, 0, history - 1) end
end

-- Add client CID to the clients notified when job record JKEY settles (once per client:
-- one published message wakes every caller of that client process).
local function add_reply(jkey, cid)
  local reply = redis.call('HGET', jkey, 'reply') or ''
  if not string.find(' ' .. reply .. ' ', ' ' .. cid .. ' ', 1, true) then
    redis.call('HSET', jkey, 'reply', reply .. ' ' .. cid)
  end
end

-- The id of the in-flight (queued or active) job holding singleton key SKEY, or nil. A
-- holder whose job settled or expired does not count, so a claim can never stay stuck.
local function singleton_holder(qprefix, skey)
  local existing = redis.call('GET', qprefix .. 'singleton:' .. skey)
  if not existing then return nil end
  local st = redis.call('HGET', qprefix .. 'job:' .. existing, 'status')
  if st == 'queued' or st == 'active' or st == 'delayed' or st == 'throttled' then
    return existing
  end
  return nil
end

-- A cron schedule (JSON in the queue's cron hash) as a table, or nil if absent or corrupt.
local function decode_schedule(text)
  if not text then return nil end
  local ok, s = pcall(cjson.decode, text)
  if ok and type(s) == 'table' then return s end
  return nil
end

-- An entry of a wait list that is not a job: it wakes a supervisor blocked on the list
-- (see add_delayed). Never a job id (those are QUEUE-HEX); the claim script drops it.
local WAKE_MARKER = '!wake'  -- keys.WAKE_MARKER

-- Put job ID in the delayed set, due at DUE ms. A supervisor blocked on the empty wait
-- list does not know of it and would sleep until its BLMOVE times out (a second), so
-- when ID is due before every other delayed job a wake marker goes onto the wait list:
-- it returns that BLMOVE at once, and the claim behind it drops the marker and replies
-- with the ms until ID is due, which bounds the supervisor's next block. Only onto an
-- empty list: only then can a supervisor be blocked on it (a non-empty list returns a
-- BLMOVE at once, and every claim replies with the next due time anyway). So a list holds
-- one marker at most, and it is gone with the next claim of any supervisor.
local function add_delayed(delayed, wait, id, due)
  local first = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
  redis.call('ZADD', delayed, due, id)
  if (not first[2] or due < tonumber(first[2])) and redis.call('LLEN', wait) == 0 then
    redis.call('LPUSH', wait, WAKE_MARKER)
  end
end

-- Write the record of new job ID, 'queued' (create_job and enqueue_many.lua queue it);
-- with a singleton key SKEY ('' = none) it takes the claim (the caller checked
-- singleton_holder first). A field at its default is left out, and every reader takes an
-- absent one as it: reply and skey '' (nobody waits, no singleton), retries 0, backoff ''
-- (none), attempt and stalled 0 (HINCRBY and `tonumber(x) or 0` start from nothing). Each
-- field costs Redis time on every enqueue and bytes on every waiting job.
local function write_record(qprefix, id, name, data, timeout, cid, skey, retries, backoff,
                            now)
  local key = qprefix .. 'job:' .. id
  if cid == '' and skey == '' and backoff == '' and tonumber(retries) == 0 then
    -- the common record, without building a table for it: about a third of a bulk
    -- enqueue's time in Redis
    redis.call('HSET', key, 'name', name, 'data', data, 'timeout', timeout,
               'status', 'queued', 'enq', now)
    return
  end
  local fields = {'name', name, 'data', data, 'timeout', timeout, 'status', 'queued',
                  'enq', now}
  if cid ~= '' then fields[#fields + 1] = 'reply'; fields[#fields + 1] = cid end
  if skey ~= '' then
    redis.call('SET', qprefix .. 'singleton:' .. skey, id)
    fields[#fields + 1] = 'skey'; fields[#fields + 1] = skey
  end
  if tonumber(retries) ~= 0 then
    fields[#fields + 1] = 'retries'; fields[#fields + 1] = retries
  end
  if backoff ~= '' then fields[#fields + 1] = 'backoff'; fields[#fields + 1] = backoff end
  redis.call('HSET', key, unpack(fields))
end

-- Create job record ID and queue it (see write_record). wait, stats: keys of the queue.
-- With DUE (ms, optional) later than NOW it is 'delayed' in the DELAYED set until then.
local function create_job(qprefix, wait, stats, id, name, data, timeout, cid, skey, retries,
                          backoff, now, delayed, due)
  write_record(qprefix, id, name, data, timeout, cid, skey, retries, backoff, now)
  if due and due > now then
    redis.call('HSET', qprefix .. 'job:' .. id, 'status', 'delayed', 'due', due)
    add_delayed(delayed, wait, id, due)
  else
    redis.call('LPUSH', wait, id)
  end
  redis.call('HINCRBY', stats, 'enqueued', 1)
end

-- A failed attempt of job ID: record its error in the job's attempt history, and when it
-- has retries left put it in the delayed set (due after its backoff) instead of settling.
-- Returns true when the job will run again. delayed, wait, stats: keys of the queue.
local function retry_later(qprefix, delayed, wait, stats, id, body, now)
  local jkey = qprefix .. 'job:' .. id
  local f = redis.call('HMGET', jkey, 'retries', 'fails', 'backoff', 'errors')
  local fails = (tonumber(f[2]) or 0) + 1
  -- pcall: a record written by hand may hold garbage, which must not abort the script
  local ok, history = pcall(cjson.decode, f[4] or '[]')
  if not ok or type(history) ~= 'table' then history = {} end
  local ok_body, info = pcall(cjson.decode, body)
  history[#history + 1] = ok_body and info or body
  redis.call('HSET', jkey, 'fails', fails, 'errors', cjson.encode(history))
  if fails > (tonumber(f[1]) or 0) then return false end
  local delay = 0
  local ok_backoff, backoff = pcall(cjson.decode, f[3] or '')
  if ok_backoff and type(backoff) == 'table' then
    delay = tonumber(backoff['delay']) or 0
    if backoff['type'] == 'exponential' then delay = delay * 2 ^ (fails - 1) end
  end
  redis.call('HSET', jkey, 'status', 'delayed', 'sid', '', 'error', body,
             'due', now + math.floor(delay))
  add_delayed(delayed, wait, id, now + math.floor(delay))
  redis.call('HINCRBY', stats, 'retried', 1)
  return true
end
