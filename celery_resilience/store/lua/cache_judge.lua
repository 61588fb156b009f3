-- Add judgements to cached entries' evidence, each keeping its latest.
--
-- KEYS[1]  entries hash (an entry must still be there), KEYS[2] evidence hash: id -> JSON
--          list of [similarity, agreed (0 or 1)], oldest first
-- ARGV[1]  how many judgements an entry keeps; then per judgement: ARGV[i] entry id,
--          ARGV[i+1] similarity, ARGV[i+2] agreed (0 or 1)
-- Returns  how many entries took a judgement (an evicted one takes none).
-- A list is never empty once written, so cjson never has an empty table to encode.

local keep = tonumber(ARGV[1])
local judged = 0
for i = 2, #ARGV, 3 do
  local id = ARGV[i]
  if redis.call("HEXISTS", KEYS[1], id) == 1 then
    local raw = redis.call("HGET", KEYS[2], id)
    local kept = raw and cjson.decode(raw) or {}
    kept[#kept + 1] = {tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])}
    local out = {}
    for j = math.max(1, #kept - keep + 1), #kept do
      out[#out + 1] = kept[j]
    end
    redis.call("HSET", KEYS[2], id, cjson.encode(out))
    judged = judged + 1
  end
end
return judged
