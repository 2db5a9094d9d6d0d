-- Append messages to one user's stream, atomically with its backlog cap and rate limit.
-- KEYS[1] the user's stream, KEYS[2] the token bucket of the ingest path
-- ARGV[1] consumer group, ARGV[2] now (ms), ARGV[3] refill rate (tokens/s, 0 = no limit),
-- ARGV[4] bucket size, ARGV[5] backlog cap, ARGV[6..] one encoded message each.
-- Returns {created, r1, r2, ...}: created is 1 when the stream and its group were made by this
-- call (the caller then registers the queue); each r is the new entry id, "B" (backlog full)
-- or "R" (rate limited). Refusals are a suffix: once a message is refused, so are the rest.
local stream, bucket = KEYS[1], KEYS[2]
local now, rate = tonumber(ARGV[2]), tonumber(ARGV[3])
local burst, cap = tonumber(ARGV[4]), tonumber(ARGV[5])
local n = #ARGV - 5

local created, length = 0, 0
if redis.call('EXISTS', stream) == 0 then
  redis.call('XGROUP', 'CREATE', stream, ARGV[1], '0', 'MKSTREAM')
  created = 1
else
  length = redis.call('XLEN', stream)
end
local by_backlog = math.max(0, math.min(n, cap - length))

local by_rate = n
local tokens, at = 0, now
if rate > 0 then
  local state = redis.call('HMGET', bucket, 'tokens', 'at')
  tokens = tonumber(state[1]) or burst
  at = tonumber(state[2]) or now
  if now > at then
    tokens = math.min(burst, tokens + (now - at) * rate / 1000)
    at = now
  end
  by_rate = math.min(n, math.floor(tokens))
end

local accepted = math.min(by_backlog, by_rate)
if rate > 0 and accepted > 0 then
  tokens = tokens - accepted
  redis.call('HSET', bucket, 'tokens', tokens, 'at', at)
  redis.call('PEXPIRE', bucket, math.ceil((burst - tokens) * 1000 / rate) + 1000)
end

local result = {created}
for i = 1, n do
  if i <= accepted then
    result[i + 1] = redis.call('XADD', stream, '*', 'd', ARGV[5 + i])
  elseif i > by_backlog then
    result[i + 1] = 'B'
  else
    result[i + 1] = 'R'
  end
end
return result
