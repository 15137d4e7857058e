-- Renew supervisor SID's lease on a queue and list the supervisors whose lease lapsed.
-- KEYS[1] sups (SID -> last heartbeat ms)
-- ARGV[1] SID   ARGV[2] lease ms
-- Returns the SIDs whose last heartbeat is older than the lease.
local now = now_ms()
redis.call('ZADD', KEYS[1], now, ARGV[1])
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - tonumber(ARGV[2])))
