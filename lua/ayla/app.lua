-- ayla.app: rules that react to DSS events and timers, and act through the
-- cloud. Each callback runs in its own coroutine (ayla.scheduler), so a rule
-- waiting on the network never stalls the stream or the other rules.
--
-- Order: for one event, the matching rules start in the order they were
-- registered; a rule that waits lets the next one start. Timers due at the
-- same time run in the order they were set.
local core = require "ayla.core"
local event = require "ayla.event"
local scheduler = require "ayla.scheduler"
local timers = require "ayla.timers"
local trigger = require "ayla.trigger"
local twin = require "ayla.twin"

local M = {}

local App = { __name = "ayla.App" }
App.__index = App
M.App = App

local Rule = { __name = "ayla.Rule" }

-- app:stats() stays a plain table; this makes it print readably.
local STATS = event.counters("ayla.AppStats", { "events", "fired", "failures", "rules" })
Rule.__index = Rule

local function check(cond, level, fmt, ...)
  if not cond then error(fmt:format(...), level + 1) end
end

local apps = 0

-- ayla.app{ cloud =, stream = | streams = {...}, seed = { dsn, ... },
--           budget = 1e7, max_failures = 5, loop = { count = 5, within = 10 },
--           log = function(level, message) end, clock = { now =, wall = },
--           dedupe = 10000, journal = ayla.journal (see lua/ayla/journal.lua) }
function M.new(opts)
  opts = opts or {}
  check(type(opts) == "table", 2, "ayla.app expects a table of options")
  local dedupe = opts.dedupe == nil and 10000 or opts.dedupe
  check(math.tointeger(dedupe) and dedupe >= 0, 2, "dedupe must be a whole number (0: off)")
  apps = apps + 1
  local self = setmetatable({
    id = ("app%d-%d"):format(apps, math.random(1 << 30)),
    dry_run = opts.dry_run,
    cloud = opts.cloud,
    streams = opts.streams or { opts.stream },
    rules = {}, index = {}, twin = twin.new(), timers = timers.new(),
    budget = opts.budget or 1e7,
    max_failures = opts.max_failures or 5,
    loop = opts.loop or { count = 5, within = 10 },
    clock = opts.clock or { now = core.monotime, wall = os.time },
    log = opts.log or function(level, msg) io.stderr:write(("ayla %s: %s\n"):format(level, msg)) end,
    counters = { events = 0, fired = 0, failures = 0, disabled = 0, own = 0, timers = 0,
                 duplicates = 0 },
    running = false,
    -- The last `dedupe` datapoint ids seen (by event type), in a ring: a
    -- datapoint the server sends twice (two subscriptions, a resend) runs
    -- the rules once.
    _seen = {}, _seen_types = {}, _seen_ids = {}, _seen_next = 1, _seen_size = math.tointeger(dedupe),
    journal = opts.journal,
    pending = {}, -- with a journal: event -> rule work not yet finished for it
  }, App)
  self.scheduler = scheduler.new { clock = self.clock,
                                   on_error = function(task, err) self:_failed(task, err) end }
  if opts.seed and self.cloud then
    local n, err = self.twin:seed(self.cloud, opts.seed)
    if not n then return nil, "seeding the twin cache failed: " .. err end
  end
  return self
end

-- ---- running callbacks ------------------------------------------------------

local Ctx = { __name = "ayla.Ctx" }
Ctx.__index = Ctx

