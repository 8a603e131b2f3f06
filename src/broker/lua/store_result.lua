-- store_result(key, meta, expires): the atomic form of Celery's
-- GET-then-MULTI. Skips when SUCCESS is stored, else SETEX (SET when
-- `expires` is 0) and PUBLISH on the key's own channel, so a client blocked
-- in AsyncResult.get() wakes at once. Prepended to every script that stores
-- a result.
local function store_result(key, meta, expires)
  local old = redis.call('GET', key)
  if old and string.find(old, '"status": *"SUCCESS"') then
    return 0
  end
  if tonumber(expires) > 0 then
    redis.call('SETEX', key, expires, meta)
  else
    redis.call('SET', key, meta)
  end
  redis.call('PUBLISH', key, meta)
  return 1
end
