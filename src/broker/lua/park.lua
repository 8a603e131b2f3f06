-- Park an ETA message until due: into the ETA index with the queue to
-- return it to, then forgotten (so no visibility timeout redelivers it).
--
-- KEYS[1..4] the slot's (slot.lua)
-- KEYS[5] eta_index_key     rmulti.eta (tag -> due time)
-- KEYS[6] eta_messages_key  rmulti.eta.messages (tag -> '<queue key>\n<raw>')
-- KEYS[7] parked_by_key     rmulti.eta.node.<node> (tags this node parked)
-- ARGV[1] tag        the message's delivery tag (its task id when it has none)
-- ARGV[2] due        the ETA, Unix seconds
-- ARGV[3] queue_key  the list it goes back to
-- ARGV[4] raw        the message
local eta_index_key = KEYS[5]
local eta_messages_key = KEYS[6]
local parked_by_key = KEYS[7]
local tag = ARGV[1]
local due = ARGV[2]
local queue_key = ARGV[3]
local raw = ARGV[4]

redis.call('ZADD', eta_index_key, due, tag)
redis.call('HSET', eta_messages_key, tag, queue_key .. '\n' .. raw)
redis.call('SADD', parked_by_key, tag)
return forget(tag)
