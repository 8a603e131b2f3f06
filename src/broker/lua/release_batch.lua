-- Release a dead child's batch (the main process, after its death): the
-- messages from position `from` on never started and go back to the head of
-- their queue, in their order; the batch is then forgotten. The ones before
-- `from` had their outcome recorded by the caller first.
--
-- KEYS[1..4] the slot's (slot.lua)
-- KEYS[5] batch_key        rmulti.batch.<node>.<slot>
-- KEYS[6] batch_state_key  rmulti.batchstate.<node>.<slot>
-- ARGV[1] gen   the batch's generation as the caller read it
-- ARGV[2] from  0-based position of the first message to restore
-- Returns how many were restored (0 when the batch is no longer `gen`).
local batch_key = KEYS[5]
local batch_state_key = KEYS[6]
local gen = ARGV[1]
local from = tonumber(ARGV[2])

local state = redis.call('GET', batch_state_key)
if not state then return 0 end
local sp = string.find(state, ' ', 1, true)
if not sp or string.sub(state, 1, sp - 1) ~= gen then return 0 end
local queue_key = string.sub(state, sp + 1)
local msgs = redis.call('LRANGE', batch_key, from, -1)
-- RPUSH is the head (next served): the batch's first message goes last.
for i = #msgs, 1, -1 do
  redis.call('RPUSH', queue_key, msgs[i])
end
redis.call('DEL', batch_key, batch_state_key)
return #msgs
