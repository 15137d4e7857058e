#!lua
-- Record how far jobs running on supervisor SID got, and tell their waiting callers. A job
-- no longer active on SID (settled, taken back, cancelled) keeps what it has: a report
-- that comes late is dropped. The supervisor coalesces a job's reports (progress.py), so
-- this runs at most every PROGRESS_INTERVAL_S per supervisor, for every job that moved.
-- KEYS[1..] the record of each job, in ARGV's order (declared: see _lib.lua)
-- ARGV[1] SID   ARGV[2] reply channel prefix   ARGV[3..] pairs: id, the report as JSON
-- ({"fraction": F, "message": M or null}): stored in the record's ``progress`` field and
-- published to its callers as ``ID \n progress \n JSON``
-- Returns the number of reports recorded.
-- No allow-oom: a full Redis refuses it up front; progress is dropped, never the outcome.
local sid, chan = ARGV[1], ARGV[2]
local recorded = 0
for i = 3, #ARGV, 2 do
  local jkey = KEYS[(i - 1) / 2]
  local f = redis.call('HMGET', jkey, 'status', 'sid', 'reply')
  if f[1] == 'active' and f[2] == sid then
    redis.call('HSET', jkey, 'progress', ARGV[i + 1])
    recorded = recorded + 1
    if f[3] and f[3] ~= '' then
      local message = ARGV[i] .. '\nprogress\n' .. ARGV[i + 1]
      for cid in string.gmatch(f[3], '%S+') do
        redis.call('SPUBLISH', chan .. cid, message)
      end
    end
  end
end
return recorded
