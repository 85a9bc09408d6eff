-- The simulator's heartbeat round-trip histogram (sim:stats() heartbeat_rtt_*):
-- what the server sees between writing "1|Z" and reading its reply.
local ayla = require "ayla"

local PERCENTILES = { "heartbeat_rtt_ms_p50", "heartbeat_rtt_ms_p90", "heartbeat_rtt_ms_p99",
                      "heartbeat_rtt_ms_p999", "heartbeat_rtt_ms_max" }

-- The invariants of a histogram that timed some replies.
local function assert_sane(st)
  assert.is_true(st.heartbeat_rtt_count > 0)
  local prev = 0
  for _, k in ipairs(PERCENTILES) do
    assert.is_number(st[k], k)
    assert.is_true(st[k] >= prev, ("%s %s below the one before (%s)"):format(k, st[k], prev))
    prev = st[k]
  end
  assert.is_true(st.heartbeat_rtt_ms_mean > 0)
  assert.is_true(st.heartbeat_rtt_ms_mean <= st.heartbeat_rtt_ms_max)
end

describe("ayla.sim heartbeat round trips", function()
  local sim, s
  after_each(function()
    if s then s:close() end
    if sim then sim:stop() end
    s, sim = nil, nil
  end)

  it("are absent until a reply has been timed", function()
    sim = assert(ayla.sim { heartbeat_interval = 30 })
    s = H.open_stream(sim)
    local st = sim:stats()
    assert.equal(0, st.heartbeat_replies)
    for _, k in ipairs(PERCENTILES) do assert.is_nil(st[k]) end
    assert.is_nil(st.heartbeat_rtt_count)
    assert.is_nil(st.heartbeat_rtt_ms_mean)
  end)

  it("time every reply of a client that answers each heartbeat, with ordered percentiles", function()
    sim = assert(ayla.sim { heartbeat_interval = 0.01, heartbeat_misses = 5 })
    s = H.open_stream(sim)
    assert(H.wait_until(function() return sim:stats().heartbeat_replies >= 50 end, 20),
      "50 heartbeats were not answered")
    s:close() -- no reply in flight while the counters are compared
    s = nil
    local st = sim:stats()
    assert.equal(0, st.heartbeat_drops)
    assert.equal(st.heartbeat_replies, st.heartbeat_rtt_count)
    assert_sane(st)
    -- The server's round trip includes the client's own delay from reading
    -- the heartbeat to writing the reply.
    assert.is_true(st.heartbeat_rtt_ms_max > 0)
  end)

  it("time the mobile SDKs' 1|Z reply too", function()
    sim = assert(ayla.sim { heartbeat_interval = 0.02, heartbeat_misses = 5 })
    s = H.open_stream(sim, { heartbeat_reply = "1|Z" })
    assert(H.wait_until(function() return (sim:stats().heartbeat_rtt_count or 0) >= 5 end, 20))
    assert_sane(sim:stats())
  end)

  it("time nothing for a client whose replies the server does not know", function()
    sim = assert(ayla.sim { heartbeat_interval = 0.02, heartbeat_misses = 3 })
    s = assert(sim:stream { heartbeat_reply = "pong", backoff = { min = 5, max = 5 } })
    assert(H.wait_until(function() return sim:stats().heartbeat_drops >= 1 end, 20))
    local st = sim:stats()
    assert.is_true(st.heartbeats_sent >= 3)
    assert.equal(0, st.heartbeat_replies)
    assert.is_nil(st.heartbeat_rtt_count)
  end)

  it("keep counting across clients and reconnects", function()
    sim = assert(ayla.sim { heartbeat_interval = 0.02, heartbeat_misses = 5 })
    s = H.open_stream(sim, { backoff = { min = 0.05, max = 0.05 } })
    local t = H.open_stream(sim)
    assert(H.wait_until(function() return sim:stats().heartbeat_replies >= 10 end, 20))
    sim:fault("drop")
    assert(H.wait_until(function() return s:stats().connects >= 2 and s:status() == "open" end, 20))
    t:close()
    local before = sim:stats().heartbeat_replies
    assert(H.wait_until(function() return sim:stats().heartbeat_replies >= before + 10 end, 20))
    s:close()
    s = nil
    local st = sim:stats()
    -- A dropped socket may take an unanswered heartbeat with it, never a timed reply.
    assert.equal(st.heartbeat_replies, st.heartbeat_rtt_count)
    assert_sane(st)
  end)
end)
