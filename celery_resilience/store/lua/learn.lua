-- A provider unit's learned rate (the arithmetic of providers/learned.py:learned):
-- grow while calls succeed, cut on a 429 (once per cool-down), set when the provider
-- states its limit, or read.
--
-- KEYS[1]  hash: "<unit>" -> "rate ceiling grown_at cut_at stated" (stated: 1 when the
--          provider stated the rate: no cut or growth moves it, only another statement)
-- ARGV[1]  now in seconds, or "" to use the Redis server's TIME
-- ARGV[2]  unit;  ARGV[3] event: grow, cut, set or read;  ARGV[4] starting rate per second
-- ARGV[5]  the stated rate per second (set), or the seconds a 429 drained the budget (cut)
-- ARGV[6]  increase;  ARGV[7] decrease
-- ARGV[8]  cool-down in seconds;  ARGV[9] floor, a share of the starting rate
-- ARGV[10] probe (growth past the last cut's rate: that rate times 1 + probe * seconds^3)
-- ARGV[11] quiet seconds after a cut
-- ARGV[12] cut: what the window held when the provider refused, per second (0: unknown)
-- ARGV[13] the fastest probing, of the rate per second
-- ARGV[14] growth per second of a unit never cut (slow start)
-- ARGV[15] cut: what the window held of the provider's period when it refused, per second
-- Returns  the rate per second, as a string.

local now = clock(ARGV[1])
local unit, event, start = ARGV[2], ARGV[3], tonumber(ARGV[4])
local rate, ceiling, grown_at, cut_at, stated = start, start, now, 0, "0"
local state = redis.call("HGET", KEYS[1], unit)
if state then
  local r, c, g, t, s = string.match(state, "^(%S+) (%S+) (%S+) (%S+) ?(%d?)$")
  rate, ceiling, grown_at, cut_at = tonumber(r), tonumber(c), tonumber(g), tonumber(t)
  if s == "1" then
    stated = "1"
  end
end
local value = tonumber(ARGV[5])
if event == "set" and value > 0 then
  rate, ceiling, grown_at, stated = value, value, now, "1"
elseif stated == "1" then
  event = "read"  -- the provider's word stands until it says otherwise
elseif event == "cut" then
  local accepted = tonumber(ARGV[12] or "0")
  local held = tonumber(ARGV[15] or "0")
  local floor = start * tonumber(ARGV[9])
  if now - cut_at < tonumber(ARGV[8]) then
    -- another 429 of the same episode: only a window holding less than the rate lowers it
    if held > 0 and held < rate then
      rate = math.max(floor, held)
      ceiling = math.min(ceiling, rate)
    end
  else
    if cut_at > 0 and rate > ceiling and held > 0 and held < rate then
      accepted = held  -- probing past the last cut found the limit it had not moved from
    end
    local measured = accepted > 0 and accepted < rate
    if measured then
      rate = math.max(floor, accepted)
      ceiling = rate
    else
      ceiling = rate
      rate = math.max(floor, rate * tonumber(ARGV[7]))
    end
    -- the cut counts from the drain's end: no second cut, and no growth, before then
    grown_at, cut_at = now, now + math.max(0, value)
  end
elseif event == "grow" then
  local elapsed = math.min(1, math.max(0, now - grown_at))
  if now - cut_at < tonumber(ARGV[11]) then
    elapsed = 0
  end
  if cut_at == 0 then
    rate = rate * (1 + tonumber(ARGV[14]) * elapsed)
  elseif rate < ceiling then
    rate = math.min(ceiling, rate + tonumber(ARGV[6]) * ceiling * elapsed)
  else
    -- where the rate is on CUBIC's curve (its seconds of probing), then elapsed on
    local probe = tonumber(ARGV[10])
    local probed = (math.max(0, rate / ceiling - 1) / probe) ^ (1 / 3)
    rate = math.min(ceiling * (1 + probe * (probed + elapsed) ^ 3), rate * (1 + tonumber(ARGV[13]) * elapsed))
  end
  grown_at = now
end
if event ~= "read" or not state then
  redis.call("HSET", KEYS[1], unit,
    string.format("%.17g %.17g %.17g %.17g %s", rate, ceiling, grown_at, cut_at, stated))
  redis.call("EXPIRE", KEYS[1], 86400)
end
return string.format("%.17g", rate)
