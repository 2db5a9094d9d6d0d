-- A token bucket on its own: take `cost` tokens if the bucket holds them.
-- KEYS[1] the bucket (a hash: tokens, at)
-- ARGV[1] now (ms), ARGV[2] refill rate (tokens/s, > 0), ARGV[3] bucket size,
-- ARGV[4] cost (0 = only look whether one token is there; nothing is taken)
-- Returns 0 when the tokens were there (and were taken), else the milliseconds until they
-- will be.
local now, rate = tonumber(ARGV[1]), tonumber(ARGV[2])
local size, cost = tonumber(ARGV[3]), tonumber(ARGV[4])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or size
local at = tonumber(state[2]) or now
if now > at then
  tokens = math.min(size, tokens + (now - at) * rate / 1000)
  at = now
end
local need = math.max(cost, 1)
if tokens < need then
  return math.ceil((need - tokens) * 1000 / rate)
end
if cost > 0 then
  tokens = tokens - cost
  redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', at)
  redis.call('PEXPIRE', KEYS[1], math.ceil((size - tokens) * 1000 / rate) + 1000)
end
return 0
