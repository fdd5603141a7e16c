/// The Lua scripts of `RedisStore`: one per operation (acquire, settle, status), each
/// the library below followed by the operation's body.
///
/// **Why scripts, not MULTI/EXEC.** A decision reads state, computes, then writes only
/// if the call fits. MULTI/EXEC cannot branch on what it reads (WATCH would turn every
/// contended decision into retries), while a script runs atomically on the server: the
/// read, the arithmetic and the writes of every dimension of a call are one step with
/// respect to every other client, in one round trip.
///
/// **Exact arithmetic.** Lua numbers in Redis are doubles, exact only below 2^53, while
/// Weir's values are 64-bit: nanosecond times (Redis `TIME` gives about 1.8e18 ns since
/// 1970, above 2^53 = 9.0e15), limits, windows and their 128-bit products in GCRA. So the
/// scripts SPLIT: every number is an array of base-10^7 limbs (least significant first),
/// read from and written as decimal strings. A limb is below 10^7; a limb product below
/// 10^14; a column sum in a multiplication adds at most 6 such products and carries, far
/// below 2^53; so every double operation is on integers below 2^53 and exact. Division
/// is schoolbook, one base-10^7 digit at a time: the digit is estimated in floating point
/// (its error is far below 1 because the true digit is below 10^7) and then corrected
/// exactly by comparison, so quotients and remainders are exact too. Results saturate at
/// 2^64 - 1 as `WideArithmetic` does. This covers every `UInt64` time, limit and window
/// Weir accepts, with no range restriction: the scripts compute exactly what `GCRA`,
/// `SlidingWindowLog` and `KeyState` compute in Swift.
///
/// **Keys** (all with the hash tag `{account|scope}`, so one call touches one cluster slot):
/// - KEYS[1] `P{a|s}`        hash: `rtat`, `ttat` (GCRA TATs), `rsum`, `tsum` (log totals)
/// - KEYS[2] `P{a|s}:rlog`   list: the requests sliding-window log, entries `time:cost`, oldest first
/// - KEYS[3] `P{a|s}:tlog`   list: the tokens sliding-window log
/// - KEYS[4] `P{a|s}:slots`  hash: lease id -> expiry time of the concurrency slot it holds
/// - KEYS[5] `P{a|s}:lease:ID` hash: the lease record (limits, reserved, logged, exp, consumed, settled)
///
/// Limits travel as specs `A LIMIT WINDOW BURST` (`A` = `g` for GCRA, `s` for sliding
/// window; concurrency uses the same shape), or the empty string when absent.
///
/// **Expiry.** Every key a script touches gets a PEXPIRE at the moment it would carry
/// no information any more (buckets full, logs empty, slots expired), plus a grace, and
/// a TTL is never shortened; so idle keys vanish and nothing live is lost.
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
local function umax(a, b) if cmp(a, b) >= 0 then return a end return b end
local function umin(a, b) if cmp(a, b) <= 0 then return a end return b end
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
local function mdfloor(a, b, c) local q = divmod(mul(a, b), c); return sat(q) end
local function mdceil(a, b, c)
  local q, r = divmod(mul(a, b), c)
  if not iszero(r) then q = add(q, ONE) end
  return sat(q)
end
local function num(n) return N(string.format('%d', n)) end

local function clock(arg)
  if arg ~= '' then return N(arg) end
  local t = redis.call('TIME')
  return N(t[1] .. string.format('%06d', tonumber(t[2])) .. '000')
end
local function limit(spec)
  if spec == nil or spec == '' then return nil end
  local a, l, w, b = string.match(spec, '^(%a) (%d+) (%d+) (%d+)$')
  return {alg = a, limit = N(l), window = N(w), burst = N(b)}
end
local function limits(r, t, c, s)
  return {r = limit(r), t = limit(t), c = limit(c), shadow = s == '1'}
end

local K_STATE, K_RLOG, K_TLOG, K_SLOTS = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local tats = {}
local function tat(d)
  if tats[d] == nil then
    local v = redis.call('HGET', K_STATE, d .. 'tat')
    if v then tats[d] = N(v) else tats[d] = ZERO end
  end
  return tats[d]
end
local function settat(d, v)
  tats[d] = v
  redis.call('HSET', K_STATE, d .. 'tat', S(v))
end

