-- The decisions the reserving scripts (`next.lua`, `batch.lua`) make about a
-- task, prepended to both so they cannot drift apart: whether its id is
-- revoked, and whether it acks early. Each takes its key and arguments as
-- parameters, since the two scripts hold them at different positions.

-- 1 when `id` is in the revoked set (`rmulti.revoked`, id -> expiry) with an
-- expiry after `now` (Unix seconds), else 0. One ZSCORE.
local function is_revoked(revoked_key, id, now)
  local until_ = redis.call('ZSCORE', revoked_key, id)
  if until_ and tonumber(until_) > tonumber(now) then return 1 end
  return 0
end

-- Whether task `name` acks early: `early_by_default` ('1'/'0'), reversed
-- for a name listed in ARGV[first_exception..].
local function acks_early(name, early_by_default, first_exception)
  local early = early_by_default == '1'
  for i = first_exception, #ARGV do
    if ARGV[i] == name then
      return not early
    end
  end
  return early
end
