/// The Lua scripts of `RedisStore`: one per operation (acquire, settle, status), each a
/// fast path for the common case, then the library below followed by the operation's
/// body (the general code), which runs only when the fast path steps aside.
///
/// **Why scripts, not MULTI/EXEC.** A decision reads state, computes, then writes only
/// if the call fits. MULTI/EXEC cannot branch on what it reads (WATCH would turn every
/// contended decision into retries), while a script runs atomically on the server: the
/// read, the arithmetic and the writes of every dimension of a call are one step with
/// respect to every other client, in one round trip.
///
/// **Exact arithmetic, fast where it can be.** Lua numbers in Redis are doubles, exact
/// only below 2^53, while Weir's values are 64-bit: nanosecond times (Redis `TIME` gives
/// about 1.8e18 ns since 1970, above 2^53 = 9.0e15), limits, windows and their 128-bit
/// products in GCRA. Nothing here trades accuracy for speed: the scripts compute exactly
/// what `GCRA`, `SlidingWindowLog` and `KeyState` compute in Swift, saturating at
/// 2^64 - 1 as `WideArithmetic` does, with no range restriction. Two representations:
/// - *Fast*: a count or duration below 9e15 is a Lua number. A time is held as its
///   offset from the call's epoch (the whole second of its `now`), a number while that
///   offset is within ±9e15 (about 104 days either way). Sums, differences and
///   comparisons run in doubles when operands and result are provably below 2^53.
///   `a * b / c` (GCRA) runs in doubles when the product is below 9e15; otherwise the
///   quotient is estimated in doubles (within 1 when it is below 4e15 and c below 1e15)
///   and corrected with the exact remainder, computed from both products split into
///   base-2^18 digits (every partial product below 2^36).
/// - *Exact limbs*: anything else is an array of base-10^7 limbs (least significant
///   first), as are times outside the offset range (marked before or after it). A limb
///   is below 10^7; a limb product below 10^14; a column sum in a multiplication adds at
///   most 6 such products and carries, far below 2^53; division is schoolbook, one
///   base-10^7 digit at a time, each estimated in floating point and corrected exactly.
///   Every operation falls back to the limbs when its fast guard fails, and a result
///   small enough turns back into a number, so a call only pays for its large values.
///
/// **Fast paths: what a call costs.** Redis runs an EVAL script as one function per call,
/// so every `local function` of the library is a new closure on every call (about 100:
/// some 13 µs of server time before any work). The common calls never build it:
/// `fastAcquire` (no concurrency limit; a lease or none), `fastSettle` (a lease without a
/// concurrency limit) and `fastStatus` (no concurrency limit) handle requests and tokens
/// limits that are absent or GCRA with every value below 9e15, at a `now` more than 104
/// days from either end of the time range (as Redis `TIME` gives), with plain doubles and
/// a handful of locals. They compute exactly what the general code computes: the same
/// operations in the same order under the same guards (a TAT not after `now` counts as
/// `now` in every formula that reads it, so it is clamped once). At the first value out
/// of that range (a product the split arithmetic cannot correct, a time beyond the
/// offsets), a fast path `break`s out of its `repeat ... until true` before it has
/// written anything, and the general code decides the call from the start (with the
/// `TIME` already read). Fewer Redis calls too: the state hash is read by one HMGET and
/// written by one HSET; an allowed GCRA acquire makes three calls (`TIME`, HMGET,
/// HSET), rarely a fourth (the TTL, below). Replies carry numbers below 2^53 as RESP
/// integers (exact) instead of formatted text; `RedisStore` reads either.
///
/// **Keys** (all with the hash tag `{account|scope}`, so one call touches one cluster slot):
/// - KEYS[1] `P{a|s}`        hash: `rtat`, `ttat` (GCRA TATs), `rsum`, `tsum` (log totals),
///   `x` (the moment, Redis ms, its TTL was last set to by a fast path; see Expiry)
/// - KEYS[2] `P{a|s}:rlog`   list: the requests sliding-window log, entries `time:cost`, oldest first
/// - KEYS[3] `P{a|s}:tlog`   list: the tokens sliding-window log
/// - KEYS[4] `P{a|s}:slots`  hash: lease id -> expiry time of the concurrency slot it holds
/// - KEYS[5] `P{a|s}:lease:ID` hash: the lease record (limits, reserved, logged, exp, consumed, settled)
///
/// Limits travel as specs `A LIMIT WINDOW BURST` (`A` = `g` for GCRA, `s` for sliding
/// window; concurrency uses the same shape), or the empty string when absent.
///
/// **Expiry.** After a call that added information (a later TAT, a log entry, a slot),
/// the keys it concerns get a TTL reaching the moment they would carry no information any
/// more (buckets full, logs empty, slots expired), plus a grace: the state hash always,
/// the logs of its sliding-window limits, the slots when it has a concurrency limit. A
/// TTL is never shortened (`PEXPIRE ... GT`; a key GT leaves alone for having no TTL yet
/// gets a plain PEXPIRE; before Redis 7, without GT, the TTL is read and only lengthened),
/// and the state hash's TTL always covers the logs' (its totals belong to them); so idle
/// keys vanish and nothing live is lost. A call that only denies, prunes or frees leaves
/// the TTLs alone: it cannot push that moment later. With Redis's clock, the fast paths
/// keep the state hash's TTL deadline in its field `x`: while `x` covers what the call
/// needs, there is no PEXPIRE at all, and when it does not, the TTL is set one grace
/// further (PEXPIREAT), so a busy key pays for a PEXPIRE about once per grace rather
/// than on every call, and lives up to one grace longer. `x` never exceeds the key's
/// real TTL (it is written only with the PEXPIREAT that sets it, and TTLs only grow).
///
/// **Time.** ARGV[1] is the time in nanoseconds, or empty for Redis's own clock
/// (`TIME`, microseconds, scaled to nanoseconds).
enum RedisScripts {
    /// The shared library: exact integers, time, limits, GCRA, logs, slots, statuses, expiry.
    static let library = #"""
local B = 10000000
local function N(s)
  local n, len, i = {0, 0, 0}, #s, 1
  while len > 0 do
    local start = len - 6
    if start < 1 then start = 1 end
    n[i] = tonumber(string.sub(s, start, len))
    len = start - 1
    i = i + 1
  end
  return n
end
local function S(n)
  local k = #n
  while k > 1 and n[k] == 0 do k = k - 1 end
  local parts = {string.format('%d', n[k])}
  for i = k - 1, 1, -1 do parts[#parts + 1] = string.format('%07d', n[i]) end
  return table.concat(parts)
end
local ZERO, ONE, MAX = {0, 0, 0}, {1, 0, 0}, N('18446744073709551615')
local function cmp(a, b)
  for i = math.max(#a, #b), 1, -1 do
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
  local r, carry, k = {}, 0, math.max(#a, #b)
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
        carry = math.floor(t / B)
        r[i + j - 1] = t - carry * B
      end
      local k = i + #b
      while carry > 0 do
        local t = r[k] + carry
        carry = math.floor(t / B)
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
    carry = math.floor(t / B)
    r[i] = t - carry * B
  end
  r[#c + 1] = carry
  return r
end
-- Exact quotient and remainder of a / c (c > 0).
local function divmod(a, c)
  local q, r, cd = {}, {0}, approx(c)
  for i = #a, 1, -1 do
    table.insert(r, 1, a[i])
    local d = math.floor(approx(r) / cd)
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
local FB, T18, fmod, floor = 9e15, 262144, math.fmod, math.floor
local function dnorm(L)
  for i = 4, #L do if L[i] ~= 0 then return L end end
  local top = L[3] or 0
  if top < 90 then return (L[1] or 0) + (L[2] or 0) * B + top * 1e14 end
  return L
end
local function dabs(x) if type(x) == 'number' then return N(string.format('%d', x)) end return x end
local function DN(s) if #s <= 15 then return tonumber(s) end return dnorm(N(s)) end
local function DS(x) if type(x) == 'number' then return string.format('%d', x) end return S(x) end
-- A value in a reply: a number is exact as a RESP integer (below 2^53), limbs as text.
local function DR(x) if type(x) == 'number' then return x end return S(x) end
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
-- Compares a * b with c * d.
local function mulcmp(a, b, c, d)
  if type(a) == 'number' and type(b) == 'number' and type(c) == 'number' and type(d) == 'number' then
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
  return cmp(mul(dabs(a), dabs(b)), mul(dabs(c), dabs(d)))
end
-- floor(a * b / c), or the ceiling when `up`; saturating at 2^64 - 1 (c > 0).
local function muldiv(a, b, c, up)
  if type(a) == 'number' and type(b) == 'number' and type(c) == 'number' and c < 1e15 then
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
  local q, r = divmod(mul(dabs(a), dabs(b)), dabs(c))
  if up and not iszero(r) then q = add(q, ONE) end
  return dnorm(sat(q))
end
local function mdfloor(a, b, c) return muldiv(a, b, c, false) end
local function mdceil(a, b, c) return muldiv(a, b, c, true) end
-- Whole milliseconds in a duration, rounded up.
local function msceil(d)
  if type(d) == 'number' then
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
  if n > 9 then sec = tonumber(string.sub(s, 1, n - 9)); ns = tonumber(string.sub(s, n - 8)) else ns = tonumber(s) end
  local ds = sec - ES
  if ds > -9000000 and ds < 9000000 then
    local x = ds * 1e9 + ns
    if x >= TLO and x <= THI then return x end
  end
  local L = N(s)
  if ds < 0 then L.side = -1 else L.side = 1 end
  return L
end
local function TS(x)
  if type(x) ~= 'number' then return S(x) end
  local ns = fmod(x, 1e9)
  if ns < 0 then ns = ns + 1e9 end
  local sec = ES + (x - ns) / 1e9
  if sec > 0 then return string.format('%d%09d', sec, ns) end
  return string.format('%d', ns)
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

local function clock(arg)
  local sec, ns
  if arg ~= '' then
    if #arg > 9 then sec = tonumber(string.sub(arg, 1, -10)); ns = tonumber(string.sub(arg, -9)) else sec = 0; ns = tonumber(arg) end
  else
    -- Read once per script run: every call of a batch is decided at the same moment.
    TIME = TIME or redis.call('TIME')
    sec = tonumber(TIME[1]); ns = tonumber(TIME[2]) * 1000
  end
  epoch(sec)
  return ns
end
local function limit(spec)
  if spec == nil or spec == '' then return nil end
  local a, l, w, b = string.match(spec, '^(%a) (%d+) (%d+) (%d+)$')
  return {alg = a, limit = DN(l), window = DN(w), burst = DN(b)}
end
local function limits(r, t, c, s)
  return {r = limit(r), t = limit(t), c = limit(c), shadow = s == '1'}
end

local K_STATE, K_RLOG, K_TLOG, K_SLOTS = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
-- Whether this call added information (a later TAT, a log entry, a slot): only then can
-- the keys need to live longer (pruning and freeing only shorten what they hold).
local grew = false
-- The state hash: read once (one HMGET of every field), written once at the end (`flush`).
local SV, dirty = nil, {}
local FIELD = {rtat = 1, ttat = 2, rsum = 3, tsum = 4}
local function field(name)
  if SV == nil then SV = redis.call('HMGET', K_STATE, 'rtat', 'ttat', 'rsum', 'tsum') end
  return SV[FIELD[name]]
end
local function setfield(name, value) dirty[name] = value end
local function flush()
  local args, n = {'HSET', K_STATE}, 2
  for f, v in pairs(dirty) do args[n + 1] = f; args[n + 2] = v; n = n + 2 end
  if n > 2 then redis.call(unpack(args)) end
  dirty = {}
end
local tats = {}
local function tat(d)
  if tats[d] == nil then
    local v = field(d .. 'tat')
    if v then tats[d] = TN(v) else tats[d] = TN('0') end
  end
  return tats[d]
end
local function settat(d, v)
  tats[d] = v
  grew = true
  setfield(d .. 'tat', TS(v))
end

-- GCRA, as in GCRA.swift.
local function gcra_admit(cost, t, now, L)
  local start = tmax(t, now)
  local debt = tdiff(start, now)
  local room = dsub(L.burst, cost)
  if mulcmp(debt, L.limit, room, L.window) <= 0 then
    return true, tadd(start, mdceil(cost, L.window, L.limit)), 0
  end
  local slack = mdfloor(room, L.window, L.limit)
  return false, t, tdiff(tsubd(start, slack), now)
end
local function gcra_remaining(t, now, L)
  if tcmp(t, now) <= 0 then return L.burst end
  return dsubsat(L.burst, mdceil(tdiff(t, now), L.limit, L.window))
end
local function gcra_refund(units, t, now, L)
  if tcmp(t, now) <= 0 then return t end
  return tmax(tsubd(t, mdfloor(units, L.window, L.limit)), now)
end
local function gcra_charge(units, t, now, L)
  return tadd(tmax(t, now), mdceil(units, L.window, L.limit))
end

-- Sliding-window logs, as in SlidingWindowLog.swift: entries `time:cost`, oldest first.
local logs = {r = {key = K_RLOG, field = 'rsum'}, t = {key = K_TLOG, field = 'tsum'}}
local function entry(raw)
  local t, c = string.match(raw, '^(%d+):(%d+)$')
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
    local raw = redis.call('LINDEX', lg.key, -1)
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
    local raw = redis.call('LINDEX', lg.key, 0)
    if not raw then
      -- An empty log counts nothing, even when its list expired before the state
      -- hash holding its total (the hash may live longer for another dimension).
      if dcmp(sum, 0) ~= 0 then sum = 0; removed = true end
      break
    end
    local t, c = entry(raw)
    if tcmp(tadd(t, window), now) > 0 then break end
    redis.call('LPOP', lg.key)
    lg.newest = nil
    sum = dsub(sum, c)
    removed = true
  end
  if removed then settotal(lg, sum) end
end
local function wait(lg, cost, lim, window, now)
  local counting = total(lg)
  if dcmp(dadd(counting, cost), lim) <= 0 then return 0 end
  local items = redis.call('LRANGE', lg.key, 0, -1)
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
  local raw = redis.call('LINDEX', lg.key, -1)
  if raw then
    local t, c = entry(raw)
    if tcmp(t, time) == 0 then
      redis.call('LSET', lg.key, -1, TS(t) .. ':' .. DS(dadd(c, cost)))
      return
    end
  end
  redis.call('RPUSH', lg.key, TS(time) .. ':' .. DS(cost))
  lg.newest = time
end
local function refundlog(lg, cost, time)
  local items = redis.call('LRANGE', lg.key, 0, -1)
  for i = 1, #items do
    local t, c = entry(items[i])
    local order = tcmp(t, time)
    if order >= 0 then
      if order > 0 then return 0 end
      local taken = dmin(cost, c)
      redis.call('LSET', lg.key, i - 1, TS(t) .. ':' .. DS(dsub(c, taken)))
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
local held, latest = nil, nil
local function slots(now)
  if held == nil then
    local all = redis.call('HGETALL', K_SLOTS)
    held = 0
    for i = 1, #all, 2 do
      local exp = TN(all[i + 1])
      if tcmp(exp, now) <= 0 then
        redis.call('HDEL', K_SLOTS, all[i])
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
  if redis.call('HSET', K_SLOTS, lease, TS(exp)) == 0 then
    held, latest = nil, nil
    return
  end
  held = held + 1
  if latest == nil then latest = exp else latest = tmax(latest, exp) end
end
local function release(lease)
  redis.call('HDEL', K_SLOTS, lease)
  held, latest = nil, nil
end

-- Statuses, as KeyState.statuses: nine values (limit, remaining, reset) x (requests, tokens, concurrency).
local function status(d, L, now)
  if L.alg == 'g' then
    local t = tat(d)
    return {DR(L.limit), DR(gcra_remaining(t, now, L)), DR(tdiffsat(t, now))}
  end
  local lg = logs[d]
  prune(lg, effective(lg, now), L.window)
  return {DR(L.limit), DR(dsubsat(L.limit, total(lg))), DR(logreset(lg, L.window, now))}
end
local function statuses(LS, now)
  local out = {'', '', '', '', '', '', '', '', ''}
  if LS.r then local s = status('r', LS.r, now); out[1], out[2], out[3] = s[1], s[2], s[3] end
  if LS.t then local s = status('t', LS.t, now); out[4], out[5], out[6] = s[1], s[2], s[3] end
  if LS.c then
    local n = slots(now)
    out[7], out[8], out[9] = DR(LS.c.limit), DR(dsubsat(LS.c.limit, n)), 0
  end
  return out
end

-- Expiry: the keys this call wrote information into live until it is gone, plus `grace`
-- ms; a TTL is never shortened (PEXPIRE ... GT). A key that GT leaves alone because it
-- has no TTL yet (made by this call) gets a plain PEXPIRE; before Redis 7 (no GT), the
-- TTL is read and only lengthened.
local function extend(key, ms)
  local text = string.format('%.0f', ms)
  local r = redis.pcall('PEXPIRE', key, text, 'GT')
  if r == 1 then return end
  local current = redis.call('PTTL', key)
  if current == -1 or (current >= 0 and type(r) == 'table' and current < ms) then redis.call('PEXPIRE', key, text) end
end
-- Flushes the state hash; after a call that added information, extends the state hash,
-- the logs of sliding-window limits and, with a concurrency limit, the slots.
local function expire(LS, now, grace)
  flush()
  if not grew then return end
  local idle = dmax(tdiffsat(tat('r'), now), tdiffsat(tat('t'), now))
  for d, lg in pairs(logs) do
    local L = LS[d]
    if L and L.alg == 's' then idle = dmax(idle, logreset(lg, L.window, now)) end
  end
  local n, last = 0, nil
  if LS.c or held ~= nil then n, last = slots(now) end
  if n > 0 then idle = dmax(idle, tdiffsat(last, now)) end
  local ms = msceil(idle) + grace
  extend(K_STATE, ms)
  for d, lg in pairs(logs) do
    local L = LS[d]
    if L and L.alg == 's' then extend(lg.key, ms) end
  end
  if LS.c or held ~= nil then extend(K_SLOTS, ms) end
end
local function capacity(L) if L.alg == 'g' then return L.burst end return L.limit end
"""#

    /// What the fast paths share across the calls of one script run: `TIME` (Redis's clock,
    /// read once) and the limits' specs, parsed once each.
    static let fastPrelude = #"""
local TIME
-- A GCRA spec's limit, window and burst ({l, w, b}) when each is at least 1 and below
-- 9e15, else false (the fast path steps aside); parsed once per script run.
local SPECS = {}
local function fastspec(s)
  local L = SPECS[s]
  if L == nil then
    L = false
    local l, w, b = string.match(s, '^g (%d+) (%d+) (%d+)$')
    if l then
      l, w, b = tonumber(l), tonumber(w), tonumber(b)
      if l >= 1 and l < 9e15 and w >= 1 and w < 9e15 and b >= 1 and b < 9e15 then L = {l, w, b} end
    end
    SPECS[s] = L
  end
  return L
end
"""#

    /// The fast paths' common part: parses the limits, reads the time and the state hash,
    /// decodes the TATs (see the comment in the script).
    static let fastHead = #"""
-- The fast path's common part, inside `repeat ... until true` (a `break` leaves the path
-- for the general code), with A = ARGV, FB = 9e15, A[1] the time, rs, ts the requests
-- and tokens specs. Both limits must be absent or GCRA with every value below
-- 9e15, and `now` (as Redis TIME gives) more than 104 days from either end of the time
-- range. Defines the limits (lr, wr, br; lt, wt, bt), TIME, ES, now, nowms, the state
-- hash's fields SV, the TATs (rtat, ttat: offsets from ES, clamped to now) and `md`.
  local sub, fmod, floor = string.sub, math.fmod, math.floor
  local lr, wr, br, lt, wt, bt
  if rs ~= '' then
    local L = fastspec(rs)
    if not L then break end
    lr, wr, br = L[1], L[2], L[3]
  end
  if ts ~= '' then
    local L = fastspec(ts)
    if not L then break end
    lt, wt, bt = L[1], L[2], L[3]
  end
  -- now: the offset in ns from the epoch ES (the whole second of now); nowms: Redis's
  -- clock in ms, for the state hash's TTL (nil with an injected clock).
  local ES, now, nowms
  if A[1] == '' then
    TIME = TIME or redis.call('TIME')
    ES = tonumber(TIME[1])
    local us = tonumber(TIME[2])
    now, nowms = us * 1000, ES * 1000 + floor(us / 1000)
  else
    local a = A[1]
    local n = #a
    if n < 10 then break end
    ES, now = tonumber(sub(a, 1, n - 9)), tonumber(sub(a, n - 8))
  end
  if ES < 9000000 or ES > 18438744073 then break end
  local SV = redis.call('HMGET', KEYS[1], 'rtat', 'ttat', 'rsum', 'tsum', 'x')
  -- A stored TAT as an offset, or now when it is not later than now (every use below
  -- treats such a TAT as now); nil when it is beyond the offsets' range.
  local function tat(s)
    if not s then return now end
    local n = #s
    if n < 10 then return now end
    local ds = tonumber(sub(s, 1, n - 9)) - ES
    if ds > -9000000 and ds < 9000000 then
      local x = ds * 1e9 + tonumber(sub(s, n - 8))
      if x >= -FB and x <= FB then
        if x > now then return x end
        return now
      end
    end
    if ds < 0 then return now end
    return nil
  end
  local rtat, ttat = tat(SV[1]), tat(SV[2])
  if not (rtat and ttat) then break end
  -- floor(a * b / c), or the ceiling when `up` (a, b < 9e15, c >= 1), as `muldiv`; nil
  -- where `muldiv` would leave the doubles.
  local function md(a, b, c, up)
    local p = a * b
    if p < FB then
      local r = fmod(p, c)
      local q = (p - r) / c
      if up and r > 0 then q = q + 1 end
      return q
    end
    if c >= 1e15 then return nil end
    local q = floor(p / c)
    if q >= 4e15 then return nil end
    local T18 = 262144
    local function prod(a, b)
      local a0 = fmod(a, T18); a = (a - a0) / T18
      local a1 = fmod(a, T18); local a2 = (a - a1) / T18
      local b0 = fmod(b, T18); b = (b - b0) / T18
      local b1 = fmod(b, T18); local b2 = (b - b1) / T18
      local c0, c1 = a0 * b0, a0 * b1 + a1 * b0
      local c2, c3, c4 = a0 * b2 + a1 * b1 + a2 * b0, a1 * b2 + a2 * b1, a2 * b2
      local r0 = fmod(c0, T18); c1 = c1 + (c0 - r0) / T18
      local r1 = fmod(c1, T18); c2 = c2 + (c1 - r1) / T18
      local r2 = fmod(c2, T18); c3 = c3 + (c2 - r2) / T18
      local r3 = fmod(c3, T18); c4 = c4 + (c3 - r3) / T18
      local r4 = fmod(c4, T18)
      return r0, r1, r2, r3, r4, (c4 - r4) / T18
    end
    local p0, p1, p2, p3, p4, p5 = prod(a, b)
    local q0, q1, q2, q3, q4, q5 = prod(q, c)
    local r = (((((p5 - q5) * T18 + (p4 - q4)) * T18 + (p3 - q3)) * T18 + (p2 - q2)) * T18 + (p1 - q1)) * T18 + (p0 - q0)
    while r < 0 do q = q - 1; r = r + c end
    while r >= c do q = q + 1; r = r - c end
    if up and r > 0 then q = q + 1 end
    return q
  end
"""#

    /// The fast paths' GCRA statuses (limit, remaining, reset) from the TATs.
    static let fastStatuses = #"""
  -- Statuses (as `status`): limit, remaining, reset.
  local rrem, rres, trem, tres
  if rs ~= '' then
    rrem, rres = br, rtat - now
    if rtat > now then
      local used = md(rtat - now, lr, wr, true)
      if used == nil or rtat - now >= FB then break end
      if used >= br then rrem = 0 else rrem = br - used end
    end
  end
  if ts ~= '' then
    trem, tres = bt, ttat - now
    if ttat > now then
      local used = md(ttat - now, lt, wt, true)
      if used == nil or ttat - now >= FB then break end
      if used >= bt then trem = 0 else trem = bt - used end
    end
  end
"""#

    /// The fast paths' writes to the state hash and its TTL (see the comment in the script).
    static let fastWrite = #"""
    -- The state hash's writes: `sets` (field, value pairs), and its TTL as `expire` sets
    -- it (never shortened) for the TATs rtat, ttat. With Redis's clock, field x holds the
    -- moment (Redis ms) the hash's TTL runs to: while that covers the need, no PEXPIRE;
    -- else the TTL is set one grace further.
    local idle = rtat - now
    if ttat - now > idle then idle = ttat - now end
    local r = fmod(idle, 1e6)
    local ms = (idle - r) / 1e6 + grace
    if r > 0 then ms = ms + 1 end
    local fresh = not (SV[1] or SV[2] or SV[3] or SV[4] or SV[5])
    local target = nil
    if nowms and (fresh or nowms + ms > (tonumber(SV[5]) or 0)) then target = string.format('%d', nowms + ms + grace) end
    if nowms and not target then
      redis.call('HSET', KEYS[1], unpack(sets))
    else
      if target then sets[#sets + 1] = 'x'; sets[#sets + 1] = target end
      redis.call('HSET', KEYS[1], unpack(sets))
      local cmd, v, rel = 'PEXPIRE', nil, ms
      if target then cmd, v, rel = 'PEXPIREAT', target, ms + grace else v = string.format('%d', ms) end
      if fresh then
        redis.call(cmd, KEYS[1], v)
      else
        local r = redis.pcall(cmd, KEYS[1], v, 'GT')
        if r ~= 1 then
          -- GT left it alone: a key without a TTL gets one; before Redis 7 (no GT) the
          -- TTL is only lengthened.
          local current = redis.call('PTTL', KEYS[1])
          if current == -1 or (current >= 0 and type(r) == 'table' and current < rel) then redis.call(cmd, KEYS[1], v) end
        end
      end
    end
"""#

    /// The acquire script's fast path (see the script for its range); runs before the library.
    static let fastAcquire = #"""
-- The acquire fast path: no concurrency limit, a lease TTL (if any) below 9e15, and the
-- common part's range. It computes exactly what the general code computes (the same
-- operations in doubles, under the same guards), so a call that leaves this range at any
-- step breaks out before writing anything, and the general code decides. Returns the
-- call's reply, or nothing when it steps aside.
repeat
  local A, FB = ARGV, 9e15
  if A[4] ~= '' then break end
  local units, grace, ttl = tonumber(A[6]), tonumber(A[9]), nil
  if not (units < FB and grace < 1e15) then break end
  if A[7] ~= '' then
    ttl = tonumber(A[7])
    if not (ttl < FB) then break end
  end
  local rs, ts = A[2], A[3]
"""# + "\n" + fastHead + "\n" + #"""
  -- GCRA admission of each limit, as gcra_admit: the TAT (clamped to now) is its start.
  local reason, retry, admitted = nil, nil, true
  if ts ~= '' and units > bt then
    reason, admitted = 'too_large', false
  else
    local nr, nt, rwait, twait = rtat, ttat, 0, 0
    if rs ~= '' then
      local debt, room = rtat - now, br - 1
      local p, q = debt * lr, room * wr
      if debt >= FB or room < 0 or not ((p < FB and q < FB) or p < q * 0.9999999999 or p > q * 1.0000000001) then break end
      if p <= q then
        local inc = md(1, wr, lr, true)
        if inc == nil or rtat + inc > FB then break end
        nr = rtat + inc
      else
        local slack = md(room, wr, lr, false)
        if slack == nil or rtat - slack < -FB or rtat - slack - now >= FB then break end
        reason, rwait = 'requests', rtat - slack - now
      end
    end
    if ts ~= '' then
      local debt, room = ttat - now, bt - units
      local p, q = debt * lt, room * wt
      if debt >= FB or room < 0 or not ((p < FB and q < FB) or p < q * 0.9999999999 or p > q * 1.0000000001) then break end
      if p <= q then
        local inc = md(units, wt, lt, true)
        if inc == nil or ttat + inc > FB then break end
        nt = ttat + inc
      else
        local slack = md(room, wt, lt, false)
        if slack == nil or ttat - slack < -FB or ttat - slack - now >= FB then break end
        reason, twait = reason or 'tokens', ttat - slack - now
      end
    end
    if reason then
      admitted = false
      if rwait >= twait then retry = rwait else retry = twait end
    else
      rtat, ttat = nr, nt
    end
  end
"""# + "\n" + fastStatuses + "\n" + #"""
  local allowed, shadowed = 0, 0
  if admitted then allowed = 1 elseif A[5] == '1' then allowed, shadowed = 1, 1 end
  -- The lease (as the general code: only when allowed; it reserves only when admitted).
  local expiry, reserved = '', 0
  if ttl and allowed == 1 then
    local e = now + ttl
    if e > FB then break end
    local ns = fmod(e, 1e9)
    expiry = string.format('%d%09d', ES + (e - ns) / 1e9, ns)
    if admitted then reserved = units end
  end
  if admitted and (rs ~= '' or ts ~= '') then
    local sets = {}
    if rs ~= '' then local ns = fmod(rtat, 1e9); sets[1], sets[2] = 'rtat', string.format('%d%09d', ES + (rtat - ns) / 1e9, ns) end
    if ts ~= '' then local ns = fmod(ttat, 1e9); sets[#sets + 1], sets[#sets + 2] = 'ttat', string.format('%d%09d', ES + (ttat - ns) / 1e9, ns) end
"""# + "\n" + fastWrite + "\n" + #"""
  end
  if expiry ~= '' then
    local consumed = '0'
    if admitted then consumed = '1' end
    local r = fmod(ttl, 1e6)
    local ms = (ttl - r) / 1e6 + grace
    if r > 0 then ms = ms + 1 end
    redis.call('HSET', KEYS[5], 'r', rs, 't', ts, 'c', A[4], 's', A[5], 'reserved', string.format('%d', reserved),
      'logged', string.format('%d%09d', ES, now), 'exp', expiry, 'consumed', consumed, 'settled', '0')
    redis.call('PEXPIRE', KEYS[5], string.format('%d', ms))
  end
  return {allowed, reason or '', retry or '', shadowed, expiry, reserved, 0,
    lr or '', rrem or '', rres or '', lt or '', trem or '', tres or '', '', '', ''}
until true
"""#

    /// The settle script's fast path; runs before the library.
    static let fastSettle = #"""
-- The settle fast path: a lease without a concurrency limit (so it holds no slot) and the
-- common part's range; as the general code, it refuses a missing or settled record
-- first. Nothing is written before every value is known to be in range.
repeat
  local A, FB = ARGV, 9e15
  local fields = redis.call('HGETALL', KEYS[5])
  if #fields == 0 then return {'expired'} end
  local R = {}
  for i = 1, #fields, 2 do R[fields[i]] = fields[i + 1] end
  if R.settled == '1' then return {'settled'} end
  if R.c ~= '' then break end
  local actual, grace, reserved = tonumber(A[2]), tonumber(A[4]), tonumber(R.reserved)
  if not (actual < FB and grace < 1e15 and reserved < FB) then break end
  local rs, ts = R.r, R.t
"""# + "\n" + fastHead + "\n" + #"""
  -- The lease's expiry, exactly: expired when not after now.
  do
    local e = R.exp
    local n = #e
    if n < 10 then return {'expired'} end
    local ds = tonumber(sub(e, 1, n - 9)) - ES
    if ds <= -9000000 then return {'expired'} end
    if ds < 9000000 and ds * 1e9 + tonumber(sub(e, n - 8)) <= now then return {'expired'} end
  end
  -- Charge or refund the tokens limit, as the general code (gcra_charge, gcra_refund).
  local charged, refunded, newt = 0, 0, nil
  if R.consumed == '1' and ts ~= '' then
    if actual > reserved then
      charged = actual - reserved
      local inc = md(charged, wt, lt, true)
      if inc == nil or ttat + inc > FB then break end
      newt = ttat + inc
    elseif actual < reserved then
      local credit = reserved - actual
      if ttat > now then
        local back = md(credit, wt, lt, false)
        if back == nil or ttat - back < -FB then break end
        newt = ttat - back
        if newt < now then newt = now end
        if newt ~= ttat then
          if ttat - newt >= FB then break end
          local r = md(ttat - newt, lt, wt, false)
          if r == nil then break end
          if r < credit then refunded = r else refunded = credit end
        end
      else
        -- A TAT not after now stays as it is (written back as stored).
        newt = false
      end
    end
  end
  local told = ttat
  if newt then ttat = newt end
"""# + "\n" + fastStatuses + "\n" + #"""
  redis.call('HSET', KEYS[5], 'settled', '1')
  if newt ~= nil then
    local sets
    if newt then
      local ns = fmod(ttat, 1e9)
      sets = {'ttat', string.format('%d%09d', ES + (ttat - ns) / 1e9, ns)}
    else
      sets = {'ttat', SV[2] or '0'}
    end
"""# + "\n" + fastWrite + "\n" + #"""
  end
  return {'ok', charged, refunded, R.r, R.t, R.c, R.s,
    lr or '', rrem or '', rres or '', lt or '', trem or '', tres or '', '', '', ''}
until true
"""#

    /// The status script's fast path; runs before the library.
    static let fastStatus = #"""
-- The status fast path: no concurrency limit and the common part's range. GCRA statuses
-- write nothing (as in the general code: nothing grew, nothing is pruned).
repeat
  local A, FB = ARGV, 9e15
  if A[4] ~= '' then break end
  local rs, ts = A[2], A[3]
"""# + "\n" + fastHead + "\n" + fastStatuses + "\n" + #"""
  return {lr or '', rrem or '', rres or '', lt or '', trem or '', tres or '', '', '', ''}
until true
"""#

    /// Acquire, for one call or a batch of calls decided one after another in one script
    /// run (`RedisStore` batches the calls that queue while earlier ones are in flight).
    /// KEYS: five per call, as above (the fifth: the record of the lease the call would get).
    /// ARGV: [1] now or '' (Redis `TIME`, read once for the whole batch), [2] grace ms, then
    /// seven per call: requests spec, tokens spec, concurrency spec, shadow '1'/'0', units,
    /// lease TTL in ns or '' (no lease), lease id.
    /// Returns one reply per call, in order: allowed, reason, retry ns or '', shadowed,
    /// lease expiry or '', reserved, holds slot, then the nine status values ('' for an
    /// absent limit). Each value is a RESP integer or text (a number at or above 2^53, a
    /// time); `RedisStore` reads both. The calls of a batch are decided at one `now`, in
    /// order, each exactly as it would be alone at that moment.
    static let acquire = fastPrelude + "\nlocal function fast(KEYS, ARGV)\n" + fastAcquire
        + "\nend\nlocal function general(KEYS, ARGV)\n" + library + "\n" + acquireGeneral + "\nend\n" + acquireBatch

    /// The acquire script's batch loop: each call's KEYS and ARGV, as the single-call code
    /// reads them, then the fast path or, when it steps aside, the general code. A call
    /// that raises an error (a key of another type under the prefix, say) answers with
    /// that error alone; the calls before it keep their outcome (Redis never undoes a
    /// script's writes) and the calls after it are still decided.
    static let acquireBatch = #"""
-- K and A are refilled for each call (neither path keeps them past its call).
local out, K, A = {}, {}, {ARGV[1], nil, nil, nil, nil, nil, nil, nil, ARGV[2]}
local function decide() return fast(K, A) or general(K, A) end
for i = 0, (#ARGV - 2) / 7 - 1 do
  local k, a = i * 5, 2 + i * 7
  K[1], K[2], K[3], K[4], K[5] = KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4], KEYS[k + 5]
  A[2], A[3], A[4], A[5], A[6], A[7], A[8] = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6], ARGV[a + 7]
  local ok, reply = pcall(decide)
  if not ok then
    -- redis.call raises a table {err = ...}; error() raises a string.
    if type(reply) == 'table' and reply.err then reply = {err = reply.err} else reply = {err = 'ERR ' .. tostring(reply)} end
  end
  out[i + 1] = reply
end
return out
"""#

    /// The acquire script's general code for one call: KEYS[1..5] and ARGV as the fast
    /// path reads them ([1] now or '', [2] requests spec, [3] tokens spec, [4] concurrency
    /// spec, [5] shadow, [6] units, [7] lease TTL or '', [8] lease id, [9] grace ms).
    static let acquireGeneral = #"""
local now = clock(ARGV[1])
local LS = limits(ARGV[2], ARGV[3], ARGV[4], ARGV[5])
local units = DN(ARGV[6])
local ttl = nil
if ARGV[7] ~= '' then ttl = DN(ARGV[7]) end
local lease, grace = ARGV[8], tonumber(ARGV[9])
local holds = ttl ~= nil and LS.c ~= nil
local reason, retry = nil, nil
local rv = {fits = true, wait = 0}
local tv = {fits = true, wait = 0}

local function check(d, cost, L)
  if L.alg == 'g' then
    local fits, t, w = gcra_admit(cost, tat(d), now, L)
    return {fits = fits, wait = w, tat = t}
  end
  local lg = logs[d]
  local eff = effective(lg, now)
  prune(lg, eff, L.window)
  local w = wait(lg, cost, L.limit, L.window, eff)
  if iszerod(w) then return {fits = true, wait = 0} end
  return {fits = false, wait = dadd(w, tdiff(eff, now))}
end
local function consume(d, cost, L, verdict)
  if L.alg == 'g' then settat(d, verdict.tat); return now end
  if iszerod(cost) then return now end
  local lg = logs[d]
  local eff = effective(lg, now)
  append(lg, cost, eff)
  return eff
end

if LS.t and dcmp(units, capacity(LS.t)) > 0 then
  reason = 'too_large'
else
  local cfits = true
  if LS.r then rv = check('r', 1, LS.r) end
  if LS.t then tv = check('t', units, LS.t) end
  if holds then cfits = dcmp(slots(now), LS.c.limit) < 0 end
  if not rv.fits then reason = 'requests' elseif not tv.fits then reason = 'tokens' elseif not cfits then reason = 'concurrency' end
  if not rv.fits or not tv.fits then retry = dmax(rv.wait, tv.wait) end
end

local admitted = reason == nil
local logged = now
if admitted then
  if LS.r then consume('r', 1, LS.r, rv) end
  if LS.t then logged = consume('t', units, LS.t, tv) end
  if holds then hold(lease, tadd(now, ttl), now) end
end
local allowed = admitted or LS.shadow
local expiry, reserved, slot = '', '0', '0'
if allowed and ttl ~= nil then
  expiry = TS(tadd(now, ttl))
  if admitted then reserved = DS(units) end
  if admitted and holds then slot = '1' end
  local consumed = '0'
  if admitted then consumed = '1' end
  redis.call('HSET', KEYS[5], 'r', ARGV[2], 't', ARGV[3], 'c', ARGV[4], 's', ARGV[5],
    'reserved', reserved, 'logged', TS(logged), 'exp', expiry, 'consumed', consumed, 'settled', '0')
  redis.call('PEXPIRE', KEYS[5], string.format('%.0f', msceil(ttl) + grace))
end
local shadowed = '0'
if not admitted and LS.shadow then shadowed = '1' end
local out = {'0', reason or '', '', shadowed, expiry, reserved, slot}
if allowed then out[1] = '1' end
if retry then out[3] = DR(retry) end
for _, s in ipairs(statuses(LS, now)) do out[#out + 1] = s end
expire(LS, now, grace)
return out
"""#

    /// Settle. KEYS[1..5] as above (KEYS[5]: the lease's record).
    /// ARGV: [1] now or '', [2] actual units, [3] lease id, [4] grace ms.
    /// Returns 'expired' or 'settled' alone when refused (a missing record is one that
    /// expired: the caller checked that the lease was issued); else 'ok', charged,
    /// refunded, the four limit specs, then the nine status values (integers or text, as acquire's).
    static let settle = fastPrelude + "\n" + fastSettle + "\n" + library + "\n" + #"""
local now = clock(ARGV[1])
local actual, lease, grace = DN(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local fields = redis.call('HGETALL', KEYS[5])
if #fields == 0 then return {'expired'} end
local R = {}
for i = 1, #fields, 2 do R[fields[i]] = fields[i + 1] end
if R.settled == '1' then return {'settled'} end
if tcmp(TN(R.exp), now) <= 0 then return {'expired'} end
redis.call('HSET', KEYS[5], 'settled', '1')
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
local out = {'ok', DR(charged), DR(refunded), R.r, R.t, R.c, R.s}
for _, s in ipairs(statuses(LS, now)) do out[#out + 1] = s end
expire(LS, now, grace)
return out
"""#

    /// Status. KEYS[1..4] as above. ARGV: [1] now or '', [2] requests spec, [3] tokens
    /// spec, [4] concurrency spec, [5] grace ms. Returns the nine status values (as acquire's).
    /// Consumes nothing (it only drops log entries and slots that no longer count).
    static let status = fastPrelude + "\n" + fastStatus + "\n" + library + "\n" + #"""
local now = clock(ARGV[1])
local LS = limits(ARGV[2], ARGV[3], ARGV[4], '0')
local out = statuses(LS, now)
expire(LS, now, tonumber(ARGV[5]))
return out
"""#
}