-- GCRA, as in GCRA.swift.
local function gcra_admit(cost, t, now, L)
  local start = umax(t, now)
  local debt = sub(start, now)
  local room = sub(L.burst, cost)
  if cmp(mul(debt, L.limit), mul(room, L.window)) <= 0 then
    return true, addsat(start, mdceil(cost, L.window, L.limit)), ZERO
  end
  local slack = mdfloor(room, L.window, L.limit)
  return false, t, sub(sub(start, slack), now)
end
local function gcra_remaining(t, now, L)
  if cmp(t, now) <= 0 then return L.burst end
  return subsat(L.burst, mdceil(sub(t, now), L.limit, L.window))
end
local function gcra_refund(units, t, now, L)
  if cmp(t, now) <= 0 then return t end
  return umax(subsat(t, mdfloor(units, L.window, L.limit)), now)
end
local function gcra_charge(units, t, now, L)
  return addsat(umax(t, now), mdceil(units, L.window, L.limit))
end

-- Sliding-window logs, as in SlidingWindowLog.swift: entries `time:cost`, oldest first.
local logs = {r = {key = K_RLOG, field = 'rsum'}, t = {key = K_TLOG, field = 'tsum'}}
local function entry(raw)
  local t, c = string.match(raw, '^(%d+):(%d+)$')
  return N(t), N(c)
end
local function total(lg)
  if lg.total == nil then
    local v = redis.call('HGET', K_STATE, lg.field)
    if v then lg.total = N(v) else lg.total = ZERO end
  end
  return lg.total
end
local function settotal(lg, v)
  lg.total = v
  redis.call('HSET', K_STATE, lg.field, S(v))
end
local function newest(lg)
  local raw = redis.call('LINDEX', lg.key, -1)
  if not raw then return nil end
  return (entry(raw))
end
local function effective(lg, now)
  local t = newest(lg)
  if t == nil then return now end
  return umax(now, t)
end
local function prune(lg, now, window)
  local sum, removed = total(lg), false
  while true do
    local raw = redis.call('LINDEX', lg.key, 0)
    if not raw then break end
    local t, c = entry(raw)
    if cmp(addsat(t, window), now) > 0 then break end
    redis.call('LPOP', lg.key)
    sum = sub(sum, c)
    removed = true
  end
  if removed then settotal(lg, sat(sum)) end
end
local function wait(lg, cost, lim, window, now)
  local counting = total(lg)
  if cmp(addsat(counting, cost), lim) <= 0 then return ZERO end
  local items = redis.call('LRANGE', lg.key, 0, -1)
  for i = 1, #items do
    local t, c = entry(items[i])
    counting = sat(sub(counting, c))
    if cmp(addsat(counting, cost), lim) <= 0 then return subsat(addsat(t, window), now) end
  end
  error('weir: a cost within the limit must fit once the log is empty')
end
local function append(lg, cost, time)
  if iszero(cost) then return end
  settotal(lg, addsat(total(lg), cost))
  local raw = redis.call('LINDEX', lg.key, -1)
  if raw then
    local t, c = entry(raw)
    if cmp(t, time) == 0 then
      redis.call('LSET', lg.key, -1, S(t) .. ':' .. S(addsat(c, cost)))
      return
    end
  end
  redis.call('RPUSH', lg.key, S(time) .. ':' .. S(cost))
end
local function refundlog(lg, cost, time)
  local items = redis.call('LRANGE', lg.key, 0, -1)
  for i = 1, #items do
    local t, c = entry(items[i])
    local order = cmp(t, time)
    if order >= 0 then
      if order > 0 then return ZERO end
      local taken = umin(cost, c)
      redis.call('LSET', lg.key, i - 1, S(t) .. ':' .. S(sub(c, taken)))
      settotal(lg, sat(sub(total(lg), taken)))
      return taken
    end
  end
  return ZERO
end
local function logreset(lg, window, now)
  local t = newest(lg)
  if t == nil then return ZERO end
  return subsat(addsat(t, window), now)
end

-- Concurrency slots: frees those expired at `now`; returns the number held and the latest expiry.
local function slots(now)
  local all = redis.call('HGETALL', K_SLOTS)
  local held, latest = 0, ZERO
  for i = 1, #all, 2 do
    local exp = N(all[i + 1])
    if cmp(exp, now) <= 0 then
      redis.call('HDEL', K_SLOTS, all[i])
    else
      held = held + 1
      latest = umax(latest, exp)
    end
  end
  return held, latest
end

