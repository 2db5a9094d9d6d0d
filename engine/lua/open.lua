-- A user's socket.io connection opened on one web instance: count it and make sure the user's
-- stream and consumer group exist.
-- KEYS[1] the user's stream, KEYS[2] its connections hash; ARGV[1] group, ARGV[2] web instance.
-- Returns 1 when the stream was created by this call, 0 when it already existed.
redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')
  return 1
end
return 0
