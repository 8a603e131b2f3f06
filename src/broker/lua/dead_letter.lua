-- Dead-letter: keep the record, then forget the message.
--
-- KEYS[1..4] the slot's (slot.lua)
-- KEYS[5] dead_letter_key  rmulti.deadletter
-- ARGV[1] tag     the message's delivery tag ('' none)
-- ARGV[2] record  the dead-letter record, JSON
local dead_letter_key = KEYS[5]
local tag = ARGV[1]
local record = ARGV[2]

redis.call('LPUSH', dead_letter_key, record)
return forget(tag)
