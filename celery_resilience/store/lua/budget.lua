-- A provider's budget in several units, one sliding window each (the arithmetic of
-- celery_resilience/providers/budget.py): reserve in every window or in none; settle a
-- reservation to what the provider counted and follow what its headers say is left; or
-- fill a window for a 429's wait. A window is a sorted set (entry -> when it was
-- reserved) and a hash (entry -> its cost, and "~sum" -> their sum).
--
-- KEYS     per unit: the window's sorted set, then its hash (2n keys); for "take", then
--          the provider-scope metrics hash; for "settle", then the timetable buckets
-- ARGV[1]  now in seconds, or "" to use the Redis server's TIME
-- ARGV[2]  "take", "settle" or "block"
-- ARGV[3]  provider name (the metric field's suffix);  ARGV[4] metrics TTL in seconds
-- ARGV[5]  the entry (a reservation's id);  ARGV[6] n, the number of units
-- ARGV[7..] per unit: count, span in seconds, amount, left, reset.
--          take: the amount to reserve; block: amount, the seconds nothing fits; left,
--          when the provider takes a call again, in seconds (-1: when the wait ends);
--          reset, the provider's period (-1: the span);
--          settle: amount, the cost the provider counted (-1: none); left, what the
--          provider says is left (-1: nothing said); reset, the seconds until its reset
--          (-1: unknown); then, per timetable bucket: capacity, refill per second, delta;
--          take: then the share of a window whose taking it counts as running ahead,
--          or "" not to look (a budget not shared in fair shares)
-- Returns  take: {the seconds to wait ("0" when taken), "1" when taken and some window
--          is spent faster than its rate (budget.py:running_ahead), else "0", and then
--          the calls of this size it holds beyond its rate and the seconds until its
--          oldest leaves it (budget.py:lead), else "0" and "0"};
--          block: per window, what the provider had accepted (the calls of its last
--          period) and the limit the window shows (the calls it still counts when it
--          takes a call again, plus one of their mean cost), as strings; else "0".

local now = clock(ARGV[1])
local mode = ARGV[2]
local entry = ARGV[5]
local n = tonumber(ARGV[6])
local SUM, BLOCKED, HELD = "~sum", "~blocked", "~held"

local counts, spans, amounts, lefts, resets, sums = {}, {}, {}, {}, {}, {}
for i = 1, n do
  local base = 6 + (i - 1) * 5
  counts[i], spans[i] = tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2])
  amounts[i], lefts[i], resets[i] = tonumber(ARGV[base + 3]), tonumber(ARGV[base + 4]), tonumber(ARGV[base + 5])
end

