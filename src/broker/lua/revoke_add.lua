-- REVOKE_ADD: adds task ids to the revoked set and trims it (expired
-- entries, then the oldest beyond the size limit).
--
-- KEYS[1] revoked_key  rmulti.revoked
-- ARGV[1] until        when the new entries expire, Unix seconds
-- ARGV[2] now          Unix seconds
-- ARGV[3] max_size     entries kept at most
-- ARGV[4..] the task ids
local revoked_key = KEYS[1]
local until_ = ARGV[1]
local now = ARGV[2]
local max_size = tonumber(ARGV[3])
local first_id = 4

for i = first_id, #ARGV do
  redis.call('ZADD', revoked_key, until_, ARGV[i])
end
redis.call('ZREMRANGEBYSCORE', revoked_key, '-inf', now)
local extra = redis.call('ZCARD', revoked_key) - max_size
if extra > 0 then
  redis.call('ZREMRANGEBYRANK', revoked_key, 0, extra - 1)
end
return 1
