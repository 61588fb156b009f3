-- One circuit-breaker operation, atomically. The machine is that of
-- celery_resilience/breaker.py, transition for transition.
--
-- KEYS[1]  state hash: state, gen, open_until, trips, successes
-- KEYS[2]  window hash: slice index -> "calls weight"
-- KEYS[3]  probes sorted set: lease id scored by its expiry
-- ARGV[1]  operation: acquire | record | release | force | read
-- ARGV[2]  now in seconds, or "" to use the Redis server's TIME
-- ARGV[3]  policy, space-separated: failure_threshold window minimum_calls
--          recovery_timeout max_recovery_timeout backoff jitter half_open_probes
--          success_threshold probe_lease quota_open_seconds buckets
-- ARGV[4]  breaker name
-- ARGV[5]  PUBLISH, or SPUBLISH on a Cluster (a channel in this breaker's slot)
-- ARGV[6]  channel for transitions ("name state gen open_until")
-- acquire: ARGV[7] lease id
--   -> "permit <gen> <probe 1/0> <recording 1/0> <state> <open_until>"
--   -> "deny <state> <retry_after or -1 for none> <gen> <open_until>"
-- record:  ARGV[7] generation, ARGV[8] lease, ARGV[9] weight, ARGV[10] retry_after (-1 none),
--          ARGV[11] trip now (1/0), ARGV[12] jitter draw in [0, 1), ARGV[13] calls this
--          report stands for (successes counted locally ride along; CLOSED only)
--   -> "<state> <gen> <open_until> <changed 1/0> <ignored 1/0>"
-- release: ARGV[7] generation, ARGV[8] lease: a probe gives its slot back, no outcome
--   -> "<state>"
-- force:   ARGV[7] closed | forced_open | disabled  -> "<state> <gen> <open_until>"
-- read:    -> "<state> <gen> <open_until> <trips> <calls> <weight> <probes>"

local now = clock(ARGV[2])
local p = {}
for word in string.gmatch(ARGV[3], "%S+") do
  p[#p + 1] = tonumber(word)
end
local threshold, window, minimum_calls, recovery, max_recovery, backoff, jitter,
  half_open_probes, success_threshold, probe_lease, quota_open, buckets =
  p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9], p[10], p[11], p[12]
local fmt = "%.17g"
local publish = ARGV[5] == "SPUBLISH" and "SPUBLISH" or "PUBLISH"

local h = redis.call("HMGET", KEYS[1], "state", "gen", "open_until", "trips", "successes")
local state = h[1] or "closed"
local gen = tonumber(h[2] or "0")
local open_until = tonumber(h[3] or "0")
local trips = tonumber(h[4] or "0")
local successes = tonumber(h[5] or "0")
local before_state, before_gen = state, gen

local function save()
  redis.call("HSET", KEYS[1], "state", state, "gen", gen, "open_until", string.format(fmt, open_until),
    "trips", trips, "successes", successes)
  if state ~= before_state or gen ~= before_gen then
    redis.call(publish, ARGV[6], ARGV[4] .. " " .. state .. " " .. gen .. " " .. string.format(fmt, open_until))
  end
end

local function close()
  state = "closed"
  gen = gen + 1
  trips = 0
  successes = 0
  open_until = 0
  redis.call("DEL", KEYS[2], KEYS[3])
end

local function trip(retry_after, trip_now, draw)
  trips = trips + 1
  local base = math.min(max_recovery, recovery * backoff ^ math.max(0, trips - 1))
  local timeout = base * (1 + jitter * draw)
  if trip_now then
    timeout = math.max(timeout, quota_open)
  end
  state = "open"
  gen = gen + 1
  open_until = now + math.max(timeout, retry_after)
  successes = 0
  redis.call("DEL", KEYS[2], KEYS[3])
end

local op = ARGV[1]

if op == "acquire" then
  if state == "disabled" then
    return string.format("permit %d 0 0 %s %.17g", gen, state, open_until)
  end
  if state == "forced_open" then
    return string.format("deny %s -1 %d %.17g", state, gen, open_until)
  end
  if state == "open" then
    if now < open_until then
      return string.format("deny %s %.17g %d %.17g", state, open_until - now, gen, open_until)
    end
    state = "half_open"
    gen = gen + 1
    successes = 0
    redis.call("DEL", KEYS[3])
  end
  if state == "half_open" then
    redis.call("ZREMRANGEBYSCORE", KEYS[3], "-inf", string.format(fmt, now))
    local held = redis.call("ZCARD", KEYS[3])
    if held < half_open_probes then
      redis.call("ZADD", KEYS[3], string.format(fmt, now + probe_lease), ARGV[7])
      save()
      return string.format("permit %d 1 1 %s %.17g", gen, state, open_until)
    end
    save()
    local first = redis.call("ZRANGE", KEYS[3], 0, 0, "WITHSCORES")
    return string.format("deny %s %.17g %d %.17g", state, math.max(0, tonumber(first[2]) - now), gen,
      open_until)
  end
  return string.format("permit %d 0 1 %s %.17g", gen, state, open_until)
end

if op == "record" then
  local generation = tonumber(ARGV[7])
  local weight = tonumber(ARGV[9])
  local retry_after = math.max(0, tonumber(ARGV[10]))
  local trip_now = ARGV[11] == "1"
  local draw = tonumber(ARGV[12])
  if state == "disabled" or state == "forced_open" or generation ~= gen then
    return string.format("%s %d %.17g 0 1", state, gen, open_until)
  end
  if state == "half_open" then
    redis.call("ZREM", KEYS[3], ARGV[8])
    if weight > 0 or trip_now then
      trip(retry_after, trip_now, draw)
    else
      successes = successes + 1
      if successes >= success_threshold then
        close()
      end
    end
  elseif state == "closed" then
    local width = window / buckets
    local current = math.floor(now / width)
    local oldest = current - buckets + 1
    local slices = redis.call("HGETALL", KEYS[2])
    local calls, weights = 0, 0
    local this_calls, this_weight = 0, 0
    for i = 1, #slices, 2 do
      local index = tonumber(slices[i])
      local c, w = string.match(slices[i + 1], "^(%S+) (%S+)$")
      if index < oldest then
        redis.call("HDEL", KEYS[2], slices[i])
      elseif index == current then
        this_calls, this_weight = tonumber(c), tonumber(w)
      else
        calls = calls + tonumber(c)
        weights = weights + tonumber(w)
      end
    end
    this_calls = this_calls + tonumber(ARGV[13])
    this_weight = this_weight + weight
    redis.call("HSET", KEYS[2], current, string.format("%d %.17g", this_calls, this_weight))
    redis.call("PEXPIRE", KEYS[2], math.ceil(window * 1000) + 1000)
    calls = calls + this_calls
    weights = weights + this_weight
    if trip_now or (calls >= minimum_calls and weights >= threshold) then
      trip(retry_after, trip_now, draw)
    end
  end
  save()
  local changed = (state ~= before_state or gen ~= before_gen) and 1 or 0
  return string.format("%s %d %.17g %d 0", state, gen, open_until, changed)
end

if op == "release" then
  if state == "half_open" and tonumber(ARGV[7]) == gen then
    redis.call("ZREM", KEYS[3], ARGV[8])
  end
  return state
end

if op == "force" then
  local target = ARGV[7]
  if target == "closed" then
    close()
  else
    state = target
    gen = gen + 1
    redis.call("DEL", KEYS[2], KEYS[3])
  end
  save()
  return string.format("%s %d %.17g", state, gen, open_until)
end

-- read
local slices = redis.call("HGETALL", KEYS[2])
local current = math.floor(now / (window / buckets))
local calls, weights = 0, 0
for i = 1, #slices, 2 do
  if tonumber(slices[i]) > current - buckets then
    local c, w = string.match(slices[i + 1], "^(%S+) (%S+)$")
    calls = calls + tonumber(c)
    weights = weights + tonumber(w)
  end
end
redis.call("ZREMRANGEBYSCORE", KEYS[3], "-inf", string.format(fmt, now))
return string.format("%s %d %.17g %d %d %.17g %d", state, gen, open_until, trips, calls, weights,
  redis.call("ZCARD", KEYS[3]))
