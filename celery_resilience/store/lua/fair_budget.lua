-- Book one call of a tenant on a provider budget shared in fair shares:
-- providers/turns.py:budget_turn, line for line (its virtual clock included).
--
-- KEYS[1]  tags: sorted set, tenant -> finish tag (virtual time)
-- KEYS[2]  state hash: "w:<tenant>" weight of each tenant in KEYS[1], "mean_cost",
--          "virtual" the clock, "updated" when it was last run (same hash tag as KEYS[1])
-- KEYS[3]  counters hash: delayed, delay_total, over_share, and "<name>:<tenant>" of each
-- ARGV[1]  now in seconds, or "" to use the Redis server's TIME
-- ARGV[2]  tenant (escaped by store/keys.py: no ":" in it)
-- ARGV[3]  weight   ARGV[4] cost   ARGV[5] capacity (calls a second, above zero)
-- ARGV[6]  within: a turn further off is not booked, or "" to book any turn
-- ARGV[7]  the mean cost's smoothing   ARGV[8] TTL of the keys (seconds)
-- ARGV[9]  lead: the calls the budget's window holds beyond its rate, charged to ARGV[10]
--          (the unbooked calls' tenant, weight one) when the clock starts with nobody booked
-- Returns  {wait, capacity, now, booked} as strings (booked "0": nothing booked)

local now = clock(ARGV[1])
local tenant = ARGV[2]
local weight, cost, capacity = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local ttl = tonumber(ARGV[8])
local function num(value) return string.format("%.17g", value) end

-- advance(): the virtual clock from its last reading to now.
local state = redis.call("HMGET", KEYS[2], "virtual", "updated", "mean_cost")
local virtual, updated = tonumber(state[1] or "0"), tonumber(state[2] or "0")
local mean = tonumber(state[3] or "0")
local elapsed = math.max(0, now - updated)
updated = math.max(now, updated)
local ahead = redis.call("ZRANGEBYSCORE", KEYS[1], "(" .. num(virtual), "+inf", "WITHSCORES")
local booked, total = {}, 0  -- {finish, weight, tenant} in finish order
for k = 1, #ahead, 2 do
  local w = tonumber(redis.call("HGET", KEYS[2], "w:" .. ahead[k]) or "1")
  booked[#booked + 1] = {tonumber(ahead[k + 1]), w, ahead[k]}
  total = total + w
end
for _, entry in ipairs(booked) do
  if elapsed <= 0 or total <= 0 then
    break
  end
  local needed = (entry[1] - virtual) * total / capacity
  if needed >= elapsed then
    virtual = virtual + elapsed * capacity / total
    elapsed = 0
    break
  end
  virtual, elapsed = entry[1], elapsed - needed
  total = total - entry[2]
end
local gone = redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", num(virtual))
for _, name in ipairs(gone) do
  redis.call("HDEL", KEYS[2], "w:" .. name)
end
if #gone > 0 then
  redis.call("ZREMRANGEBYSCORE", KEYS[1], "-inf", num(virtual))
end
redis.call("HSET", KEYS[2], "virtual", num(virtual), "updated", num(updated))

-- budget_turn(): what was taken before the clock starts, the tenant's start, its wait,
-- and the booking.
local lead = tonumber(ARGV[9])
if lead > 0 and redis.call("ZCARD", KEYS[1]) == 0 then
  redis.call("ZADD", KEYS[1], num(virtual + lead), ARGV[10])
  redis.call("HSET", KEYS[2], "w:" .. ARGV[10], "1")
  booked = {{virtual + lead, 1, ARGV[10]}}
end
cost = math.max(cost, 1e-9)
if mean <= 0 then
  mean = cost
else
  mean = mean + tonumber(ARGV[7]) * (cost - mean)
end
local length = cost / mean / weight
local finish = tonumber(redis.call("ZSCORE", KEYS[1], tenant) or num(virtual))
local start = math.max(virtual, finish)
local active = weight  -- the tenants still booked ahead of the clock, as read above
for _, entry in ipairs(booked) do
  if entry[1] > virtual and entry[3] ~= tenant then
    active = active + entry[2]
  end
end
local wait = math.max(0, (start - virtual - length) * active / capacity)
redis.call("EXPIRE", KEYS[2], ttl)
if ARGV[6] ~= "" and wait > tonumber(ARGV[6]) then
  redis.call("HINCRBY", KEYS[3], "over_share", 1)
  redis.call("HINCRBY", KEYS[3], "over_share:" .. tenant, 1)
  redis.call("EXPIRE", KEYS[3], ttl)
  return {num(wait), num(capacity), num(now), "0"}
end
redis.call("ZADD", KEYS[1], num(start + length), tenant)
redis.call("HSET", KEYS[2], "w:" .. tenant, num(weight), "mean_cost", num(mean))
redis.call("EXPIRE", KEYS[1], ttl)
if wait > 0 then
  redis.call("HINCRBY", KEYS[3], "delayed", 1)
  redis.call("HINCRBY", KEYS[3], "delayed:" .. tenant, 1)
  redis.call("HINCRBYFLOAT", KEYS[3], "delay_total", num(wait))
  redis.call("HINCRBYFLOAT", KEYS[3], "delay_total:" .. tenant, num(wait))
  redis.call("EXPIRE", KEYS[3], ttl)
end
return {num(wait), num(capacity), num(now), "1"}