-- ctx:set(dsn, property, value [, opts]): a write tagged as this rule's, so the
-- event it causes comes back with ev.own = true and ev.caused_by = rule name.
function Ctx:set(dsn, prop, value, opts)
  local app = self.app
  local who = self.rule and self.rule.name or "timer"
  if self.rule then self.rule.writes = self.rule.writes + 1 end
  app.log("action", ("%s: set %s/%s = %s"):format(who, tostring(dsn), tostring(prop), tostring(value)))
  if app.dry_run then -- a replay: say what would be written, write nothing
    app.dry_writes = (app.dry_writes or 0) + 1
    return { id = ("dry-run-%d"):format(app.dry_writes), value = value, dry_run = true }
  end
  check(app.cloud, 2, "this app has no cloud to write through (ayla.app{ cloud = ... })")
  local o = {}
  for k, v in pairs(opts or {}) do o[k] = v end
  o.metadata = o.metadata or {}
  o.metadata.ayla_app, o.metadata.ayla_rule = app.id, self.rule and self.rule.name or "timer"
  local ev = self.ev
  if app.journal and ev and self.rule then -- at most once per event, across restarts
    self.actions = (self.actions or 0) + 1
    local what = ("%s/%s=%s"):format(tostring(dsn), tostring(prop), tostring(value))
    -- The rule's name for the journal: the same in every run (names alone
    -- need not be unique; registration order is the same if the code is).
    local rule = self.rule.journal_id or ("%s@%d"):format(self.rule.name, self.rule.id)
    return app.journal:action(ev, rule, self.actions, what,
      function() return app.cloud:set(dsn, prop, value, o) end)
  end
  return app.cloud:set(dsn, prop, value, o)
end

function Ctx:get(dsn, prop)
  check(self.app.cloud, 2, "this app has no cloud to read through")
  return self.app.cloud:get(dsn, prop)
end

function Ctx.sleep(_, seconds) scheduler.sleep(seconds) end

function Ctx:twin(dsn, prop)
  if prop == nil then return self.app.twin:device(dsn) end
  return (self.app.twin:get(dsn, prop))
end

function Ctx:log(fmt, ...)
  local msg = select("#", ...) > 0 and fmt:format(...) or tostring(fmt)
  self.app.log("info", ("%s: %s"):format(self.rule and self.rule.name or "timer", msg))
end

function App:_run(rule, fn, ...)
  if rule and rule.removed then return end
  if rule then rule.fired = rule.fired + 1 end
  self.counters.fired = self.counters.fired + 1
  local ev = rule and ... or nil -- rules get (ev, ctx), timers (ctx)
  local ctx = setmetatable({ app = self, rule = rule, ev = ev }, Ctx)
  if ev then self:_acquire(ev) end
  self.scheduler:start({
    name = rule and rule.name or "timer", budget = self.budget, owner = rule, ctx = ctx,
    on_done = function() if rule then rule.consecutive = 0 end end,
    on_end = ev and self.journal and function() self:_release(ev) end,
  }, function()
    if rule then fn(ev, ctx) else fn(ctx) end
  end)
end

function App:_failed(task, err)
  self.counters.failures = self.counters.failures + 1
  local rule = task.owner
  if not rule then
    self.log("error", ("%s failed: %s"):format(task.name, err))
    return
  end
  rule.failures, rule.consecutive = rule.failures + 1, rule.consecutive + 1
  rule.last_error = err
  self.log("error", ("rule %s failed (%d in a row): %s"):format(rule.name, rule.consecutive, err))
  if rule.consecutive >= self.max_failures then
    self:_disable(rule, ("failed %d times in a row"):format(rule.consecutive))
  end
end

-- With a journal, an event is finished when every task and every waiting
-- hold or debounce it started has ended: then the journal may forget it.
function App:_acquire(ev)
  if self.journal then self.pending[ev] = (self.pending[ev] or 0) + 1 end
end

function App:_release(ev)
  local n = self.pending[ev]
  if not n then return end
  if n > 1 then
    self.pending[ev] = n - 1
    return
  end
  self.pending[ev] = nil
  self.journal:finished(ev)
end

-- A hold or debounce: fn runs after `delay` unless the slot is dropped first.
function App:_hold(rule, slot, ev, delay, fn)
  self:_acquire(ev)
  rule.holds[slot] = { ev = ev, timer = self.timers:add(self.clock.now() + delay, function()
    rule.holds[slot] = nil
    local ok, err = pcall(fn)
    self:_release(ev) -- whatever happened: the event must not replay for ever
    if not ok then error(err, 0) end
  end) }
end

function App:_drop_hold(rule, slot)
  local h = rule.holds[slot]
  if not h then return end
  rule.holds[slot] = nil
  self.timers:cancel(h.timer)
  self:_release(h.ev)
end

function App:_drop_holds(rule)
  for slot in pairs(rule.holds) do self:_drop_hold(rule, slot) end
end

function App:_disable(rule, why)
  if rule.disabled then return end
  rule.disabled = why
  self.counters.disabled = self.counters.disabled + 1
  self:_drop_holds(rule)
  self.log("error", ("rule %s disabled: %s"):format(rule.name, why))
