-- Book a queued call's cost on a provider's timetable (the arithmetic of
-- celery_resilience/providers/budget.py:schedule): each unit's bucket may go into debt,
-- and the deepest debt says when the call's turn comes. Beyond the horizon nothing is
-- booked. Buckets are "tokens stamp grace_window grace_used", as admit.lua writes them.
--
-- KEYS     the units' timetable buckets (n of them)
-- ARGV[1]  now in seconds, or "" to use the Redis server's TIME;  ARGV[2] horizon in seconds
-- ARGV[3..] per bucket: capacity, refill per second, amount
-- Returns  {1 when booked else 0, the wait in seconds as a string}

local now = clock(ARGV[1])
local horizon = tonumber(ARGV[2])
local n = (#ARGV - 2) / 3
local tokens, stamps, capacities, refills, amounts = {}, {}, {}, {}, {}
local wait = 0
for i = 1, n do
  local base = 2 + (i - 1) * 3
  capacities[i], refills[i], amounts[i] = tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3])
  tokens[i], stamps[i] = capacities[i], now
  local state = redis.call("GET", KEYS[i])
  if state then
    local t, s = string.match(state, "^(%S+) (%S+) ")
    tokens[i] = math.min(capacities[i], tonumber(t) + math.max(0, now - tonumber(s)) * refills[i])
    stamps[i] = math.max(now, tonumber(s))
  end
  local after = tokens[i] - amounts[i]
  if after < 0 then
    wait = math.max(wait, -after / refills[i])
  end
end
if wait > horizon then
  return {0, string.format("%.17g", wait)}
end
for i = 1, n do
  tokens[i] = tokens[i] - amounts[i]
  local ttl = (capacities[i] - tokens[i]) / refills[i] + 1
  redis.call("SET", KEYS[i], string.format("%.17g %.17g -1 0", tokens[i], stamps[i]), "PX", math.ceil(ttl * 1000))
end
return {1, string.format("%.17g", wait)}
