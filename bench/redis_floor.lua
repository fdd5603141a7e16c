-- The floor of a Redis decision, for bench/redis_floor.py: the least any script must do
-- to decide two GCRA limits (requests and tokens) per call with per-account state in a
-- hash, batched as RedisStore batches (KEYS: five per call; ARGV: now, grace, then seven
-- per call, as the library's weir_acquire). Per call: one HMGET, the GCRA step in doubles, one
-- HSET. It is NOT a limiter: no exact arithmetic (doubles throughout), no statuses
-- (a constant reply of the same shape), no TTLs, no sliding windows, leases or slots.
local T = redis.call('TIME')
local ES, now = tonumber(T[1]), tonumber(T[2]) * 1000
local sub, fmod, fmt, tn = string.sub, math.fmod, string.format, tonumber
local cache = {}
local function spec(s)
  local c = cache[s]
  if c == nil then
    local l, w, b = string.match(s, '^g (%d+) (%d+) (%d+)$')
    c = {tn(l), tn(w), tn(b)}
    cache[s] = c
  end
  return c
end
local function tat(s)
  if not s then return now end
  local n = #s
  local x = (tn(sub(s, 1, n - 9)) - ES) * 1e9 + tn(sub(s, n - 8))
  if x > now then return x end
  return now
end
local out = {}
for i = 0, #KEYS / 5 - 1 do
  local a = 2 + i * 7
  local R, K = spec(ARGV[a + 1]), spec(ARGV[a + 2])
  local units = tn(ARGV[a + 5])
  local SV = redis.call('HMGET', KEYS[5 * i + 1], 'rtat', 'ttat', 'x')
  local rtat, ttat = tat(SV[1]), tat(SV[2])
  local nr = rtat + R[2] / R[1]
  local nt = ttat + units * K[2] / K[1]
  if (nr - now) * R[1] <= R[3] * R[2] and (nt - now) * K[1] <= K[3] * K[2] then
    local x, y = fmod(nr, 1e9), fmod(nt, 1e9)
    redis.call('HSET', KEYS[5 * i + 1], 'rtat', fmt('%d%09d', ES + (nr - x) / 1e9, x), 'ttat', fmt('%d%09d', ES + (nt - y) / 1e9, y))
  end
  out[i + 1] = {1, '', '', 0, '', 0, 0, R[1], 5999, 1000000, K[1], 999900, 60000000, '', '', ''}
end
return out
