-- Acknowledge and delete entries whose rows are committed, in one step, so that no entry is
-- ever acknowledged yet left in the stream (it would count as backlog forever).
-- KEYS[1] the user's stream, KEYS[2] its failures hash; ARGV[1] group, ARGV[2..] entry ids.
-- Returns the number of entries acknowledged.
local acked = redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 2))
redis.call('XDEL', KEYS[1], unpack(ARGV, 2))
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('HDEL', KEYS[2], unpack(ARGV, 2))
end
return acked
