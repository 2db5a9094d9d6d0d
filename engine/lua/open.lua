-- A user's socket.io connection opened on one web instance: authorize it, count it and make sure
-- the user's stream and consumer group exist. The group is created even when the stream exists
-- (its group destroyed by hand, say), reading from the first entry; BUSYGROUP, the usual case,
-- is fine.
-- KEYS[1] the user's stream, KEYS[2] its connections hash, KEYS[3] the user's
-- tokens-revoked-before record, KEYS[4] the cached account (JSON: id, role, disabled);
-- ARGV[1] group, ARGV[2] web instance, ARGV[3] the token's issued-at. The connection is
-- authorized first, and nothing is counted or created when it is refused.
-- Returns {'open', created (1 when the stream was created by this call, else 0), the cached
-- account}, {'voided', reason}, {'disabled', account} or {'uncached', ''} (the account is not
-- cached: the caller reads the database and calls again with ARGV[4] the account as read
-- there and ARGV[5] the seconds to cache it, used only when it is still not cached).
local before = redis.call('GET', KEYS[3])
if before then
  local mark = cjson.decode(before)
  -- `iat` has whole seconds: a token of the same second as the revocation counts as before.
  if tonumber(ARGV[3]) <= tonumber(mark['at']) then
    return {'voided', mark['reason']}
  end
end
local account = redis.call('GET', KEYS[4])
if not account then
  if not ARGV[4] then
    return {'uncached', ''}
  end
  account = ARGV[4]
  redis.call('SET', KEYS[4], account, 'EX', ARGV[5])
end
if cjson.decode(account)['disabled'] then
  return {'disabled', account}
end
redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
local created = 0
if redis.call('EXISTS', KEYS[1]) == 0 then
  created = 1
end
local reply = redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')
if type(reply) == 'table' and reply.err and not string.find(reply.err, 'BUSYGROUP', 1, true) then
  return reply
end
return {'open', created, account}
