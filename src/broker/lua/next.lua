-- NEXT: finish the handled message, then reserve the next (after
-- store_result.lua, slot.lua and task_rules.lua). One round trip per task on
-- a busy queue.
--
-- KEYS[1..4] the slot's (slot.lua)
-- KEYS[5] eta_index_key     rmulti.eta
-- KEYS[6] eta_messages_key  rmulti.eta.messages
-- KEYS[7] eta_promoted_key  rmulti.eta.promoted
-- KEYS[8] result_key        the finished task's result key ('' none)
-- KEYS[9] revoked_key       rmulti.revoked (task id -> expiry)
-- KEYS[10] events_key       rmulti.events.<node> (task events on: '1')
-- KEYS[11..] the queue keys, in consume order
-- ARGV[1] now               Unix seconds
-- ARGV[2] promote_batch     due ETA messages to promote at most ('0' skips
--                           the promotion: a child promotes a few times a
--                           second, not on every task)
-- ARGV[3] token             this child process's owner token
-- ARGV[4] early_by_default  tasks ack early unless listed ('1'/'0')
-- ARGV[5] finishing         a handled message is to be finished ('1'/'0')
-- ARGV[6] finish_tag        its delivery tag ('' none)
-- ARGV[7] finish_raw        the message itself, for one without a tag
-- ARGV[8] result            its result meta JSON ('' none)
-- ARGV[9] result_expires    seconds (0 none)
-- ARGV[10] backend_db       the result db ('' when it is the broker's db)
-- ARGV[11] broker_db        the broker db, selected back after the store
-- ARGV[12] reserve          reserve after the finish ('1'/'0')
-- ARGV[13] in_unacked       the finished message may be in unacked ('1'/'0')
-- ARGV[14..] task names whose ack policy is not the default
--
-- It first finishes the handled message: stores its result (never over a
-- stored SUCCESS; SETEX and PUBLISH together so a waiting client wakes), and
-- forgets the held message if it is still the finished one (a retry after a
-- lost reply must not drop the next message). Then it reserves: promotes due
-- ETA messages, returns the held message if any, else pops the first
-- non-empty queue key into the held list. A fresh protocol-2 message without
-- an ETA whose task acks early is acked right there (state `started:<id>
-- <token>`); any other message with a delivery tag is registered in kombu's
-- unacked structures (state `registered`).
-- Last, it looks the message's task id up in the revoked set (one ZSCORE):
-- the child then stores REVOKED and acks it instead of running it.
-- Reply: {message, source list, was promoted from the ETA park, had started
-- under another child, acked now, its id is revoked, task events are on,
-- messages left on its source queue}; the message is nil (and the flags 0)
-- when none was reserved. The depth tells the child whether a batch
-- (`batch.lua`) would pay. The events
-- flag comes back with every call, so a switch reaches the child at its
-- next reservation without a command of its own.
local eta_index_key = KEYS[5]
local eta_messages_key = KEYS[6]
local eta_promoted_key = KEYS[7]
local result_key = KEYS[8]
local revoked_key = KEYS[9]
local events_key = KEYS[10]
local first_queue = 11
local now = ARGV[1]
local promote_batch = ARGV[2]
local token = ARGV[3]
local early_by_default = ARGV[4]
local finishing = ARGV[5]
local finish_tag = ARGV[6]
local finish_raw = ARGV[7]
local result = ARGV[8]
local result_expires = ARGV[9]
local backend_db = ARGV[10]
local broker_db = ARGV[11]
local reserve = ARGV[12]
local in_unacked = ARGV[13]
local first_exception = 14

if result ~= '' then
  if backend_db ~= '' then redis.call('SELECT', backend_db) end
  store_result(result_key, result, result_expires)
  if backend_db ~= '' then redis.call('SELECT', broker_db) end
end
local emptied = false
if finishing == '1' then
  local held = redis.call('LINDEX', held_key, -1)
  if held and ((finish_tag ~= '' and string.find(held, finish_tag, 1, true)) or (finish_tag == '' and held == finish_raw)) then
    if in_unacked == '1' then
      unregister(finish_tag)
    end
    empty_slot()
    emptied = true
  end
end
local events_on = 0
if redis.call('GET', events_key) == '1' then events_on = 1 end
if reserve ~= '1' then
  return {false, '', 0, 0, 0, 0, events_on, 0}
end
local due = {}
if promote_batch ~= '0' then
  due = redis.call('ZRANGEBYSCORE', eta_index_key, '-inf', now, 'LIMIT', 0, tonumber(promote_batch))
end
for _, tag in ipairs(due) do
  local entry = redis.call('HGET', eta_messages_key, tag)
  if entry then
    local nl = string.find(entry, '\n', 1, true)
    if nl then
      redis.call('RPUSH', string.sub(entry, 1, nl - 1), string.sub(entry, nl + 1))
      redis.call('SADD', eta_promoted_key, tag)
    end
  end
  redis.call('ZREM', eta_index_key, tag)
  redis.call('HDEL', eta_messages_key, tag)
end
local msg = false
if not emptied then
  msg = redis.call('LINDEX', held_key, -1)
end
local src = ''
local started = 0
local acked = 0
local fresh = true
if msg then
  local state = redis.call('GET', state_key)
  if state then fresh = false end
  if state and string.sub(state, 1, 8) == 'started:' then
    local mine = ' ' .. token
    if string.sub(state, -#mine) == mine then
      -- Reserved and acked by this very child, whose reply was lost.
      acked = 1
    else
      started = 1
    end
  elseif state == 'registered' then
    local ok0, env0 = pcall(cjson.decode, msg)
    local tag0 = nil
    if ok0 and type(env0) == 'table' and type(env0['properties']) == 'table' then
      tag0 = env0['properties']['delivery_tag']
    end
    -- Registered once and gone from unacked since: a visibility sweep put it
    -- back on a queue (or it was acked). This copy must not run too.
    if type(tag0) == 'string' and redis.call('HEXISTS', unacked_key, tag0) == 0 then
      empty_slot()
      msg = false
      fresh = true
    end
  end
end
local depth = 0
if not msg then
  for i = first_queue, #KEYS do
    msg = redis.call('LMOVE', KEYS[i], held_key, 'RIGHT', 'LEFT')
    if msg then
      src = KEYS[i]
      depth = redis.call('LLEN', src)
      break
    end
  end
end
if not msg then
  return {false, '', 0, 0, 0, 0, events_on, 0}
end
local promoted = 0
local ok, env = pcall(cjson.decode, msg)
if fresh and ok and type(env) == 'table' and type(env['properties']) == 'table' then
  local props = env['properties']
  local tag = props['delivery_tag']
  local headers = env['headers']
  local v2 = type(headers) == 'table' and type(headers['task']) == 'string'
  -- Only a message with an ETA can have come back from the park.
  if type(tag) == 'string' and not (v2 and type(headers['eta']) ~= 'string') then
    promoted = redis.call('SREM', eta_promoted_key, tag)
  end
  local early = false
  if v2 and type(headers['id']) == 'string' and type(headers['eta']) ~= 'string' then
    early = acks_early(headers['task'], early_by_default, first_exception)
  end
  if early then
    redis.call('SET', state_key, 'started:' .. headers['id'] .. ' ' .. token)
    acked = 1
  elseif type(tag) == 'string' then
    local exchange, rk = '', ''
    local di = props['delivery_info']
    if type(di) == 'table' then
      if type(di['exchange']) == 'string' then exchange = di['exchange'] end
      if type(di['routing_key']) == 'string' then rk = di['routing_key'] end
    end
    redis.call('HSET', unacked_key, tag, '[' .. msg .. ', ' .. cjson.encode(exchange) .. ', ' .. cjson.encode(rk) .. ']')
    redis.call('ZADD', unacked_index_key, now, tag)
    redis.call('SET', state_key, 'registered')
  end
end
local revoked = 0
if ok and type(env) == 'table' and type(env['headers']) == 'table' and type(env['headers']['id']) == 'string' then
  revoked = is_revoked(revoked_key, env['headers']['id'], now)
end
return {msg, src, promoted, started, acked, revoked, events_on, depth}
