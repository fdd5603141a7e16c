#!lua name=weir_{{version}}
--[[
Weir's limiter in Redis: one function library (Redis 7 `FUNCTION LOAD`, called with
`FCALL`), whose functions decide exactly as `GCRA`, `SlidingWindowLog` and `KeyState` do
in Swift. Loaded once per server; every helper below is built once per load, not per call.

Functions (each headed below by its KEYS and ARGV):
  weir_acquire_{{version}}  one call or a batch of calls, decided in order at one `now`
  weir_settle_{{version}}   settles a lease: charges or refunds tokens, frees its slot
  weir_status_{{version}}   the state of a limit key's statuses, consuming nothing
`{{version}}` is replaced by the loader with a digest of this text, so that Weir instances of
different versions sharing one Redis (a rolling upgrade) each call their own code.

Why functions, not MULTI/EXEC. A decision reads state, computes, then writes only if the
call fits. MULTI/EXEC cannot branch on what it reads (WATCH would turn every contended
decision into retries), while a function runs atomically on the server: the read, the
arithmetic and the writes of every dimension of a call are one step with respect to every
other client, in one round trip.

Keys (all with the hash tag `{account|scope}`, so one call touches one cluster slot):
  K[1] P{a|s}          hash: rtat, ttat (GCRA TATs), rsum, tsum (log totals), x (see Expiry)
  K[2] P{a|s}:rlog     list: the requests sliding-window log, entries `time:cost`, oldest first
  K[3] P{a|s}:tlog     list: the tokens sliding-window log
  K[4] P{a|s}:slots    hash: lease id -> expiry time of the concurrency slot it holds
  K[5] P{a|s}:lease:ID hash: the lease record (limits, reserved, logged, exp, consumed, settled)

Limits travel as specs `A LIMIT WINDOW BURST` (A = `g` for GCRA, `s` for sliding window;
concurrency uses the same shape), or the empty string when absent. Times and durations are
nanoseconds; ARGV[1] is the time, or empty for Redis's own clock (`TIME`, microseconds,
scaled to nanoseconds, read once per FCALL: every call of a batch is decided at one moment).

Exact arithmetic. Lua numbers in Redis are doubles, exact only below 2^53, while Weir's
values are 64-bit: nanosecond times (about 1.8e18 since 1970), limits, windows and their
128-bit products in GCRA. Nothing here trades accuracy for speed: results are exactly what
the Swift code computes, saturating at 2^64 - 1 as `WideArithmetic` does, with no range
restriction. Two representations:
- Fast: a count or duration below 9e15 is a Lua number. A time is its offset from the
  call's epoch (the whole second of its `now`), a number while within +-9e15 ns (about
  104 days either way). Sums, differences and comparisons run in doubles when operands and
  result are provably below 2^53; `a * b / c` (GCRA) runs in doubles when the product is
  below 9e15, else its quotient is estimated in doubles and corrected with the exact
  remainder, from both products split into base-2^18 digits.
- Exact limbs: anything else is an array of base-10^7 limbs (least significant first), as
  are times outside the offsets' range (marked before or after it). Every operation falls
  back to the limbs when its fast guard fails, and a small enough result turns back into a
  number, so a call only pays for its large values.
The limbs stay although `check-config` could bound limits and windows: units come with
each call and settle (any 64-bit count, and charges beyond a limit saturate), times near
either end of the range must stay exact, and the conformance suite pins that behaviour.
They cost a common call nothing: its values never leave the fast representation, and in a
function library their code is built once per load.

Expiry. After a call that added information (a later TAT, a log entry, a slot), the keys
it concerns get a TTL reaching the moment they would carry no information any more
(buckets full, logs empty, slots expired), plus a grace: the state hash always, the logs
of its sliding-window limits, the slots when it has a concurrency limit. A TTL is never
shortened (`PEXPIRE ... GT`; a key that GT leaves alone for having no TTL yet gets a plain
one), and the state hash's TTL always covers the logs' (its totals belong to them); so idle
keys vanish and nothing live is lost. A call that only denies, prunes or frees leaves the
TTLs alone. With Redis's clock the state hash keeps its TTL's deadline in field `x`
(Redis ms): while `x` covers what the call needs, there is no PEXPIRE at all, and when it
does not, the deadline is set one grace further (`PEXPIREAT`), so a busy key pays for a
PEXPIRE about once per grace rather than on every call, and lives up to one grace longer.
`x` never exceeds the key's real TTL (written only with the PEXPIREAT that sets it, and
TTLs only grow).

Statuses. The functions return the state a call's statuses come from (the call's time,
TATs, log totals and resets, slots held), not the statuses: `RedisStore` computes remaining
and reset with the same Swift code as the memory store, so that rule is written once and
Redis does less per call. Replies carry numbers below 2^53 as RESP integers (exact) and
larger ones as decimal text; `RedisStore` reads either.

Speed. While every value of a call is a number (`NUM`), admission and the expiry check run
in plain doubles behind one flag test instead of a type test per operation, and step aside
to the general code at the first value that needs more; BENCHMARKS.md has the figures.
]]

