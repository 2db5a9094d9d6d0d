-- Take or renew an engine's exclusive hold on one user's stream.
-- KEYS[1] the lease; ARGV[1] engine consumer name, ARGV[2] time to live (ms).
-- Returns 1 when the engine holds the lease, 0 when another engine does.
local holder = redis.call('GET', KEYS[1])
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
