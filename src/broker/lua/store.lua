-- Stores one result (after store_result.lua).
--
-- KEYS[1] result_key  celery-task-meta-<id>
-- ARGV[1] meta        the result meta, JSON
-- ARGV[2] expires     seconds, 0 for none
-- Returns 1 when stored, 0 when a SUCCESS was there already.
local result_key = KEYS[1]
local meta = ARGV[1]
local expires = ARGV[2]

return store_result(result_key, meta, expires)
