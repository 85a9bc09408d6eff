-- Overload: the simulator floods far faster than a deliberately slow rule.
-- The stream's queue policy keeps memory bounded, every drop is counted and
-- reported, the I/O thread keeps answering heartbeats, and once the flood
-- stops the app delivers new events at once, in order, with no more drops.
-- Everything is asserted on counts and invariants, never on timings.
local ayla = require "ayla"
local runner = require "ayla.runner"

-- Under valgrind (tools/valgrind_specs.sh) everything runs some 50 times
-- slower: a smaller flood still overruns the queues below many times over.
local UNDER_VALGRIND = os.getenv("AYLA_UNDER_VALGRIND") ~= nil
local FLOOD = UNDER_VALGRIND and 4000 or 60000 -- 60000: about 29 MB, far more than the queues hold
local EVENT_MAX = 600 -- bytes of one flood event, with room to spare (they are about 480)

-- Under AddressSanitizer, freed memory waits in its quarantine (256 MB), so
-- RSS says nothing about our memory there; the queue counters still do.
-- Valgrind's allocator, likewise.
local SANITIZED = (os.getenv("LD_PRELOAD") or ""):find("asan") ~= nil or UNDER_VALGRIND

local function rss_kb()
  for line in io.lines("/proc/self/status") do
    local kb = line:match("^VmRSS:%s*(%d+)")
    if kb then return tonumber(kb) end
  end
end

-- Some work per event that is slow next to the producer: a few hundred
-- thousand Lua instructions.
local BURN = UNDER_VALGRIND and 2000 or 20000
local function burn()
  local x = 0
  for i = 1, BURN do x = x + i % 7 end
  return x
end

