-- otpd: counts one wrong code for an identifier and starts the block it earns, atomically.
-- The semantics are those of otpd_actors::rules::limits::GuessBudget and of the in-process
-- limiter's `wrong_guess`: the count is forgotten `forget_after` after the latest wrong code;
-- past `free`, each wrong code blocks for first_block * 2^(count - free - 1), at most max_block.
-- The block field is the one decide.lua checks ("b" checks) before a code is compared.
--
-- KEYS[1]  the identifier's hash
-- ARGV     now, count field, forget field, block field, now + forget_after, free,
--          first_block (ms), max_block (ms)
-- Returns the count.

local now = tonumber(ARGV[1])
local v = redis.call('HMGET', KEYS[1], ARGV[2], ARGV[3], ARGV[4], 'x')
local count = tonumber(v[1] or 0)
if tonumber(v[2] or 0) <= now then
  count = 0
end
count = count + 1
local forget = tonumber(ARGV[5])
local blocked = tonumber(v[3] or 0)
local free = tonumber(ARGV[6])
if count > free then
  local block = tonumber(ARGV[7]) * 2 ^ math.min(count - free - 1, 40)
  local most = tonumber(ARGV[8])
  if block > most then
    block = most
  end
  if now + block > blocked then
    blocked = now + block
  end
end
-- Integers as text without an exponent (Lua would write 1.7e+12).
local function text(n)
  return string.format('%.0f', n)
end
local expiry = math.max(tonumber(v[4] or 0), forget, blocked)
redis.call('HSET', KEYS[1], ARGV[2], count, ARGV[3], ARGV[5], ARGV[4], text(blocked), 'x', text(expiry))
redis.call('PEXPIRE', KEYS[1], expiry - now)
return count
