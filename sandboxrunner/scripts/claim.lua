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
-- Delayed jobs now due (a delay, a run_at, a retry's backoff over) and throttled jobs whose
-- rate limit has a free slot again move to the front of the wait list first, 'queued'.
-- Wake markers (see add_delayed) met in the wait list or at the head of the lease are
-- dropped: they are not jobs, and their work is done once this script replies.
-- While the queue is paused (KEYS[4] exists) it hands out no new job: a queued head of the
-- lease (moved by a BLMOVE that ran before the pause) goes back to the head of the wait
-- list (its right end: it keeps its turn), unstarted; ids to hand over again still are.
-- Rate limits (ARGV[5], from the claiming supervisor's job files): a job whose name has
-- had COUNT claims in the last PERIOD ms is not claimed but 'throttled' (field due) in the
-- throttled set. PREFIX:{Q}:limit:NAME logs the name's claims (member ID@ms, score the
-- claim ms: a sliding window, exact over any PERIOD) and the slots reserved by throttled
-- jobs (member r:ID, score the slot's ms): a throttled job reserves the slot a period
-- after the COUNT-th latest entry, so the throttled jobs of a name come back one slot's
-- worth at a time, in order. A job back for its slot is claimed if the claims and slots
-- due by now, less its own, leave room (one claimed late can push the next slot back:
-- that job reserves again); a job not throttled before must find room counting every
-- reserved slot, so it never overtakes those waiting.
-- A head of the lease that is 'cancelled' (a cancel ran between the BLMOVE and this
-- script) is settled: it leaves the lease and never runs.
-- KEYS[1] wait list   KEYS[2] active list of SID   KEYS[3] delayed set   KEYS[4] paused flag
-- KEYS[5] throttled set
-- ARGV[1] queue key prefix   ARGV[2] SID   ARGV[3] COUNT   ARGV[4] HEAD ('1' or '0')
-- ARGV[5] rate limits: 'NAME COUNT PERIOD_MS ...' ('' = none)
-- ARGV[6..] ids in the lease to hand over again
-- Returns a flat list: first the ms until the next delayed or throttled job is due (-1:
-- none; -2: the queue is paused, store.Store.PAUSED), then 7 entries per job: id, name,
-- data, timeout, attempt, enq ms, start ms (name is '' when the id has no job record: a
-- malformed entry the caller must drop).
-- allow-oom: a full Redis still hands out the jobs it holds (a claim moves ids between
-- lists and marks records: little memory), so supervisors drain it.
local qprefix, sid = ARGV[1], ARGV[2]
local now = now_ms()
local limits = {}
local limit_keys = {}
for name, n, period in string.gmatch(ARGV[5] or '', '(%S+) (%d+) (%d+)') do
  limits[name] = {tonumber(n), tonumber(period)}
  limit_keys[#limit_keys + 1] = qprefix .. 'limit:' .. name
end

-- The earliest due time in SET (nil: empty)
local function first_due(set)
  local first = redis.call('ZRANGE', set, 0, 0, 'WITHSCORES')
  return first[2] and tonumber(first[2])
end
-- Ids of SET due by now (at most 100 a call), given its earliest due time FIRST: the set
-- is mostly empty, or not due, and then the one call that read FIRST does.
local function due_in(set, first)
  if first and first <= now then
    return redis.call('ZRANGEBYSCORE', set, '-inf', now, 'LIMIT', 0, 100)
  end
  return {}
end
local delayed_first, throttled_first = first_due(KEYS[3]), first_due(KEYS[5])
local due, freed = due_in(KEYS[3], delayed_first), due_in(KEYS[5], throttled_first)

-- every key this call may read, before its first write (see touch in _lib.lua): the due
-- jobs, the head of the lease, the ids to hand over again, the jobs to pop, the limits
local records = {}
local function add_record(id)
  if id and id ~= WAKE_MARKER then records[#records + 1] = qprefix .. 'job:' .. id end
end
for _, id in ipairs(due) do add_record(id) end
for _, id in ipairs(freed) do add_record(id) end
-- the head of the lease (HEAD = '1'), read once: nothing below writes the lease before
-- it is looked at
local lease_head = nil
if ARGV[4] == '1' then
  lease_head = redis.call('LINDEX', KEYS[2], 0)
  add_record(lease_head)
end
for i = 6, #ARGV do add_record(ARGV[i]) end
if tonumber(ARGV[3]) > 0 then
  for _, id in ipairs(redis.call('LRANGE', KEYS[1], -tonumber(ARGV[3]), -1)) do
    add_record(id)
  end
end
for _, key in ipairs(limit_keys) do records[#records + 1] = key end
touch(records)

-- IDS (due in SET, where they are STATUS) to the front of the wait list, queued again; a
-- record gone (expired, deleted) is not recreated: the claim drops its id
local function requeue(set, ids, status)
  for _, id in ipairs(ids) do
    redis.call('ZREM', set, id)
    redis.call('RPUSH', KEYS[1], id)
    local jkey = qprefix .. 'job:' .. id
    if redis.call('HGET', jkey, 'status') == status then
      redis.call('HSET', jkey, 'status', 'queued')
    end
  end
end
requeue(KEYS[3], due, 'delayed')
requeue(KEYS[5], freed, 'throttled')  -- last: at the very front, they waited longest
if #due > 0 then delayed_first = first_due(KEYS[3]) end
if #freed > 0 then throttled_first = first_due(KEYS[5]) end

-- Keep rate-limit log WINDOW (see the header) one period past its latest entry.
local function expire_window(window, period)
  local last = redis.call('ZRANGE', window, -1, -1, 'WITHSCORES')
  redis.call('PEXPIRE', window, math.max(tonumber(last[2]) - now, 0) + period)
end

-- Whether queued job ID is over its name's rate limit: then it is throttled until the
-- slot it reserves (the caller leaves it out of the lease); if not, its claim is logged.
local function throttled(id)
  if #limit_keys == 0 then return false end  -- the plain path: no limits, no reads
  local jkey = qprefix .. 'job:' .. id
  local f = redis.call('HMGET', jkey, 'name', 'status')
  local limit = f[1] and limits[f[1]]
  if not limit or f[2] ~= 'queued' then return false end
  local count, period = limit[1], limit[2]
  local window, reservation = qprefix .. 'limit:' .. f[1], 'r:' .. id
  redis.call('ZREMRANGEBYSCORE', window, '-inf', now - period)
  local taken
  if redis.call('ZREM', window, reservation) == 1 then
    taken = redis.call('ZCOUNT', window, '-inf', now)  -- its slot came: what is due
  else
    taken = redis.call('ZCARD', window)  -- reserved slots count too: they are ahead of it
  end
  if taken < count then
    redis.call('ZADD', window, now, id .. '@' .. now)
    expire_window(window, period)
    return false
  end
  -- the slot a period after the COUNT-th latest entry: reserved, so the next job of
  -- the name reserves the one after it
  local n = redis.call('ZCARD', window)
  local nth = redis.call('ZRANGE', window, n - count, n - count, 'WITHSCORES')
  local free_at = math.max(tonumber(nth[2]) + period, now + 1)
  redis.call('ZADD', window, free_at, reservation)
  expire_window(window, period)
  redis.call('ZADD', KEYS[5], free_at, id)
  redis.call('HSET', jkey, 'status', 'throttled', 'due', free_at)
  if not throttled_first or free_at < throttled_first then throttled_first = free_at end
  return true
end

local count = tonumber(ARGV[3])
local paused = redis.call('EXISTS', KEYS[4]) == 1
if paused then count = 0 end
local ids = {}
-- the head of the lease counts only if it is still queued (see above): checked below
local head = nil
if ARGV[4] == '1' then
  head = lease_head
  if head == WAKE_MARKER then
    redis.call('LPOP', KEYS[2])
    head = nil
  elseif head and paused
      and redis.call('HGET', qprefix .. 'job:' .. head, 'status') == 'queued' then
    redis.call('LPOP', KEYS[2])
    redis.call('RPUSH', KEYS[1], head)
    head = nil
  elseif head and throttled(head) then
    redis.call('LPOP', KEYS[2])
    head = nil
  end
  if head then ids[1] = head end
end
for i = 6, #ARGV do
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
      if id ~= WAKE_MARKER and not throttled(id) then
        ids[#ids + 1] = id
        redis.call('LPUSH', KEYS[2], id)
      end
    end
  end
end

-- the ms until the next delayed or throttled job is due
local next_due = -1
for _, first in ipairs({delayed_first or false, throttled_first or false}) do
  if first then
    local wait = math.max(0, first - now)
    if next_due < 0 or wait < next_due then next_due = wait end
  end
end
if paused then next_due = -2 end

local out = {next_due}
for _, id in ipairs(ids) do
  local jkey = qprefix .. 'job:' .. id
  local f = redis.call('HMGET', jkey, 'name', 'data', 'timeout', 'enq', 'status', 'attempt',
                      'sid')
  local again = f[5] == 'active' and f[7] == sid and id ~= head
  if id == head and f[1] and f[5] ~= 'queued' and f[5] ~= 'cancelled' then
    -- a head the BLMOVE did not move (it timed out): a job this supervisor already runs
  elseif f[1] and (f[5] == 'queued' or again) then
    -- tonumber: a record written by hand may hold garbage, which must not abort the script
    local attempt = tonumber(f[6]) or 0
    if not again then attempt = attempt + 1 end
    redis.call('HSET', jkey, 'status', 'active', 'sid', sid, 'start', now, 'attempt', attempt)
    for _, v in ipairs({id, f[1], f[2], f[3], attempt, f[4], now}) do out[#out + 1] = v end
  else
    -- no record (malformed entry) or already settled (a cancelled head too): drop it
    -- from the lease
    redis.call('LREM', KEYS[2], 1, id)
    if not f[1] then
      for _, v in ipairs({id, '', '', 0, 0, 0, now}) do out[#out + 1] = v end
    end
  end
end
return out
