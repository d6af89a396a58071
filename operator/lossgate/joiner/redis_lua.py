"""The Lua scripts of the Redis store. Each runs atomically in Redis, so the pending entry and the
counters it moves change together: two replicas racing on one label count it once.

Record of a pending prediction: `<series hash key>\\n<served_at: float64 LE><log-probabilities>`.
The pending hash maps an id to its one record, or, when several arms predicted it (mirrored
traffic), to `\\0` followed by each record with its length (uint32 LE) in front. The arms of one id
share the first one's deadline. Series hash fields: created, predictions, count, sum, sumsq, b<i>
(loss bucket i), d<i> (delay bucket i), delay_sum, expired:<reason>, per confidence bin i the
reliability counters k<i> (count), c<i> (sum of confidence), q<i> (correct), r<i> (sum of Brier),
and a language model's token counters tok_n, tok_nats, tok_tokens, tok_nats_sq, tok_tokens_sq,
tok_nats_tokens. Pair hash fields: created,
count, sum_a, sum_b (each version's loss summed over the pair's requests), sumsq (of the difference).
"""

# The records of a pending value (both forms).
_RECORDS = """
local function records(v)
  if string.byte(v, 1) ~= 0 then return {v} end
  local out, i = {}, 2
  while i <= #v do
    local n = struct.unpack('<I4', v, i)
    out[#out + 1] = string.sub(v, i + 4, i + 3 + n)
    i = i + 4 + n
  end
  return out
end
-- Pending predictions (arms), kept by the scripts; a store written before arms starts from ZCARD.
local function npending(k, z)
  local v = redis.call('GET', k)
  if not v then
    v = redis.call('ZCARD', z)
    redis.call('SET', k, v)
  end
  return tonumber(v)
end
"""

