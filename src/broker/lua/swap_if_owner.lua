-- Replaces a lease's value (and its time to live) only while it still holds
-- the caller's old value: a renewal, or the take-over of a dead holder's.
-- KEYS[1] key    the lease
-- ARGV[1] old    the value the caller expects
-- ARGV[2] new    the value to set
-- ARGV[3] ttl_ms its time to live, milliseconds
local key = KEYS[1]
local old, new, ttl_ms = ARGV[1], ARGV[2], ARGV[3]
if redis.call('GET', key) == old then
  redis.call('SET', key, new, 'PX', ttl_ms)
  return 1
end
return 0
