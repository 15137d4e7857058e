#!lua flags=allow-oom
-- Claim up to COUNT waiting jobs for supervisor SID: move them into its active list (its
-- lease) and mark them started. A job a blocking BLMOVE just moved there is claimed too:
-- the supervisor pipelines this script right behind its BLMOVE on one connection, so the
-- script runs as soon as the BLMOVE returns, and with HEAD = '1' it takes the head of the
-- active list when that job is still 'queued' (only a just-moved job can be: every claim
-- marks its jobs active in the same script that puts them in a lease, and a job taken
-- back leaves the lease). Ids found in the lease that never reached SID (the reply of an
-- earlier claim was lost with its connection) come in ARGV: those are active with SID's
-- own id and are handed over again without counting a new attempt, since they never ran.
-- Delayed jobs now due (a delay, a run_at, a retry's backoff over) move from the delayed
-- set to the front of the wait list first, 'queued' again.
-- Wake markers (see add_delayed) met in the wait list or at the head of the lease are
-- dropped: they are not jobs, and their work is done once this script replies.
-- While the queue is paused (KEYS[4] exists) it hands out no new job: a queued head of the
-- lease (moved by a BLMOVE that ran before the pause) goes back to the head of the wait
-- list (its right end: it keeps its turn), unstarted; ids to hand over again still are.
-- KEYS[1] wait list   KEYS[2] active list of SID   KEYS[3] delayed set   KEYS[4] paused flag
-- ARGV[1] queue key prefix   ARGV[2] SID   ARGV[3] COUNT   ARGV[4] HEAD ('1' or '0')
-- ARGV[5..] ids in the lease to hand over again
-- Returns a flat list: first the ms until the next delayed job is due (-1: none; -2: the
-- queue is paused, store.Store.PAUSED), then 7
-- entries per job: id, name, data, timeout, attempt, enq ms, start ms
-- (name is '' when the id has no job record: a malformed entry the caller must drop).
-- allow-oom: a full Redis still hands out the jobs it holds (a claim moves ids between
-- lists and marks records: little memory), so supervisors drain it.
local qprefix, sid = ARGV[1], ARGV[2]
local now = now_ms()
local next_due = -1
-- the earliest retry first: the set is mostly empty, or not due, and then one call does
local first = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
local due = {}
if first[2] and tonumber(first[2]) <= now then
  due = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 100)
end
-- every record this call may read, before its first write (see touch in _lib.lua): the
-- due retries, the head of the lease, the ids to hand over again, the jobs to pop
local records = {}
local function add_record(id)
  if id and id ~= WAKE_MARKER then records[#records + 1] = qprefix .. 'job:' .. id end
end
for _, id in ipairs(due) do add_record(id) end
if ARGV[4] == '1' then add_record(redis.call('LINDEX', KEYS[2], 0)) end
for i = 5, #ARGV do add_record(ARGV[i]) end
if tonumber(ARGV[3]) > 0 then
  for _, id in ipairs(redis.call('LRANGE', KEYS[1], -tonumber(ARGV[3]), -1)) do
    add_record(id)
  end
end
touch(records)
if #due > 0 then
  for _, id in ipairs(due) do
    redis.call('ZREM', KEYS[3], id)
    redis.call('RPUSH', KEYS[1], id)
    -- queued again; a record gone (expired, deleted) is not recreated: the claim drops it
    local jkey = qprefix .. 'job:' .. id
    if redis.call('HGET', jkey, 'status') == 'delayed' then
      redis.call('HSET', jkey, 'status', 'queued')
    end
  end
  first = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
end
if first[2] then next_due = math.max(0, tonumber(first[2]) - now) end
local count = tonumber(ARGV[3])
local paused = redis.call('EXISTS', KEYS[4]) == 1
if paused then
  next_due, count = -2, 0
end
local ids = {}
-- the head of the lease counts only if it is still queued (see above): checked below
local head = nil
if ARGV[4] == '1' then
  head = redis.call('LINDEX', KEYS[2], 0)
  if head == WAKE_MARKER then
    redis.call('LPOP', KEYS[2])
    head = nil
  elseif head and paused
      and redis.call('HGET', qprefix .. 'job:' .. head, 'status') == 'queued' then
    redis.call('LPOP', KEYS[2])
    redis.call('RPUSH', KEYS[1], head)
    head = nil
  end
  if head then ids[1] = head end
end
for i = 5, #ARGV do
  -- only ids still in SID's lease: a supervisor that took the lease back meanwhile (SID
  -- was silent too long) requeued them, and the finish script would drop SID's outcome
  if ARGV[i] == WAKE_MARKER then
    redis.call('LREM', KEYS[2], 0, WAKE_MARKER)
  elseif redis.call('LPOS', KEYS[2], ARGV[i]) then
    ids[#ids + 1] = ARGV[i]
  end
end
if count > 0 then
  local popped = redis.call('RPOP', KEYS[1], count)
  if popped then
    for _, id in ipairs(popped) do
      if id ~= WAKE_MARKER then
        ids[#ids + 1] = id
        redis.call('LPUSH', KEYS[2], id)
      end
    end
  end
end
local out = {next_due}
for _, id in ipairs(ids) do
  local jkey = qprefix .. 'job:' .. id
  local f = redis.call('HMGET', jkey, 'name', 'data', 'timeout', 'enq', 'status', 'attempt',
                      'sid')
  local again = f[5] == 'active' and f[7] == sid and id ~= head
  if id == head and f[1] and f[5] ~= 'queued' then
    -- a head the BLMOVE did not move (it timed out): a job this supervisor already runs
  elseif f[1] and (f[5] == 'queued' or again) then
    -- tonumber: a record written by hand may hold garbage, which must not abort the script
    local attempt = tonumber(f[6]) or 0
    if not again then attempt = attempt + 1 end
    redis.call('HSET', jkey, 'status', 'active', 'sid', sid, 'start', now, 'attempt', attempt)
    for _, v in ipairs({id, f[1], f[2], f[3], attempt, f[4], now}) do out[#out + 1] = v end
  else
    -- no record (malformed entry) or already settled: drop it from the lease
    redis.call('LREM', KEYS[2], 1, id)
    if not f[1] then
      for _, v in ipairs({id, '', '', 0, 0, 0, now}) do out[#out + 1] = v end
    end
  end
end
return out