-- Statuses, as KeyState.statuses: nine strings (limit, remaining, reset) x (requests, tokens, concurrency).
local function status(d, L, now)
  if L.alg == 'g' then
    local t = tat(d)
    return {S(L.limit), S(gcra_remaining(t, now, L)), S(subsat(t, now))}
  end
  local lg = logs[d]
  prune(lg, effective(lg, now), L.window)
  return {S(L.limit), S(subsat(L.limit, total(lg))), S(logreset(lg, L.window, now))}
end
local function statuses(LS, now)
  local out = {'', '', '', '', '', '', '', '', ''}
  if LS.r then local s = status('r', LS.r, now); out[1], out[2], out[3] = s[1], s[2], s[3] end
  if LS.t then local s = status('t', LS.t, now); out[4], out[5], out[6] = s[1], s[2], s[3] end
  if LS.c then
    local held = slots(now)
    out[7], out[8], out[9] = S(LS.c.limit), S(subsat(LS.c.limit, num(held))), '0'
  end
  return out
end

-- Expiry: every key lives until it carries no information, plus `grace` ms; never shortened.
local function extend(key, ms)
  local current = redis.call('PTTL', key)
  if current == -2 then return end
  if current == -1 or current < ms then redis.call('PEXPIRE', key, string.format('%.0f', ms)) end
end
local function expire(LS, now, grace)
  local idle = umax(subsat(tat('r'), now), subsat(tat('t'), now))
  for d, lg in pairs(logs) do
    local L = LS[d]
    if L and L.alg == 's' then idle = umax(idle, logreset(lg, L.window, now)) end
  end
  local held, latest = slots(now)
  if held > 0 then idle = umax(idle, subsat(latest, now)) end
  local q, r = divmod(idle, N('1000000'))
  if not iszero(r) then q = add(q, ONE) end
  local ms = approx(sat(q)) + grace
  for _, key in ipairs({K_STATE, K_RLOG, K_TLOG, K_SLOTS}) do extend(key, ms) end
  return ms
end
local function capacity(L) if L.alg == 'g' then return L.burst end return L.limit end
"""#

    /// Acquire. KEYS[1..5] as above (KEYS[5]: the record of the lease this call would get).
    /// ARGV: [1] now or '', [2] requests spec, [3] tokens spec, [4] concurrency spec,
    /// [5] shadow '1'/'0', [6] units, [7] lease TTL in ns or '' (no lease), [8] lease id,
    /// [9] grace ms.
    /// Returns: allowed, reason, retry ns or '', shadowed, lease expiry or '', reserved,
    /// holds slot, then the nine status strings.
    static let acquire = library + "\n" + #"""
local now = clock(ARGV[1])
local LS = limits(ARGV[2], ARGV[3], ARGV[4], ARGV[5])
local units = N(ARGV[6])
local ttl = nil
if ARGV[7] ~= '' then ttl = N(ARGV[7]) end
local lease, grace = ARGV[8], tonumber(ARGV[9])
local holds = ttl ~= nil and LS.c ~= nil
local reason, retry = nil, nil
local rv = {fits = true, wait = ZERO}
local tv = {fits = true, wait = ZERO}

local function check(d, cost, L)
  if L.alg == 'g' then
    local fits, t, w = gcra_admit(cost, tat(d), now, L)
    return {fits = fits, wait = w, tat = t}
  end
  local lg = logs[d]
  local eff = effective(lg, now)
  prune(lg, eff, L.window)
  local w = wait(lg, cost, L.limit, L.window, eff)
  if iszero(w) then return {fits = true, wait = ZERO} end
  return {fits = false, wait = addsat(w, sub(eff, now))}
end
local function consume(d, cost, L, verdict)
  if L.alg == 'g' then settat(d, verdict.tat); return now end
  if iszero(cost) then return now end
  local lg = logs[d]
  local eff = effective(lg, now)
  append(lg, cost, eff)
  return eff
end

if LS.t and cmp(units, capacity(LS.t)) > 0 then
  reason = 'too_large'
else
  local cfits = true
  if LS.r then rv = check('r', ONE, LS.r) end
  if LS.t then tv = check('t', units, LS.t) end
  if holds then
    local held = slots(now)
    cfits = cmp(num(held), LS.c.limit) < 0
  end
  if not rv.fits then reason = 'requests' elseif not tv.fits then reason = 'tokens' elseif not cfits then reason = 'concurrency' end
  if not rv.fits or not tv.fits then retry = umax(rv.wait, tv.wait) end
