#!lua name=ro_rl_v1
-- Router One rate slices, version 1. Loaded with FUNCTION LOAD REPLACE by every gateway node at
-- start and again on "function not found". A change of meaning gets a new library and new
-- function names (ro_rl_v2_*), so a rolling deploy never calls an incompatible version.
--
-- Per key, one hash KEYS[1] = ro:rl:{<key_id>} (hash-tagged: one cluster slot):
--   ws, we      current window start and end, ms of Redis TIME (absent: no live window)
--   rq, tk      requests and tokens granted to nodes in that window
--   hwm         high-water mark of slots held at once (for tests and operators)
--   n:<node>    "<ws> <rq> <tk> <slots> <slot_expiry_ms>" for node <node> = "<node_id>:<epoch>";
--               its rq/tk count only while its ws is the current window, its slots only until
--               slot_expiry_ms.
-- KEYS[2] = ro:rl:gen, hash {id, lu}: the generation of this Redis's state and the end of its
-- learning period. Every call names the generation it believes in; a mismatch or a missing
-- generation (Redis lost its state) changes nothing and answers "stale".
-- Limits are passed by the caller on every call; -1 means unlimited. Numbers are Lua doubles:
-- exact to 2^53, far above any count here.

local STALE = -1
local LEARNING = -2
local REFUSED = 0
local OK = 1

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function int(x)
  return string.format('%d', x)
end

-- The generation id if it is the one the caller names, else nil and the actual one ('' if none).
local function check_gen(genkey, want)
  local id = redis.call('HGET', genkey, 'id')
  if not id then
    return nil, ''
  end
  if id ~= want then
    return nil, id
  end
  return id
end

-- The key's state at `now`: an ended window reads as no window, expired slots as none.
local function load(key, now)
  local h = redis.call('HGETALL', key)
  local st = { ws = 0, we = 0, rq = 0, tk = 0, hwm = 0, nodes = {} }
  for i = 1, #h, 2 do
    local f, v = h[i], h[i + 1]
    if string.sub(f, 1, 2) == 'n:' then
      local ws, rq, tk, sl, ex = string.match(v, '^(%d+) (%d+) (%d+) (%d+) (%d+)$')
      if ws then
        st.nodes[string.sub(f, 3)] = {
          ws = tonumber(ws), rq = tonumber(rq), tk = tonumber(tk), sl = tonumber(sl), ex = tonumber(ex),
        }
      end
    elseif f == 'ws' or f == 'we' or f == 'rq' or f == 'tk' or f == 'hwm' then
      st[f] = tonumber(v)
    end
  end
  if st.we <= now then
    st.ws, st.we, st.rq, st.tk = 0, 0, 0, 0
  end
  for _, n in pairs(st.nodes) do
    if n.ws ~= st.ws or st.ws == 0 then
      n.ws, n.rq, n.tk = 0, 0, 0
    end
    if n.ex <= now then
      n.sl = 0
    end
  end
  return st
end

local function slots_held(st)
  local total = 0
  for _, n in pairs(st.nodes) do
    total = total + n.sl
  end
  return total
end

-- Nodes other than `me` that hold requests or tokens of the window, or slots.
local function others(st, me)
  local count = 0
  for id, n in pairs(st.nodes) do
    if id ~= me and (n.rq > 0 or n.tk > 0 or n.sl > 0) then
      count = count + 1
    end
  end
  return count
end

local function node(st, me)
  local n = st.nodes[me]
  if not n then
    n = { ws = 0, rq = 0, tk = 0, sl = 0, ex = 0 }
    st.nodes[me] = n
  end
  return n
end

