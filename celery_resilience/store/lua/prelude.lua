-- Prepended to every script by store/redis.py:load_script (Redis scripts cannot include).
--
-- The one clock of a script: the caller's time in seconds when it passes one (tests
-- inject a clock), else the Redis server's TIME, shared by every worker.
local function clock(given)
  if given ~= "" then
    return tonumber(given)
  end
  local t = redis.call("TIME")
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

