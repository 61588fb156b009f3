-- A provider's retry budget (the arithmetic of providers/retry_budget.py:retry_allowed):
-- count first attempts, and take one retry when the window's retries stay within
-- minimum + ratio * first attempts.
--
-- KEYS[1]  hash of slices: "f:<slice>" first attempts, "r:<slice>" retries
-- ARGV[1]  now in seconds, or "" to use the Redis server's TIME
-- ARGV[2]  ratio;  ARGV[3] window in seconds;  ARGV[4] minimum;  ARGV[5] slices
-- ARGV[6]  first attempts to add;  ARGV[7] "1" to ask for a retry
-- Returns  1 when the retry is taken (or none was asked), 0 when the budget is spent.

local now = clock(ARGV[1])
local ratio, window = tonumber(ARGV[2]), tonumber(ARGV[3])
local minimum, slices = tonumber(ARGV[4]), tonumber(ARGV[5])
local current = math.floor(now / (window / slices))

if tonumber(ARGV[6]) > 0 then
  redis.call("HINCRBY", KEYS[1], "f:" .. current, tonumber(ARGV[6]))
end
local allowed = 1
if ARGV[7] == "1" then
  local firsts, retries = 0, 0
  local fields = redis.call("HGETALL", KEYS[1])
  for i = 1, #fields, 2 do
    local kind, slice = string.match(fields[i], "^(%a):(%-?%d+)$")
    slice = tonumber(slice)
    if slice <= current - slices then
      redis.call("HDEL", KEYS[1], fields[i])
    elseif kind == "f" then
      firsts = firsts + tonumber(fields[i + 1])
    else
      retries = retries + tonumber(fields[i + 1])
    end
  end
  if retries + 1 <= minimum + ratio * firsts then
    redis.call("HINCRBY", KEYS[1], "r:" .. current, 1)
  else
    allowed = 0
  end
end
redis.call("PEXPIRE", KEYS[1], math.ceil(window * 2000))
return allowed
