-- Enqueue a job, or attach the caller to the in-flight job holding the same singleton key.
-- KEYS[1] wait list   KEYS[2] stats   KEYS[3] sups (live supervisors of the queue)
-- ARGV[1] queue key prefix   ARGV[2] job id   ARGV[3] name   ARGV[4] data JSON
-- ARGV[5] timeout ms   ARGV[6] reply client id ('' = nobody waits)   ARGV[7] lease ms
-- ARGV[8] singleton key ('' = not a singleton)   ARGV[9] retries   ARGV[10] backoff JSON
-- Returns {job id, 1 if attached to an existing job else 0, live supervisors of the queue}
local qprefix, id, cid = ARGV[1], ARGV[2], ARGV[6]
local skey = ARGV[8]
local now = now_ms()
local live = redis.call('ZCOUNT', KEYS[3], now - tonumber(ARGV[7]), '+inf')
if skey ~= '' then
  local holder = qprefix .. 'singleton:' .. skey
  local existing = redis.call('GET', holder)
  if existing then
    local jkey = qprefix .. 'job:' .. existing
    local st = redis.call('HGET', jkey, 'status')
    if st == 'queued' or st == 'active' then
      if cid ~= '' then
        local reply = redis.call('HGET', jkey, 'reply') or ''
        redis.call('HSET', jkey, 'reply', reply .. ' ' .. cid)
      end
      return {existing, 1, live}
    end
  end
  redis.call('SET', holder, id)
end
redis.call('HSET', qprefix .. 'job:' .. id,
  'name', ARGV[3], 'data', ARGV[4], 'timeout', ARGV[5], 'status', 'queued',
  'enq', now, 'attempt', 0, 'stalled', 0, 'reply', cid, 'skey', skey,
  'retries', ARGV[9], 'backoff', ARGV[10])
redis.call('LPUSH', KEYS[1], id)
redis.call('HINCRBY', KEYS[2], 'enqueued', 1)
return {id, 0, live}
