-- One admission decision, atomically: token bucket, grace allowance, paced
-- reservation, and the minute's metric counters. The arithmetic is that of
-- celery_resilience/bucket.py:decide, line for line.
--
-- KEYS[1]  bucket: "tokens stamp grace_window grace_used", one string with a TTL
--          (a string, not a hash: one GET and one SET PX instead of three calls)
-- KEYS[2]  metrics hash of the current minute (same hash tag as KEYS[1])
-- ARGV[1]  now in seconds, or "" to use the Redis server's TIME
-- ARGV[2]  the policy, packed once per policy by store/redis.py (struct "<dddddBdddss"):
--          capacity refill grace_limit grace_period reserve grace_allowed(1/0)
--          horizon min_delay metrics_ttl strategy tier (the last two NUL-terminated)
-- ARGV[3]  lease: extra tokens to take on an allow, when the bucket can spare them
-- ARGV[4]  pending: admissions made locally from an earlier lease, for the metrics
-- ARGV[5]  "1": renew a lease only (bucket.py:renew): the spare tokens or none, no
--          request of its own admitted, refused or counted
-- Returns  decision(0 allow, 1 allow_with_grace, 2 throttle) remaining retry_after
--          reserved(1/0) grace_used leased now, packed (struct "<BddBddd"): cheaper to
--          build and read than formatted numbers, and no precision lost to integers.

local now = clock(ARGV[1])
local capacity, refill, grace_limit, grace_period, reserve, grace_allowed, horizon,
  min_delay, metrics_ttl, strategy, tier = struct.unpack("<dddddBdddss", ARGV[2])
local lease = tonumber(ARGV[3])
local pending = tonumber(ARGV[4])

local tokens = capacity
local stamp = now
local grace_window = -1
local grace_used = 0
local state = redis.call("GET", KEYS[1])
if state then
  local t, s, gw, gu = string.match(state, "^(%S+) (%S+) (%S+) (%S+)$")
  tokens = tonumber(t)
  stamp = tonumber(s)
  grace_window = tonumber(gw)
  grace_used = tonumber(gu)
end

local elapsed = math.max(0, now - stamp)
tokens = math.min(capacity, tokens + elapsed * refill)
stamp = math.max(now, stamp)
local window = math.floor(now / grace_period)
if grace_window ~= window then
  grace_used = 0
end
local need = 1 + reserve

local ALLOW, ALLOW_WITH_GRACE, THROTTLE = 0, 1, 2

if ARGV[5] == "1" then
  local leased = 0
  if lease > 0 and tokens >= need + lease then
    leased = lease
    tokens = tokens - leased
  end
  local ttl = math.max((capacity - tokens) / refill, grace_period) + 1
  redis.call("SET", KEYS[1], string.format("%.17g %.17g %d %d", tokens, stamp, window, grace_used),
    "PX", math.ceil(ttl * 1000))
  if pending > 0 and redis.call("HINCRBY", KEYS[2], "admitted@" .. tier, pending) <= pending then
    redis.call("EXPIRE", KEYS[2], metrics_ttl)
  end
  return struct.pack("<BddBddd", ALLOW, tokens, 0, 0, grace_used, leased, now)
end

local decision
local retry_after = 0
local reserved = 0
local leased = 0
if tokens >= need then
  if lease > 0 and tokens >= need + lease then
    leased = lease
  end
  tokens = tokens - 1 - leased
  decision = ALLOW
elseif grace_allowed == 1 and grace_used < grace_limit then
  grace_used = grace_used + 1
  decision = ALLOW_WITH_GRACE
else
  decision = THROTTLE
  retry_after = (need - tokens) / refill
  if horizon > 0 and retry_after <= horizon then
    tokens = tokens - 1
    reserved = 1
  end
end

local ttl = math.max((capacity - tokens) / refill, grace_period) + 1
redis.call("SET", KEYS[1], string.format("%.17g %.17g %d %d", tokens, stamp, window, grace_used),
  "PX", math.ceil(ttl * 1000))

-- One counter per decision, "<outcome>@<tier>"; readers derive totals and tiers.
local counted = 1
if decision == ALLOW then
  counted = redis.call("HINCRBY", KEYS[2], "admitted@" .. tier, 1 + pending)
else
  if pending > 0 then
    redis.call("HINCRBY", KEYS[2], "admitted@" .. tier, pending)
  end
  if decision == ALLOW_WITH_GRACE then
    counted = redis.call("HINCRBY", KEYS[2], "graced@" .. tier, 1)
  else
    counted = redis.call("HINCRBY", KEYS[2], "throttled@" .. tier, 1)
    if reserved == 1 then
      redis.call("HINCRBY", KEYS[2], "throttled:" .. strategy, 1)
      redis.call("HINCRBYFLOAT", KEYS[2], "delay_total",
        string.format("%.17g", math.max(min_delay, retry_after)))
    elseif strategy == "answer" then
      redis.call("HINCRBY", KEYS[2], "throttled:answer", 1)
    else
      redis.call("HINCRBY", KEYS[2], "throttled:reject_with_backoff", 1)
    end
  end
end
-- The first counter of a new minute gives the minute its TTL.
if counted <= 1 + pending then
  redis.call("EXPIRE", KEYS[2], metrics_ttl)
end

return struct.pack("<BddBddd", decision, tokens, retry_after, reserved, grace_used, leased, now)