-- An app on stream s with a slow rule on the flood's events and a fast one on
-- the recovery events ("n"); returns the app and what the rules saw.
local function slow_app(s)
  local seen = { flood = {}, n = {}, warnings = {} }
  local app = assert(ayla.app { stream = s, log = function(level, msg)
    if level == "warn" then seen.warnings[#seen.warnings + 1] = msg end
  end })
  app:on("datapoint", { property = "Blue_LED" }, function(ev)
    burn()
    seen.flood[#seen.flood + 1] = ev.seq
  end)
  app:on("datapoint", { property = "n" }, function(ev)
    seen.n[#seen.n + 1] = ev.value
  end)
  return app, seen
end

-- Steps the app until the flood has been sent and received, watching the
-- queue; returns the largest queued and queued_bytes seen.
local function step_through_flood(sim, s, app, heartbeats_before)
  local max_queued, max_bytes = 0, 0
  assert(H.wait_until(function()
    app:step(0)
    local st = s:stats()
    if st.queued > max_queued then max_queued = st.queued end
    if st.queued_bytes > max_bytes then max_bytes = st.queued_bytes end
    -- the flood is over and at least one heartbeat was answered during it
    return sim:stats().flood_sent == FLOOD and st.events >= FLOOD
      and st.heartbeats_answered > heartbeats_before
  end, 120), "the flood did not arrive, or no heartbeat was answered during it")
  return max_queued, max_bytes
end

-- Steps the app until its queue is empty and its tasks have finished.
local function drain(s, app)
  assert(H.wait_until(function()
    app:step(0)
    return s:stats().queued == 0 and app:stats().tasks == 0
  end, 60), "the app did not catch up")
end

-- Strictly increasing?
local function increasing(list)
  for i = 2, #list do
    if list[i] <= list[i - 1] then return false, i end
  end
  return true
end

local function as_set(list)
  local set = {}
  for _, v in ipairs(list) do set[v] = true end
  return set
end

describe("overload: a producer faster than the rules", function()
  local sim, s
  before_each(function()
    -- A drop after 5 unanswered heartbeats: far beyond the I/O thread's
    -- replies, even on a loaded machine; still a drop if they stop.
    sim = assert(ayla.sim { heartbeat_interval = 0.05, heartbeat_misses = 5, history = 0 })
  end)
  after_each(function()
    if s then s:close() end
    sim:stop()
    s = nil
  end)

  for _, policy in ipairs { "oldest", "newest" } do
    it("keeps memory bounded and counts every drop (drop " .. policy .. "), answers heartbeats, "
      .. "and recovers", function()
      local QMAX = 200
      s = H.open_stream(sim, { queue_max = QMAX, queue_max_bytes = 0, drop_policy = policy })
      local app, seen = slow_app(s)
      assert(H.wait_until(function() return sim:stats().clients == 1 end))
      collectgarbage()
      local rss_before = rss_kb()
      local hb_before = s:stats().heartbeats_answered

      assert(sim:flood(FLOOD))
      local max_queued = step_through_flood(sim, s, app, hb_before)
      drain(s, app)
      local st, sst = s:stats(), sim:stats()

      -- Memory bounded: the queue never held more than its limit plus the
      -- reader's batch of up to 63 (docs/stream.md), and RSS grew by much less
      -- than the flood would take if it were all kept.
      assert.is_true(st.queue_peak <= QMAX + 63, "queue_peak " .. st.queue_peak)
      assert.is_true(max_queued <= QMAX + 63)
      local grown_mb = (rss_kb() - rss_before) / 1024
      assert.is_true(SANITIZED or grown_mb < FLOOD * 480 / 1e6 / 3,
        ("RSS grew %.1f MB during a flood of %.0f MB"):format(grown_mb, FLOOD * 480 / 1e6))

      -- Every event was either delivered to the rule or counted as dropped.
      assert.equal(FLOOD, sst.flood_sent)
      assert.equal(FLOOD, st.events)
      assert.is_true(st.dropped > 0)
      assert.equal(FLOOD - #seen.flood, st.dropped)
      assert.equal(0, st.seq_gaps) -- the stream received all; the drops are the queue's
      local ok, at = increasing(seen.flood)
      assert.is_true(ok, "delivered out of order at " .. tostring(at))

      -- The policy keeps what docs/stream.md says: "oldest" discards the
      -- oldest, so the last QMAX events are all delivered; "newest" refuses
      -- the incoming ones, so the first QMAX (which found room) are.
      local got = as_set(seen.flood)
      for k = 1, QMAX do
        local seq = policy == "oldest" and FLOOD - QMAX + k or k
        assert.is_true(got[seq], ("seq %d was dropped under drop %s"):format(seq, policy))
      end
      if policy == "oldest" then
        assert.equal(FLOOD, seen.flood[#seen.flood])
      else
        assert.equal(1, seen.flood[1])
      end

      -- Reported the documented way: s:stats().dropped; the app logs a
      -- warning as drops happen (at most once a second) and counts them in
      -- app:stats().dropped; the rules runner's status line sums them.
      app._drops_checked = nil -- look now, not up to a second later
      app:step(0)
      assert.equal(st.dropped, app:stats().dropped)
      assert.is_true(#seen.warnings >= 1)
      assert.matches("dropped %d+ events: its queue was full", seen.warnings[1])
      local lines = {}
      runner.status { app = app, streams = { s }, log = function(_, msg) lines[#lines + 1] = msg end }
      assert.matches(("dropped %d%%f[%%D]"):format(st.dropped), lines[1])

      -- Heartbeats: answered all along, never a drop by the server.
      assert.equal(0, sst.heartbeat_drops)
      assert.equal(0, st.reconnects)
      assert.is_true(st.heartbeats_answered > hb_before)
      assert.is_true(st.heartbeats - st.heartbeats_answered <= 1) -- at most one in flight

      -- Recovery: the flood is over; new events arrive in order, none dropped.
      local dropped = st.dropped
      for v = 1, 50 do
        assert(sim:emit { metadata = { event_type = "datapoint", dsn = "D1", property_name = "n",
                                       base_type = "integer" }, datapoint = { value = v } })
      end
      assert(H.wait_until(function()
        app:step(0)
        return #seen.n >= 50
      end, 20), "the events after the flood were not delivered")
      assert.same((function()
        local want = {}
        for v = 1, 50 do want[v] = v end
        return want
      end)(), seen.n)
      assert.equal(dropped, s:stats().dropped)
      assert.equal(0, sim:stats().heartbeat_drops)
    end)
  end

  it("bounds the queue by bytes under a flood", function()
    local QBYTES = 64 * 1024
    s = H.open_stream(sim, { queue_max = 100000, queue_max_bytes = QBYTES })
    local app, seen = slow_app(s)
    assert(H.wait_until(function() return sim:stats().clients == 1 end))
    local hb_before = s:stats().heartbeats_answered
    assert(sim:flood(FLOOD))
    local _, max_bytes = step_through_flood(sim, s, app, hb_before)
    drain(s, app)
    local st = s:stats()
    -- The limit, plus the reader's batch of up to 63 events outside it.
    assert.is_true(max_bytes <= QBYTES + 63 * EVENT_MAX, "queued_bytes reached " .. max_bytes)
    assert.is_true(st.queue_peak <= QBYTES // 400 + 63, "queue_peak " .. st.queue_peak)
    assert.is_true(st.dropped > 0)
    assert.equal(FLOOD - #seen.flood, st.dropped)
    assert.is_true(increasing(seen.flood))
    assert.equal(FLOOD, seen.flood[#seen.flood]) -- drop oldest, the default
    assert.equal(0, sim:stats().heartbeat_drops)
  end)

  it("times the heartbeats it answered during the flood", function()
    s = H.open_stream(sim, { queue_max = 200 })
    local app = slow_app(s)
    assert(H.wait_until(function() return sim:stats().clients == 1 end))
    local hb_before = s:stats().heartbeats_answered
    assert(sim:flood(FLOOD))
    step_through_flood(sim, s, app, hb_before)
    s:close()
    s = nil
    local st = sim:stats()
    assert.equal(0, st.heartbeat_drops)
    assert.equal(st.heartbeat_replies, st.heartbeat_rtt_count)
    assert.is_true(st.heartbeat_rtt_ms_p50 <= st.heartbeat_rtt_ms_p99)
    assert.is_true(st.heartbeat_rtt_ms_p99 <= st.heartbeat_rtt_ms_max)
  end)
end)
