-- Book one task of a tenant in a saturated fair queue: load/fairness.py:start_tag,
-- line for line, with the tenants' weights summed as they come and go.
--
-- KEYS[1]  tags: sorted set, tenant -> finish tag (seconds on the store's clock)
-- KEYS[2]  state hash: "w:<tenant>" weight of each tenant in KEYS[1], "active" their
--          sum, "mean_cost" the queue's mean cost (same hash tag as KEYS[1])
-- KEYS[3]  capacity hash: reporter -> "<tasks a second> <at>" (fair_capacity.lua)
-- KEYS[4]  counters hash: delayed, delay_total, and "<name>:<tenant>" of each
-- ARGV[1]  now in seconds, or "" to use the Redis server's TIME
-- ARGV[2]  tenant (escaped by store/keys.py: no ":" in it)
-- ARGV[3]  weight   ARGV[4] cost   ARGV[5] max_delay
-- ARGV[6]  the stated service rate, or "" to sum the workers' fresh reports
-- ARGV[7]  seconds a report stays fresh   ARGV[8] the mean cost's smoothing
-- ARGV[9]  TTL of the keys (seconds)
-- Returns  {delay, capacity, now} as strings (capacity "0": none known, no delay)

local now = clock(ARGV[1])
local tenant = ARGV[2]
local weight, cost, max_delay = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local ttl = tonumber(ARGV[9])

local active = tonumber(redis.call("HGET", KEYS[2], "active") or "0")
local idle = redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", string.format("%.17g", now))
for _, name in ipairs(idle) do
  active = active - tonumber(redis.call("HGET", KEYS[2], "w:" .. name) or "0")
  redis.call("HDEL", KEYS[2], "w:" .. name)
end
if #idle > 0 then
  redis.call("ZREMRANGEBYSCORE", KEYS[1], "-inf", string.format("%.17g", now))
end
if redis.call("ZCARD", KEYS[1]) == 0 then
  active = 0  -- no sum to carry: rounding never accumulates across episodes
end

local capacity = 0
if ARGV[6] ~= "" then
  capacity = tonumber(ARGV[6])
else
  local reports = redis.call("HGETALL", KEYS[3])
  for i = 1, #reports, 2 do
    local served, at = string.match(reports[i + 1], "^(%S+) (%S+)$")
    if tonumber(at) < now - tonumber(ARGV[7]) then
      redis.call("HDEL", KEYS[3], reports[i])
    else
      capacity = capacity + tonumber(served)
    end
  end
end
if capacity <= 0 then
  redis.call("HSET", KEYS[2], "active", string.format("%.17g", active))
  return {"0", "0", string.format("%.17g", now)}
end

cost = math.max(cost, 1e-9)
local mean = tonumber(redis.call("HGET", KEYS[2], "mean_cost") or "0")
if mean <= 0 then
  mean = cost
else
  mean = mean + tonumber(ARGV[8]) * (cost - mean)
end
local finish = tonumber(redis.call("ZSCORE", KEYS[1], tenant) or now)
active = active - tonumber(redis.call("HGET", KEYS[2], "w:" .. tenant) or "0") + weight
local start = math.max(now, finish)
finish = start + (cost / mean) * active / (weight * capacity)
redis.call("ZADD", KEYS[1], string.format("%.17g", finish), tenant)
redis.call("HSET", KEYS[2], "w:" .. tenant, string.format("%.17g", weight),
  "active", string.format("%.17g", active), "mean_cost", string.format("%.17g", mean))
redis.call("EXPIRE", KEYS[1], ttl)
redis.call("EXPIRE", KEYS[2], ttl)

local delay = math.min(start - now, max_delay)
if delay > 0 then
  redis.call("HINCRBY", KEYS[4], "delayed", 1)
  redis.call("HINCRBY", KEYS[4], "delayed:" .. tenant, 1)
  local total = string.format("%.17g", delay)
  redis.call("HINCRBYFLOAT", KEYS[4], "delay_total", total)
  redis.call("HINCRBYFLOAT", KEYS[4], "delay_total:" .. tenant, total)
  redis.call("EXPIRE", KEYS[4], ttl)
end
return {string.format("%.17g", delay), string.format("%.17g", capacity), string.format("%.17g", now)}
