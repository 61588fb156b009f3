-- Drain a bucket so that its next token is due in ARGV[2] seconds (never refill it).
-- Used when a provider answers 429: its own budget is spent, whatever ours said.
--
-- KEYS[1]  bucket: "tokens stamp grace_window grace_used" (as admit.lua writes it)
-- ARGV[1]  now in seconds, or "" to use the Redis server's TIME
-- ARGV[2]  seconds until the next token;  ARGV[3] capacity;  ARGV[4] refill per second
-- Returns  the tokens left, as a string.

local now = clock(ARGV[1])
local seconds, capacity, refill = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local tokens, stamp, gw, gu = capacity, now, -1, 0
local state = redis.call("GET", KEYS[1])
if state then
  local t, s, w, u = string.match(state, "^(%S+) (%S+) (%S+) (%S+)$")
  tokens, stamp, gw, gu = tonumber(t), tonumber(s), tonumber(w), tonumber(u)
  tokens = math.min(capacity, tokens + math.max(0, now - stamp) * refill)
  stamp = math.max(now, stamp)
end
tokens = math.min(tokens, 1 - refill * seconds)
local ttl = (capacity - tokens) / refill + 1
redis.call("SET", KEYS[1], string.format("%.17g %.17g %d %d", tokens, stamp, gw, gu), "PX", math.ceil(ttl * 1000))
return string.format("%.17g", tokens)
