-- ayla.cloud against ayla-sim's REST services over loopback: every endpoint,
-- every token path, validation, acks, concurrency, faults, end to end.
local ayla = require "ayla"
local core = require "ayla.core"

local LED = "AC000W000000001"       -- an ledevb, Online
local OFFLINE = "AC000W000000003"   -- an ledevb, Offline: never acks

describe("server error messages", function()
  local msg = require("ayla.cloud").server_message
  it("reads every documented body shape, and odd ones without failing", function()
    assert.equal("bad", msg('{"error":"bad"}'))
    assert.equal("bad", msg('{"error":{"message":"bad"}}'))
    assert.equal("bad", msg('{"errors":"bad"}'))
    assert.equal("value is invalid", msg('{"errors":{"value":["is invalid"]}}'))
    assert.equal("value is invalid", msg('{"errors":[{"field":"value","message":"is invalid"}]}'))
    assert.equal("value null", msg('{"errors":{"value":[null]}}'))
    assert.equal("<html>Bad Gateway</html>", msg("<html>Bad Gateway</html>"))
    assert.equal("no message", msg(""))
    assert.equal(200, #msg(("x"):rep(500)))
  end)
end)

describe("ayla.cloud", function()
  local sim, cloud
  before_each(function()
    sim = assert(ayla.sim { ack_delay = 0.05 })
    cloud = assert(ayla.cloud(sim:cloud_options()))
  end)
  after_each(function() sim:stop() end)

  describe("device service", function()
    it("lists the fleet's devices", function()
      local devices = assert(cloud:devices())
      assert.equal(10, #devices)
      assert.equal(LED, devices[1].dsn)
      assert.equal("ledevb", devices[1].oem_model)
      assert.equal("Online", devices[1].connection_status)
      assert.equal("integer", math.type(devices[1].key))
      local models = {}
      for _, d in ipairs(devices) do models[d.oem_model] = true end
      assert.same({ ledevb = true, thermo = true, plug = true }, models)
      assert.equal('AC000W000000001 ledevb "Dev kit 1" Online', tostring(devices[1]))
    end)

    it("lists a device's properties with typed values", function()
      local props = assert(cloud:properties("TH000W000000001"))
      local by = {}
      for _, p in ipairs(props) do by[p.name] = p end
      assert.equal(21.5, by.temp.value)
      assert.equal(45, by.humidity.value)
      assert.equal("integer", math.type(by.humidity.value))
      assert.equal("output", by.temp.direction)
      assert.is_true(by.setpoint.ack_enabled)
      assert.equal("setpoint decimal input = 20.0 (ack)", tostring(by.setpoint))
    end)

    it("gets one property", function()
      local p = assert(cloud:get(LED, "version"))
      assert.equal("demo 1.0", p.value)
      assert.is_true(p.read_only)
    end)

    it("reaches the services by host name too", function()
      if not H.localhost_resolves() then return pending("no name for localhost here") end
      local base = ("http://localhost:%d"):format(sim:port())
      local c = assert(ayla.cloud(sim:cloud_options { hosts = { user = base, ads = base, stream = base } }))
      assert.equal(10, #assert(c:devices()))
    end)

    it("reports unknown devices and properties with the server's words", function()
      local none, err = cloud:properties("NOPE")
      assert.is_nil(none)
      assert.equal("HTTP 404 from GET /apiv1/dsns/NOPE/properties.json: Device not found", err)
      none, err = cloud:get(LED, "nope")
      assert.is_nil(none)
      assert.matches("HTTP 404 .*: Property not found", err) -- the {"error":{"message"}} shape
    end)
  end)

  describe("set", function()
    it("writes a value and returns the created datapoint", function()
      local dp = assert(cloud:set(LED, "input", 42))
      assert.equal(42, dp.value)
      assert.equal("integer", math.type(dp.value))
      assert.matches("^%x+%-", dp.id)
      assert.equal(42, assert(cloud:get(LED, "input")).value)
      assert.matches("^datapoint %S+ = 42 at ", tostring(dp))
    end)

    it("converts Lua booleans and checks every base_type before sending", function()
      assert.equal(1, assert(cloud:set(LED, "Green_LED", true)).value)
      assert.equal(0, assert(cloud:set(LED, "Green_LED", 0)).value)
      assert.equal(12.25, assert(cloud:set(LED, "decimal_in", 12.25)).value)
      assert.equal("hello", assert(cloud:set(LED, "cmd", "hello")).value)
      assert(cloud:properties(LED)) -- every property known: no look-ups below
      local before = sim:stats().rest_requests
      local cases = {
        { "Green_LED", 2, "a boolean property takes true, false, 1 or 0" },
        { "input", 1.5, "whole number" },
        { "input", 2 ^ 31, "whole number from %-2147483648 to 2147483647" },
        { "decimal_in", 1.234, "at most 2 decimal places" },
        { "decimal_in", 3e7, "from %-21474836%.47 to 21474836%.47" },
        { "cmd", ("x"):rep(1025), "at most 1024 bytes" },
        { "cmd", 5, "a string property takes a string" },
        { "Blue_button", 1, "it is an output property" },
        { "version", "x", "it is an output property" },
      }
      for _, case in ipairs(cases) do
        local dp, err = cloud:set(LED, case[1], case[2])
        assert.is_nil(dp)
        assert.matches(case[3], err)
      end
      assert.equal(before, sim:stats().rest_requests) -- refused without asking the server
    end)

    it("refuses a read-only input property", function()
      local fleet = os.tmpname()
      local f = assert(io.open(fleet, "w"))
      f:write([[{"devices":[{"dsn":"X1","oem_model":"m","properties":[
        {"name":"locked","base_type":"integer","direction":"input","read_only":true,"value":1}]}]}]])
      f:close()
      local s2 = assert(ayla.sim { fleet = fleet })
      os.remove(fleet)
      local c2 = assert(ayla.cloud(s2:cloud_options()))
      local dp, err = c2:set("X1", "locked", 2)
      assert.is_nil(dp)
      assert.equal("cannot set X1/locked: it is read-only", err)
      s2:stop()
    end)

    it("shows the server's refusal when the server checks differ", function()
      -- bypass the client's checks with a stale property cache
      assert(cloud:properties(LED))
      cloud._props[LED].Blue_button.direction = "input"
      local dp, err = cloud:set(LED, "Blue_button", 1)
      assert.is_nil(dp)
      assert.matches("^HTTP 403 from POST .*Blue_button/datapoints.json: property is not writable", err)
    end)

    it("waits for the device's ack", function()
      local dp = assert(cloud:set(LED, "Blue_LED", 1, { wait_ack = 5 }))
      assert.equal(200, dp.ack_status)
      assert.equal(0, dp.ack_message)
      assert.is_string(dp.acked_at)
      assert.matches(" ack 200$", tostring(dp))
    end)

    it("refuses to wait for an ack from a property without acks, before writing", function()
      local before = sim:stats().rest_requests
      assert(cloud:properties(LED))
      local dp, err = cloud:set(LED, "Green_LED", 1, { wait_ack = 1 })
      assert.is_nil(dp)
      assert.equal("cannot wait for an ack from AC000W000000001/Green_LED: the property is not "
        .. "ack-enabled", err)
      assert.equal(before + 2, sim:stats().rest_requests) -- sign-in and properties only
    end)

    it("says when no ack comes in time", function()
      local t0 = core.monotime()
      local dp, err = cloud:set(OFFLINE, "Blue_LED", 1, { wait_ack = 0.5 })
      assert.is_nil(dp)
      assert.matches("^no ack from AC000W000000003/Blue_LED within 0.5 s %(datapoint ", err)
      assert.is_true(core.monotime() - t0 < 3)
    end)

    it("raises for misuse", function()
      assert.has_error(function() cloud:set(1, "x", 1) end)
      assert.has_error(function() cloud:set(LED, "x", 1, { wait_ack = -1 }) end)
      assert.has_error(function() cloud:properties() end)
      assert.has_error(function() ayla.cloud { bogus = 1 } end, "unknown option 'bogus' for ayla.cloud")
    end)
  end)

  describe("tokens", function()
    it("signs in once, on first use", function()
      assert(cloud:devices())
      assert(cloud:devices())
      assert.equal(1, cloud.stats.sign_ins)
      assert.equal(0, cloud.stats.refreshes)
    end)

    it("refreshes before the token expires", function()
      local c = assert(ayla.cloud(sim:cloud_options { refresh_early = 86400 - 0.3 }))
      assert(c:devices())
      core.sleep(0.5)
      assert(c:devices())
      assert.equal(1, c.stats.sign_ins)
      assert.equal(1, c.stats.refreshes)
      assert.equal(0, c.stats.replays)
    end)

    it("on a 401 renews once and replays the request", function()
      assert(cloud:devices())
      sim:expire_tokens()
      assert(H.wait_until(function() return sim:stats().rest_requests > 0 end))
      core.sleep(0.05)
      local devices = assert(cloud:devices())
      assert.equal(10, #devices)
      assert.equal(1, cloud.stats.replays)
      assert.equal(1, cloud.stats.refreshes)
      assert.equal(1, cloud.stats.sign_ins)
    end)

    it("signs in again when the refresh is refused", function()
      local o = sim:cloud_options { access_token = "stale", refresh_token = "stale-too" }
      local c = assert(ayla.cloud(o))
      assert(c:devices())
      assert.equal(1, c.stats.replays)
      assert.equal(1, c.stats.refreshes)
      assert.equal(1, c.stats.sign_ins)
    end)

    it("treats a 200 answer without a token as a failed refresh", function()
      assert(cloud:devices())
      sim:rest_fault("refresh_200", 1)
      sim:expire_tokens()
      core.sleep(0.05)
      assert(cloud:devices())
      assert.equal(1, cloud.stats.refreshes)
      assert.equal(2, cloud.stats.sign_ins)
    end)

    it("never retries a refused sign-in by itself (the account would lock)", function()
      local c = assert(ayla.cloud(sim:cloud_options { password = "wrong" }))
      local before = sim:stats().rest_requests
      for _ = 1, 6 do
        local d, err = c:devices()
        assert.is_nil(d)
        assert.matches("Invalid email or password", err)
      end
      assert.equal(before + 1, sim:stats().rest_requests) -- one attempt, not six
      -- and the right password still works: the account is not locked
      assert(cloud:devices())
    end)

    it("asks for credentials when it has none", function()
      local c = assert(ayla.cloud { hosts = sim:cloud_options().hosts })
      local d, err = c:devices()
      assert.is_nil(d)
      assert.matches("AYLA_EMAIL", err)
    end)

    it("signs out", function()
      assert(cloud:devices())
      assert.is_true(cloud:sign_out())
      assert.matches("not signed in", tostring(cloud))
    end)

    it("never shows the password or a token", function()
      assert(cloud:devices())
      local texts = { tostring(cloud) }
      local bad = assert(ayla.cloud(sim:cloud_options { password = "hunter2-secret" }))
      texts[#texts + 1] = select(2, bad:devices())
      texts[#texts + 1] = tostring(bad)
      for _, t in ipairs(texts) do
        assert.is_nil(t:find("hunter2", 1, true), t)
        assert.is_nil(t:find(cloud._token, 1, true), t)
        assert.is_nil(t:find("demo-password", 1, true), t)
      end
    end)
  end)

  describe("faults", function()
    it("honours Retry-After on a 429", function()
      sim:rest_fault("429", 1, 1)
      local t0 = core.monotime()
      assert(cloud:devices())
      assert.is_true(core.monotime() - t0 >= 0.9)
      assert.equal(1, cloud.stats.retries)
    end)

    it("retries a read after a 5xx but never a write", function()
      assert(cloud:devices()) -- signed in
      sim:rest_fault("5xx", 2)
      assert(cloud:devices())
      assert.equal(2, cloud.stats.retries)
      assert(cloud:properties(LED))
      sim:rest_fault("5xx", 1)
      local before = sim:stats().rest_requests
      local dp, err = cloud:set(LED, "input", 7)
      assert.is_nil(dp)
      assert.matches("^HTTP 503 from POST ", err)
      assert.equal(before + 1, sim:stats().rest_requests)
    end)

    it("times out a slow answer with a clear error", function()
      local c = assert(ayla.cloud(sim:cloud_options { timeout = 0.3 }))
      assert(c:devices())
      sim:rest_fault("slow", 1, 2)
      core.sleep(0.05)
      local d, err = c:devices()
      assert.is_nil(d)
      assert.matches("GET /apiv1/devices.json failed: no complete answer within 0.3 s", err)
    end)
  end)

  describe("subscriptions", function()
    it("creates, lists and deletes them", function()
      local sub = assert(cloud:subscribe { oem_model = "ledevb", dsn = "*",
                                           subscription_type = "datapoint" })
      assert.equal("integer", math.type(sub.id))
      assert.matches("^%x+$", sub.stream_key)
      assert.equal("cloud", sub.client_type)
      assert.equal("*", sub.property_name)
      local list = assert(cloud:subscriptions())
      assert.equal(1, #list)
      assert.equal(sub.id, list[1].id)
      assert.is_true(cloud:unsubscribe(sub))
      assert.same({}, assert(cloud:subscriptions()))
      local ok, err = cloud:unsubscribe(sub.id)
      assert.is_nil(ok)
      assert.matches("HTTP 404", err)
      assert.is_nil(tostring(sub):find(sub.stream_key, 1, true))
    end)

    it("validates the fields before asking", function()
      assert.has_error(function() cloud:subscribe { dsn = "*", subscription_type = "datapoint" } end)
      assert.has_error(function() cloud:subscribe { oem_model = "*", subscription_type = "datapoint" } end)
      assert.has_error(function() cloud:subscribe { oem_model = "m", subscription_type = "nope" } end)
      assert.has_error(function()
        cloud:subscribe { oem_model = "m", subscription_type = "datapoint,location" }
      end)
      assert.has_error(function() cloud:subscribe { oem_model = "m", bogus = "x" } end)
      assert(cloud:subscribe { oem_model = "m", client_type = "mobile",
                               subscription_type = "datapoint,datapointack" })
    end)

    it("carries a write and its ack to a matching stream, and nothing else", function()
      local all = assert(cloud:subscribe { oem_model = "ledevb", dsn = LED,
                                           subscription_type = "datapoint,datapointack",
                                           client_type = "mobile" })
      local other = assert(cloud:subscribe { oem_model = "thermo", dsn = "*",
                                             subscription_type = "datapoint" })
      local s <close> = assert(all:stream())
      local o <close> = assert(other:stream())
      assert(H.wait_until(function() return s:status() == "open" and o:status() == "open" end))
      local dp = assert(cloud:set(LED, "Blue_LED", 1, { wait_ack = 5 }))
      local ev1, ev2 = assert(s:next(5)), assert(s:next(5))
      assert.equal("datapoint", ev1.type)
      assert.is_true(ev1.datapoint.echo)
      assert.equal("datapointack", ev2.type)
      assert.equal(dp.id, ev1.datapoint.id)
      assert.equal(dp.id, ev2.datapoint.id)
      assert.equal(1, ev1.seq) -- each subscription numbers its own stream
      assert.equal(2, ev2.seq)
      assert.is_nil(o:next(0.3)) -- the thermo subscription saw nothing
      assert.equal(0, o:stats().events)
    end)

    it("gives a mobile stream a fresh subscription on every reconnect", function()
      local sub = assert(cloud:subscribe { oem_model = "ledevb", dsn = LED, client_type = "mobile",
                                           subscription_type = "datapoint" })
      local s <close> = assert(sub:stream())
      assert(H.wait_until(function() return s:status() == "open" end))
      assert(cloud:set(LED, "input", 1))
      assert.equal(1, assert(s:next(5)).value)
      sim:fault("drop")
      -- next() notices the end and renews: a new subscription, the old one deleted
      assert(H.wait_until(function()
        s:next(0)
        return s:stats().renewals == 1 and s:status() == "open"
      end))
      local subs = assert(cloud:subscriptions())
      assert.equal(1, #subs)
      assert.are_not.equal(sub.id, subs[1].id)
      assert.equal("mobile", subs[1].client_type)
      assert(cloud:set(LED, "input", 2))
      local ev = assert(s:next(5))
      assert.equal(2, ev.value)
      assert.equal(1, ev.seq) -- the new subscription numbers its own stream
      local st = s:stats()
      assert.equal(2, st.connects) -- counters carry across renewals
      assert.equal(1, st.reconnects)
      assert.equal(2, st.events)
      s:close() -- the renewed subscription is the stream's own: deleted with it
      assert.same({}, assert(cloud:subscriptions()))
    end)

    it("ends a stream with reconnect = false when the connection is lost", function()
      local s <close> = assert(sim:stream { reconnect = false })
      assert(H.wait_until(function() return s:status() == "open" end))
      sim:fault("drop")
      local ev, err = s:next(5)
      assert.is_nil(ev)
      assert.matches("^ended: connection to 127.0.0.1:%d+ lost", err)
      core.sleep(0.2)
      assert.equal(1, sim:stats().connections)
    end)

    it("refuses a deleted subscription's key", function()
      local sub = assert(cloud:subscribe { oem_model = "plug", dsn = "*", subscription_type = "datapoint" })
      local s <close> = assert(sub:stream { backoff = { min = 0.05, max = 0.1 } })
      assert(H.wait_until(function() return s:status() == "open" end))
      assert(cloud:unsubscribe(sub))
      local ev, err = s:next(5)
      assert.is_nil(ev)
      assert.matches("401", err)
    end)
  end)

  describe("concurrency", function()
    it("runs many writes at once inside scheduler tasks", function()
      assert(cloud:properties(LED)) -- sign in and learn the properties first
      local sub = assert(cloud:subscribe { oem_model = "ledevb", dsn = LED,
                                           property_name = "input", subscription_type = "datapoint" })
      local s <close> = assert(sub:stream())
      assert(H.wait_until(function() return s:status() == "open" end))
      local sched = ayla.scheduler()
      local results = {}
      for i = 1, 64 do
        sched:spawn(function() results[i] = assert(cloud:set(LED, "input", i)).value end)
      end
      assert.equal(64, #sched.tasks) -- all started, all waiting on the network
      assert.is_true(sched:run(20))
      for i = 1, 64 do assert.equal(i, results[i]) end
      local seen = {}
      for _ = 1, 64 do seen[assert(s:next(5)).value] = true end
      for i = 1, 64 do assert.is_true(seen[i], i) end
    end)

    it("recovers when a task is abandoned in the middle of signing in", function()
      local c = assert(ayla.cloud(sim:cloud_options { timeout = 0.5 }))
      sim:rest_fault("slow", 1, 2)
      local sched = ayla.scheduler()
      sched:spawn(function() c:devices() end)
      assert.is_false(sched:run(0.2)) -- given up on, never resumed again
      local t0 = core.monotime()
      assert.equal(10, #assert(c:devices()))
      assert.is_true(core.monotime() - t0 < 5)
    end)

    it("reports a failing task and keeps the others going", function()
      local failures = {}
      local sched = ayla.scheduler { on_error = function(_, err) failures[#failures + 1] = err end }
      local done = false
      sched:spawn(function() error("boom") end)
      sched:spawn(function() assert(cloud:devices()); done = true end)
      assert.is_true(sched:run(10))
      assert.is_true(done)
      assert.equal(1, #failures)
      assert.matches("boom", failures[1])
    end)
  end)
end)

describe("at the prompt", function()
  it("prints device, property and subscription lists one item a line, and app stats as counters", function()
    local sim = assert(ayla.sim {})
    local cloud = assert(ayla.cloud(sim:cloud_options()))
    local devices = assert(cloud:devices())
    assert.equal(10, #devices) -- still a plain array
    local text = tostring(devices)
    assert.matches("^10 devices\n  AC000W000000001 ledevb \"Dev kit 1\" Online\n", text)
    assert.equal(11, select(2, text:gsub("[^\n]+", "")))
    assert.matches("^5 properties\n  temp decimal output = 21%.5\n",
      tostring(assert(cloud:properties("TH000W000000001"))))
    local sub = assert(cloud:subscribe { oem_model = "*", dsn = LED, subscription_type = "datapoint" })
    local subs = tostring(assert(cloud:subscriptions()))
    assert.matches("^1 subscription\n  ", subs)
    assert.is_nil(subs:find(sub.stream_key, 1, true), "the stream key is not printed whole")
    assert.equal("ayla.AppStats: events=0 fired=0 failures=0 rules=0", tostring(ayla.app {}:stats()))
    sim:stop()
  end)
end)
