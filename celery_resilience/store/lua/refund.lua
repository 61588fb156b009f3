-- Give back what an admission took when its publish failed: its grace allowance (in the
-- same window), or its token (never past a full bucket). The arithmetic is that of
-- celery_resilience/bucket.py:refund.
--
-- KEYS[1]  bucket: "tokens stamp grace_window grace_used" (as admit.lua writes it)
-- ARGV[1]  now in seconds, or "" to use the Redis server's TIME
-- ARGV[2]  capacity;  ARGV[3] refill per second;  ARGV[4] grace period in seconds
-- ARGV[5]  "1" to give back grace, "0" to give back a token
-- Returns  1 when a bucket was changed, 0 when there was none (it is full already).

local now = clock(ARGV[1])
local state = redis.call("GET", KEYS[1])
if not state then
  return 0
end
local capacity, refill, grace_period = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local t, s, w, u = string.match(state, "^(%S+) (%S+) (%S+) (%S+)$")
local tokens, stamp, grace_window, grace_used = tonumber(t), tonumber(s), tonumber(w), tonumber(u)
if ARGV[5] == "1" then
  if grace_window == math.floor(now / grace_period) and grace_used > 0 then
    grace_used = grace_used - 1
  end
else
  tokens = math.min(capacity, tokens + math.max(0, now - stamp) * refill + 1)
  stamp = math.max(now, stamp)
end
redis.call("SET", KEYS[1], string.format("%.17g %.17g %d %d", tokens, stamp, grace_window, grace_used),
  "KEEPTTL")
return 1
