-- A worker process's service rate for a fair queue, stamped with the store's clock
-- (the one fair.lua judges freshness by).
--
-- KEYS[1]  capacity hash of the queue: reporter -> "<tasks a second> <at>"
-- ARGV[1]  now in seconds, or "" to use the Redis server's TIME
-- ARGV[2]  reporter   ARGV[3] tasks a second   ARGV[4] TTL of the hash (seconds)
-- Returns  nothing

local now = clock(ARGV[1])
redis.call("HSET", KEYS[1], ARGV[2], ARGV[3] .. " " .. string.format("%.17g", now))
redis.call("EXPIRE", KEYS[1], tonumber(ARGV[4]))
