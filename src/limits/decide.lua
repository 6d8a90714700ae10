-- otpd: one limiter decision for the keys of one hash slot, atomically (a script runs alone).
-- The semantics are those of otpd_actors::limits and of the in-process limiter, line for line:
-- check every rule (blocking the windows that trip), and only if none refuses, record every
-- rule. Time is the caller's `now` in milliseconds, never Redis's clock (see redis.rs); Redis
-- expiries only reclaim memory, set to the moment a key stops mattering.
--
-- KEYS[i]  the key of check i: a string (cooldown) or a hash {c = count, u = window end,
--          b = blocked until} (window).
-- ARGV[1]  "check" or "undo";  ARGV[2]  now (ms)
-- then four values per check i, from ARGV[3 + 4 * (i - 1)]:
--   check mode: "c", cooldown ms, 0, 0        or  "w", limit, window ms, block ms
--   undo mode:  "c" or "w", the end this script wrote in check mode, 0, 0
--
-- Returns in check mode {1, wait_1, …, wait_n} when refused (wait_i in ms, 0 if check i
-- passed) or {0, end_1, …, end_n} when recorded (what undo needs); {0} in undo mode.

local mode = ARGV[1]
local now = tonumber(ARGV[2])
local n = #KEYS

local function arg(i, j)
  return ARGV[3 + 4 * (i - 1) + j]
end

local function ms(x)
  return string.format('%.0f', x)
end

if mode == 'undo' then
  -- Takes back a recording whose request another slot refused (Redis Cluster only), unless the
  -- key has moved on since (a new cooldown or a new window).
  for i = 1, n do
    local key, kind, written = KEYS[i], arg(i, 0), arg(i, 1)
    if kind == 'c' then
      if redis.call('GET', key) == written then
        redis.call('DEL', key)
      end
    elseif redis.call('HGET', key, 'u') == written then
      if redis.call('HINCRBY', key, 'c', -1) <= 0 then
        redis.call('HDEL', key, 'c', 'u')
      end
    end
  end
  return {0}
end

local waits = {}
local refused = false
for i = 1, n do
  local key, kind = KEYS[i], arg(i, 0)
  local wait = 0
  if kind == 'c' then
    local u = tonumber(redis.call('GET', key) or 0)
    if u > now then
      wait = u - now
    end
  else
    local limit, block = tonumber(arg(i, 1)), tonumber(arg(i, 3))
    local v = redis.call('HMGET', key, 'c', 'u', 'b')
    local c, u, b = tonumber(v[1] or 0), tonumber(v[2] or 0), tonumber(v[3] or 0)
    if b > now then
      wait = b - now
    elseif u > now and c >= limit then
      if block > 0 then
        b = math.max(now + block, u)
        redis.call('HSET', key, 'b', ms(b))
        redis.call('PEXPIRE', key, ms(b - now))
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
  table.insert(waits, 1, 1)
  return waits
end

local written = {0}
for i = 1, n do
  local key, kind = KEYS[i], arg(i, 0)
  if kind == 'c' then
    local cooldown = tonumber(arg(i, 1))
    local u = now + cooldown
    redis.call('SET', key, ms(u), 'PX', ms(cooldown))
    written[i + 1] = u
  else
    local window = tonumber(arg(i, 2))
    local v = redis.call('HMGET', key, 'u', 'b')
    local u, b = tonumber(v[1] or 0), tonumber(v[2] or 0)
    if u > now then
      redis.call('HINCRBY', key, 'c', 1)
    else
      u = now + window
      redis.call('HSET', key, 'c', 1, 'u', ms(u))
    end
    redis.call('PEXPIRE', key, ms(math.max(u, b) - now))
    written[i + 1] = u
  end
end
return written
