-- Deletes a lock or lease only while it still holds the caller's token, so a
-- holder that lost it (expired, taken over) never deletes the new holder's.
-- KEYS[1] key    the lock or lease
-- ARGV[1] token  the value the caller set
local key = KEYS[1]
local token = ARGV[1]
if redis.call('GET', key) == token then
  return redis.call('DEL', key)
end
return 0
