-- Give up an engine's hold on one user's stream, if it still holds it.
-- KEYS[1] the lease; ARGV[1] engine consumer name. Returns 1 when released.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