end

local admitted = reason == nil
local logged = now
if admitted then
  if LS.r then consume('r', ONE, LS.r, rv) end
  if LS.t then logged = consume('t', units, LS.t, tv) end
  if holds then redis.call('HSET', K_SLOTS, lease, S(addsat(now, ttl))) end
end
local allowed = admitted or LS.shadow
local expiry, reserved, slot = '', '0', '0'
if allowed and ttl ~= nil then
  local exp = addsat(now, ttl)
  expiry = S(exp)
  if admitted then reserved = S(units) end
  if admitted and holds then slot = '1' end
  local consumed = '0'
  if admitted then consumed = '1' end
  redis.call('HSET', KEYS[5], 'r', ARGV[2], 't', ARGV[3], 'c', ARGV[4], 's', ARGV[5],
    'reserved', reserved, 'logged', S(logged), 'exp', expiry, 'consumed', consumed, 'settled', '0')
  local q, r = divmod(ttl, N('1000000'))
  if not iszero(r) then q = add(q, ONE) end
  redis.call('PEXPIRE', KEYS[5], string.format('%.0f', approx(sat(q)) + grace))
end
local shadowed = '0'
if not admitted and LS.shadow then shadowed = '1' end
local out = {'0', reason or '', '', shadowed, expiry, reserved, slot}
if allowed then out[1] = '1' end
if retry then out[3] = S(retry) end
for _, s in ipairs(statuses(LS, now)) do out[#out + 1] = s end
expire(LS, now, grace)
return out
"""#

    /// Settle. KEYS[1..5] as above (KEYS[5]: the lease's record).
    /// ARGV: [1] now or '', [2] actual units, [3] lease id, [4] grace ms.
    /// Returns 'expired' or 'settled' alone when refused (a missing record is one that
    /// expired: the caller checked that the lease was issued); else 'ok', charged,
    /// refunded, the four limit specs, then the nine status strings.
    static let settle = library + "\n" + #"""
local now = clock(ARGV[1])
local actual, lease, grace = N(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local fields = redis.call('HGETALL', KEYS[5])
if #fields == 0 then return {'expired'} end
local R = {}
for i = 1, #fields, 2 do R[fields[i]] = fields[i + 1] end
if R.settled == '1' then return {'settled'} end
if cmp(N(R.exp), now) <= 0 then return {'expired'} end
redis.call('HSET', KEYS[5], 'settled', '1')
local LS = limits(R.r, R.t, R.c, R.s)
local charged, refunded = ZERO, ZERO
if R.consumed == '1' then
  local L, reserved = LS.t, N(R.reserved)
  if L then
    if cmp(actual, reserved) > 0 then
      charged = sub(actual, reserved)
      if L.alg == 'g' then
        settat('t', gcra_charge(charged, tat('t'), now, L))
      else
        local lg = logs.t
        local eff = effective(lg, now)
        prune(lg, eff, L.window)
        append(lg, charged, eff)
      end
    elseif cmp(actual, reserved) < 0 then
      local credit = sub(reserved, actual)
      if L.alg == 'g' then
        local before = tat('t')
        local after = gcra_refund(credit, before, now, L)
        settat('t', after)
        if cmp(before, after) ~= 0 then
          refunded = umin(credit, mdfloor(sub(before, after), L.limit, L.window))
        end
      else
        local lg = logs.t
        prune(lg, effective(lg, now), L.window)
        refunded = refundlog(lg, credit, N(R.logged))
      end
    end
  end
  redis.call('HDEL', K_SLOTS, lease)
end
local out = {'ok', S(charged), S(refunded), R.r, R.t, R.c, R.s}
for _, s in ipairs(statuses(LS, now)) do out[#out + 1] = s end
expire(LS, now, grace)
return out
"""#

    /// Status. KEYS[1..4] as above. ARGV: [1] now or '', [2] requests spec, [3] tokens
    /// spec, [4] concurrency spec, [5] grace ms. Returns the nine status strings.
    /// Consumes nothing (it only drops log entries and slots that no longer count).
    static let status = library + "\n" + #"""
local now = clock(ARGV[1])
local LS = limits(ARGV[2], ARGV[3], ARGV[4], '0')
local out = statuses(LS, now)
expire(LS, now, tonumber(ARGV[5]))
return out
"""#
}
