-- otpd: one limiter decision for the keys of one hash slot, atomically (a script runs alone).
-- The semantics are those of otpd_actors::limits and of the in-process limiter, line for line:
-- check every rule (blocking the windows that trip), and only if none refuses, record every
-- rule. Time is the caller's `now` in milliseconds, never Redis's clock (see redis.rs); Redis
-- expiries only reclaim memory.
--
-- KEYS[k]  one hash per subject (an identifier, a client IP, a number prefix, a country). A
--          cooldown field `f` holds its end; a window holds `f:c` (count), `f:u` (end) and `f:b`
--          (blocked until); `x` holds the latest end of any field, the key's expiry, which is
--          only ever extended. One HMGET and at most one HSET (+ PEXPIRE) per key.
-- ARGV[1]  "check" or "undo";  ARGV[2]  now (ms)
-- then six values per check i, from ARGV[3 + 6 * (i - 1)]:
--   key index k, field f, "c" (cooldown) or "w" (window), then
--   check mode: cooldown ms, 0, 0  or  limit, window ms, block ms
--   undo mode:  the end this script wrote in check mode, 0, 0
--
-- Returns in check mode {1, wait_1, …, wait_n} when refused (wait_i in ms, 0 if check i
-- passed) or {0, end_1, …, end_n} when recorded (what undo needs); {0} in undo mode.

local mode = ARGV[1]
local now = tonumber(ARGV[2])
local n = (#ARGV - 2) / 6

local function arg(i, j)
  return ARGV[3 + 6 * (i - 1) + j]
end

local function ms(x)
  return string.format('%.0f', x)
end

-- Read every field of every check: one HMGET per key, `x` first.
local wanted, at = {}, {}
for i = 1, n do
  local k, f = tonumber(arg(i, 0)), arg(i, 1)
  local list = wanted[k]
  if not list then
    list = {'x'}
    wanted[k] = list
  end
  at[i] = #list + 1
  if arg(i, 2) == 'c' then
    list[#list + 1] = f
  else
    list[#list + 1] = f .. ':c'
    list[#list + 1] = f .. ':u'
    list[#list + 1] = f .. ':b'
  end
end
local values, expiry, kept = {}, {}, {}
for k, list in pairs(wanted) do
  values[k] = redis.call('HMGET', KEYS[k], unpack(list))
  kept[k] = tonumber(values[k][1] or 0)
  expiry[k] = kept[k]
end
local function num(k, pos)
  return tonumber(values[k][pos] or 0)
end

if mode == 'undo' then
  -- Takes back a recording whose request another slot refused (Redis Cluster only), unless the
  -- field has moved on since (a new cooldown or a new window).
  for i = 1, n do
    local k, f, written, p = tonumber(arg(i, 0)), arg(i, 1), arg(i, 3), at[i]
    if arg(i, 2) == 'c' then
      if values[k][p] == written then
        redis.call('HDEL', KEYS[k], f)
      end
    elseif values[k][p + 1] == written then
      local c = num(k, p) - 1
      if c > 0 then
        redis.call('HSET', KEYS[k], f .. ':c', c)
      else
        redis.call('HDEL', KEYS[k], f .. ':c', f .. ':u')
      end
    end
  end
  return {0}
end

local writes = {}
local function put(k, f, v)
  local w = writes[k]
  if not w then
    w = {}
    writes[k] = w
  end
  w[#w + 1] = f
  w[#w + 1] = v
end
local function keep_until(k, t)
  if t > expiry[k] then
    expiry[k] = t
  end
end
local function flush()
  for k, w in pairs(writes) do
    if expiry[k] > kept[k] then
      put(k, 'x', ms(expiry[k]))
    end
    redis.call('HSET', KEYS[k], unpack(w))
    if expiry[k] > kept[k] then
      redis.call('PEXPIRE', KEYS[k], ms(expiry[k] - now))
    end
  end
end

local waits = {}
local refused = false
for i = 1, n do
  local k, f, p = tonumber(arg(i, 0)), arg(i, 1), at[i]
  local wait = 0
  if arg(i, 2) == 'c' then
    local u = num(k, p)
    if u > now then
      wait = u - now
    end
  else
    local limit, block = tonumber(arg(i, 3)), tonumber(arg(i, 5))
    local c, u, b = num(k, p), num(k, p + 1), num(k, p + 2)
    if b > now then
      wait = b - now
    elseif u > now and c >= limit then
      if block > 0 then
        b = math.max(now + block, u)
        put(k, f .. ':b', ms(b))
        keep_until(k, b)
        wait = b - now
      else
        wait = u - now
      end
    end
  end
  waits[i] = wait
  if wait > 0 then
    refused = true
  end
end

if refused then
  flush()
  table.insert(waits, 1, 1)
  return waits
end

local written = {0}
for i = 1, n do
  local k, f, p = tonumber(arg(i, 0)), arg(i, 1), at[i]
  local u
  if arg(i, 2) == 'c' then
    u = now + tonumber(arg(i, 3))
    put(k, f, ms(u))
  else
    u = num(k, p + 1)
    if u > now then
      put(k, f .. ':c', num(k, p) + 1)
    else
      u = now + tonumber(arg(i, 4))
      put(k, f .. ':c', 1)
      put(k, f .. ':u', ms(u))
    end
  end
  keep_until(k, u)
  written[i + 1] = u
end
flush()
return written