# KEYS: pending, deadlines, done, outcomes, series-set, npending, series hash keys...
# ARGV: capacity, now, duplicates, stale, n, then per item: id, series index (1-based), deadline,
#       record, arm prefix (the start of the series key that names model and version)
PREDICT = (
    _RECORDS
    + """
local n = tonumber(ARGV[5])
local fresh, dup, vals, new = {}, tonumber(ARGV[3]), {}, {}
for i = 0, n - 1 do
  local b = 6 + 5 * i
  local id, ap = ARGV[b], ARGV[b + 4]
  local list = vals[id]
  if list == nil and redis.call('HEXISTS', KEYS[3], id) == 0 then
    local cur = redis.call('HGET', KEYS[1], id)
    list = cur and records(cur) or {}
    if not cur then new[id] = ARGV[b + 2] end
  end
  local known = list == nil
  for _, r in ipairs(list or {}) do
    if string.sub(r, 1, #ap) == ap then known = true end
  end
  if known then
    dup = dup + 1
  else
    list[#list + 1] = ARGV[b + 3]
    vals[id] = list
    fresh[#fresh + 1] = b
  end
end
local pending = npending(KEYS[6], KEYS[2])
if pending + #fresh > tonumber(ARGV[1]) then return {-1, pending} end
redis.call('INCRBY', KEYS[6], #fresh)
for id, list in pairs(vals) do
  if #list == 1 then
    redis.call('HSET', KEYS[1], id, list[1])
  else
    local parts = {'\\0'}
    for _, r in ipairs(list) do parts[#parts + 1] = struct.pack('<I4', #r) .. r end
    redis.call('HSET', KEYS[1], id, table.concat(parts))
  end
end
for id, deadline in pairs(new) do redis.call('ZADD', KEYS[2], deadline, id) end
local used = {}
for _, b in ipairs(fresh) do
  local sk = KEYS[6 + tonumber(ARGV[b + 1])]
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
)

# Per joined arm: series index, loss, loss^2, loss bucket, delay bucket, delay, confidence bin
# (-1 for a token label), confidence, correct (0/1), Brier score, and a language model's six token
# increments (requests 0 or 1, S, T, S^2, T^2, S T; zeros for a class label).
ARM_FIELDS = 16

# KEYS: pending, deadlines, done, forget, outcomes, pair-set, npending, series hash keys..., pair keys...
# ARGV: forget_at, n, duplicates, late, unknown, number of series keys, now, then per item: id, length
#       of the pending value read, arms, pairs, per arm: the ARM_FIELDS above; per pair: pair index,
#       loss(a), loss(b), (loss(b) - loss(a))^2.
# Returns joined, duplicates, late, unknown, then the ids whose value changed since it was read (an
# arm was added): the caller scores those again.
LABEL = (
    _RECORDS
    + """
local arms_joined = 0
local n, ns = tonumber(ARGV[2]), tonumber(ARGV[6])
local joined, dup, late, unknown = 0, tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local acc, pacc, changed = {}, {}, {}  -- per series and pair: the batch's increments, written once
local b = 8
for i = 1, n do
  local id, len, na, np = ARGV[b], tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
  local arms, prs = b + 4, b + 4 + 16 * na
  b = prs + 4 * np
  local now_len = redis.call('HSTRLEN', KEYS[1], id)
  if now_len == len then
    redis.call('HDEL', KEYS[1], id)
    redis.call('ZREM', KEYS[2], id)
    redis.call('HSET', KEYS[3], id, '1')
    redis.call('ZADD', KEYS[4], ARGV[1], id)
    for j = 0, na - 1 do
      local c = arms + 16 * j
      local sk = KEYS[7 + tonumber(ARGV[c])]
      local a = acc[sk]
      if not a then
        a = {count = 0, sum = 0, sumsq = 0, delay_sum = 0, fields = {}, floats = {}, tok = {0, 0, 0, 0, 0, 0}}
        acc[sk] = a
      end
      for t = 1, 6 do a.tok[t] = a.tok[t] + tonumber(ARGV[c + 9 + t]) end
      a.count = a.count + 1
      a.sum = a.sum + tonumber(ARGV[c + 1])
      a.sumsq = a.sumsq + tonumber(ARGV[c + 2])
      a.delay_sum = a.delay_sum + tonumber(ARGV[c + 5])
      local fb, fd = 'b' .. ARGV[c + 3], 'd' .. ARGV[c + 4]
      a.fields[fb] = (a.fields[fb] or 0) + 1
      a.fields[fd] = (a.fields[fd] or 0) + 1
      local cb = ARGV[c + 6]
      if cb ~= '-1' then  -- a token label has no confidence bin
        a.fields['k' .. cb] = (a.fields['k' .. cb] or 0) + 1
        a.fields['q' .. cb] = (a.fields['q' .. cb] or 0) + tonumber(ARGV[c + 8])
        a.floats['c' .. cb] = (a.floats['c' .. cb] or 0) + tonumber(ARGV[c + 7])
        a.floats['r' .. cb] = (a.floats['r' .. cb] or 0) + tonumber(ARGV[c + 9])
      end
    end
    for j = 0, np - 1 do
      local c = prs + 4 * j
      local pk = KEYS[7 + ns + tonumber(ARGV[c])]
      local p = pacc[pk] or {count = 0, sum_a = 0, sum_b = 0, sumsq = 0}
      pacc[pk] = p
      p.count = p.count + 1
      p.sum_a = p.sum_a + tonumber(ARGV[c + 1])
      p.sum_b = p.sum_b + tonumber(ARGV[c + 2])
      p.sumsq = p.sumsq + tonumber(ARGV[c + 3])
    end
    joined = joined + 1
    arms_joined = arms_joined + na
  elseif now_len > 0 then
    changed[#changed + 1] = id
  else  -- another replica joined or expired it since it was read
    local st = redis.call('HGET', KEYS[3], id)
    if st == '1' then dup = dup + 1 elseif st == '2' then late = late + 1 else unknown = unknown + 1 end
  end
end
if arms_joined > 0 then
  npending(KEYS[7], KEYS[2])
  redis.call('DECRBY', KEYS[7], arms_joined)
end
for sk, a in pairs(acc) do
  redis.call('HINCRBY', sk, 'count', a.count)
  redis.call('HINCRBYFLOAT', sk, 'sum', string.format('%.17g', a.sum))
  redis.call('HINCRBYFLOAT', sk, 'sumsq', string.format('%.17g', a.sumsq))
  redis.call('HINCRBYFLOAT', sk, 'delay_sum', string.format('%.17g', a.delay_sum))
  for f, v in pairs(a.fields) do redis.call('HINCRBY', sk, f, v) end
  for f, v in pairs(a.floats) do redis.call('HINCRBYFLOAT', sk, f, string.format('%.17g', v)) end
  if a.tok[1] > 0 then  -- token counters: integers by HINCRBY, sums of nats by HINCRBYFLOAT
    redis.call('HINCRBY', sk, 'tok_n', string.format('%d', a.tok[1]))
    redis.call('HINCRBYFLOAT', sk, 'tok_nats', string.format('%.17g', a.tok[2]))
    redis.call('HINCRBY', sk, 'tok_tokens', string.format('%d', a.tok[3]))
    redis.call('HINCRBYFLOAT', sk, 'tok_nats_sq', string.format('%.17g', a.tok[4]))
    redis.call('HINCRBY', sk, 'tok_tokens_sq', string.format('%d', a.tok[5]))
    redis.call('HINCRBYFLOAT', sk, 'tok_nats_tokens', string.format('%.17g', a.tok[6]))
  end
end
for pk, p in pairs(pacc) do
  redis.call('HSETNX', pk, 'created', ARGV[7])
  redis.call('HINCRBY', pk, 'count', p.count)
  redis.call('HINCRBYFLOAT', pk, 'sum_a', string.format('%.17g', p.sum_a))
  redis.call('HINCRBYFLOAT', pk, 'sum_b', string.format('%.17g', p.sum_b))
  redis.call('HINCRBYFLOAT', pk, 'sumsq', string.format('%.17g', p.sumsq))
  redis.call('SADD', KEYS[6], pk)
end
local counts = {label_joined = joined, label_duplicate = dup, label_late = late, label_unknown = unknown}
for name, v in pairs(counts) do
  if v > 0 then redis.call('HINCRBY', KEYS[5], name, v) end
end
return {joined, dup, late, unknown, unpack(changed)}
"""
)

# KEYS: pending, deadlines, done, forget, npending; ARGV: now, limit, grace
EXPIRE = (
    _RECORDS
    + """
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, ARGV[2])
npending(KEYS[5], KEYS[2])
for i = 1, #due, 2 do
  local id = due[i]
  local rec = redis.call('HGET', KEYS[1], id)
  if rec then
    for _, r in ipairs(records(rec)) do
      local nl = string.find(r, '\\n', 1, true)
      redis.call('HINCRBY', string.sub(r, 1, nl - 1), 'expired:ttl', 1)
      redis.call('DECR', KEYS[5])
    end
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
)

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
