-- BATCH: finish a batch, then reserve the next one (after store_result.lua,
-- slot.lua and task_rules.lua). A child on a deep queue with fast tasks
-- reserves up to `want` messages in one call and finishes all of them in the
-- next.
--
-- KEYS[1..4] the slot's (slot.lua)
-- KEYS[5] batch_key        rmulti.batch.<node>.<slot>: the batch, in order
-- KEYS[6] batch_state_key  rmulti.batchstate.<node>.<slot>: '<gen> <queue key>'
-- KEYS[7] revoked_key      rmulti.revoked (task id -> expiry)
-- KEYS[8] events_key       rmulti.events.<node> (task events on: '1')
-- KEYS[9..] the queue keys, in consume order
-- ARGV[1] now               Unix seconds
-- ARGV[2] finish_gen        the batch to finish ('' none)
-- ARGV[3] gen               the generation of the batch to reserve
-- ARGV[4] want              messages to reserve at most ('0' none)
-- ARGV[5] share             the node's pool size: what a batch leaves on the queue
-- ARGV[6] early_by_default  tasks ack early unless listed ('1'/'0')
-- ARGV[7] result_expires    seconds (0 none)
-- ARGV[8] backend_db        the result db ('' when it is the broker's db)
-- ARGV[9] broker_db         the broker db, selected back after the stores
-- ARGV[10] event_channel    a task-events message to PUBLISH ('' none)
-- ARGV[11] event_payload
-- ARGV[12] n_results        how many (task id, result meta) pairs follow
-- ARGV[13..12+2n] task id, result meta ('' none) of each finished task
-- ARGV[13+2n..] task names whose ack policy is not the default
--
-- Every message of a batch is acked early when reserved (only fresh
-- protocol-2 messages without an ETA whose task acks early are taken): it is
-- out of the queue and never in kombu's unacked, and the batch list is its
-- held state. While the child lives, the main process tells the started from
-- the unstarted ones by the child's progress word (shared memory); after a
-- node's death, the ones still listed are recorded lost (never run twice).
--
-- The finish stores each result (SETEX + PUBLISH, never over a SUCCESS),
-- publishes the batch's task events, and forgets the batch if it is still
-- generation `finish_gen`: the messages after the first `n_results` (the
-- child stopped before them) go back to the head of their queue. The reserve takes nothing when the slot's held
-- list or a batch list is not empty (a dead child's, handled elsewhere), or
-- when the first non-empty queue holds fewer than 2 x `share` messages: the
-- batch takes at most a `share`-th of the queue, so idle siblings always
-- find work. It stops at the first message it may not batch (left on the
-- queue for the one-message path).
-- Reply: {events on, source queue key, {messages}, {revoked flags}}; the
-- list of messages is empty when none was reserved. A batch of generation
-- `gen` already listed (this child's own, whose reply was lost) is
-- returned again.
local batch_key = KEYS[5]
local batch_state_key = KEYS[6]
local revoked_key = KEYS[7]
local events_key = KEYS[8]
local first_queue = 9
local now = ARGV[1]
local finish_gen = ARGV[2]
local gen = ARGV[3]
local want = tonumber(ARGV[4])
local share = tonumber(ARGV[5])
local early_by_default = ARGV[6]
local result_expires = ARGV[7]
local backend_db = ARGV[8]
local broker_db = ARGV[9]
local event_channel = ARGV[10]
local event_payload = ARGV[11]
local n_results = tonumber(ARGV[12])
local first_result = 13
local first_exception = first_result + 2 * n_results

local function gen_of(state)
  if not state then return nil end
  local sp = string.find(state, ' ', 1, true)
  if not sp then return state, '' end
  return string.sub(state, 1, sp - 1), string.sub(state, sp + 1)
end

if n_results > 0 then
  if backend_db ~= '' then redis.call('SELECT', backend_db) end
  for i = first_result, first_exception - 1, 2 do
    if ARGV[i + 1] ~= '' then
      store_result('celery-task-meta-' .. ARGV[i], ARGV[i + 1], result_expires)
    end
  end
  if backend_db ~= '' then redis.call('SELECT', broker_db) end
end
if event_channel ~= '' then
  redis.call('PUBLISH', event_channel, event_payload)
end
local state_gen, state_queue = gen_of(redis.call('GET', batch_state_key))
if finish_gen ~= '' and state_gen == finish_gen then
  -- The child stopped early (a slow task, a stop): what it did not run
  -- goes back to the head of its queue, in order, for any child to take.
  local rest = redis.call('LRANGE', batch_key, n_results, -1)
  for i = #rest, 1, -1 do
    redis.call('RPUSH', state_queue, rest[i])
  end
  redis.call('DEL', batch_key, batch_state_key)
  state_gen = nil
end
local events_on = 0
if redis.call('GET', events_key) == '1' then events_on = 1 end
local none = {events_on, '', {}, {}}
if want < 1 then
  return none
end
if state_gen == gen then
  -- Reserved by this very call before, its reply lost: the same batch again.
  local msgs = redis.call('LRANGE', batch_key, 0, -1)
  local revoked = {}
  for i, m in ipairs(msgs) do
    local ok, env = pcall(cjson.decode, m)
    local id = ok and type(env) == 'table' and type(env['headers']) == 'table' and env['headers']['id']
    revoked[i] = (type(id) == 'string') and is_revoked(revoked_key, id, now) or 0
  end
  return {events_on, state_queue, msgs, revoked}
end
if state_gen or redis.call('EXISTS', held_key, batch_key) > 0 then
  return none
end
local src = nil
local depth = 0
for i = first_queue, #KEYS do
  depth = redis.call('LLEN', KEYS[i])
  if depth > 0 then
    src = KEYS[i]
    break
  end
end
if not src then
  return none
end
local n = math.min(want, math.floor(depth / share))
if n < 2 then
  return none
end
local msgs = {}
local revoked = {}
-- Whether a message may join a batch: returns its task id, or nil.
local function batchable(msg)
  local ok, env = pcall(cjson.decode, msg)
  if not (ok and type(env) == 'table' and type(env['headers']) == 'table') then return nil end
  local headers = env['headers']
  if type(headers['task']) ~= 'string' or type(headers['id']) ~= 'string'
      or type(headers['eta']) == 'string' then
    return nil
  end
  if acks_early(headers['task'], early_by_default, first_exception) then
    return headers['id']
  end
  return nil
end

for _ = 1, n do
  -- Moved first and moved back if it may not join: one command, not two,
  -- for the usual message.
  local msg = redis.call('LMOVE', src, batch_key, 'RIGHT', 'RIGHT')
  local id = batchable(msg)
  if not id then
    redis.call('LMOVE', batch_key, src, 'RIGHT', 'RIGHT')
    break
  end
  msgs[#msgs + 1] = msg
  revoked[#revoked + 1] = is_revoked(revoked_key, id, now)
end
if #msgs == 0 then
  return none
end
redis.call('SET', batch_state_key, gen .. ' ' .. src)
return {events_on, src, msgs, revoked}
