-- A provider's budget in several units, one bucket each (the arithmetic of
-- celery_resilience/providers/budget.py): take from every bucket or from none, give
-- back or take after the provider counted, or hold no more than the provider says is
-- left. Buckets are "tokens stamp grace_window grace_used", as admit.lua writes them.
--
-- KEYS     the unit buckets (n of them); for "take", then the provider-scope metrics hash
-- ARGV[1]  now in seconds, or "" to use the Redis server's TIME
-- ARGV[2]  "take", "adjust" or "cap"
-- ARGV[3]  provider name (the metric field's suffix);  ARGV[4] metrics TTL in seconds
-- ARGV[5..] per bucket: capacity, refill per second, amount (take: to take; adjust:
--          to give back, negative to take; cap: the most to hold)
-- Returns  for "take": the seconds to wait ("0" when taken), as a string; else "0".

local now = clock(ARGV[1])
local mode = ARGV[2]
local n = (#ARGV - 4) / 3

local tokens, stamps, windows, used = {}, {}, {}, {}
local capacities, refills, amounts = {}, {}, {}
for i = 1, n do
  local base = 4 + (i - 1) * 3
  capacities[i] = tonumber(ARGV[base + 1])
  refills[i] = tonumber(ARGV[base + 2])
  amounts[i] = tonumber(ARGV[base + 3])
  tokens[i], stamps[i], windows[i], used[i] = capacities[i], now, -1, 0
  local state = redis.call("GET", KEYS[i])
  if state then
    local t, s, w, u = string.match(state, "^(%S+) (%S+) (%S+) (%S+)$")
    tokens[i] = math.min(capacities[i], tonumber(t) + math.max(0, now - tonumber(s)) * refills[i])
    stamps[i], windows[i], used[i] = math.max(now, tonumber(s)), tonumber(w), tonumber(u)
  end
end

local wait = 0
if mode == "take" then
  for i = 1, n do
    if tokens[i] < amounts[i] then
      wait = math.max(wait, (amounts[i] - tokens[i]) / refills[i])
    end
  end
  local field = (wait > 0 and "throttled@" or "admitted@") .. ARGV[3]
  if redis.call("HINCRBY", KEYS[n + 1], field, 1) == 1 then
    redis.call("EXPIRE", KEYS[n + 1], tonumber(ARGV[4]))
  end
  if wait > 0 then
    return string.format("%.17g", wait)
  end
end

for i = 1, n do
  if mode == "take" then
    tokens[i] = tokens[i] - amounts[i]
  elseif mode == "adjust" then
    tokens[i] = math.min(capacities[i], tokens[i] + amounts[i])
  else
    tokens[i] = math.min(tokens[i], amounts[i])
  end
  local ttl = (capacities[i] - tokens[i]) / refills[i] + 1
  redis.call("SET", KEYS[i], string.format("%.17g %.17g %d %d", tokens[i], stamps[i], windows[i], used[i]),
    "PX", math.ceil(ttl * 1000))
end
return "0"