local function expire(i)
  local zset, hash = KEYS[2 * i - 1], KEYS[2 * i]
  local sum = tonumber(redis.call("HGET", hash, SUM) or "0")
  local gone = redis.call("ZRANGEBYSCORE", zset, "-inf", now - spans[i])
  for start = 1, #gone, 1000 do
    local chunk = {unpack(gone, start, math.min(#gone, start + 999))}
    for _, cost in ipairs(redis.call("HMGET", hash, unpack(chunk))) do
      sum = sum - (tonumber(cost) or 0)
    end
    redis.call("HDEL", hash, unpack(chunk))
  end
  if #gone > 0 then
    redis.call("ZREMRANGEBYSCORE", zset, "-inf", now - spans[i])
    if redis.call("ZCARD", zset) == 0 then
      sum = 0
    end
    redis.call("HSET", hash, SUM, string.format("%.17g", sum))
  end
  return sum
end

local function wait_for(i, amount)
  local excess = sums[i] + amount - counts[i]
  if excess <= 0 then
    return 0
  end
  local zset, hash = KEYS[2 * i - 1], KEYS[2 * i]
  local freed, start = 0, 0
  while true do
    local page = redis.call("ZRANGE", zset, start, start + 99, "WITHSCORES")
    if #page == 0 then
      return spans[i]
    end
    for k = 1, #page, 2 do
      freed = freed + tonumber(redis.call("HGET", hash, page[k]) or "0")
      if freed >= excess then
        return math.max(0, tonumber(page[k + 1]) + spans[i] - now)
      end
    end
    start = start + 100
  end
end

local function put(i, id, at, cost)
  local zset, hash = KEYS[2 * i - 1], KEYS[2 * i]
  local old = tonumber(redis.call("HGET", hash, id) or "0")
  sums[i] = sums[i] - old + cost
  redis.call("ZADD", zset, at, id)
  redis.call("HSET", hash, id, string.format("%.17g", cost), SUM, string.format("%.17g", sums[i]))
end

local function keep(i)
  local zset, hash = KEYS[2 * i - 1], KEYS[2 * i]
  local last = redis.call("ZRANGE", zset, -1, -1, "WITHSCORES")
  if #last == 0 then
    redis.call("DEL", zset, hash)
    return
  end
  local ttl = math.ceil((tonumber(last[2]) + spans[i] - now + 1) * 1000)
  redis.call("PEXPIRE", zset, ttl)
  redis.call("PEXPIRE", hash, ttl)
end

for i = 1, n do
  sums[i] = expire(i)
end

if mode == "take" then
  local wait = 0
  for i = 1, n do
    wait = math.max(wait, wait_for(i, math.min(amounts[i], counts[i])))
  end
  local field = (wait > 0 and "throttled@" or "admitted@") .. ARGV[3]
  if redis.call("HINCRBY", KEYS[2 * n + 1], field, 1) == 1 then
    redis.call("EXPIRE", KEYS[2 * n + 1], tonumber(ARGV[4]))
  end
  if wait > 0 then
    return {string.format("%.17g", wait), "0", "0", "0"}
  end
  local share, ahead = tonumber(ARGV[7 + 5 * n]), "0"
  for i = 1, n do
    put(i, entry, now, math.min(amounts[i], counts[i]))
    keep(i)
    if share and ahead == "0" and sums[i] > share * counts[i] then
      local recent = redis.call("ZRANGEBYSCORE", KEYS[2 * i - 1], "(" .. (now - share * spans[i]), "+inf")
      local taken = 0
      for start = 1, #recent, 1000 do
        local chunk = {unpack(recent, start, math.min(#recent, start + 999))}
        for _, cost in ipairs(redis.call("HMGET", KEYS[2 * i], unpack(chunk))) do
          taken = taken + (tonumber(cost) or 0)
        end
      end
      if taken > share * counts[i] then
        ahead = "1"
      end
    end
  end
  local lead, lead_for = 0, 0
  if ahead == "1" then  -- budget.py:lead, of the unit whose lead is most
    for i = 1, n do
      local amount = math.min(amounts[i], counts[i])
      local oldest = redis.call("ZRANGE", KEYS[2 * i - 1], 0, 0, "WITHSCORES")
      local calls, seconds = 0, 0
      if amount > 0 and #oldest > 0 then
        local since = math.min(1, (now - tonumber(oldest[2])) / spans[i])
        calls = math.max(0, (sums[i] - counts[i] * since) / amount)
        seconds = math.max(0, tonumber(oldest[2]) + spans[i] - now)
      end
      if i == 1 or calls > lead or (calls == lead and seconds > lead_for) then
        lead, lead_for = calls, seconds
      end
    end
  end
  return {"0", ahead, string.format("%.17g", lead), string.format("%.17g", lead_for)}
end

local function block(i, seconds)
  local ends = now + seconds - spans[i]
  local previous = redis.call("ZSCORE", KEYS[2 * i - 1], BLOCKED)
  if previous then
    ends = math.max(ends, tonumber(previous))
  end
  put(i, BLOCKED, ends, counts[i])
  keep(i)
end

local function staying(i, seconds)
  -- The calls (not the window's own marks) still in window i when ``seconds`` have passed,
  -- their sum and their number; and the number of calls in it now.
  local zset, hash = KEYS[2 * i - 1], KEYS[2 * i]
  local ids = redis.call("ZRANGEBYSCORE", zset, "(" .. string.format("%.17g", now + seconds - spans[i]), "+inf")
  local sum, count = 0, 0
  for start = 1, #ids, 1000 do
    local chunk = {unpack(ids, start, math.min(#ids, start + 999))}
    for k, cost in ipairs(redis.call("HMGET", hash, unpack(chunk))) do
      if chunk[k] ~= BLOCKED and chunk[k] ~= HELD then
        sum, count = sum + (tonumber(cost) or 0), count + 1
      end
    end
  end
  local calls = redis.call("ZCARD", zset)
  for _, mark in ipairs({BLOCKED, HELD}) do
    if redis.call("ZSCORE", zset, mark) then
      calls = calls - 1
    end
  end
  return sum, calls
end

if mode == "block" then
  local found = {}
  for i = 1, n do
    local hash = KEYS[2 * i]
    local own = tonumber(redis.call("HGET", hash, BLOCKED) or "0") + tonumber(redis.call("HGET", hash, HELD) or "0")
    local total = math.max(0, sums[i] - own)
    local period = resets[i] >= 0 and resets[i] or spans[i]
    local again = lefts[i] >= 0 and lefts[i] or amounts[i]
    -- staying(i, s) counts what is in the window s seconds on, over the span
    local before = staying(i, spans[i] - period)
    local stays, calls = staying(i, again + spans[i] - period)
    local limit = stays + (calls > 0 and total / calls or 0)
    found[2 * i - 1] = string.format("%.17g", before)
    found[2 * i] = string.format("%.17g", math.max(0, limit))
    block(i, amounts[i])
  end
  return found
end

-- settle
for i = 1, n do
  local zset = KEYS[2 * i - 1]
  local at = redis.call("ZSCORE", zset, entry)
  if amounts[i] >= 0 and at then
    put(i, entry, tonumber(at), amounts[i])
  end
  local reset = resets[i] >= 0 and math.min(resets[i], spans[i]) or spans[i]
  if lefts[i] >= 0 and lefts[i] < 1 then
    block(i, reset)  -- nothing left: nothing fits until the provider's reset
  elseif lefts[i] >= 1 then
    local gone = sums[i] + lefts[i] - counts[i]
    if gone < 0 then  -- the provider has less left than the window thinks: hold the difference
      local held = tonumber(redis.call("HGET", KEYS[2 * i], HELD) or "0") - gone
      put(i, HELD, now + reset - spans[i], math.min(held, counts[i]))
      keep(i)
    end
  end
end
-- The timetable: buckets "tokens stamp grace_window grace_used", given back or taken.
local first = 6 + n * 5
for j = 1, (#ARGV - first) / 3 do
  local base = first + (j - 1) * 3
  local capacity, refill, delta = tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3])
  local key = KEYS[2 * n + j]
  local tokens, stamp = capacity, now
  local state = redis.call("GET", key)
  if state then
    local t, s = string.match(state, "^(%S+) (%S+) ")
    tokens = math.min(capacity, tonumber(t) + math.max(0, now - tonumber(s)) * refill)
    stamp = math.max(now, tonumber(s))
  end
  tokens = math.min(capacity, tokens + delta)
  redis.call("SET", key, string.format("%.17g %.17g -1 0", tokens, stamp),
    "PX", math.ceil(((capacity - tokens) / refill + 1) * 1000))
end
return "0"
