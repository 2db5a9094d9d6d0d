-- Delete a consumer from the group, but only while it holds no pending entry. The check and the
-- deletion are one step: XGROUP DELCONSUMER drops the consumer's pending entries with it, and a
-- consumer thought dead may have read entries since it was last looked at.
-- KEYS[1] the user's stream; ARGV[1] group, ARGV[2] consumer name.
-- Returns 1 when the consumer is gone from the group, 0 when it holds entries and was kept.
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #pending > 0 then return 0 end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
