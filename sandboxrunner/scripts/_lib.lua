-- Shared helpers, prepended to every script by store.py (Lua scripts cannot import).

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Count one settled job in the per-second ring of the last minute (60 fields at most).
local function count_rate(rate_key, now)
  local second = math.floor(now / 1000)
  local slot = second % 60
  local cur = redis.call('HGET', rate_key, slot)
  local n = 1
  if cur then
    local sec, count = string.match(cur, '^(%d+):(%d+)$')
    if tonumber(sec) == second then n = tonumber(count) + 1 end
  end
  redis.call('HSET', rate_key, slot, second .. ':' .. n)
end

-- Settle one job: record the outcome, release its singleton key, expire the record,
-- keep it in the capped history lists and notify every waiting client.
-- stats, recent, failures, rate: keys of the job's queue; qprefix: the queue's key prefix.
local function settle(qprefix, stats, recent, failures, rate, id, status, body, ttl_ms,
                      channel_prefix, now)
  local jkey = qprefix .. 'job:' .. id
  local field = 'result'
  if status ~= 'completed' then field = 'error' end
  redis.call('HSET', jkey, 'status', status, 'end', now, field, body)
  local fields = redis.call('HMGET', jkey, 'skey', 'reply')
  local skey, reply = fields[1], fields[2]
  if skey and skey ~= '' then
    local holder = qprefix .. 'singleton:' .. skey
    if redis.call('GET', holder) == id then redis.call('DEL', holder) end
  end
  redis.call('PEXPIRE', jkey, ttl_ms)
  redis.call('PEXPIRE', qprefix .. 'log:' .. id, ttl_ms)
  redis.call('LPUSH', recent, id)
  if status == 'completed' then
    redis.call('HINCRBY', stats, 'completed', 1)
  else
    redis.call('HINCRBY', stats, 'failed', 1)
    redis.call('LPUSH', failures, id)
  end
  count_rate(rate, now)
  if reply and reply ~= '' then
    local message = id .. '\n' .. status .. '\n' .. body
    for cid in string.gmatch(reply, '%S+') do
      redis.call('PUBLISH', channel_prefix .. cid, message)
    end
  end
end

local function trim_history(recent, failures, history)
  redis.call('LTRIM', recent, 0, history - 1)
  redis.call('LTRIM', failures, 0, history - 1)
end