local function save(key, st, now)
  redis.call('DEL', key)
  local args = {}
  local keep_until = now
  if st.ws > 0 then
    for _, v in ipairs({ 'ws', int(st.ws), 'we', int(st.we), 'rq', int(st.rq), 'tk', int(st.tk) }) do
      table.insert(args, v)
    end
    keep_until = st.we
  end
  for id, n in pairs(st.nodes) do
    if n.rq > 0 or n.tk > 0 or n.sl > 0 then
      table.insert(args, 'n:' .. id)
      table.insert(args, int(n.ws) .. ' ' .. int(n.rq) .. ' ' .. int(n.tk) .. ' ' .. int(n.sl) .. ' ' .. int(n.ex))
      if n.sl > 0 and n.ex > keep_until then
        keep_until = n.ex
      end
    end
  end
  if #args == 0 then
    return
  end
  local held = slots_held(st)
  if held > st.hwm then
    st.hwm = held
  end
  table.insert(args, 'hwm')
  table.insert(args, int(st.hwm))
  redis.call('HSET', key, unpack(args))
  -- An idle key's state disappears a little after its window and its last slot lease end.
  redis.call('PEXPIRE', key, keep_until - now + 5000)
end

local function left(limit, used)
  if limit < 0 then
    return -1
  end
  return math.max(0, limit - used)
end

-- min(ask, left), and no more than a fair share of what is left when others hold slices too:
-- near the limit this shrinks to `min` ("exact mode"), so little is stranded on idle nodes.
local function size(ask, min, lft, holders)
  if lft < 0 then
    return 0
  end
  local fair = math.max(min, math.floor(lft / (2 * (holders + 1))))
  return math.min(ask, lft, fair)
end

-- hello(KEYS[1] = gen key; candidate_id, learn_ms) -> {id, learn_until_ms, now_ms}
-- Creates the generation if there is none (a fresh or emptied Redis) and starts its learning period.
local function hello(keys, args)
  local now = now_ms()
  local id = redis.call('HGET', keys[1], 'id')
  if not id then
    id = args[1]
    redis.call('HSET', keys[1], 'id', id, 'lu', int(now + tonumber(args[2])))
  end
  local lu = tonumber(redis.call('HGET', keys[1], 'lu')) or 0
  return { id, lu, now }
end

-- grant(KEYS = hash, gen; node, gen, rpm, tpm, conc, ask_rq, ask_tk, ask_sl, min_rq, min_tk, min_sl,
--       window_ms, slot_ttl_ms)
-- -> {code, which, g_rq, g_tk, g_sl, ws, we, now, left_rq, left_tk, left_sl, others, gen}
-- All or nothing over the three limits: each grants min(ask, left, fair share) >= min, or nothing
-- at all (code 0, `which` = 1 requests, 2 tokens, 3 slots). A window starts at the first grant of
-- requests or tokens after the previous one ended. During learning (code -2) `we` is its end.
local function grant(keys, args)
  local me = args[1]
  local now = now_ms()
  local gen, actual = check_gen(keys[2], args[2])
  if not gen then
    return { STALE, 0, 0, 0, 0, 0, 0, now, 0, 0, 0, 0, actual }
  end
  local lu = tonumber(redis.call('HGET', keys[2], 'lu')) or 0
  if now < lu then
    return { LEARNING, 0, 0, 0, 0, 0, lu, now, 0, 0, 0, 0, gen }
  end
  local rpm, tpm, conc = tonumber(args[3]), tonumber(args[4]), tonumber(args[5])
  local ask = { tonumber(args[6]), tonumber(args[7]), tonumber(args[8]) }
  local min = { tonumber(args[9]), tonumber(args[10]), tonumber(args[11]) }
  local window_ms, slot_ttl = tonumber(args[12]), tonumber(args[13])
  local st = load(keys[1], now)
  local holders = others(st, me)
  local lft = { left(rpm, st.rq), left(tpm, st.tk), left(conc, slots_held(st)) }
  for i = 1, 3 do
    if lft[i] >= 0 and min[i] > lft[i] then
      return { REFUSED, i, 0, 0, 0, st.ws, st.we, now, lft[1], lft[2], lft[3], holders, gen }
    end
  end
  local g = {}
  for i = 1, 3 do
    g[i] = size(ask[i], min[i], lft[i], holders)
  end
  if st.ws == 0 and (g[1] > 0 or g[2] > 0) then
    st.ws, st.we, st.rq, st.tk = now, now + window_ms, 0, 0
  end
  local n = node(st, me)
  if st.ws > 0 then
    n.ws = st.ws
  end
  n.rq, n.tk, n.sl = n.rq + g[1], n.tk + g[2], n.sl + g[3]
  st.rq, st.tk = st.rq + g[1], st.tk + g[2]
  if n.sl > 0 then
    n.ex = now + slot_ttl
  end
  save(keys[1], st, now)
  for i = 1, 3 do
    if lft[i] >= 0 then
      lft[i] = lft[i] - g[i]
    end
  end
  return { OK, 0, g[1], g[2], g[3], st.ws, st.we, now, lft[1], lft[2], lft[3], holders, gen }