end

-- ---- rules -------------------------------------------------------------------

local function add_to(index, keys, rule)
  for _, k in ipairs(keys or { "*" }) do
    local list = index[k]
    if not list then
      list = {}
      index[k] = list
    end
    list[#list + 1] = rule
  end
end

-- app:on(event_type, [filter,] fn) -> rule. fn(ev, ctx) runs in its own coroutine.
function App:on(event_type, filter, fn)
  if type(filter) == "function" and fn == nil then filter, fn = nil, filter end
  check(type(event_type) == "string", 2, "on(event_type, filter, fn) expects an event type string")
  check(filter == nil or type(filter) == "table", 2, "the filter must be a table")
  check(type(fn) == "function", 2, "on(event_type, filter, fn) expects a function")
  local trig = trigger.compile(event_type, filter)
  self.next_rule_id = (self.next_rule_id or 0) + 1 -- never reused, even after removals
  local id = self.next_rule_id
  local rule = setmetatable({
    id = id, event_type = event_type, trig = trig, fn = fn, writes = 0,
    name = (filter and filter.name) or ("%s#%d"):format(event_type, id),
    fired = 0, failures = 0, consecutive = 0, skipped = 0,
    holds = {}, recent = {}, own_hits = {},
  }, Rule)
  self.rules[#self.rules + 1] = rule
  -- index[type][dsn][property]: dispatch looks only at rules that can match.
  local by_type = self.index[event_type] or {}
  self.index[event_type] = by_type
  for _, d in ipairs(trig.index.dsn or { "*" }) do
    by_type[d] = by_type[d] or {}
    add_to(by_type[d], trig.index.property, rule)
  end
  return rule
end

-- Takes a rule out: no more events, its holds and debounces cancelled.
function App:remove(rule)
  if rule.removed then return end
  rule.removed, rule.disabled = true, rule.disabled or "removed"
  for i = #self.rules, 1, -1 do
    if self.rules[i] == rule then table.remove(self.rules, i) end
  end
  self:_drop_holds(rule)
  for _, by_dsn in pairs(self.index[rule.event_type] or {}) do
    for _, list in pairs(by_dsn) do
      for i = #list, 1, -1 do
        if list[i] == rule then table.remove(list, i) end
      end
    end
  end
end

-- The context of the rule or timer running now (nil outside one).
function M.current_ctx()
  local task = scheduler.current_task()
  return task and task.ctx
end

function Rule:__tostring()
  return ("rule %s (%s): fired %d, failed %d%s"):format(self.name, self.event_type, self.fired,
    self.failures, self.disabled and (", disabled: " .. self.disabled) or "")
end

-- The rules that may match ev, in registration order: a merge of the index
-- buckets for (type or "*", dsn or "*", property or "*"), each already in
-- rule id order (rules are appended as they are registered). On the hot path:
-- one table per event, no sort.
local NO_RULES = setmetatable({}, { __newindex = function() error("read-only", 2) end })
local buckets, heads = {}, {} -- scratch space, filled and used within one call

function App:_candidates(ev)
  local n = 0
  local t, d, p = ev.type, ev.dsn or "*", ev.property or "*"
  for ti = 1, t == "*" and 1 or 2 do
    local by_type = self.index[ti == 1 and t or "*"]
    if by_type then
      for di = 1, d == "*" and 1 or 2 do
        local by_dsn = by_type[di == 1 and d or "*"]
        if by_dsn then
          for pi = 1, p == "*" and 1 or 2 do
            local list = by_dsn[pi == 1 and p or "*"]
            if list and list[1] then
              n = n + 1
              buckets[n], heads[n] = list, 1
            end
          end
        end
      end
    end
  end
  if n == 0 then return NO_RULES end
  if n == 1 then -- a copy: a callback may remove a rule from the bucket meanwhile
    local list = buckets[1]
    buckets[1] = nil
    return table.move(list, 1, #list, 1, {})
  end
  local out, count, last = {}, 0, nil
  while true do
    local best, best_id = nil, math.huge
    for i = 1, n do
      local rule = buckets[i][heads[i]]
      if rule and rule.id < best_id then best, best_id = i, rule.id end
    end
    if not best then break end
    local rule = buckets[best][heads[best]]
    heads[best] = heads[best] + 1
    if rule ~= last then -- one rule may sit in two buckets: keep it once
      count = count + 1
      out[count], last = rule, rule
    end
  end
  for i = 1, n do buckets[i] = nil end -- hold no rule alive
  return out
end

-- Loop guard: rules fired again and again by this app's own writes, whether
-- one rule re-triggers itself or several rules answer each other.
function App:_loop_check(rule, ev)
  if not ev.own then return true end
  local now, within = self.clock.now(), self.loop.within
  local function count(hits)
    hits[#hits + 1] = now
    while hits[1] and hits[1] < now - within do table.remove(hits, 1) end
    return #hits
  end
  if ev.caused_by == rule.name and count(rule.own_hits) >= self.loop.count then
    self:_disable(rule, ("it re-triggered itself %d times within %g s through its own writes "
      .. "(a loop?)"):format(#rule.own_hits, within))
    return false
  end
  -- Across rules: own writes to one device property, counted once per event
  -- (in dispatch); only a rule that writes can be part of such a loop.
  local key = (ev.dsn or "?") .. "/" .. (ev.property or "?")
  local hits = self.own_hits and self.own_hits[key]
  if rule.writes > 0 and hits and #hits >= 2 * self.loop.count then
    self:_disable(rule, ("rules keep answering each other's writes to %s (%d within %g s: a loop?)")
      :format(key, #hits, within))
    return false
  end
  return true
end

-- The rate limit, per rule and device: true if the rule may fire now.
function App:_rate_ok(rule, key)
  local rate = rule.trig.rate
  if not rate then return true end
  local now, times = self.clock.now(), rule.recent[key] or {}
  while times[1] and times[1] <= now - rate.per do table.remove(times, 1) end
  if #times >= rate.max then
    rule.skipped = rule.skipped + 1
    rule.recent[key] = times
    return false
  end
  times[#times + 1] = now
  rule.recent[key] = times
  return true
end

-- Debounce, then the rate limit; then run.
function App:_fire(rule, ev)
  local key = ev.dsn or "*"
  if rule.trig.debounce then
    local slot = "debounce\0" .. key
    self:_drop_hold(rule, slot) -- a newer event restarts the quiet time
    self:_hold(rule, slot, ev, rule.trig.debounce, function()
      if not rule.disabled and self:_rate_ok(rule, key) then self:_run(rule, rule.fn, ev) end
    end)
    return
  end
  if self:_rate_ok(rule, key) then self:_run(rule, rule.fn, ev) end
end

-- True if this datapoint (or ack) was seen already; remembers it otherwise.
function App:_duplicate(ev)
  local dp = ev.datapoint
  local id = type(dp) == "table" and dp.id
  if type(id) ~= "string" then return false end
  return self:_seen_before(ev.type or "?", id)
end

-- True if (kind, id) is in the window; puts it there otherwise. (Also how a
-- restarted runner hands the app the ids its journal saw.)
function App:_seen_before(kind, id)
  local size = self._seen_size
  if size == 0 then return false end
  local ids = self._seen[kind]
  if not ids then
    ids = {}
    self._seen[kind] = ids
  end
  if ids[id] then return true end
  local slot = self._seen_next -- the oldest id of the ring leaves
  local old_kind = self._seen_types[slot]
  if old_kind then self._seen[old_kind][self._seen_ids[slot]] = nil end
  self._seen_types[slot], self._seen_ids[slot], ids[id] = kind, id, true
  self._seen_next = slot % size + 1
  return false
end

-- Processes one event: the twin cache, then every rule that matches. A
-- datapoint seen before (same type and datapoint id) is counted and skipped.
function App:dispatch(ev)
  -- (A replay from the journal is in the window already: the journal handed
  -- over the ids of every event it holds, this one's too. It still runs.)
  if self:_duplicate(ev) and not ev.replayed then
    self.counters.duplicates = self.counters.duplicates + 1
    if self.journal then self.journal:finished(ev) end
    return
  end
  if not self.journal then return self:_dispatch(ev) end
  self:_acquire(ev)
  local ok, err = pcall(self._dispatch, self, ev)
  self:_release(ev)
  if not ok then error(err, 0) end
end

function App:_dispatch(ev)
  self.counters.events = self.counters.events + 1
  local dp = ev.datapoint
  local meta = type(dp) == "table" and type(dp.metadata) == "table" and dp.metadata or nil
  if meta and meta.ayla_app == self.id then
    ev.own, ev.caused_by = true, meta.ayla_rule
    self.counters.own = self.counters.own + 1
    if ev.type == "datapoint" then -- once per own write, for the loop guard
      local key = (ev.dsn or "?") .. "/" .. (ev.property or "?")
      self.own_hits = self.own_hits or {}
      local hits = self.own_hits[key] or {}
      self.own_hits[key] = hits
      local now = self.clock.now()
      hits[#hits + 1] = now
      while hits[1] and hits[1] < now - self.loop.within do table.remove(hits, 1) end
    end
  end
  -- The state before this event, for from/to and crossings.
  local state = trigger.state_of(ev)
  local prop = ev.type == "connectivity" and "$status" or ev.property
  local prev, known, fresh = nil, false, true
  if ev.dsn and prop and state ~= nil and ev.type ~= "datapointack" then
    -- (an ack confirms a write; the datapoint event already carried the value)
    local old, taken = self.twin:update(ev.dsn, prop, state, ev.time)
    if old then prev, known = old.value, true end
    fresh = taken
    if not fresh and ev.replayed then
      -- An event the journal replays after a restart was accepted once
      -- already; what came before it is not known now.
      fresh, prev, known = true, nil, false
    end
  end
  if not fresh then return end -- older than what we know: no state change to react to
  local hold_key = (ev.dsn or "*") .. "\0" .. (prop or "*")
  for _, rule in ipairs(self:_candidates(ev)) do
    if not rule.disabled then self:_offer(rule, ev, state, prev, known, hold_key) end
  end
end

function App:_offer(rule, ev, state, prev, known, hold_key)
  local trig = rule.trig
  local holding = rule.holds[hold_key]
  if trig.stateful and not trig.holds(state) then
    if holding then
      self:_drop_hold(rule, hold_key) -- the condition broke before the time was up
      holding = nil
    end
    if trig.hold or trig.is_conditional then -- nor may a debounced firing go out
      self:_drop_hold(rule, "debounce\0" .. (ev.dsn or "*"))
    end
  end
  if not trig.static(ev) then return end
  if trig.stateful and not trig.edge(state, prev, known) then return end
  if not self:_loop_check(rule, ev) then return end
  if trig.hold then
    if holding then return end -- already waiting: keep the first start
    self:_hold(rule, hold_key, ev, trig.hold, function()
      if not rule.disabled then self:_fire(rule, ev) end
    end)
    return
  end
  self:_fire(rule, ev)
end

-- ---- timers ------------------------------------------------------------------

-- app:after(seconds, fn): fn(ctx) once.
function App:after(seconds, fn)
  check(type(seconds) == "number" and seconds >= 0, 2, "after(seconds, fn) expects seconds")
  check(type(fn) == "function", 2, "after(seconds, fn) expects a function")
  local t
  t = self.timers:add(self.clock.now() + seconds, function()
    self.counters.timers = self.counters.timers + 1
    self:_run(nil, fn)
  end)
  return t
end

-- app:every(seconds, fn): fn(ctx) every `seconds`, first after one period.
function App:every(seconds, fn)
  check(type(seconds) == "number" and seconds > 0, 2, "every(seconds, fn) expects positive seconds")
  check(type(fn) == "function", 2, "every(seconds, fn) expects a function")
  local handle = {}
  local function schedule(at)
    handle.timer = self.timers:add(at, function()
      self.counters.timers = self.counters.timers + 1
      -- On a fixed grid, so a slow callback does not drift it; periods missed
      -- while the app was stalled are skipped, not run in a burst.
      local nxt = at + seconds
      local now = self.clock.now()
      if nxt <= now then nxt = at + seconds * (math.floor((now - at) / seconds) + 1) end
      schedule(nxt)
      self:_run(nil, fn)
    end)
  end
  schedule(self.clock.now() + seconds)
  return handle
end

-- app:at("07:30", fn): fn(ctx) every day at that local time.
function App:at(hhmm, fn)
  check(type(hhmm) == "string", 2, "at(\"HH:MM\", fn) expects a time of day")
  local h, m = hhmm:match("^(%d%d?):(%d%d)$")
  h, m = tonumber(h), tonumber(m)
  check(h and m and h < 24 and m < 60, 2, "at expects \"HH:MM\" (00:00 to 23:59), not %q", hhmm)
  check(type(fn) == "function", 2, "at(\"HH:MM\", fn) expects a function")
  local handle = {}
  local function schedule()
    local wall = self.clock.wall()
    local function target(days) -- a fresh table each time: os.time normalises it in place
      local d = os.date("*t", math.floor(wall))
      d.day, d.hour, d.min, d.sec, d.isdst = d.day + days, h, m, 0, nil -- summer time: os.time's call
      return os.time(d)
    end
    local next_wall = target(0)
    if next_wall <= wall then next_wall = target(1) end
    handle.timer = self.timers:add(self.clock.now() + (next_wall - wall), function()
      self.counters.timers = self.counters.timers + 1
      schedule()
      self:_run(nil, fn)
    end)
  end
  schedule()
  return handle
end

function App:cancel(handle)
  if handle then self.timers:cancel(handle.timer or handle) end
end

-- ---- the loop ----------------------------------------------------------------

function App:_due()
  local now, upto = self.clock.now(), self.timers:mark()
  while true do
    local t = self.timers:pop_due(now, upto)
    if not t then return end
    t.fn()
  end
end

-- Events a stream dropped because its queue was full (the rules are slower
-- than the stream): counted in stats().dropped and logged, at most once a
-- second, with how many were lost since the last look.
function App:_check_drops(streams)
  local now = self.clock.now()
  if self._drops_checked and now - self._drops_checked < 1 then return end
  self._drops_checked = now
  self._dropped_by = self._dropped_by or setmetatable({}, { __mode = "k" })
  for _, s in ipairs(streams) do
    local st = s.stats and s:stats() -- anything with next(timeout) may feed an app
    local n = st and st.dropped or 0
    local before = self._dropped_by[s] or 0
    if n > before then
      self.log("warn", ("stream %s dropped %d events: its queue was full (the rules are slower than "
        .. "the stream; %d dropped in all)"):format(tostring(s.url), n - before, n))
    end
    self._dropped_by[s] = n
  end
end

-- Handles what is ready: events from the streams, due timers, rule tasks;
-- waits up to `timeout` seconds when nothing was.
function App:step(timeout)
  local got = false
  for _, s in ipairs(self.streams) do
    for _ = 1, 1000 do -- bounded, so timers and tasks get their turn
      local ev = s:next(0)
      if not ev then break end
      got = true
      self:dispatch(ev)
    end
  end
  if self.streams[1] then self:_check_drops(self.streams) end
  self:_due()
  local wait = got and 0 or (timeout or 0)
  local next_at = self.timers:next_at()
  if next_at then wait = math.max(0, math.min(wait, next_at - self.clock.now())) end
  self.scheduler:step(wait)
  self:_due()
end

-- Runs until app:stop() (from a rule, a timer or a signal handler) or until
-- `seconds` pass.
function App:run(seconds)
  local deadline = seconds and self.clock.now() + seconds
  self.running = true
  while self.running do
    if deadline and self.clock.now() >= deadline then break end
    self:step(0.25)
  end
  self.running = false
end

function App:stop() self.running = false end

function App:stats()
  local out = {}
  for k, v in pairs(self.counters) do out[k] = v end
  out.rules, out.tasks, out.timers_pending = #self.rules, #self.scheduler.tasks, self.timers:count()
  out.dropped = 0 -- by the streams' queues, as of the last check (once a second)
  for _, n in pairs(self._dropped_by or {}) do out.dropped = out.dropped + n end
  return setmetatable(out, STATS)
end

function App:__tostring()
  local active = 0
  for _, r in ipairs(self.rules) do if not r.disabled then active = active + 1 end end
  return ("ayla.App: %d rules (%d active), %d events, %d fired, %d failed"):format(#self.rules,
    active, self.counters.events, self.counters.fired, self.counters.failures)
end

return M
