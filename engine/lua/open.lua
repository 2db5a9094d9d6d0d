-- A user's socket.io connection opened on one web instance: count it and make sure the user's
-- stream and consumer group exist. The group is created even when the stream exists (its group
-- destroyed by hand, say), reading from the first entry; BUSYGROUP, the usual case, is fine.
-- KEYS[1] the user's stream, KEYS[2] its connections hash; ARGV[1] group, ARGV[2] web instance.
-- Returns 1 when the stream was created by this call, 0 when it already existed.
redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
local created = 0
if redis.call('EXISTS', KEYS[1]) == 0 then
  created = 1
end
local reply = redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')
if type(reply) == 'table' and reply.err and not string.find(reply.err, 'BUSYGROUP', 1, true) then
  return reply
end
return created
