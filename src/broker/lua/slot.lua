-- The start of every slot script: the slot's keys, always its first four,
-- and the steps every script shares.
--
-- KEYS[1] held_key           the slot's held list
-- KEYS[2] unacked_key        kombu's unacked hash (tag -> [message, exchange, routing key])
-- KEYS[3] unacked_index_key  kombu's unacked_index (tag -> time)
-- KEYS[4] state_key          the slot's state ('registered' or 'started:<id>[ <token>]')
local held_key = KEYS[1]
local unacked_key = KEYS[2]
local unacked_index_key = KEYS[3]
local state_key = KEYS[4]

-- Out of kombu's unacked by delivery tag ('' when the message has none).
local function unregister(tag)
  if tag ~= '' then
    redis.call('ZREM', unacked_index_key, tag)
    redis.call('HDEL', unacked_key, tag)
  end
end

-- The slot emptied: held list and state.
local function empty_slot()
  redis.call('DEL', held_key, state_key)
end

-- Done with the held message: out of kombu's unacked, out of the held list,
-- no state.
local function forget(tag)
  unregister(tag)
  empty_slot()
  return 1
end
