-- otpd: one limiter decision for the keys of one hash slot, atomically (a script runs alone).
-- The semantics are those of otpd_actors::limits and of the in-process limiter, line for line:
-- check every rule (blocking the windows that trip), and only if none refuses, record every
-- rule. Time is the caller's `now` in milliseconds, never Redis's clock (see redis.rs); Redis
-- expiries only reclaim memory.
--
-- KEYS[k]  one hash per subject (an identifier, a client IP, a number prefix, a country). A
--          cooldown field holds its end; a window holds a count, an end and a blocked-until in
--          three fields; `x` holds the latest end of any field, the key's expiry, which is
--          only ever extended. One HMGET and at most one HSET (+ PEXPIRE) per key.
-- ARGV[1]  "check", "undo" or "verified" (a code was verified: +1 verified code for each
--          guard check); or an operator's "read", "lift", "pin", "unpin" of one guard check;
-- ARGV[2]  now (ms);  ARGV[3..5]  the conversion guard's collapse (percent of a destination's
--          baseline), history (ms) and throttle gap (ms)
-- then nine values per check i, from ARGV[6 + 9 * (i - 1)]:
--   cooldown: key index, "c", field, "", "", 0, now + cooldown, 0, 0
--   window:   key index, "w", count field, end field, block field, limit, now + window,
--             now + block (0: no block), 0
--   guesses:  key index, "g", count field, forget-at field, block field, free,
--             now + forget_after, first block (ms), longest block (ms)
--   spend:    key index, "s", count field, end field, "", budget, the day's end, cost, 0
--   guard:    key index, "v", sent field, end field, next-send field, floor, now + window,
--             mode (1 record, 2 throttle, 3 block), least conversion (percent); its verified
--             codes, baseline and pin (mode and end) are in the fields VERIFIED, BASELINE,
--             PIN and PINNED_UNTIL; in pin mode the seventh value is the pin's end and the
--             eighth its mode.
--   in undo mode the seventh value is the end check mode wrote.
-- A conversion guard (otpd_actors::rules::limits, the conversion guard) judges a destination
-- in its pin's mode while pinned; a window that ends judged and untripped moves its baseline.
-- A guess budget (otpd_actors::rules::limits, the guess budget) refuses only while blocked;
-- recording counts one more check (from 1 once forgotten), moves the forget-at, and past
-- `free` blocks for first × 2^(count - free - 1), at most the longest block.
-- A spend budget counts money until the day's end: it refuses while the day's count plus the
-- cost would pass the budget (until the day's end), and records the cost.
-- The caller computes every field name and every end, so this script formats nothing (Lua
-- string work is what a decision costs most here): it compares numbers and stores the strings
-- it was given.
--
-- Returns in check mode {1, wait_1, …, wait_n} when refused (wait_i in ms, 0 if check i
-- passed) or {0, end_1, …, end_n} when recorded (what undo needs; for a spend check, the day's
-- total instead: its end is the day's end, which the caller knows); {0} in undo mode.

local mode = ARGV[1]
local now = tonumber(ARGV[2])
local HEAD = 5
local n = (#ARGV - HEAD) / 9
local COLLAPSE, HISTORY, GAP = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local VERIFIED, BASELINE = 'destination_throttled:v', 'destination_throttled:h'
local PIN, PINNED_UNTIL = 'destination_throttled:p', 'destination_throttled:pu'

-- Read every field of every check: one HMGET per key, `x` first.
local wanted, at = {}, {}
for i = 1, n do
  local o = HEAD + 9 * (i - 1)
  local k = tonumber(ARGV[o + 1])
  local list = wanted[k]
  if not list then
    list = {'x'}
    wanted[k] = list
  end
  at[i] = #list + 1
  list[#list + 1] = ARGV[o + 3]
  if ARGV[o + 2] ~= 'c' then
    list[#list + 1] = ARGV[o + 4]
    list[#list + 1] = ARGV[o + 5]
  end
  if ARGV[o + 2] == 'v' then
    list[#list + 1] = VERIFIED
    list[#list + 1] = BASELINE
    list[#list + 1] = PIN
    list[#list + 1] = PINNED_UNTIL
  end
end
local values, kept, expiry, expiry_text = {}, {}, {}, {}
for k, list in pairs(wanted) do
  values[k] = redis.call('HMGET', KEYS[k], unpack(list))
  kept[k] = tonumber(values[k][1] or 0)
  expiry[k] = kept[k]
end
local function num(k, pos)
  return tonumber(values[k][pos] or 0)
end
-- The block the count-th counted check of a guess budget starts (0 up to `free`).
local function guess_block(o, count)
  local free, first, longest = tonumber(ARGV[o + 6]), tonumber(ARGV[o + 8]), tonumber(ARGV[o + 9])
  if count <= free then
    return 0
  end
  return math.min(first * 2 ^ math.min(count - free - 1, 31), math.max(longest, first))
end
-- Whether a guard check's destination, with `sent` sends, `verified` codes and its baseline
-- (false: none), is tripped.
local function tripped(o, sent, verified, baseline)
  if sent < tonumber(ARGV[o + 6]) then
    return false
  end
  return verified * 100 < sent * tonumber(ARGV[o + 9])
    or (baseline and verified * 10000 < sent * baseline * COLLAPSE)
end
-- A guard check's baseline (false: none) and mode (its pin's while pinned).
local function baseline_of(k, p)
  return tonumber(values[k][p + 4] or '') or false
end
local function mode_of(k, o, p)
  if num(k, p + 6) > now then
    return num(k, p + 5)
  end
  return tonumber(ARGV[o + 8])
end

if mode == 'undo' then
  -- Takes back a recording whose request another slot refused (Redis Cluster only), unless the
  -- field has moved on since (a new cooldown or a new window).
  for i = 1, n do
    local o, p = HEAD + 9 * (i - 1), at[i]
    local k, written = tonumber(ARGV[o + 1]), ARGV[o + 7]
    if ARGV[o + 2] == 'c' then
      if values[k][p] == written then
        redis.call('HDEL', KEYS[k], ARGV[o + 3])
      end
    elseif ARGV[o + 2] == 'g' then
      -- Unless another check was counted since (it moved the forget-at): one less, and the
      -- block this check started lifted.
      if values[k][p + 1] == written then
        local c = num(k, p)
        local block = guess_block(o, c)
        if block > 0 and num(k, p + 2) == now + block then
          redis.call('HDEL', KEYS[k], ARGV[o + 5])
        end
        if c > 1 then
          redis.call('HSET', KEYS[k], ARGV[o + 3], c - 1)
        else
          redis.call('HDEL', KEYS[k], ARGV[o + 3], ARGV[o + 4])
        end
      end
    elseif ARGV[o + 2] == 'v' then
      if values[k][p + 1] == written and num(k, p) > 0 then
        redis.call('HSET', KEYS[k], ARGV[o + 3], num(k, p) - 1)
      end
    elseif values[k][p + 1] == written then
      -- A window counted one; a spend counted its cost.
      local c = num(k, p) - 1
      if ARGV[o + 2] == 's' then
        c = num(k, p) - tonumber(ARGV[o + 8])
      end
      if c > 0 then
        redis.call('HSET', KEYS[k], ARGV[o + 3], c)
      else
        redis.call('HDEL', KEYS[k], ARGV[o + 3], ARGV[o + 4])
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
local function keep_until(k, t, text)
  if t > expiry[k] then
    expiry[k] = t
    expiry_text[k] = text
  end
end
local function flush()
  for k, w in pairs(writes) do
    local longer = expiry_text[k]
    if longer then
      put(k, 'x', longer)
    end
    redis.call('HSET', KEYS[k], unpack(w))
    if longer then
      redis.call('PEXPIRE', KEYS[k], expiry[k] - now)
    end
  end
end

-- A guard window that has ended starts again, empty (the caller puts the sent count); the
-- ended one, judged and untripped, moves the baseline halfway to its conversion (or sets it).
local function open_guard(k, o, p)
  if num(k, p + 1) > now then
    return num(k, p), num(k, p + 3), num(k, p + 1)
  end
  local s, v, b = num(k, p), num(k, p + 3), baseline_of(k, p)
  if s >= math.max(tonumber(ARGV[o + 6]), 1) and not tripped(o, s, v, b) then
    local c = math.min(math.floor(v * 100 / s), 100)
    if b then
      c = math.floor((b + c) / 2)
    end
    put(k, BASELINE, c)
    values[k][p + 4] = tostring(c)
  end
  put(k, ARGV[o + 4], ARGV[o + 7])
  put(k, ARGV[o + 5], 0)
  put(k, VERIFIED, 0)
  local kept = tonumber(ARGV[o + 7]) + HISTORY
  keep_until(k, kept, string.format('%d', kept))
  return 0, 0, tonumber(ARGV[o + 7])
end

if mode == 'read' or mode == 'lift' or mode == 'pin' or mode == 'unpin' then
  -- An operator's change to the one guard check given; answers its fields after it:
  -- {sent, end, next send, verified, baseline (-1: none), pin mode, pin end}.
  local o, p = HEAD, at[1]
  local k = tonumber(ARGV[o + 1])
  if mode == 'lift' then
    redis.call('HDEL', KEYS[k], ARGV[o + 3], ARGV[o + 4], ARGV[o + 5], VERIFIED, PIN, PINNED_UNTIL)
    values[k][p], values[k][p + 1], values[k][p + 2], values[k][p + 3] = false, false, false, false
    values[k][p + 5], values[k][p + 6] = false, false
  elseif mode == 'pin' then
    put(k, PIN, ARGV[o + 8])
    put(k, PINNED_UNTIL, ARGV[o + 7])
    keep_until(k, tonumber(ARGV[o + 7]), ARGV[o + 7])
    flush()
    values[k][p + 5], values[k][p + 6] = ARGV[o + 8], ARGV[o + 7]
  elseif mode == 'unpin' then
    redis.call('HDEL', KEYS[k], PIN, PINNED_UNTIL)
    values[k][p + 5], values[k][p + 6] = false, false
  end
  return {num(k, p), num(k, p + 1), num(k, p + 2), num(k, p + 3), baseline_of(k, p) or -1, num(k, p + 5),
    num(k, p + 6)}
end

if mode == 'verified' then
  for i = 1, n do
    local o, p = HEAD + 9 * (i - 1), at[i]
    local k = tonumber(ARGV[o + 1])
    if ARGV[o + 2] == 'v' then
      local s, v = open_guard(k, o, p)
      put(k, ARGV[o + 3], s)
      put(k, VERIFIED, v + 1)
    end
  end
  flush()
  return {0}
end

local waits = {}
local refused = false
for i = 1, n do
  local o, p = HEAD + 9 * (i - 1), at[i]
  local k = tonumber(ARGV[o + 1])
  local wait = 0
  if ARGV[o + 2] == 'c' then
    local u = num(k, p)
    if u > now then
      wait = u - now
    end
  elseif ARGV[o + 2] == 'g' then
    local b = num(k, p + 2)
    if b > now then
      wait = b - now
    end
  elseif ARGV[o + 2] == 'v' then
    local s, u, t, v = num(k, p), num(k, p + 1), num(k, p + 2), num(k, p + 3)
    if u > now and tripped(o, s, v, baseline_of(k, p)) then
      local m = mode_of(k, o, p)
      if m == 2 and t > now then
        wait = t - now
      elseif m == 3 then
        wait = u - now
      end
    end
  elseif ARGV[o + 2] == 's' then
    local spent = 0
    if num(k, p + 1) > now then
      spent = num(k, p)
    end
    if spent + tonumber(ARGV[o + 8]) > tonumber(ARGV[o + 6]) then
      wait = tonumber(ARGV[o + 7]) - now
    end
  else
    local c, u, b = num(k, p), num(k, p + 1), num(k, p + 2)
    if b > now then
      wait = b - now
    elseif u > now and c >= tonumber(ARGV[o + 6]) then
      local blocked = tonumber(ARGV[o + 8])
      if blocked > 0 then
        -- Blocked until max(now + block, window end): a block never shortens the window.
        local text = ARGV[o + 8]
        if u > blocked then
          blocked, text = u, values[k][p + 1]
        end
        put(k, ARGV[o + 5], text)
        keep_until(k, blocked, text)
        wait = blocked - now
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
  local o, p = HEAD + 9 * (i - 1), at[i]
  local k = tonumber(ARGV[o + 1])
  local u
  if ARGV[o + 2] == 'c' then
    u = tonumber(ARGV[o + 7])
    put(k, ARGV[o + 3], ARGV[o + 7])
    keep_until(k, u, ARGV[o + 7])
  elseif ARGV[o + 2] == 'g' then
    local c = 1
    if num(k, p + 1) > now then
      c = num(k, p) + 1
    end
    u = tonumber(ARGV[o + 7])
    put(k, ARGV[o + 3], c)
    put(k, ARGV[o + 4], ARGV[o + 7])
    keep_until(k, u, ARGV[o + 7])
    local block = guess_block(o, c)
    if block > 0 then
      local b = now + block
      local text = string.format('%d', b)
      put(k, ARGV[o + 5], text)
      keep_until(k, b, text)
    end
  elseif ARGV[o + 2] == 'v' then
    local s, v
    s, v, u = open_guard(k, o, p)
    s = s + 1
    put(k, ARGV[o + 3], s)
    if mode_of(k, o, p) == 2 and tripped(o, s, v, baseline_of(k, p)) then
      local next_send = now + GAP
      local text = string.format('%d', next_send)
      put(k, ARGV[o + 5], text)
      keep_until(k, next_send, text)
    end
  elseif ARGV[o + 2] == 's' then
    -- Answered with the day's total instead of the end (always the day's end).
    if num(k, p + 1) > now then
      u = num(k, p) + tonumber(ARGV[o + 8])
      put(k, ARGV[o + 3], u)
    else
      put(k, ARGV[o + 3], ARGV[o + 8])
      put(k, ARGV[o + 4], ARGV[o + 7])
      keep_until(k, tonumber(ARGV[o + 7]), ARGV[o + 7])
      u = tonumber(ARGV[o + 8])
    end
  else
    u = num(k, p + 1)
    if u > now then
      put(k, ARGV[o + 3], num(k, p) + 1)
    else
      u = tonumber(ARGV[o + 7])
      put(k, ARGV[o + 3], 1)
      put(k, ARGV[o + 4], ARGV[o + 7])
      keep_until(k, u, ARGV[o + 7])
    end
  end
  written[i + 1] = u
end
flush()
return written
