-- Ack: done with the held message, its outcome stored (or not wanted).
--
-- KEYS[1..4] the slot's (slot.lua)
-- ARGV[1] tag  the message's delivery tag ('' none)
local tag = ARGV[1]

return forget(tag)
