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
-- ARGV[9]  lead: the calls the budget's window holds beyond its rate, for ARGV[10] seconds
--          more; the clock, starting with nobody booked, runs slower by lead / ARGV[10]
--          calls a second for that long (0 and 0: no lead)
-- Returns  {wait, capacity, now, booked} as strings (booked "0": nothing booked)

local now = clock(ARGV[1])
local tenant = ARGV[2]
local weight, cost, capacity = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local ttl = tonumber(ARGV[8])
local function num(value) return string.format("%.17g", value) end

-- advance(): the virtual clock from its last reading to now, slower by a lead being paid.
local state = redis.call("HMGET", KEYS[2], "virtual", "updated", "mean_cost", "slower", "slower_until")
local virtual, updated = tonumber(state[1] or "0"), tonumber(state[2] or "0")
local mean = tonumber(state[3] or "0")
local slower, slower_until = tonumber(state[4] or "0"), tonumber(state[5] or "0")
local elapsed = math.max(0, now - updated)
local ahead = redis.call("ZRANGEBYSCORE", KEYS[1], "(" .. num(virtual), "+inf", "WITHSCORES")
local booked = {}  -- {finish, weight, tenant} in finish order
for k = 1, #ahead, 2 do
  local w = tonumber(redis.call("HGET", KEYS[2], "w:" .. ahead[k]) or "1")
  booked[#booked + 1] = {tonumber(ahead[k + 1]), w, ahead[k]}
end
local function run(seconds, rate)
  local total = 0
  for _, entry in ipairs(booked) do
    if entry[1] > virtual then
      total = total + entry[2]
    end
  end
  for _, entry in ipairs(booked) do
    if seconds <= 0 or total <= 0 or rate <= 0 then
      break
    end
    if entry[1] > virtual then
      local needed = (entry[1] - virtual) * total / rate
      if needed >= seconds then
        virtual = virtual + seconds * rate / total
        break
      end
      virtual, seconds = entry[1], seconds - needed
      total = total - entry[2]
    end
  end
end
local slow = math.max(0, math.min(elapsed, slower_until - updated))
if slow > 0 then
  run(slow, capacity - slower)
end
run(elapsed - slow, capacity)
updated = math.max(now, updated)
local gone = redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", num(virtual))
for _, name in ipairs(gone) do
  redis.call("HDEL", KEYS[2], "w:" .. name)
end
if #gone > 0 then
  redis.call("ZREMRANGEBYSCORE", KEYS[1], "-inf", num(virtual))
end
redis.call("HSET", KEYS[2], "virtual", num(virtual), "updated", num(updated))

-- budget_turn(): a lead paid from the clock's start, the tenant's start, its wait, and
-- the booking.
local lead, lead_for = tonumber(ARGV[9]), tonumber(ARGV[10])
if lead > 0 and lead_for > 0 and now >= slower_until and redis.call("ZCARD", KEYS[1]) == 0 then
  slower, slower_until = math.min(lead / lead_for, capacity), now + lead_for
  redis.call("HSET", KEYS[2], "slower", num(slower), "slower_until", num(slower_until))
end
local function seconds_for(calls)  -- turns.py:seconds_for
  if calls <= 0 then
    return 0
  end
  local left, rate = math.max(0, slower_until - now), capacity - slower
  if left <= 0 then
    return calls / capacity
  end
  if rate * left >= calls then
    return calls / rate
  end
  return left + (calls - rate * left) / capacity
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
-- calls_until(): the calls given before the clock reaches start - length, with the tags
-- as they stand (read above, in finish order).
local target, at, calls, total = start - length, virtual, 0, weight
for _, entry in ipairs(booked) do
  if entry[1] > virtual and entry[3] ~= tenant then
    total = total + entry[2]
  end
end
for _, entry in ipairs(booked) do
  if entry[1] > virtual and entry[3] ~= tenant then
    if entry[1] >= target then
      break
    end
    calls, at, total = calls + (entry[1] - at) * total, entry[1], total - entry[2]
  end
end
local wait = seconds_for(calls + math.max(0, target - at) * total)
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