-- Lua's and Redis's functions as upvalues, bound by `start` at each FCALL: Redis runs a
-- library's load without Lua's standard globals (a load that calls `tonumber` fails), so
-- they cannot be bound once there; bound per FCALL, each use is an upvalue rather than a
-- lookup through the globals' metatable.
local type, tonumber, tostring, unpack, error, pcall
local format, match, ssub, concat, insert, max, floor, fmod, rcall, rpcall
-- Whether every value of the current call is a number (see Fast values): set by `begin`,
-- cleared where a value in limbs appears (`dnorm`, `TN`, `limits`). While it holds, the
-- rules most calls take run in plain doubles, without a type test per operation (each
-- `type` is a C call, and they were most of a decision's cost).
local NUM = true

-- Exact integers: base-10^7 limbs, least significant first.
local B = 10000000
local function N(s)
  local n, len, i = {0, 0, 0}, #s, 1
  while len > 0 do
    local start = len - 6
    if start < 1 then start = 1 end
    n[i] = tonumber(ssub(s, start, len))
    len = start - 1
    i = i + 1
  end
  return n
end
local function S(n)
  local k = #n
  while k > 1 and n[k] == 0 do k = k - 1 end
  local parts = {format('%d', n[k])}
  for i = k - 1, 1, -1 do parts[#parts + 1] = format('%07d', n[i]) end
  return concat(parts)
end
local ZERO, ONE, MAX = {0, 0, 0}, {1, 0, 0}, {9551615, 4407370, 184467}  -- MAX: 2^64 - 1
local function cmp(a, b)
  for i = max(#a, #b), 1, -1 do
    local x, y = a[i] or 0, b[i] or 0
    if x ~= y then if x < y then return -1 else return 1 end end
  end
  return 0
end
local function iszero(a) return cmp(a, ZERO) == 0 end
local function trim(a)
  while #a > 1 and a[#a] == 0 do a[#a] = nil end
  return a
end
local function add(a, b)
  local r, carry, k = {}, 0, max(#a, #b)
  for i = 1, k do
    local s = (a[i] or 0) + (b[i] or 0) + carry
    if s >= B then r[i] = s - B; carry = 1 else r[i] = s; carry = 0 end
  end
  if carry > 0 then r[k + 1] = carry end
  return r
end
local function sub(a, b)
  local r, borrow = {}, 0
  for i = 1, #a do
    local s = a[i] - (b[i] or 0) - borrow
    if s < 0 then r[i] = s + B; borrow = 1 else r[i] = s; borrow = 0 end
  end
  return r
end
local function sat(a)
  if cmp(a, MAX) > 0 then return MAX end
  return {a[1] or 0, a[2] or 0, a[3] or 0}
end
local function addsat(a, b) return sat(add(a, b)) end
local function subsat(a, b) if cmp(a, b) <= 0 then return ZERO end return sat(sub(a, b)) end
local function mul(a, b)
  local r = {}
  for i = 1, #a + #b do r[i] = 0 end
  for i = 1, #a do
    local ai = a[i]
    if ai ~= 0 then
      local carry = 0
      for j = 1, #b do
        local t = r[i + j - 1] + ai * b[j] + carry
        carry = floor(t / B)
        r[i + j - 1] = t - carry * B
      end
      local k = i + #b
      while carry > 0 do
        local t = r[k] + carry
        carry = floor(t / B)
        r[k] = t - carry * B
        k = k + 1
      end
    end
  end
  return r
end
local function approx(a)
  local x = 0
  for i = #a, 1, -1 do x = x * B + a[i] end
  return x
end
local function mulsmall(c, d)
  local r, carry = {}, 0
  for i = 1, #c do
    local t = c[i] * d + carry
    carry = floor(t / B)
    r[i] = t - carry * B
  end
  r[#c + 1] = carry
  return r
end
-- Exact quotient and remainder of a / c (c > 0).
local function divmod(a, c)
  local q, r, cd = {}, {0}, approx(c)
  for i = #a, 1, -1 do
    insert(r, 1, a[i])
    local d = floor(approx(r) / cd)
    if d >= B then d = B - 1 end
    if d < 0 then d = 0 end
    local t = mulsmall(c, d)
    while cmp(t, r) > 0 do d = d - 1; t = sub(t, c) end
    while true do
      local next = add(t, c)
      if cmp(next, r) > 0 then break end
      d = d + 1
      t = next
    end
    r = trim(sub(r, t))
    q[i] = d
  end
  return q, r
end

-- Fast values. A count or duration is a Lua number when below FB = 9e15 (< 2^53, so
-- exact), else limbs (then always >= FB). Every operation below computes in doubles
-- only where the operands and the result are provably below 2^53, and otherwise falls
-- back to the limbs above; so results are exact either way.
local FB, T18 = 9e15, 262144
local function dnorm(L)
  local top = L[3] or 0
  if top < 90 then
    local small = true
    for i = 4, #L do if L[i] ~= 0 then small = false end end
    if small then return (L[1] or 0) + (L[2] or 0) * B + top * 1e14 end
  end
  NUM = false
  return L
end
local function dabs(x) if type(x) == 'number' then return N(format('%d', x)) end return x end
local function DN(s) if #s <= 15 then return tonumber(s) end return dnorm(N(s)) end
local function DS(x) if type(x) == 'number' then return format('%d', x) end return S(x) end
-- A value in a reply: a number is exact as a RESP integer (below 2^53), limbs as text.
local function DR(x) if NUM or type(x) == 'number' then return x end return S(x) end
local function dcmp(a, b)
  local na, nb = type(a) == 'number', type(b) == 'number'
  if na and nb then
    if a < b then return -1 elseif a > b then return 1 end
    return 0
  end
  if na then return -1 end
  if nb then return 1 end
  return cmp(a, b)
end
local function dmax(a, b) if dcmp(a, b) >= 0 then return a end return b end
local function dmin(a, b) if dcmp(a, b) <= 0 then return a end return b end
local function dadd(a, b)
  if type(a) == 'number' and type(b) == 'number' then
    local r = a + b
    if r < FB then return r end
  end
  return dnorm(sat(add(dabs(a), dabs(b))))
end
-- a - b, for a >= b.
local function dsub(a, b)
  if type(a) == 'number' and type(b) == 'number' then return a - b end
  return dnorm(sub(dabs(a), dabs(b)))
end
local function dsubsat(a, b) if dcmp(a, b) <= 0 then return 0 end return dsub(a, b) end
local function iszerod(a) return a == 0 end
-- The three base-2^18 digits of a < 2^53, least significant first.
local function split(a)
  local a0 = fmod(a, T18)
  a = (a - a0) / T18
  local a1 = fmod(a, T18)
  return a0, a1, (a - a1) / T18
end
-- The exact product a * b (a, b < 2^53) as six base-2^18 digits, least significant
-- first: every partial product is below 2^36 and every column below 2^39.
local function prod(a, b)
  local a0, a1, a2 = split(a)
  local b0, b1, b2 = split(b)
  local c0, c1 = a0 * b0, a0 * b1 + a1 * b0
  local c2, c3, c4 = a0 * b2 + a1 * b1 + a2 * b0, a1 * b2 + a2 * b1, a2 * b2
  local r0 = fmod(c0, T18); c1 = c1 + (c0 - r0) / T18
  local r1 = fmod(c1, T18); c2 = c2 + (c1 - r1) / T18
  local r2 = fmod(c2, T18); c3 = c3 + (c2 - r2) / T18
  local r3 = fmod(c3, T18); c4 = c4 + (c3 - r3) / T18
  local r4 = fmod(c4, T18)
  return r0, r1, r2, r3, r4, (c4 - r4) / T18
end
-- Compares a * b with c * d, for numbers.
local function nmulcmp(a, b, c, d)
  local p, q = a * b, c * d
  -- Below FB the products are exact; far apart, their roundings (relative error
  -- below 2^-52) cannot change the order.
  if (p < FB and q < FB) or p < q * 0.9999999999 or p > q * 1.0000000001 then
    if p < q then return -1 elseif p > q then return 1 end
    return 0
  end
  local p0, p1, p2, p3, p4, p5 = prod(a, b)
  local q0, q1, q2, q3, q4, q5 = prod(c, d)
  local ps, qs = {p5, p4, p3, p2, p1, p0}, {q5, q4, q3, q2, q1, q0}
  for i = 1, 6 do
    if ps[i] < qs[i] then return -1 elseif ps[i] > qs[i] then return 1 end
  end
  return 0
end
-- Compares a * b with c * d.
local function mulcmp(a, b, c, d)
  if type(a) == 'number' and type(b) == 'number' and type(c) == 'number' and type(d) == 'number' then
    return nmulcmp(a, b, c, d)
  end
  return cmp(mul(dabs(a), dabs(b)), mul(dabs(c), dabs(d)))
end
-- floor(a * b / c), or the ceiling when `up`, for numbers (c > 0); nil when it needs
-- the limbs (c at or above 1e15, or a quotient at or above 4e15).
local function nmuldiv(a, b, c, up)
  if c < 1e15 then
    local p = a * b
    if p < FB then
      local r = fmod(p, c)
      local q = (p - r) / c
      if up and r > 0 then q = q + 1 end
      return q
    end
    -- The quotient in doubles is within 1 of the true one (relative error below
    -- 2^-51, quotient below 4e15); the remainder of that estimate, computed exactly
    -- from the digits of both products, is below 2c < 2^51 in magnitude, so every
    -- step of its Horner sum is exact; then it is corrected to [0, c).
    local q = floor(p / c)
    if q < 4e15 then
      local p0, p1, p2, p3, p4, p5 = prod(a, b)
      local q0, q1, q2, q3, q4, q5 = prod(q, c)
      local r = (((((p5 - q5) * T18 + (p4 - q4)) * T18 + (p3 - q3)) * T18 + (p2 - q2)) * T18 + (p1 - q1)) * T18 + (p0 - q0)
      while r < 0 do q = q - 1; r = r + c end
      while r >= c do q = q + 1; r = r - c end
      if up and r > 0 then q = q + 1 end
      return q
    end
  end
end
-- floor(a * b / c), or the ceiling when `up`; saturating at 2^64 - 1 (c > 0).
local function muldiv(a, b, c, up)
  if type(a) == 'number' and type(b) == 'number' and type(c) == 'number' then
    local q = nmuldiv(a, b, c, up)
    if q then return q end
  end
  local q, r = divmod(mul(dabs(a), dabs(b)), dabs(c))
  if up and not iszero(r) then q = add(q, ONE) end
  return dnorm(sat(q))
end
local function mdfloor(a, b, c) return muldiv(a, b, c, false) end
local function mdceil(a, b, c) return muldiv(a, b, c, true) end
-- Whole milliseconds in a duration, rounded up.
local function msceil(d)
  if NUM or type(d) == 'number' then
    local r = fmod(d, 1e6)
    local q = (d - r) / 1e6
    if r > 0 then q = q + 1 end
    return q
  end
  local q, r = divmod(d, N('1000000'))
  if not iszero(r) then q = add(q, ONE) end
  return approx(sat(q))
end

-- Times. Unix times in ns are above 2^53, so a time is held as its offset from an epoch
-- E (the whole second of the call's `now`): a Lua number while within [TLO, THI] (both
-- below 2^53 in magnitude and inside [0, 2^64 - 1] in absolute terms), else the
-- absolute time in limbs with `side` = -1 (before the numbers' range) or 1 (after).
local ES, TLO, THI = 0, 0, FB
local function epoch(sec)
  ES = sec
  if sec < 9000000 then TLO = -sec * 1e9 else TLO = -FB end
  local room = 18446744073 - sec
  if room < 8000000 then THI = room * 1e9 + 709551615 else THI = FB end
end
local function TN(s)
  local n, sec, ns = #s, 0, 0
  if n > 9 then sec = tonumber(ssub(s, 1, n - 9)); ns = tonumber(ssub(s, n - 8)) else ns = tonumber(s) end
  local ds = sec - ES
  if ds > -9000000 and ds < 9000000 then
    local x = ds * 1e9 + ns
    if x >= TLO and x <= THI then return x end
  end
  local L = N(s)
  if ds < 0 then L.side = -1 else L.side = 1 end
  NUM = false
  return L
end
local function TS(x)
  if not NUM and type(x) ~= 'number' then return S(x) end
  local ns = fmod(x, 1e9)
  if ns < 0 then ns = ns + 1e9 end
  local sec = ES + (x - ns) / 1e9
  if sec > 0 then return format('%d%09d', sec, ns) end
  return format('%d', ns)
end
local function tabs(x) if type(x) == 'number' then return N(TS(x)) end return x end
local function tnorm(L) return TN(S(L)) end
local function tcmp(a, b)
  local na, nb = type(a) == 'number', type(b) == 'number'
  if na and nb then
    if a < b then return -1 elseif a > b then return 1 end
    return 0
  end
  if na then return -b.side end
  if nb then return a.side end
  return cmp(a, b)
end
local function tmax(a, b) if tcmp(a, b) >= 0 then return a end return b end
-- The duration a - b, for a >= b.
local function tdiff(a, b)
  if type(a) == 'number' and type(b) == 'number' then
    local d = a - b
    if d < FB then return d end
  end
  return dnorm(sub(tabs(a), tabs(b)))
end
local function tdiffsat(a, b) if tcmp(a, b) <= 0 then return 0 end return tdiff(a, b) end
-- t + d, saturating at 2^64 - 1.
local function tadd(t, d)
  if type(t) == 'number' and type(d) == 'number' then
    local r = t + d
    if r <= THI then return r end
  end
  return tnorm(addsat(tabs(t), dabs(d)))
end
-- t - d, saturating at 0.
local function tsubd(t, d)
  if type(t) == 'number' and type(d) == 'number' then
    local r = t - d
    if r >= TLO then return r end
  end
  return tnorm(subsat(tabs(t), dabs(d)))
end


-- Per-call state. The library's functions run one at a time, so one set of upvalues serves
-- every call: `begin` resets it at the start of each call of a batch, and `start` forgets
-- the TIME read at the start of each FCALL.
local TSEC, TUS, TMS             -- Redis TIME (s, us, and ms), read at most once per FCALL
local NOWMS                      -- Redis's clock in ms for this call; nil with an injected clock
local K_STATE, K_SLOTS, K_LEASE  -- the call's keys (the logs' are in `logs`)
local grew                       -- whether the call added information (see Expiry)
local SV                         -- the state hash's fields, read once (HMGET)
local dirty = {}                 -- its fields to write, by name (one HSET: `flush`)
local tats = {}                  -- the TATs read or set, by dimension
local held, latest               -- concurrency slots held, and the latest expiry
-- Sliding-window logs by dimension: their keys and the state hash's fields of their totals,
-- with the total and newest entry read during the call.
local logs = {r = {field = 'rsum'}, t = {field = 'tsum'}}

-- The start of every FCALL.
local function start()
  TSEC, TUS = nil, nil
  type, tonumber, tostring, unpack, error, pcall = _G.type, _G.tonumber, _G.tostring, _G.unpack, _G.error, _G.pcall
  format, match, ssub, concat, insert = string.format, string.match, string.sub, table.concat, table.insert
  max, floor, fmod, rcall, rpcall = math.max, math.floor, math.fmod, redis.call, redis.pcall
end

-- Resets the per-call state for the call whose five keys are K[k + 1 .. k + 5].
local function begin(K, k)
  K_STATE, K_SLOTS, K_LEASE = K[k + 1], K[k + 4], K[k + 5]
  grew, SV, held, latest, NUM = false, nil, nil, nil, true
  dirty.rtat, dirty.ttat, dirty.rsum, dirty.tsum, dirty.x = nil, nil, nil, nil, nil
  tats.r, tats.t = nil, nil
  local r, t = logs.r, logs.t
  r.key, r.total, r.newest = K[k + 2], nil, nil
  t.key, t.total, t.newest = K[k + 3], nil, nil
end

-- The call's `now` as an offset from its epoch (which this sets): ARGV[1], or Redis TIME.
local function clock(arg)
  local sec, ns
  if arg ~= '' then
    if #arg > 9 then sec = tonumber(ssub(arg, 1, -10)); ns = tonumber(ssub(arg, -9)) else sec = 0; ns = tonumber(arg) end
    NOWMS = nil
  else
    if not TSEC then
      local time = rcall('TIME')
      TSEC, TUS = tonumber(time[1]), tonumber(time[2])
      TMS = TSEC * 1000 + floor(TUS / 1000)
    end
    sec, ns, NOWMS = TSEC, TUS * 1000, TMS
  end
  epoch(sec)
  return ns
end

-- A limit's spec, parsed once per load (a deployment has a few: one per tier, model and
-- override); the caches of specs and sets are emptied when they reach 1,024 entries
-- together. Parsed limits are never modified.
local SPECS, nspecs = {}, 0
local function limit(spec)
  if spec == nil or spec == '' then return nil end
  local L = SPECS[spec]
  if L == nil then
    local a, l, w, b = match(spec, '^(%a) (%d+) (%d+) (%d+)$')
    L = {alg = a, limit = DN(l), window = DN(w), burst = DN(b)}
    -- Whether every value is a number (below 9e15): the rules' number branches apply.
    L.n = type(L.limit) == 'number' and type(L.window) == 'number' and type(L.burst) == 'number'
    if nspecs >= 1024 then SPECS, nspecs = {}, 0 end
    SPECS[spec], nspecs = L, nspecs + 1
  end
  return L
end
-- The limit set of specs r, t, c and shadow s, cached as the specs are, by r, then t,
-- then c and s (`n`: whether every limit's values are numbers). Never modified.
local SETS = {}
local function limits(r, t, c, s)
  local byR = SETS[r]
  local byT = byR and byR[t]
  local byC = byT and byT[c]
  local LS = byC and byC[s]
  if LS == nil then
    if nspecs >= 1024 then SPECS, SETS, nspecs, byR, byT, byC = {}, {}, 0, nil, nil, nil end
    LS = {r = limit(r), t = limit(t), c = limit(c), shadow = s == '1'}
    LS.n = not ((LS.r and not LS.r.n) or (LS.t and not LS.t.n) or (LS.c and not LS.c.n))
    if not byR then byR = {}; SETS[r] = byR end
    if not byT then byT = {}; byR[t] = byT end
    if not byC then byC = {}; byT[c] = byC end
    byC[s], nspecs = LS, nspecs + 1
  end
  if not LS.n then NUM = false end
  return LS
end

-- The state hash's fields, and each dimension's TAT field.
local FIELDS, FIELD, TATF = {'rtat', 'ttat', 'rsum', 'tsum', 'x'}, {rtat = 1, ttat = 2, rsum = 3, tsum = 4, x = 5}, {r = 'rtat', t = 'ttat'}
local function field(name)
  if SV == nil then SV = rcall('HMGET', K_STATE, 'rtat', 'ttat', 'rsum', 'tsum', 'x') end
  return SV[FIELD[name]]
end
local function setfield(name, value) dirty[name] = value end
local HSET = {'HSET'}
local function flush()
  local n = 2
  for i = 1, 5 do
    local f = FIELDS[i]
    local v = dirty[f]
    if v then HSET[n + 1], HSET[n + 2], n, dirty[f] = f, v, n + 2, nil end
  end
  if n > 2 then HSET[2] = K_STATE; rcall(unpack(HSET, 1, n)) end
end
local function tat(d)
  local t = tats[d]
  if t == nil then
    if SV == nil then field('x') end
    local v = SV[FIELD[TATF[d]]]
    if v then t = TN(v) else t = TN('0') end
    tats[d] = t
  end
  return t
end
local function settat(d, v)
  tats[d], grew = v, true
  dirty[TATF[d]] = TS(v)
end
-- GCRA, as in GCRA.swift. Admission, which every call takes, begins with the same
-- formula in plain doubles for numbers well inside the exact range: it returns what the
-- general code below it would, or steps aside to it at the first guard that fails.
local function gcra_admit(cost, t, now, L)
  if NUM then
    local start = t
    if start < now then start = now end
    local debt = start - now
    if debt < FB then
      local lim, win = L.limit, L.window
      local room = L.burst - cost
      if nmulcmp(debt, lim, room, win) <= 0 then
        local inc = nmuldiv(cost, win, lim, true)
        if inc and start + inc <= THI then return true, start + inc, 0 end
      else
        local slack = nmuldiv(room, win, lim, false)
        if slack then
          local back = start - slack
          if back >= TLO and back - now < FB then return false, t, back - now end
        end
      end
    end
  end
  local start = tmax(t, now)
  local debt = tdiff(start, now)
  local room = dsub(L.burst, cost)
  if mulcmp(debt, L.limit, room, L.window) <= 0 then
    return true, tadd(start, mdceil(cost, L.window, L.limit)), 0
  end
  local slack = mdfloor(room, L.window, L.limit)
  return false, t, tdiff(tsubd(start, slack), now)
end
local function gcra_refund(units, t, now, L)
  if tcmp(t, now) <= 0 then return t end
  return tmax(tsubd(t, mdfloor(units, L.window, L.limit)), now)
end
local function gcra_charge(units, t, now, L)
  return tadd(tmax(t, now), mdceil(units, L.window, L.limit))
end

-- Sliding-window logs, as in SlidingWindowLog.swift: entries `time:cost`, oldest first.
local function entry(raw)
  local t, c = match(raw, '^(%d+):(%d+)$')
  return TN(t), DN(c)
end
local function total(lg)
  if lg.total == nil then
    local v = field(lg.field)
    if v then lg.total = DN(v) else lg.total = 0 end
  end
  return lg.total
end
local function settotal(lg, v)
  lg.total = v
  setfield(lg.field, DS(v))
end
-- The newest entry's time (nil when the log is empty), read once per call and kept
-- up to date by `append` and `prune`.
local function newest(lg)
  if lg.newest == nil then
    local raw = rcall('LINDEX', lg.key, -1)
    if raw then lg.newest = (entry(raw)) else lg.newest = false end
  end
  return lg.newest or nil
end
local function effective(lg, now)
  local t = newest(lg)
  if t == nil then return now end
  return tmax(now, t)
end
local function prune(lg, now, window)
  local sum, removed = total(lg), false
  while true do
    local raw = rcall('LINDEX', lg.key, 0)
    if not raw then
      -- An empty log counts nothing, even when its list expired before the state
      -- hash holding its total (the hash may live longer for another dimension).
      if dcmp(sum, 0) ~= 0 then sum = 0; removed = true end
      break
    end
    local t, c = entry(raw)
    if tcmp(tadd(t, window), now) > 0 then break end
    rcall('LPOP', lg.key)
    lg.newest = nil
    sum = dsub(sum, c)
    removed = true
  end
  if removed then settotal(lg, sum) end
end
local function wait(lg, cost, lim, window, now)
  local counting = total(lg)
  if dcmp(dadd(counting, cost), lim) <= 0 then return 0 end
  local items = rcall('LRANGE', lg.key, 0, -1)
  for i = 1, #items do
    local t, c = entry(items[i])
    counting = dsub(counting, c)
    if dcmp(dadd(counting, cost), lim) <= 0 then return tdiffsat(tadd(t, window), now) end
  end
  error('weir: a cost within the limit must fit once the log is empty')
end
local function append(lg, cost, time)
  if iszerod(cost) then return end
  grew = true
  settotal(lg, dadd(total(lg), cost))
  local raw = rcall('LINDEX', lg.key, -1)
  if raw then
    local t, c = entry(raw)
    if tcmp(t, time) == 0 then
      rcall('LSET', lg.key, -1, TS(t) .. ':' .. DS(dadd(c, cost)))
      return
    end
  end
  rcall('RPUSH', lg.key, TS(time) .. ':' .. DS(cost))
  lg.newest = time
end
local function refundlog(lg, cost, time)
  local items = rcall('LRANGE', lg.key, 0, -1)
  for i = 1, #items do
    local t, c = entry(items[i])
    local order = tcmp(t, time)
    if order >= 0 then
      if order > 0 then return 0 end
      local taken = dmin(cost, c)
      rcall('LSET', lg.key, i - 1, TS(t) .. ':' .. DS(dsub(c, taken)))
      settotal(lg, dsub(total(lg), taken))
      return taken
    end
  end
  return 0
end
local function logreset(lg, window, now)
  local t = newest(lg)
  if t == nil then return 0 end
  return tdiffsat(tadd(t, window), now)
end

-- Concurrency slots: frees those expired at `now`; returns the number held and the
-- latest expiry (nil when none). Read once per call, then kept up to date by `hold`
-- and `release`.
local function slots(now)
  if held == nil then
    local all = rcall('HGETALL', K_SLOTS)
    held = 0
    for i = 1, #all, 2 do
      local exp = TN(all[i + 1])
      if tcmp(exp, now) <= 0 then
        rcall('HDEL', K_SLOTS, all[i])
      else
        held = held + 1
        if latest == nil then latest = exp else latest = tmax(latest, exp) end
      end
    end
  end
  return held, latest
end
local function hold(lease, exp, now)
  slots(now)
  -- At now = 2^64 - 1 a slot expires as it is taken (KeyState drops it at once).
  if tcmp(exp, now) <= 0 then return end
  grew = true
  if rcall('HSET', K_SLOTS, lease, TS(exp)) == 0 then
    held, latest = nil, nil
    return
  end
  held = held + 1
  if latest == nil then latest = exp else latest = tmax(latest, exp) end
end
local function release(lease)
  rcall('HDEL', K_SLOTS, lease)
  held, latest = nil, nil
end

-- The state statuses are computed from, after the call (`RedisStore` computes them with
-- the same Swift code as the memory store: GCRA.remaining and .reset, the logs' totals),
-- as seven values: the call's epoch (the whole second of its `now`) and its `now` (ns after
-- the epoch), so `now` is exactly epoch * 10^9 + that; then for requests and
-- for tokens either the GCRA TAT and '', or the sliding-window log's total and reset
-- (ns), or '' and '' with no limit; then the concurrency slots held ('' with no
-- concurrency limit). A TAT is its offset in ns from the epoch as an integer (possibly
-- negative), or the absolute time as decimal text when out of the offsets' range.
local function dimension(d, L, now)
  if L == nil then return '', '' end
  if L.alg == 'g' then
    local t = tats[d] or tat(d)
    if NUM or type(t) == 'number' then return t, '' end
    return S(t), ''
  end
  local lg = logs[d]
  prune(lg, effective(lg, now), L.window)
  return DR(total(lg)), DR(logreset(lg, L.window, now))
end
local function state(LS, now)
  local r1, r2 = dimension('r', LS.r, now)
  local t1, t2 = dimension('t', LS.t, now)
  local c = ''
  if LS.c then c = (slots(now)) end
  return ES, now, r1, r2, t1, t2, c
end

-- Expiry (see the header): sets `key`'s TTL by `cmd` (PEXPIRE with ms, or PEXPIREAT with
-- a Redis time in ms) unless that would shorten it; a key without a TTL gets it.
local function extend(key, cmd, value)
  if rcall(cmd, key, value, 'GT') == 0 and rcall('PTTL', key) == -1 then rcall(cmd, key, value) end
end
-- Flushes the state hash; after a call that added information, extends the state hash,
-- the logs of sliding-window limits and, with a concurrency limit, the slots.
local function expire(LS, now, grace)
  if not grew then flush(); return end
  -- Both TATs, whichever limits the call has: a TAT left by other limits may count again.
  local rt, tt = tat('r'), tat('t')
  local idle
  if NUM and rt - now < FB and tt - now < FB then
    idle = 0
    if rt > now then idle = rt - now end
    if tt - now > idle then idle = tt - now end
  else
    idle = dmax(tdiffsat(rt, now), tdiffsat(tt, now))
  end
  local r, t = LS.r, LS.t
  if r and r.alg == 's' then idle = dmax(idle, logreset(logs.r, r.window, now)) end
  if t and t.alg == 's' then idle = dmax(idle, logreset(logs.t, t.window, now)) end
  local n, last = 0, nil
  if LS.c or held ~= nil then n, last = slots(now) end
  if n > 0 then idle = dmax(idle, tdiffsat(last, now)) end
  if NOWMS then
    -- The state hash's TTL deadline, field x: no PEXPIRE while it covers the need
    -- (NOWMS + msceil(idle) + grace), that is while idle <= (x - NOWMS - grace) ms.
    if SV == nil then field('x') end
    local fresh = not (SV[1] or SV[2] or SV[3] or SV[4] or SV[5])
    local room = ((tonumber(SV[5]) or 0) - NOWMS - grace) * 1e6
    if fresh or room < 0 or (NUM and idle > room) or (not NUM and dcmp(idle, room) > 0) then
      local ms = msceil(idle) + grace
      local at = format('%.0f', NOWMS + ms + grace)
      setfield('x', at)
      flush()
      if fresh then rcall('PEXPIREAT', K_STATE, at) else extend(K_STATE, 'PEXPIREAT', at) end
    else
      flush()
    end
    if not (r and r.alg == 's') and not (t and t.alg == 's') and not (LS.c or held ~= nil) then return end
  else
    flush()
  end
  local ms = format('%.0f', msceil(idle) + grace)
  if not NOWMS then extend(K_STATE, 'PEXPIRE', ms) end
  if r and r.alg == 's' then extend(logs.r.key, 'PEXPIRE', ms) end
  if t and t.alg == 's' then extend(logs.t.key, 'PEXPIRE', ms) end
  if LS.c or held ~= nil then extend(K_SLOTS, 'PEXPIRE', ms) end
end
local function capacity(L) if L.alg == 'g' then return L.burst end return L.limit end

-- Acquire's check of one dimension d ('r' or 't') for `cost` under a sliding-window
-- limit L: whether it fits, and the wait until it would.
local function check(d, cost, L, now)
  local lg = logs[d]
  local eff = effective(lg, now)
  prune(lg, eff, L.window)
  local w = wait(lg, cost, L.limit, L.window, eff)
  if iszerod(w) then return true, 0 end
  return false, dadd(w, tdiff(eff, now))
end
-- Consumes what `check` found fits (`next`: the TAT it found); returns the time the cost
-- is logged at.
local function consume(d, cost, L, next, now)
  if L.alg == 'g' then settat(d, next); return now end
  if iszerod(cost) then return now end
  local lg = logs[d]
  local eff = effective(lg, now)
  append(lg, cost, eff)
  return eff
end

-- Acquire, one call: its keys are K[k + 1 .. k + 5], its arguments A[a + 1 .. a + 7]
-- (requests spec, tokens spec, concurrency spec, shadow '1'/'0', units, lease TTL in ns
-- or '' for no lease, lease id); `now` is A[1] or '' (Redis TIME), `grace` in ms.
-- Returns: allowed, reason, retry ns or '', shadowed, lease expiry or '', reserved, holds
-- slot, then the state statuses are computed from (`state`).
local function acquire(K, k, A, a, grace)
  begin(K, k)
  local now = clock(A[1])
  local rs, ts, cs, ss = A[a + 1], A[a + 2], A[a + 3], A[a + 4]
  local LS = limits(rs, ts, cs, ss)
  local R, T, C = LS.r, LS.t, LS.c
  local units = DN(A[a + 5])
  local ttl = nil
  if A[a + 6] ~= '' then ttl = DN(A[a + 6]) end
  local lease = A[a + 7]
  local holds = ttl ~= nil and C ~= nil
  local reason, retry = nil, nil
  local rfits, rwait, rnext, tfits, twait, tnext = true, 0, nil, true, 0, nil

  if T and ((NUM and units > capacity(T)) or (not NUM and dcmp(units, capacity(T)) > 0)) then
    reason = 'too_large'
  else
    local cfits = true
    if R then
      if R.alg == 'g' then rfits, rnext, rwait = gcra_admit(1, tat('r'), now, R) else rfits, rwait = check('r', 1, R, now) end
    end
    if T then
      if T.alg == 'g' then tfits, tnext, twait = gcra_admit(units, tat('t'), now, T) else tfits, twait = check('t', units, T, now) end
    end
    if holds then cfits = dcmp(slots(now), C.limit) < 0 end
    if not rfits then reason = 'requests' elseif not tfits then reason = 'tokens' elseif not cfits then reason = 'concurrency' end
    if not rfits or not tfits then retry = dmax(rwait, twait) end
  end

  local admitted = reason == nil
  local logged = now
  if admitted then
    if R then consume('r', 1, R, rnext, now) end
    if T then logged = consume('t', units, T, tnext, now) end
    if holds then hold(lease, tadd(now, ttl), now) end
  end
  local allowed = admitted or LS.shadow
  local expiry, reserved, slot = '', 0, 0
  if allowed and ttl ~= nil then
    expiry = TS(tadd(now, ttl))
    if admitted then reserved = units end
    if admitted and holds then slot = 1 end
    local consumed = '0'
    if admitted then consumed = '1' end
    rcall('HSET', K_LEASE, 'r', rs, 't', ts, 'c', cs, 's', ss,
      'reserved', DS(reserved), 'logged', TS(logged), 'exp', expiry, 'consumed', consumed, 'settled', '0')
    rcall('PEXPIRE', K_LEASE, format('%.0f', msceil(ttl) + grace))
  end
  local ok, shadowed = 0, 0
  if allowed then ok = 1 end
  if not admitted and LS.shadow then shadowed = 1 end
  if retry then retry = DR(retry) end
  local s1, s2, s3, s4, s5, s6, s7 = state(LS, now)
  expire(LS, now, grace)
  return {ok, reason or '', retry or '', shadowed, expiry, DR(reserved), slot, s1, s2, s3, s4, s5, s6, s7}
end

-- Settle. K: the five keys (K[5]: the lease's record). A: [1] now or '', [2] actual units,
-- [3] lease id, [4] grace ms.
-- Returns 'expired' or 'settled' alone when refused (a missing record is one that
-- expired: the caller checked that the lease was issued); else 'ok', charged, refunded,
-- the four limit specs, then the state statuses are computed from (`state`).
local function settle(K, A)
  begin(K, 0)
  local now = clock(A[1])
  local actual, lease, grace = DN(A[2]), A[3], tonumber(A[4])
  local fields = rcall('HGETALL', K_LEASE)
  if #fields == 0 then return {'expired'} end
  local R = {}
  for i = 1, #fields, 2 do R[fields[i]] = fields[i + 1] end
  if R.settled == '1' then return {'settled'} end
  if tcmp(TN(R.exp), now) <= 0 then return {'expired'} end
  rcall('HSET', K_LEASE, 'settled', '1')
  local LS = limits(R.r, R.t, R.c, R.s)
  local charged, refunded = 0, 0
  if R.consumed == '1' then
    local L, reserved = LS.t, DN(R.reserved)
    if L then
      if dcmp(actual, reserved) > 0 then
        charged = dsub(actual, reserved)
        if L.alg == 'g' then
          settat('t', gcra_charge(charged, tat('t'), now, L))
        else
          local lg = logs.t
          local eff = effective(lg, now)
          prune(lg, eff, L.window)
          append(lg, charged, eff)
        end
      elseif dcmp(actual, reserved) < 0 then
        local credit = dsub(reserved, actual)
        if L.alg == 'g' then
          local before = tat('t')
          local after = gcra_refund(credit, before, now, L)
          settat('t', after)
          if tcmp(before, after) ~= 0 then
            refunded = dmin(credit, mdfloor(tdiff(before, after), L.limit, L.window))
          end
        else
          local lg = logs.t
          prune(lg, effective(lg, now), L.window)
          refunded = refundlog(lg, credit, TN(R.logged))
        end
      end
    end
    release(lease)
  end
  local s1, s2, s3, s4, s5, s6, s7 = state(LS, now)
  local out = {'ok', DR(charged), DR(refunded), R.r, R.t, R.c, R.s, s1, s2, s3, s4, s5, s6, s7}
  expire(LS, now, grace)
  return out
end

-- Status. K: the first four keys. A: [1] now or '', [2] requests spec, [3] tokens spec,
-- [4] concurrency spec, [5] grace ms. Returns the state statuses are computed from
-- (`state`). Consumes nothing
-- (it only drops log entries and slots that no longer count).
local function status_of(K, A)
  begin(K, 0)
  local now = clock(A[1])
  local LS = limits(A[2], A[3], A[4], '0')
  local out = {state(LS, now)}
  expire(LS, now, tonumber(A[5]))
  return out
end

-- weir_acquire: one call or a batch, decided one after another at one `now`, each
-- exactly as it would be alone at that moment (`RedisStore` batches the calls that queue
-- while earlier ones are in flight).
-- KEYS: five per call, as above. ARGV: [1] now or '' (Redis TIME, read once for the
-- whole batch), [2] grace ms, then seven per call: requests spec, tokens spec,
-- concurrency spec, shadow, units, lease TTL or '', lease id.
-- Returns one reply per call, in order (as `acquire`). A call that raises an error (a key
-- of another type under the prefix, say) answers with that error alone; the calls before
-- it keep their outcome (Redis never undoes a function's writes) and the calls after it
-- are still decided.
redis.register_function('weir_acquire_{{version}}', function(KEYS, ARGV)
  start()
  local out, grace = {}, tonumber(ARGV[2])
  for i = 0, (#ARGV - 2) / 7 - 1 do
    local ok, reply = pcall(acquire, KEYS, i * 5, ARGV, 2 + i * 7, grace)
    if not ok then
      -- redis.call raises a table {err = ...}; error() raises a string.
      if type(reply) == 'table' and reply.err then reply = {err = reply.err} else reply = {err = 'ERR ' .. tostring(reply)} end
    end
    out[i + 1] = reply
  end
  return out
end)

-- weir_settle: KEYS and ARGV as `settle` takes them.
redis.register_function('weir_settle_{{version}}', function(KEYS, ARGV)
  start()
  return settle(KEYS, ARGV)
end)

-- weir_status: KEYS and ARGV as `status_of` takes them.
redis.register_function('weir_status_{{version}}', function(KEYS, ARGV)
  start()
  return status_of(KEYS, ARGV)
end)
