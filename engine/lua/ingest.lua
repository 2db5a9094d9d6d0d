-- Append messages to users' streams, each user's atomically with its backlog cap and rate limit.
-- One call may carry several users (a web process's flush, on one Redis) or one (on Redis
-- Cluster, where a call touches one slot); each user's part is independent of the others.
-- KEYS[2u-1] user u's stream, KEYS[2u] the token bucket of its ingest path
-- ARGV[1] consumer group, ARGV[2] now (ms), then per user: refill rate (tokens/s, 0 = no
-- limit), bucket size, backlog cap, message count n, and the n encoded messages.
-- Returns one reply per user, {created, r1, r2, ...}: created is 1 when the stream and its
-- group were made by this call (the caller then registers the queue); each r is the new entry
-- id, "B" (backlog full) or "R" (rate limited). Refusals are a suffix: once a message is
-- refused, so are the rest. A user whose commands fail gets that error as its reply, and the
-- users after it are appended all the same.
local group, now = ARGV[1], tonumber(ARGV[2])

local function call(...)
  local reply = redis.pcall(...)
  if type(reply) == 'table' and reply.err then
    error(reply, 0)
  end
  return reply
end

local function append(stream, bucket, rate, burst, cap, first, n)
  local created, length = 0, 0
  if call('EXISTS', stream) == 0 then
    call('XGROUP', 'CREATE', stream, group, '0', 'MKSTREAM')
    created = 1
  else
    length = call('XLEN', stream)
  end
  local by_backlog = math.max(0, math.min(n, cap - length))

  local by_rate = n
  local tokens, at = 0, now
  if rate > 0 then
    local state = call('HMGET', bucket, 'tokens', 'at')
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
    call('HSET', bucket, 'tokens', tokens, 'at', at)
    call('PEXPIRE', bucket, math.ceil((burst - tokens) * 1000 / rate) + 1000)
  end

  local result = {created}
  for i = 1, n do
    if i <= accepted then
      result[i + 1] = call('XADD', stream, '*', 'd', ARGV[first + i - 1])
    elseif i > by_backlog then
      result[i + 1] = 'B'
    else
      result[i + 1] = 'R'
    end
  end
  return result
end

local replies, at = {}, 3
for user = 1, #KEYS / 2 do
  local rate, burst = tonumber(ARGV[at]), tonumber(ARGV[at + 1])
  local cap, n = tonumber(ARGV[at + 2]), tonumber(ARGV[at + 3])
  local ok, reply = pcall(append, KEYS[2 * user - 1], KEYS[2 * user], rate, burst, cap,
                          at + 4, n)
  if ok then
    replies[user] = reply
  elseif type(reply) == 'table' and reply.err then
    replies[user] = reply
  else
    replies[user] = {err = tostring(reply)}
  end
  at = at + 4 + n
end
return replies
