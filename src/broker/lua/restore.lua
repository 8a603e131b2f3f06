-- Restore to a queue. RPUSH puts it at the head (next to be served), as
-- kombu's restore does; LPUSH (end = 'tail') is reject-with-requeue.
--
-- KEYS[1..4] the slot's (slot.lua)
-- ARGV[1] tag        the message's delivery tag ('' none)
-- ARGV[2] queue_key  the list it goes back to
-- ARGV[3] raw        the message
-- ARGV[4] at         'head' or 'tail'
-- Returns 1 when restored, 0 when a visibility sweep had already requeued it
-- (only the held copy was dropped).
local tag = ARGV[1]
local queue_key = ARGV[2]
local raw = ARGV[3]
local at = ARGV[4]

if tag ~= '' and redis.call('GET', state_key) == 'registered'
    and redis.call('HEXISTS', unacked_key, tag) == 0 then
  -- A visibility sweep already put it back: do not queue a second copy.
  empty_slot()
  return 0
end
if at == 'tail' then
  redis.call('LPUSH', queue_key, raw)
else
  redis.call('RPUSH', queue_key, raw)
end
return forget(tag)
