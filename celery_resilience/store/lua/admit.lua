-- One admission decision, atomically: token bucket, grace allowance, paced
-- reservation, and the minute's metric counters. The arithmetic is that of
-- celery_resilience/bucket.py:decide, line for line.
--
-- KEYS[1]  bucket hash: t (tokens), s (stamp), gw (grace window), gu (grace used)
-- KEYS[2]  metrics hash of the current minute (same hash tag as KEYS[1])
-- ARGV[1]  now in seconds, or "" to use the Redis server's TIME
-- ARGV[2]  capacity (burst)          ARGV[3]  refill (tokens per second, > 0)
-- ARGV[4]  grace limit               ARGV[5]  grace period (seconds)
-- ARGV[6]  reserve (tokens kept back from this criticality)
-- ARGV[7]  grace allowed (1 or 0)    ARGV[8]  horizon (seconds; 0 = never reserve)
-- ARGV[9]  strategy's own delay      ARGV[10] strategy name (metric field)
-- ARGV[11] tier (metric field)       ARGV[12] metrics TTL (seconds)
-- Returns  {decision, remaining, retry_after, reserved (1/0), grace_used, now},
--          numbers as strings so no precision is lost to Redis integer replies.

local now
if ARGV[1] == "" then
  local t = redis.call("TIME")
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
else
  now = tonumber(ARGV[1])
end
local capacity = tonumber(ARGV[2])
local refill = tonumber(ARGV[3])
local grace_limit = tonumber(ARGV[4])
local grace_period = tonumber(ARGV[5])
local reserve = tonumber(ARGV[6])
local grace_allowed = ARGV[7] == "1"
local horizon = tonumber(ARGV[8])

local state = redis.call("HMGET", KEYS[1], "t", "s", "gw", "gu")
local tokens = capacity
local stamp = now
local grace_window = -1
local grace_used = 0
if state[1] then
  tokens = tonumber(state[1])
  stamp = tonumber(state[2])
  grace_window = tonumber(state[3])
  grace_used = tonumber(state[4])
end

local elapsed = math.max(0, now - stamp)
tokens = math.min(capacity, tokens + elapsed * refill)
stamp = math.max(now, stamp)
local window = math.floor(now / grace_period)
if grace_window ~= window then
  grace_used = 0
end
local need = 1 + reserve

local decision
local retry_after = 0
local reserved = 0
if tokens >= need then
  tokens = tokens - 1
  decision = "allow"
elseif grace_allowed and grace_used < grace_limit then
  grace_used = grace_used + 1
  decision = "allow_with_grace"
else
  decision = "throttle"
  retry_after = (need - tokens) / refill
  if horizon > 0 and retry_after <= horizon then
    tokens = tokens - 1
    reserved = 1
  end
end

local fmt = "%.17g"
redis.call("HSET", KEYS[1], "t", string.format(fmt, tokens), "s", string.format(fmt, stamp),
  "gw", string.format(fmt, window), "gu", grace_used)
local ttl = math.max((capacity - tokens) / refill, grace_period) + 1
redis.call("PEXPIRE", KEYS[1], math.ceil(ttl * 1000))

redis.call("HINCRBY", KEYS[2], "requests", 1)
redis.call("HINCRBY", KEYS[2], "tier:" .. ARGV[11], 1)
if decision == "allow" then
  redis.call("HINCRBY", KEYS[2], "admitted", 1)
elseif decision == "allow_with_grace" then
  redis.call("HINCRBY", KEYS[2], "graced", 1)
else
  redis.call("HINCRBY", KEYS[2], "throttled", 1)
  if reserved == 1 then
    redis.call("HINCRBY", KEYS[2], "throttled:" .. ARGV[10], 1)
    redis.call("HINCRBYFLOAT", KEYS[2], "delay_total",
      string.format(fmt, math.max(tonumber(ARGV[9]), retry_after)))
  else
    redis.call("HINCRBY", KEYS[2], "throttled:reject_with_backoff", 1)
  end
end
redis.call("EXPIRE", KEYS[2], tonumber(ARGV[12]))

return {decision, string.format(fmt, tokens), string.format(fmt, retry_after), reserved,
  grace_used, string.format(fmt, now)}
