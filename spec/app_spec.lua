-- The rules engine (ayla.app): triggers, holds, timers, order, isolation,
-- dispatch. Most cases feed decoded events to app:dispatch under a virtual
-- clock, so time-based triggers are checked exactly; the last ones run end to
-- end against the simulator.
local ayla = require "ayla"

local T = 0 -- the virtual clock
local clock = { now = function() return T end, wall = function() return 1795300000 + T end }

local function app(opts)
  opts = opts or {}
  opts.clock = opts.clock or clock
  opts.log = opts.log or function() end
  return assert(ayla.app(opts))
end

local seq = 0
local function dp(dsn, prop, value, base_type, extra)
  seq = seq + 1
  local ev = {
    seq = tostring(seq),
    metadata = { event_type = "datapoint", dsn = dsn, oem_model = "m", property_name = prop,
                 base_type = base_type or "integer" },
    datapoint = { id = "id" .. seq, value = value, metadata = extra or {},
                  updated_at = ("2026-11-22T00:%02d:%02dZ"):format(seq // 60 % 60, seq % 60) },
  }
  return assert(ayla.decode(require("cjson").encode(ev)))
end

local function conn(dsn, status)
  seq = seq + 1
  return assert(ayla.decode(require("cjson").encode {
    seq = tostring(seq), metadata = { event_type = "connectivity", dsn = dsn, oem_model = "m" },
    connection = { status = status,
      event_time = ("2026-11-22T01:%02d:%02dZ"):format(seq // 60 % 60, seq % 60) },
  }))
end

-- Advances the virtual clock in small steps, running due timers.
local function advance(a, seconds)
  local stop = T + seconds
  while T < stop do
    T = math.min(stop, T + 0.5)
    a:step(0)
  end
end

describe("ayla.app", function()
  before_each(function() T = 0 end)

  describe("filters", function()
    it("matches dsn, oem_model, property and value by equality, list or predicate", function()
      local a = app()
      local got = {}
      a:on("datapoint", { dsn = "D1", property = "temp" }, function(ev) got[#got + 1] = "eq " .. ev.value end)
      a:on("datapoint", { dsn = { "D1", "D2" }, value = { 5, 6 } },
        function(ev) got[#got + 1] = "set " .. ev.value end)
      a:on("datapoint", { value = function(v) return v > 100 end },
        function(ev) got[#got + 1] = "fn " .. ev.value end)
      a:on("datapoint", { oem_model = "other" }, function() got[#got + 1] = "never" end)
      a:dispatch(dp("D1", "temp", 5))
      a:dispatch(dp("D2", "temp", 200))
      a:dispatch(dp("D3", "x", 6))
      assert.same({ "eq 5", "set 5", "fn 200" }, got)
    end)

    it("runs rules for one event in the order they were added", function()
      local a = app()
      local order = {}
      for i = 1, 5 do a:on("datapoint", { property = "p" }, function() order[#order + 1] = i end) end
      a:on("*", function() order[#order + 1] = "any" end)
      a:on("datapoint", function() order[#order + 1] = "all" end)
      a:dispatch(dp("D", "p", 1))
      assert.same({ 1, 2, 3, 4, 5, "any", "all" }, order)
    end)

    it("refuses unknown filters and impossible combinations at once", function()
      local a = app()
      assert.has_error(function() a:on("datapoint", { nope = 1 }, print) end, "unknown filter 'nope'")
      assert.has_error(function() a:on("location", { to = 1 }, print) end)
      assert.has_error(function() a:on("datapoint", { ["for"] = -1 }, print) end)
      assert.has_error(function() a:on("datapoint", { rate = { max = 0, per = 1 } }, print) end)
      assert.has_error(function() a:on("datapoint", {}, "not a function") end)
    end)
  end)

  describe("state triggers", function()
    it("from/to fire only on a real change", function()
      local a = app()
      local fired = {}
      a:on("datapoint", { property = "LED", to = 1 }, function(ev) fired[#fired + 1] = "to1@" .. ev.seq end)
      a:on("datapoint", { property = "LED", from = 1, to = 0 },
        function(ev) fired[#fired + 1] = "1to0@" .. ev.seq end)
      local e1, e2, e3, e4 = dp("D", "LED", 1), dp("D", "LED", 1), dp("D", "LED", 0), dp("D", "LED", 1)
      for _, e in ipairs { e1, e2, e3, e4 } do a:dispatch(e) end
      assert.same({ "to1@" .. e1.seq, "1to0@" .. e3.seq, "to1@" .. e4.seq }, fired)
    end)

    it("above/below fire when a value crosses into the range, not while it stays", function()
      local a = app()
      local hot = {}
      a:on("datapoint", { property = "temp", above = 30 }, function(ev) hot[#hot + 1] = ev.value end)
      for _, v in ipairs { 31, 35, 29, 28, 32, 40 } do a:dispatch(dp("D", "temp", v, "decimal")) end
      assert.same({ 31, 32 }, hot) -- the first value counts when it is already in range
      local band = {}
      a:on("datapoint", { property = "h", above = 10, below = 20 },
        function(ev) band[#band + 1] = ev.value end)
      for _, v in ipairs { 5, 15, 16, 25, 12 } do a:dispatch(dp("D", "h", v)) end
      assert.same({ 15, 12 }, band)
    end)

    it("keeps a state per device and property", function()
      local a = app()
      local n = 0
      a:on("datapoint", { property = "p", to = 1 }, function() n = n + 1 end)
      a:dispatch(dp("A", "p", 1))
      a:dispatch(dp("B", "p", 1)) -- another device: its own change
      a:dispatch(dp("A", "q", 1)) -- another property: not this rule
      assert.equal(2, n)
    end)

    it("fires on devices going offline and online", function()
      local a = app()
      local seen = {}
      a:on("connectivity", { online = false }, function(ev) seen[#seen + 1] = ev.dsn .. " off" end)
      a:on("connectivity", { to = "Online" }, function(ev) seen[#seen + 1] = ev.dsn .. " on" end)
      a:dispatch(conn("D1", "Offline"))
      a:dispatch(conn("D1", "Online"))
      a:dispatch(conn("D1", "Online"))
      assert.same({ "D1 off", "D1 on" }, seen)
    end)

    it("keeps acks out of the twin: the datapoint carried the value", function()
      local a = app()
      a:dispatch(dp("D", "LED", 1))
      local ack = assert(ayla.decode(require("cjson").encode {
        seq = "99", metadata = { event_type = "datapointack", dsn = "D", property_name = "LED",
                                 base_type = "integer" },
        datapoint = { id = "x", value = 0, ack_status = 1, updated_at = "2026-11-22T23:59:59Z" } }))
      a:dispatch(ack)
      assert.equal(1, a.twin:get("D", "LED"))
    end)

    it("ignores an event older than what the twin cache holds", function()
      local a = app()
      local n = 0
      a:on("datapoint", { property = "p" }, function() n = n + 1 end)
      local new, old = dp("D", "p", 2), dp("D", "p", 1)
      old.time = "2000-01-01T00:00:00Z"
      a:dispatch(new)
      a:dispatch(old)
      assert.equal(1, n)
      assert.equal(2, a.twin:get("D", "p"))
    end)
  end)

  describe("holds (for = seconds)", function()
    it("fires once the condition has held, and not if it breaks first", function()
      local a = app()
      local alarms = {}
      a:on("datapoint", { property = "temp", above = 30, ["for"] = 60 }, function(ev)
        alarms[#alarms + 1] = { dsn = ev.dsn, at = T }
      end)
      a:dispatch(dp("A", "temp", 35, "decimal"))
      advance(a, 30)
      a:dispatch(dp("A", "temp", 25, "decimal")) -- broke: cancelled
      a:dispatch(dp("B", "temp", 40, "decimal"))
      advance(a, 59)
      assert.same({}, alarms)
      a:dispatch(dp("B", "temp", 41, "decimal")) -- still above: the hold goes on, not restarted
      advance(a, 2)
      assert.equal(1, #alarms)
      assert.equal("B", alarms[1].dsn)
      assert.is_true(alarms[1].at >= 90 and alarms[1].at <= 91)
    end)

    it("reports a device offline for five minutes, unless it comes back", function()
      local a = app()
      local down = {}
      a:on("connectivity", { status = "Offline", ["for"] = 300 }, function(ev) down[#down + 1] = ev.dsn end)
      a:dispatch(conn("A", "Offline"))
      a:dispatch(conn("B", "Offline"))
      advance(a, 120)
      a:dispatch(conn("B", "Online"))
      advance(a, 200)
      assert.same({ "A" }, down)
    end)
  end)

  describe("rate limit and debounce", function()
    it("limits firings per device and counts what it skipped", function()
      local a = app()
      local n = 0
      local rule = a:on("datapoint", { property = "p", rate = { max = 2, per = 10 } },
        function() n = n + 1 end)
      for i = 1, 5 do a:dispatch(dp("D", "p", i)) end
      a:dispatch(dp("E", "p", 1)) -- another device has its own budget
      assert.equal(3, n)
      assert.equal(3, rule.skipped)
      advance(a, 11)
      a:dispatch(dp("D", "p", 9))
      assert.equal(4, n)
    end)

    it("debounces first and rate-limits what comes out, with the last value", function()
      local a = app()
      local got = {}
      a:on("datapoint", { property = "p", debounce = 5, rate = { max = 1, per = 60 } },
        function(ev) got[#got + 1] = ev.value end)
      for v = 1, 3 do a:dispatch(dp("D", "p", v)) end
      advance(a, 6)
      assert.same({ 3 }, got)
    end)

    it("drops a debounced firing when the condition breaks meanwhile", function()
      local a = app()
      local got = {}
      a:on("datapoint", { property = "t", above = 30, debounce = 5 },
        function(ev) got[#got + 1] = ev.value end)
      a:dispatch(dp("D", "t", 35))
      advance(a, 2)
      a:dispatch(dp("D", "t", 20))
      advance(a, 10)
      assert.same({}, got)
    end)

    it("debounces: fires with the last event once the device is quiet", function()
      local a = app()
      local got = {}
      a:on("datapoint", { property = "p", debounce = 2 }, function(ev) got[#got + 1] = ev.value end)
      a:dispatch(dp("D", "p", 1))
      advance(a, 1)
      a:dispatch(dp("D", "p", 2))
      advance(a, 1)
      a:dispatch(dp("D", "p", 3))
      assert.same({}, got)
      advance(a, 3)
      assert.same({ 3 }, got)
    end)
  end)

  describe("timers", function()
    it("runs after, every and at on the clock, in order", function()
      local a = app()
      local log = {}
      local function at(what) return function() log[#log + 1] = ("%s@%g"):format(what, T) end end
      a:after(5, at("after5"))
      a:every(10, at("every"))
      a:after(10, at("after10"))
      advance(a, 30)
      assert.same({ "after5@5", "every@10", "after10@10", "every@20", "every@30" }, log)
    end)

    it("runs a daily at() at that local time", function()
      local wall0 = os.time { year = 2026, month = 11, day = 22, hour = 7, min = 29, sec = 0 }
      local c = { now = function() return T end, wall = function() return wall0 + T end }
      local a = app { clock = c }
      local fired = {}
      a:at("07:30", function() fired[#fired + 1] = T end)
      advance(a, 120)
      assert.same({ 60 }, fired)
      assert.has_error(function() a:at("25:00", print) end)
    end)

    it("skips the periods it missed instead of running them in a burst", function()
      local a = app()
      local n = 0
      a:every(1, function() n = n + 1 end)
      advance(a, 2)
      assert.equal(2, n)
      T = T + 30 -- a stall: 30 periods missed at once
      a:step(0)
      assert.equal(3, n)
      advance(a, 2)
      assert.equal(5, n)
    end)

    it("cannot be kept busy by timers that set timers", function()
      local a = app()
      local n = 0
      local function again() n = n + 1; a:after(0, again) end
      a:after(0, again)
      a:step(0)
      local first = n
      assert.is_true(first >= 1 and first <= 2) -- a pass never runs what it added itself
      a:step(0)
      assert.is_true(n > first and n <= first + 2)
    end)

    it("can be cancelled", function()
      local a = app()
      local n = 0
      local h = a:every(1, function() n = n + 1 end)
      advance(a, 3)
      a:cancel(h)
      advance(a, 5)
      assert.equal(3, n)
    end)
  end)

  describe("isolation", function()
    it("reports a failing rule with its traceback and keeps the others running", function()
      local errors = {}
      local a = app { log = function(level, msg) if level == "error" then errors[#errors + 1] = msg end end }
      local ok = 0
      a:on("datapoint", { name = "broken" }, function() error("kaboom") end)
      a:on("datapoint", function() ok = ok + 1 end)
      a:dispatch(dp("D", "p", 1))
      assert.equal(1, ok)
      assert.matches("rule broken failed %(1 in a row%): .*kaboom", errors[1])
      assert.matches("stack traceback", errors[1])
    end)

    it("disables a rule after N failures in a row, and says so", function()
      local errors = {}
      local a = app { max_failures = 3, log = function(_, msg) errors[#errors + 1] = msg end }
      local flaky = a:on("datapoint", { name = "flaky" },
        function(ev) if ev.value ~= 0 then error("no") end end)
      a:dispatch(dp("D", "p", 1))
      a:dispatch(dp("D", "p", 0)) -- a success resets the count
      for i = 2, 4 do a:dispatch(dp("D", "p", i)) end
      assert.equal("failed 3 times in a row", flaky.disabled)
      assert.matches("rule flaky disabled: failed 3 times in a row", errors[#errors])
      a:dispatch(dp("D", "p", 5))
      assert.equal(5, flaky.fired) -- not run again
    end)

    it("stops a runaway rule with its instruction budget", function()
      local errors = {}
      local a = app { budget = 1e6, log = function(_, msg) errors[#errors + 1] = msg end }
      local after = 0
      a:on("datapoint", { name = "spin" }, function() while true do end end)
      a:on("datapoint", function() after = after + 1 end)
      a:dispatch(dp("D", "p", 1))
      assert.equal(1, after)
      assert.matches("rule spin failed .*instruction budget exceeded", errors[1])
    end)
  end)

  describe("dispatch", function()
    it("looks only at rules that can match", function()
      local a = app()
      local hits = 0
      for i = 1, 10000 do
        a:on("datapoint", { dsn = "D" .. i, property = "p" }, function() hits = hits + 1 end)
      end
      local cands = a:_candidates(dp("D77", "p", 1))
      assert.equal(1, #cands)
      assert.equal(0, #a:_candidates(dp("X", "p", 1)))
      a:dispatch(dp("D77", "p", 1))
      assert.equal(1, hits)
    end)
  end)
end)

describe("ayla.app against the simulator", function()
  local sim, cloud
  before_each(function()
    sim = assert(ayla.sim { ack_delay = 0.05 })
    cloud = assert(ayla.cloud(sim:cloud_options()))
  end)
  after_each(function() sim:stop() end)

  it("mirrors a button to an LED, waits for the ack, and marks its own writes", function()
    local s <close> = assert(sim:stream())
    assert(H.wait_until(function() return s:status() == "open" end))
    local a = assert(ayla.app { cloud = cloud, stream = s, log = function() end })
    local acks, own = {}, {}
    a:on("datapoint", { property = "Blue_button", name = "mirror" }, function(ev, ctx)
      local done = assert(ctx:set(ev.dsn, "Blue_LED", ev.value, { wait_ack = 5 }))
      acks[#acks + 1] = done.ack_status
    end)
    a:on("datapoint", { property = "Blue_LED", own = true }, function(ev) own[#own + 1] = ev.caused_by end)
    sim:emit { metadata = { event_type = "datapoint", dsn = "AC000W000000001", oem_model = "ledevb",
                            property_name = "Blue_button", base_type = "boolean" },
               datapoint = { value = 1, updated_at = "2026-11-22T00:00:00Z" } }
    local deadline = require("ayla.core").monotime() + 5
    while (#acks < 1 or #own < 1) and require("ayla.core").monotime() < deadline do a:step(0.1) end
    assert.same({ 200 }, acks)
    assert.same({ "mirror" }, own)
    assert.equal(1, a.twin:get("AC000W000000001", "Blue_LED"))
  end)

  it("stops rules that keep answering each other's writes", function()
    local s <close> = assert(sim:stream())
    assert(H.wait_until(function() return s:status() == "open" end))
    local a = assert(ayla.app { cloud = cloud, stream = s, loop = { count = 3, within = 10 },
                                log = function() end })
    local dsn = "AC000W000000001"
    local ping = a:on("datapoint", { dsn = dsn, property = "input", to = 1, name = "ping" },
      function(ev, ctx) ctx:set(ev.dsn, "input", 0) end)
    local pong = a:on("datapoint", { dsn = dsn, property = "input", to = 0, name = "pong" },
      function(ev, ctx) ctx:set(ev.dsn, "input", 1) end)
    assert(cloud:set(dsn, "input", 1))
    local core = require("ayla.core")
    local deadline = core.monotime() + 5
    while not (ping.disabled or pong.disabled) and core.monotime() < deadline do a:step(0.1) end
    assert.matches("rules keep answering each other's writes to AC000W000000001/input",
      ping.disabled or pong.disabled)
  end)

  it("stops a rule that keeps re-triggering itself through its own writes", function()
    local s <close> = assert(sim:stream())
    assert(H.wait_until(function() return s:status() == "open" end))
    local msgs = {}
    local a = assert(ayla.app { cloud = cloud, stream = s, loop = { count = 3, within = 10 },
                                log = function(_, m) msgs[#msgs + 1] = m end })
    local pingpong = a:on("datapoint", { dsn = "AC000W000000001", property = "input", name = "pingpong" },
      function(ev, ctx) ctx:set(ev.dsn, "input", ev.value + 1) end)
    assert(cloud:set("AC000W000000001", "input", 1))
    local deadline = require("ayla.core").monotime() + 5
    while not pingpong.disabled and require("ayla.core").monotime() < deadline do a:step(0.1) end
    assert.matches("re%-triggered itself 3 times", pingpong.disabled)
    assert.matches("rule pingpong disabled", msgs[#msgs])
  end)
end)

describe("ayla.app's streams", function()
  it("takes events from anything with next(timeout), without stats (a replay, a test feed)", function()
    local queue = { dp("D", "p", 1), dp("D", "p", 2) }
    local feed = { next = function() return table.remove(queue, 1) end }
    local a = app { streams = { feed } }
    local seen = {}
    a:on("datapoint", function(ev) seen[#seen + 1] = ev.value end)
    a:step(0)
    assert.same({ 1, 2 }, seen)
    assert.equal(0, a:stats().dropped)
  end)
end)
