-- REVOKE_MARK: Celery 5.7's revoke command's store (after
-- store_result.lua): REVOKED is stored for an id unless its stored state is
-- ready or was set by a worker that started it, i.e. only when there is
-- none, or it is PENDING, RECEIVED, RETRY or REJECTED.
--
-- KEYS[1] result_key  celery-task-meta-<id>
-- ARGV[1] meta        the REVOKED meta, JSON
-- ARGV[2] expires     seconds, 0 for none
-- Returns 1 when stored, else 0.
local result_key = KEYS[1]
local meta = ARGV[1]
local expires = ARGV[2]

local old = redis.call('GET', result_key)
if old then
  local ok, stored = pcall(cjson.decode, old)
  local status = ok and type(stored) == 'table' and stored['status'] or nil
  if status ~= 'PENDING' and status ~= 'RECEIVED' and status ~= 'RETRY' and status ~= 'REJECTED' then
    return 0
  end
end
return store_result(result_key, meta, expires)
