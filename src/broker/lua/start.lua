-- Early ack at task start: out of kombu's unacked (Celery acks here), but
-- the held list keeps the message and its state says it started, so a node
-- that dies now still knows the task's outcome must be recorded, not re-run.
--
-- KEYS[1..4] the slot's (slot.lua)
-- ARGV[1] tag      the message's delivery tag ('' none)
-- ARGV[2] task_id  the task's id
local tag = ARGV[1]
local task_id = ARGV[2]

unregister(tag)
redis.call('SET', state_key, 'started:' .. task_id)
return 1
