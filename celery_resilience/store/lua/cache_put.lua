-- Add one entry to a semantic cache, and evict what is too old or too many.
--
-- KEYS[1]  entries hash: id -> entry JSON (with its "terms")
-- KEYS[2]  order sorted set: id scored by its last use
-- KEYS[3]  evidence hash: id -> judgements JSON (dropped with the entry)
-- ARGV[1]  now, ARGV[2] ttl seconds, ARGV[3] max entries, ARGV[4] id, ARGV[5] entry JSON,
-- ARGV[6]  term-set key prefix (same hash tag), ARGV[7..] the entry's index terms
-- Returns  the number of entries evicted.

local now, ttl, max_entries = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local prefix = ARGV[6]

local function evict(id)
  local raw = redis.call("HGET", KEYS[1], id)
  if raw then
    for _, term in ipairs(cjson.decode(raw)["terms"]) do
      redis.call("SREM", prefix .. term, id)
    end
  end
  redis.call("HDEL", KEYS[1], id)
  redis.call("ZREM", KEYS[2], id)
  redis.call("HDEL", KEYS[3], id)
end

redis.call("HSET", KEYS[1], ARGV[4], ARGV[5])
redis.call("ZADD", KEYS[2], now, ARGV[4])
for i = 7, #ARGV do
  redis.call("SADD", prefix .. ARGV[i], ARGV[4])
end

local evicted = 0
for _, id in ipairs(redis.call("ZRANGEBYSCORE", KEYS[2], "-inf", now - ttl)) do
  evict(id)
  evicted = evicted + 1
end
local excess = redis.call("ZCARD", KEYS[2]) - max_entries
if excess > 0 then
  for _, id in ipairs(redis.call("ZRANGE", KEYS[2], 0, excess - 1)) do
    evict(id)
    evicted = evicted + 1
  end
end
return evicted
