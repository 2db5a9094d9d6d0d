-- A user's socket.io connection closed on one web instance.
-- KEYS[1] the user's connections hash; ARGV[1] web instance.
-- Returns the user's remaining connections across all instances.
if redis.call('HINCRBY', KEYS[1], ARGV[1], -1) <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
local total = 0
for _, count in ipairs(redis.call('HVALS', KEYS[1])) do
  total = total + tonumber(count)
end
return total
