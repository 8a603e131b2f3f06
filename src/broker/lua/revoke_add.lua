-- REVOKE_ADD: adds members to a revoked set (task ids to `rmulti.revoked`,
-- or JSON stamp values to `rmulti.revoked.stamp.<header>`) and trims it
-- (expired entries, then the oldest beyond the size limit). The key itself
-- expires with its newest entry, so a stamp header revoked once does not
-- leave a set behind.
--
-- KEYS[1] revoked_key  the set
-- ARGV[1] until        when the new entries expire, Unix seconds
-- ARGV[2] now          Unix seconds
-- ARGV[3] max_size     entries kept at most
-- ARGV[4] ttl          seconds the key outlives this write
-- ARGV[5..] the members
local revoked_key = KEYS[1]
local until_ = ARGV[1]
local now = ARGV[2]
local max_size = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
local first_member = 5

for i = first_member, #ARGV do
  redis.call('ZADD', revoked_key, until_, ARGV[i])
end
redis.call('ZREMRANGEBYSCORE', revoked_key, '-inf', now)
local extra = redis.call('ZCARD', revoked_key) - max_size
if extra > 0 then
  redis.call('ZREMRANGEBYRANK', revoked_key, 0, extra - 1)
end
if ttl > 0 and redis.call('EXISTS', revoked_key) == 1 then
  redis.call('EXPIRE', revoked_key, ttl)
end
return 1
