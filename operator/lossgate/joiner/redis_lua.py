"""The Lua scripts of the Redis store. Each runs atomically in Redis, so the pending entry and the
counters it moves change together: two replicas racing on one label count it once.

Record of a pending prediction: `<series hash key>\\n<served_at: float64 LE><log-probabilities>`.
Series hash fields: created, predictions, count, sum, sumsq, b<i> (loss bucket i), d<i> (delay
bucket i), delay_sum, expired:<reason>.
"""

# KEYS: pending, deadlines, done, outcomes, series-set, series hash keys...
# ARGV: capacity, now, duplicates, stale, n, then per item: id, series index (1-based), deadline, record
PREDICT = """
local n = tonumber(ARGV[5])
local fresh, dup = {}, tonumber(ARGV[3])
for i = 0, n - 1 do
  local id = ARGV[6 + 4 * i]
  if redis.call('HEXISTS', KEYS[1], id) == 1 or redis.call('HEXISTS', KEYS[3], id) == 1 then
    dup = dup + 1
  else
    fresh[#fresh + 1] = 6 + 4 * i
  end
end
local pending = redis.call('ZCARD', KEYS[2])
if pending + #fresh > tonumber(ARGV[1]) then return {-1, pending} end
local used = {}
for _, b in ipairs(fresh) do
  local id, sk = ARGV[b], KEYS[5 + tonumber(ARGV[b + 1])]
  redis.call('HSET', KEYS[1], id, ARGV[b + 3])
  redis.call('ZADD', KEYS[2], ARGV[b + 2], id)
  used[sk] = (used[sk] or 0) + 1
end
for sk, c in pairs(used) do
  redis.call('HINCRBY', sk, 'predictions', c)
  redis.call('HSETNX', sk, 'created', ARGV[2])
  redis.call('SADD', KEYS[5], sk)
end
if dup > 0 then redis.call('HINCRBY', KEYS[4], 'prediction_duplicate', dup) end
if tonumber(ARGV[4]) > 0 then redis.call('HINCRBY', KEYS[4], 'prediction_stale', ARGV[4]) end
return {#fresh, dup}
"""

# KEYS: pending, deadlines, done, forget, outcomes, series hash keys...
# ARGV: forget_at, n, duplicates, late, unknown, then per item: id, series index, loss, loss^2,
#       loss bucket, delay bucket, delay
LABEL = """
local n = tonumber(ARGV[2])
local joined, dup, late, unknown = 0, tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local acc = {}  -- per series: the batch's increments, written once per series at the end
for i = 0, n - 1 do
  local b = 6 + 7 * i
  local id = ARGV[b]
  if redis.call('HDEL', KEYS[1], id) == 1 then
    redis.call('ZREM', KEYS[2], id)
    redis.call('HSET', KEYS[3], id, '1')
    redis.call('ZADD', KEYS[4], ARGV[1], id)
    local sk = KEYS[5 + tonumber(ARGV[b + 1])]
    local a = acc[sk]
    if not a then
      a = {count = 0, sum = 0, sumsq = 0, delay_sum = 0, fields = {}}
      acc[sk] = a
    end
    a.count = a.count + 1
    a.sum = a.sum + tonumber(ARGV[b + 2])
    a.sumsq = a.sumsq + tonumber(ARGV[b + 3])
    a.delay_sum = a.delay_sum + tonumber(ARGV[b + 6])
    local fb, fd = 'b' .. ARGV[b + 4], 'd' .. ARGV[b + 5]
    a.fields[fb] = (a.fields[fb] or 0) + 1
    a.fields[fd] = (a.fields[fd] or 0) + 1
    joined = joined + 1
  else  -- another replica joined or expired it since it was read
    local st = redis.call('HGET', KEYS[3], id)
    if st == '1' then dup = dup + 1 elseif st == '2' then late = late + 1 else unknown = unknown + 1 end
  end
end
for sk, a in pairs(acc) do
  redis.call('HINCRBY', sk, 'count', a.count)
  redis.call('HINCRBYFLOAT', sk, 'sum', string.format('%.17g', a.sum))
  redis.call('HINCRBYFLOAT', sk, 'sumsq', string.format('%.17g', a.sumsq))
  redis.call('HINCRBYFLOAT', sk, 'delay_sum', string.format('%.17g', a.delay_sum))
  for f, v in pairs(a.fields) do redis.call('HINCRBY', sk, f, v) end
end
local counts = {label_joined = joined, label_duplicate = dup, label_late = late, label_unknown = unknown}
for name, v in pairs(counts) do
  if v > 0 then redis.call('HINCRBY', KEYS[5], name, v) end
end
return {joined, dup, late, unknown}
"""

# KEYS: pending, deadlines, done, forget; ARGV: now, limit, grace
EXPIRE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, ARGV[2])
for i = 1, #due, 2 do
  local id = due[i]
  local rec = redis.call('HGET', KEYS[1], id)
  if rec then
    local nl = string.find(rec, '\\n', 1, true)
    redis.call('HINCRBY', string.sub(rec, 1, nl - 1), 'expired:ttl', 1)
    redis.call('HDEL', KEYS[1], id)
    redis.call('HSET', KEYS[3], id, '2')
    redis.call('ZADD', KEYS[4], tonumber(due[i + 1]) + tonumber(ARGV[3]), id)
  end
  redis.call('ZREM', KEYS[2], id)
end
local old = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, id in ipairs(old) do
  redis.call('HDEL', KEYS[3], id)
  redis.call('ZREM', KEYS[4], id)
end
return #due / 2
"""

# KEYS: lease; ARGV: replica id, lease ms. Take the lease when free, renew it when ours: 1 if ours.
LEASE = """
local holder = redis.call('GET', KEYS[1])
if holder == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
