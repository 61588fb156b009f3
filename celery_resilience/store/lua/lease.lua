-- Take or renew a lease, or claim a cool-down: granted when free, expired, or (for a
-- lease) already held by this owner. Expiry is judged by the store's clock (or the one
-- injected in tests); the key's own TTL only cleans up.
--
-- KEYS[1]  the lease: "<owner> <expires at>"
-- ARGV[1]  owner ("" for a cool-down: never renewable), ARGV[2] seconds,
-- ARGV[3]  now in seconds, or "" to use the Redis server's TIME
-- Returns  1 when granted, 0 when another owner (or a running cool-down) holds it.

local now = clock(ARGV[3])
local seconds = tonumber(ARGV[2])
local current = redis.call("GET", KEYS[1])
if current then
  local owner, expires = string.match(current, "^(%S*) (%S+)$")
  if tonumber(expires) > now and (ARGV[1] == "" or owner ~= ARGV[1]) then
    return 0
  end
end
redis.call("SET", KEYS[1], ARGV[1] .. " " .. string.format("%.17g", now + seconds),
  "PX", math.max(1000, math.ceil(seconds * 2000)))
return 1
