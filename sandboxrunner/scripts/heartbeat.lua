#!lua flags=allow-oom
-- Renew supervisor SID's lease on a queue and list the supervisors whose lease lapsed.
-- A silence of the whole queue is no evidence that any one supervisor died: when a
-- returning supervisor (one that heartbeated before) finds that nobody heartbeated for
-- more than half a lease, Redis was down, restarted or stalled, and every supervisor was
-- as cut off as the caller. That heartbeat marks the queue as resuming for one lease,
-- during which nobody is declared dead, so each live supervisor has a whole lease to get
-- its next heartbeat through. A supervisor that really died is taken back a lease later.
-- It also hands SID the ids of its running jobs asked to cancel (cancel.lua), clearing
-- them: a running job learns of its cancel within one heartbeat.
-- KEYS[1] sups (SID -> last heartbeat ms)   KEYS[2] resumed mark of the queue
-- KEYS[3] cancel set of SID
-- ARGV[1] SID   ARGV[2] lease ms
-- Returns {the SIDs whose last heartbeat is older than the lease ({} while resuming), the
-- ids of SID's jobs to cancel}.
-- allow-oom: a full Redis must not let live leases lapse (a few bytes per heartbeat).
local now = now_ms()
local lease = tonumber(ARGV[2])
local own = redis.call('ZSCORE', KEYS[1], ARGV[1])
local newest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if own and newest[2] and now - tonumber(newest[2]) > lease / 2 then
  redis.call('SET', KEYS[2], now, 'PX', lease, 'NX')
end
redis.call('ZADD', KEYS[1], now, ARGV[1])
local cancels = redis.call('SMEMBERS', KEYS[3])
if #cancels > 0 then redis.call('DEL', KEYS[3]) end
if redis.call('EXISTS', KEYS[2]) == 1 then return {{}, cancels} end
return {redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - lease)), cancels}