end

-- give_back(KEYS = hash, gen; node, gen, ws, rq, tk, sl) -> {code, rq, tk, sl, gen}
-- Returns unused requests and tokens of window `ws` (if it is still the current one) and slots.
-- A node never returns more than Redis counts for it.
local function give_back(keys, args)
  local me = args[1]
  local now = now_ms()
  local gen, actual = check_gen(keys[2], args[2])
  if not gen then
    return { STALE, 0, 0, 0, actual }
  end
  local ws = tonumber(args[3])
  local st = load(keys[1], now)
  local n = st.nodes[me]
  if not n then
    return { OK, 0, 0, 0, gen }
  end
  local rq, tk = 0, 0
  if st.ws > 0 and st.ws == ws then
    rq = math.min(tonumber(args[4]), n.rq)
    tk = math.min(tonumber(args[5]), n.tk)
  end
  local sl = math.min(tonumber(args[6]), n.sl)
  n.rq, n.tk, n.sl = n.rq - rq, n.tk - tk, n.sl - sl
  st.rq, st.tk = st.rq - rq, st.tk - tk
  save(keys[1], st, now)
  return { OK, rq, tk, sl, gen }
end

-- sync(KEYS = hash, gen; node, gen, ws, we, rq, tk, sl, slot_ttl_ms) -> {code, sl, ws, now, gen}
-- "This is what I hold": renews the node's slot lease and re-announces its window after Redis
-- lost its state. Idempotent and never lowers a count (max of what Redis has and what the node
-- says), so a sync racing a grant or a return can only over-count for a moment, never under-count.
-- Forced: it is not refused even above the limit, because it describes admissions already made.
local function sync(keys, args)
  local me = args[1]
  local now = now_ms()
  local gen, actual = check_gen(keys[2], args[2])
  if not gen then
    return { STALE, 0, 0, now, actual }
  end
  local ws, we = tonumber(args[3]), tonumber(args[4])
  local rq, tk, sl = tonumber(args[5]), tonumber(args[6]), tonumber(args[7])
  local slot_ttl = tonumber(args[8])
  local st = load(keys[1], now)
  local n = node(st, me)
  if ws > 0 and we > now and (rq > 0 or tk > 0) then
    if st.ws == 0 then
      st.ws, st.we, st.rq, st.tk = ws, we, 0, 0
    end
    -- A different live window can only come from a node whose clock view is stale; counting its
    -- admissions in the current window over-counts, which is the safe direction.
    n.ws = st.ws
    local drq, dtk = math.max(0, rq - n.rq), math.max(0, tk - n.tk)
    n.rq, n.tk = n.rq + drq, n.tk + dtk
    st.rq, st.tk = st.rq + drq, st.tk + dtk
  end
  n.sl = math.max(n.sl, sl)
  if n.sl > 0 then
    n.ex = now + slot_ttl
  end
  save(keys[1], st, now)
  return { OK, n.sl, st.ws, now, gen }
end

redis.register_function('ro_rl_v1_hello', hello)
redis.register_function('ro_rl_v1_grant', grant)
redis.register_function('ro_rl_v1_return', give_back)
redis.register_function('ro_rl_v1_sync', sync)
