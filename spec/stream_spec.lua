-- The DSS stream against the in-process simulator over loopback: heartbeats,
-- framing, faults, reconnects, queue policy and lifetimes.
local ayla = require "ayla"
local core = require "ayla.core"

local function datapoint(dsn, value, extra)
  return {
    metadata = { event_type = "datapoint", oem_model = "linuxevb", dsn = dsn,
                 property_name = "Blue_LED", display_name = "Blue_LED", base_type = "integer" },
    datapoint = { id = "id-" .. tostring(value), value = value, updated_at = "2026-11-22T00:00:00Z",
                  note = extra },
  }
end

-- Receives n events, failing on a timeout.
local function take(s, n, timeout)
  local got = {}
  for i = 1, n do
    local ev, err = s:next(timeout or 5)
    assert(ev, ("event %d of %d: %s"):format(i, n, tostring(err)))
    got[i] = ev
  end
  return got
end

describe("ayla.stream", function()
  local sim, s
  before_each(function()
    sim = assert(ayla.sim { heartbeat_interval = 0.1, heartbeat_misses = 2 })
  end)
  after_each(function()
    if s then s:close() end
    sim:stop()
    s = nil
  end)

  it("delivers events in order with readable lines", function()
    s = H.open_stream(sim)
    for _, json in ipairs(H.seed_events()) do assert(sim:emit(json)) end
    local got = take(s, 5)
    local types = {}
    for i, ev in ipairs(got) do
      types[i] = ev.type
      assert.equal(i, ev.seq) -- the sim numbers its stream from 1
      assert.is_nil(tostring(ev):find("\n"))
    end
    assert.same({ "connectivity", "datapoint", "datapointack", "location", "registration" }, types)
    assert.equal("Blue_LED", got[2].property)
    local st = s:stats()
    assert.equal(5, st.events)
    assert.same({ connectivity = 1, datapoint = 1, datapointack = 1, location = 1,
                  registration = 1, other = 0 }, st.events_by_type)
    assert.equal(5, st.last_seq)
    assert.equal(0, st.seq_gaps)
  end)

  it("times out with nil, 'timeout' when nothing arrives", function()
    s = H.open_stream(sim)
    local ev, err = s:next(0.2)
    assert.is_nil(ev)
    assert.equal("timeout", err)
  end)

  it("answers heartbeats while Lua sleeps far past the server's drop limit", function()
    s = H.open_stream(sim)
    -- The sim drops a client after 2 unanswered heartbeats (0.2-0.3 s);
    -- the Lua thread now blocks for 1.5 s without touching the stream.
    core.sleep(1.5)
    local st, sst = s:stats(), sim:stats()
    assert.equal(0, sst.heartbeat_drops)
    assert.equal(1, sst.connections)
    assert.equal("open", s:status())
    assert.is_true(st.heartbeats_answered >= 10)
    assert.equal(st.heartbeats, st.heartbeats_answered)
    -- The promise: a reply within 100 ms of the heartbeat, whatever Lua does.
    assert.is_true(st.heartbeat_reply_ms_max < 100, st.heartbeat_reply_ms_max)
    sim:emit(datapoint("D1", 1))
    assert.equal(1, take(s, 1)[1].value)
  end)

  it("answers heartbeats while Lua spins in a busy loop", function()
    s = H.open_stream(sim)
    local stop, n = core.monotime() + 1.5, 0
    while core.monotime() < stop do n = n + 1 end
    assert.is_true(n > 0)
    local sst = sim:stats()
    assert.equal(0, sst.heartbeat_drops)
    assert.equal(1, sst.connections)
    assert.is_true(sst.heartbeat_replies >= 10)
  end)

  it("reassembles an event sent in many WebSocket fragments", function()
    s = H.open_stream(sim)
    local big = string.rep("x", 20000)
    sim:fault("fragment", 7)
    sim:emit(datapoint("D1", 5, big))
    local ev = take(s, 1)[1]
    assert.equal(big, ev.datapoint.note)
    assert.equal(5, ev.value)
  end)

  it("counts each malformed class and keeps delivering the events after it", function()
    s = H.open_stream(sim)
    local kinds = { "no_separator", "bad_prefix", "empty_payload", "not_object",
                    "truncated", "trailing_data", "binary" }
    for i, kind in ipairs(kinds) do
      sim:garble(kind)
      sim:emit(datapoint("D1", i))
      local ev = take(s, 1)[1]
      -- trailing_data carries a valid "{}" before its junk: skip that event
      if ev.value == nil then ev = take(s, 1)[1] end
      assert.equal(i, ev.value)
      assert.equal(1, s:stats().malformed[kind], kind)
    end
    local st = s:stats()
    assert.equal("open", st.state)
    assert.equal(#kinds, st.events - 1) -- plus the "{}" of trailing_data
    assert.matches("skipped", st.last_error)
  end)

  it("counts an event that is not valid JSON and goes on", function()
    s = H.open_stream(sim)
    sim:send_raw('9|{"a":tru}')
    sim:emit(datapoint("D1", 42))
    local ev = take(s, 1)[1]
    assert.equal(42, ev.value)
    local st = s:stats()
    assert.equal(1, st.malformed.bad_json)
    assert.matches("bad_json", st.last_error)
  end)

  it("counts a LEN that matches neither bytes nor characters but keeps the event", function()
    s = H.open_stream(sim)
    sim:send_raw('999|{"seq":"1","metadata":{"event_type":"location"}}')
    local ev = take(s, 1)[1]
    assert.equal("location", ev.type)
    assert.equal(1, s:stats().len_mismatch)
  end)

  it("accepts several records in one message", function()
    s = H.open_stream(sim)
    local a = '{"seq":"1","metadata":{"event_type":"location","dsn":"A"}}'
    local b = '{"seq":"2","metadata":{"event_type":"location","dsn":"B"}}'
    sim:send_raw(#a .. "|" .. a .. #b .. "|" .. b)
    local got = take(s, 2)
    assert.equal("A", got[1].dsn)
    assert.equal("B", got[2].dsn)
    assert.equal(1, s:stats().messages - s:stats().heartbeats - s:stats().keepalives)
  end)

  it("skips an oversize message, counts it, and goes on", function()
    s = H.open_stream(sim, { max_message = 4096 })
    sim:fault("fragment", 3) -- the reassembly path
    sim:emit(datapoint("D1", 1, string.rep("y", 10000)))
    sim:emit(datapoint("D1", 2, string.rep("y", 10000))) -- the single-frame path
    sim:emit(datapoint("D1", 3))
    local ev = take(s, 1)[1]
    assert.equal(3, ev.value)
    assert.equal(2, s:stats().malformed.oversize)
  end)

  it("ignores keep-alives", function()
    s = H.open_stream(sim)
    sim:send_raw("1|X")
    sim:emit(datapoint("D1", 1))
    take(s, 1)
    assert.equal(1, s:stats().keepalives)
    assert.equal(1, s:stats().events)
  end)

  it("counts seq gaps and repeats", function()
    s = H.open_stream(sim)
    local function raw(seq)
      local j = ('{"seq":"%d","metadata":{"event_type":"location"}}'):format(seq)
      sim:send_raw(#j .. "|" .. j)
    end
    raw(10); raw(11); raw(15); raw(15); raw(16); raw(12)
    take(s, 6)
    local st = s:stats()
    assert.equal(1, st.seq_gaps)
    assert.equal(3, st.seq_missing)
    assert.equal(2, st.seq_repeats)
    assert.equal(16, st.last_seq) -- the highest: a late 12 does not move it back
  end)

  it("reconnects after the server drops the socket and resumes by seq", function()
    s = H.open_stream(sim, { backoff = { min = 0.05, max = 0.2 } })
    sim:emit(datapoint("D1", 1))
    sim:emit(datapoint("D1", 2))
    take(s, 2)
    sim:fault("drop")
    assert(H.wait_until(function() return sim:stats().clients == 0 end))
    -- Emitted while nobody is connected: only seq_start can bring them back.
    sim:emit(datapoint("D1", 3))
    sim:emit(datapoint("D1", 4))
    assert(H.wait_until(function() return s:stats().connects == 2 and s:status() == "open" end))
    sim:emit(datapoint("D1", 5))
    local got = take(s, 3)
    assert.same({ 3, 4, 5 }, { got[1].value, got[2].value, got[3].value })
    local st = s:stats()
    assert.equal(1, st.reconnects)
    assert.equal(0, st.seq_gaps)
    assert.equal(0, st.duplicates)
    assert.equal(5, st.last_seq)
    local again = s:next(0.3)
    assert.is_nil(again) -- nothing delivered twice
  end)

  it("gives up on a server that accepts the socket but never answers the upgrade", function()
    local p = io.popen(H.build .. "/blackhole 2")
    local port = p:read("l")
    local hole = assert(ayla.stream { url = "ws://127.0.0.1:" .. port .. "/stream", key = "k",
                                      connect_timeout = 0.3, backoff = { min = 0.05, max = 0.1 } })
    assert(H.wait_until(function() return hole:stats().connect_failures >= 2 end, 5))
    local state, err = hole:status()
    assert.are_not.equal("open", state)
    assert.matches("no answer to the connection from 127.0.0.1:%d+ within 0.3 s %(connect_timeout%)",
      err or hole:stats().last_error)
    hole:close()
    p:close()
  end)

  it("follows a server that restarted its numbering, and drops true replays", function()
    s = H.open_stream(sim, { backoff = { min = 0.05, max = 0.1 } })
    local function raw(seq, dsn)
      local j = ('{"seq":"%d","metadata":{"event_type":"location","dsn":"%s"}}'):format(seq, dsn)
      sim:send_raw(#j .. "|" .. j)
    end
    raw(10, "A"); raw(11, "B")
    take(s, 2)
    sim:fault("drop")
    assert(H.wait_until(function() return s:stats().connects == 2 and s:status() == "open" end))
    raw(11, "B")  -- the same event again, ignoring seq_start: a replay
    raw(1, "C")   -- a new event numbered from 1: the server restarted
    raw(2, "D")
    local got = take(s, 2)
    assert.same({ "C", "D" }, { got[1].dsn, got[2].dsn })
    local st = s:stats()
    assert.equal(1, st.duplicates)
    assert.equal(1, st.seq_resets)
    assert.equal(2, st.last_seq)
  end)

  it("detects a stalled server with the idle watchdog and reconnects", function()
    s = H.open_stream(sim, { idle_timeout = 0.5, backoff = { min = 0.05, max = 0.2 } })
    sim:emit(datapoint("D1", 1))
    take(s, 1)
    sim:fault("stall", 1.5)
    assert(H.wait_until(function() return s:stats().idle_timeouts >= 1 end, 5))
    assert.matches("idle_timeout", s:stats().last_error)
    -- Sent while the server is stalled and the client is reconnecting:
    -- it arrives once, on whichever connection, thanks to seq_start.
    sim:emit(datapoint("D1", 9))
    assert.equal(9, take(s, 1, 5)[1].value)
    assert.is_nil(s:next(0.5))
    assert.equal(2, s:stats().last_seq)
  end)

  it("treats withheld heartbeats as silence", function()
    s = H.open_stream(sim, { idle_timeout = 0.5, backoff = { min = 0.05, max = 0.2 } })
    sim:fault("withhold", 1.2)
    assert(H.wait_until(function() return s:stats().idle_timeouts >= 1 end, 5))
    assert(H.wait_until(function() return s:stats().connects >= 2 end, 5))
  end)

  it("reports a refused key once, clearly, without a reconnect storm", function()
    local key = "not-the-key-0123456789abcdef"
    s = assert(ayla.stream { url = sim:url(), key = key, backoff = { min = 0.01, max = 0.02 } })
    local ev, err = s:next(5)
    assert.is_nil(ev)
    assert.matches("401", err)
    assert.matches("create a new subscription", err)
    core.sleep(0.5) -- with a 10 ms backoff a storm would show here
    assert.equal(1, sim:stats().rejected)
    assert.equal(1, s:stats().connect_failures)
    assert.equal("refused", (s:status()))
    assert.is_nil(err:find(key, 1, true))
    -- an event loop watching s:fd() wakes up for it
    local count = H.read_file("/proc/self/fdinfo/" .. s:fd()):match("eventfd%-count:%s*(%x+)")
    assert.is_true(tonumber(count, 16) > 0)
  end)

  it("connects by host name, looking it up off the I/O thread", function()
    if not H.localhost_resolves() then return pending("no name for localhost here") end
    s = assert(ayla.stream { url = ("ws://localhost:%d/stream"):format(sim:port()), key = sim:key() })
    assert(H.wait_until(function() return s:status() == "open" end))
    sim:emit(datapoint("D1", 3))
    assert.equal(3, take(s, 1)[1].value)
  end)

  it("keeps other streams answering heartbeats while a name lookup is pending", function()
    s = H.open_stream(sim) -- dropped after 0.2-0.3 s without replies
    local lost = assert(ayla.stream { url = "ws://unresolvable-host.invalid/stream", key = "k",
                                      backoff = { min = 0.05, max = 0.1 } })
    local t0 = core.monotime()
    local third = H.open_stream(sim) -- creating and opening a stream is not held up
    assert.is_true(core.monotime() - t0 < 2)
    core.sleep(1.5)
    assert.equal(0, sim:stats().heartbeat_drops)
    assert.equal("open", (s:status()))
    local _, err = lost:status()
    assert.matches("unresolvable%-host%.invalid", err or lost:stats().last_error or "")
    lost:close()
    third:close()
  end)

  it("takes the key from the url's query, decoded", function()
    local keyed = assert(ayla.sim { key = "a+b/c=" })
    local url = keyed:url() .. "?stream_key=a%2Bb%2Fc%3D"
    local k = assert(ayla.stream { url = url })
    assert(H.wait_until(function() return k:status() == "open" end))
    k:close()
    keyed:stop()
    s = assert(ayla.stream { url = sim:url() .. "?stream_key=" .. sim:key() })
    assert(H.wait_until(function() return s:status() == "open" end))
  end)

  it("resolves a region's stream host, overridable per service", function()
    s = assert(ayla.stream { region = "us", deployment = "field", key = sim:key(),
                             hosts = { stream = sim:url() } })
    assert(H.wait_until(function() return s:status() == "open" end))
    local none, err = ayla.stream { region = "eu", deployment = "dev", key = "k" }
    assert.is_nil(none)
    assert.matches("unknown Ayla region/deployment 'eu/dev'", err)
  end)

  it("keeps memory bounded: drop-oldest keeps the newest events and counts drops", function()
    s = H.open_stream(sim, { queue_max = 5 })
    for i = 1, 20 do sim:emit(datapoint("D1", i)) end
    assert(H.wait_until(function() return s:stats().events == 20 end))
    local st = s:stats()
    assert.equal(15, st.dropped)
    assert.equal(5, st.queued)
    assert.equal(5, st.queue_peak)
    local got = take(s, 5)
    assert.same({ 16, 17, 18, 19, 20 }, { got[1].value, got[2].value, got[3].value,
                                          got[4].value, got[5].value })
  end)

  it("drop-newest keeps the oldest events instead", function()
    s = H.open_stream(sim, { queue_max = 5, drop_policy = "newest" })
    for i = 1, 20 do sim:emit(datapoint("D1", i)) end
    assert(H.wait_until(function() return s:stats().events == 20 end))
    assert.equal(15, s:stats().dropped)
    local got = take(s, 5)
    assert.same({ 1, 2, 3, 4, 5 }, { got[1].value, got[2].value, got[3].value,
                                     got[4].value, got[5].value })
  end)

  it("bounds the queue by bytes as well", function()
    s = H.open_stream(sim, { queue_max_bytes = 3000 })
    for i = 1, 20 do sim:emit(datapoint("D1", i, string.rep("z", 400))) end
    assert(H.wait_until(function() return s:stats().events == 20 end))
    local st = s:stats()
    assert.is_true(st.queued_bytes <= 3000)
    assert.equal(20, st.dropped + st.queued)
    assert.is_true(st.dropped > 0)
  end)

  it("offers an eventfd that is readable exactly while events are queued", function()
    s = H.open_stream(sim)
    local fd = s:fd()
    assert.equal("integer", math.type(fd))
    local function count()
      return tonumber(H.read_file("/proc/self/fdinfo/" .. fd):match("eventfd%-count:%s*(%x+)"), 16)
    end
    assert.equal(0, count())
    sim:emit(datapoint("D1", 1))
    sim:emit(datapoint("D1", 2))
    assert(H.wait_until(function() return s:stats().queued == 2 end))
    assert.is_true(count() > 0)
    take(s, 1)
    assert.is_true(count() > 0)
    take(s, 1)
    assert.equal(0, count())
  end)

  it("keeps queued events readable after close, then says closed", function()
    s = H.open_stream(sim)
    sim:emit(datapoint("D1", 1))
    assert(H.wait_until(function() return s:stats().queued == 1 end))
    s:close()
    s:close() -- idempotent
    assert.equal("closed", (s:status()))
    assert.equal(1, take(s, 1)[1].value)
    local ev, err = s:next(1)
    assert.is_nil(ev)
    assert.equal("closed", err)
    assert(H.wait_until(function() return sim:stats().clients == 0 end))
  end)

  it("closes with <close> and on garbage collection with the connection live", function()
    do
      local scoped <close> = H.open_stream(sim)
      sim:emit(datapoint("D1", 1))
      assert(H.wait_until(function() return scoped:stats().queued == 1 end))
    end
    assert(H.wait_until(function() return sim:stats().clients == 0 end))
    do -- no close: only the collector can end this one
      local live = H.open_stream(sim)
      assert.equal("open", (live:status()))
      -- the server side counts the client a moment after the client is open
      assert(H.wait_until(function() return sim:stats().clients == 1 end))
    end
    collectgarbage()
    collectgarbage()
    assert(H.wait_until(function() return sim:stats().clients == 0 end))
  end)

  it("runs every stream on one I/O hub whose threads end with the last stream", function()
    local pid = H.read_file("/proc/self/stat"):match("^%d+") -- this Lua process
    local function threads()
      local n = 0
      local ls = io.popen("ls /proc/" .. pid .. "/task")
      for _ in ls:lines() do n = n + 1 end
      ls:close()
      return n
    end
    collectgarbage(); collectgarbage()
    local base = threads()
    local a = H.open_stream(sim)
    assert.equal(base + 2, threads()) -- the I/O thread and its name resolver
    local b = H.open_stream(sim)
    local c = H.open_stream(sim)
    assert.equal(base + 2, threads()) -- shared, not per stream
    a:close(); b:close(); c:close()
    a, b, c = nil, nil, nil -- luacheck: ignore
    collectgarbage(); collectgarbage()
    assert.equal(base, H.wait_until(function() return threads() == base and base end))
  end)

  it("never shows the whole key in tostring, status or errors", function()
    local key = "SECRETKEY-abcdefghijklmnopqrstuvwxyz"
    local keyed = assert(ayla.sim { key = key, heartbeat_interval = 0.1 })
    s = H.open_stream(keyed)
    local texts = { tostring(s), tostring(keyed) }
    local bad = assert(ayla.stream { url = keyed:url(), key = key .. "x" })
    local _, err = bad:next(3)
    texts[#texts + 1] = err
    texts[#texts + 1] = bad:stats().last_error
    texts[#texts + 1] = tostring(bad)
    keyed:fault("drop")
    assert(H.wait_until(function() return s:stats().connects == 2 end, 5))
    texts[#texts + 1] = s:stats().last_error
    for _, t in ipairs(texts) do
      assert.is_nil(t:find("SECRETKEY-abcdefgh", 1, true), t)
    end
    assert.matches("SECR…%(36%)", tostring(s))
    bad:close()
    s:close()
    keyed:stop()
  end)

  it("raises for misuse", function()
    assert.has_error(function() ayla.stream() end, "ayla.stream expects a table of options")
    assert.has_error(function() ayla.stream { url = sim:url() } end)
    assert.has_error(function() ayla.stream { url = "http://x/stream", key = "k" } end)
    assert.has_error(function() ayla.stream { url = sim:url(), key = "k", idle_timeout = "x" } end)
    assert.has_error(function() ayla.stream { url = sim:url(), key = "k", bogus = 1 } end)
    assert.has_error(function() ayla.stream { url = sim:url(), key = "k", drop_policy = "x" } end)
    assert.has_error(function() ayla.stream { url = sim:url(), key = "k", max_message = 100 } end)
    assert.has_error(function() ayla.stream { url = sim:url(), key = "k", queue_max = 0 } end)
    assert.has_error(function() ayla.stream { url = "ws://h:70000/stream", key = "k" } end)
    assert.has_error(function() ayla.sim { bogus = true } end, "unknown option 'bogus' for ayla.sim")
    assert.has_error(function() ayla.stream { url = sim:url(), key = ("k"):rep(257) } end)
    assert.has_error(function() ayla.stream { url = sim:url(), key = "k", backoff = { min = math.huge } } end)
    assert.has_error(function() ayla.stream { url = sim:url(), key = "k", idle_timeout = 0 / 0 } end)
    s = H.open_stream(sim)
    assert.has_error(function() s:next("soon") end)
    assert.has_error(function() s.next({}) end)
  end)
end)
