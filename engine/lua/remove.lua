-- Delete a user's queue when nothing needs it: no live connection, no unwritten entry, no
-- pending entry. Runs atomically against ingest.lua, so a message is either in the stream
-- before the check (and the queue stays) or recreates the stream after it.
-- A paused queue is kept (its pause must outlive the user's absence).
-- KEYS: stream, connections, socket bucket, http bucket, failures, lease, paused,
-- subscriptions (keys.user_keys order)
-- ARGV[1] group, ARGV[2..] ids of the web instances that are alive.
-- Returns "removed", "connected", "backlog", "pending" or "paused".
local live = {}
for i = 2, #ARGV do live[ARGV[i]] = true end

local connected = 0
local conns = redis.call('HGETALL', KEYS[2])
for i = 1, #conns, 2 do
  if live[conns[i]] then
    connected = connected + tonumber(conns[i + 1])
  else
    redis.call('HDEL', KEYS[2], conns[i])
  end
end
if connected > 0 then return 'connected' end
if redis.call('EXISTS', KEYS[7]) == 1 then return 'paused' end

if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('XLEN', KEYS[1]) > 0 then return 'backlog' end
  local summary = redis.pcall('XPENDING', KEYS[1], ARGV[1])
  if type(summary) == 'table' and not summary.err and tonumber(summary[1]) > 0 then
    return 'pending'
  end
end
redis.call('DEL', unpack(KEYS))
return 'removed'
