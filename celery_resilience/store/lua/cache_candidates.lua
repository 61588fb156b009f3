-- The entries sharing most index terms with a question, best first.
--
-- KEYS[1]  entries hash, KEYS[2] order sorted set, KEYS[3] evidence hash, KEYS[4] a scratch
--          key (deleted before returning), KEYS[5..] the question's term sets (one hash tag)
-- ARGV[1]  how many candidates, ARGV[2] now, ARGV[3] ttl seconds, ARGV[4] at most how many
--          of the question's terms to use, rarest first, ARGV[5] how many entries they may
--          name together (common words name thousands and discriminate nothing)
-- Returns  a flat list: entry JSON, its evidence ("" when none), entry JSON, evidence, ...
-- ZUNIONSTORE over sets scores each member by the number of sets holding it: the overlap.

if #KEYS < 5 then
  return {}
end
local sized = {}
for i = 5, #KEYS do
  local size = redis.call("SCARD", KEYS[i])
  if size > 0 then
    sized[#sized + 1] = {KEYS[i], size}
  end
end
if #sized == 0 then
  return {}
end
table.sort(sized, function(a, b) return a[2] < b[2] end)
local terms = {}
local gathered = 0
for i = 1, math.min(tonumber(ARGV[4]), #sized) do
  if i > 1 and gathered + sized[i][2] > tonumber(ARGV[5]) then
    break
  end
  gathered = gathered + sized[i][2]
  terms[#terms + 1] = sized[i][1]
end
redis.call("ZUNIONSTORE", KEYS[4], #terms, unpack(terms))
local best = redis.call("ZREVRANGE", KEYS[4], 0, tonumber(ARGV[1]) - 1, "WITHSCORES")
redis.call("DEL", KEYS[4])
local oldest = tonumber(ARGV[2]) - tonumber(ARGV[3])
local out = {}
for i = 1, #best, 2 do
  local used = redis.call("ZSCORE", KEYS[2], best[i])
  if used and tonumber(used) > oldest then
    local raw = redis.call("HGET", KEYS[1], best[i])
    if raw then
      out[#out + 1] = raw
      out[#out + 1] = redis.call("HGET", KEYS[3], best[i]) or ""
    end
  end
end
return out
