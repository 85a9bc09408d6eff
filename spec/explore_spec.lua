-- ayla.explore and ayla.help without a terminal: what they print (captured
-- through the `out` option or print) and what they return.
local ayla = require "ayla"

-- An explorer on a quiet simulator (no scripted behaviour), its lines captured.
local function quiet(sim_opts)
  local lines = {}
  local o = { behaviour_interval = 0 }
  for k, v in pairs(sim_opts or {}) do o[k] = v end
  local x = assert(ayla.explore { sim = o, out = function(line) lines[#lines + 1] = line end })
  return x, lines
end

local function clear(t) for i = #t, 1, -1 do t[i] = nil end end

-- Waits until the explorer's stream has queued n events in all.
local function queued(x, n)
  return H.wait_until(function() return x.stream:stats().events >= n end, 10)
end

local SECRETS = { "demo-password", "ayla-sim-secret" }

local function assert_no_secret(text, x)
  for _, s in ipairs(SECRETS) do assert.is_nil(text:find(s, 1, true), text) end
  assert.is_nil(text:find(x.sim:key(), 1, true), "the whole stream key is shown: " .. text)
  local token = rawget(x.cloud, "_token")
  assert.is_nil(token and text:find(token, 1, true), "the access token is shown: " .. text)
  assert.is_nil(text:find("table: 0x", 1, true), text)
end

describe("ayla.explore", function()
  it("starts the simulator and connects a signed-in cloud and an open stream", function()
    local x <close> = assert(ayla.explore { sim = { behaviour_interval = 0 }, out = function() end })
    assert.equal("open", x.stream:status())
    assert.matches("^ayla%.Cloud us/dev demo@ayla%-sim%.local %(signed in, ", tostring(x.cloud))
    assert.matches("^ayla%.Explorer: the built%-in simulator at http://127%.0%.0%.1:%d+, 10 devices, "
      .. "stream open$", tostring(x))
    assert.matches("^ayla%.Sim ", tostring(x.sim))
  end)

  it("prints the devices in aligned columns and returns the list", function()
    local x <close>, lines = quiet()
    local list = x:devices()
    assert.equal(10, #list)
    assert.equal("10 devices", tostring(list))
    assert.equal("Dev kit 3", list.AC000W000000003.product_name) -- by dsn, too
    assert.equal("DSN              MODEL   PRODUCT NAME  STATUS", lines[1])
    assert.equal("AC000W000000003  ledevb  Dev kit 3     Offline", lines[4])
    assert.equal("PL000W000000001  plug    Heater plug   Online", lines[9])
    assert.equal(11, #lines)
    local n = 0
    for _ in pairs(list) do n = n + 1 end
    assert.equal(10, n) -- still a plain list
  end)

  it("shows a device's twin with the values written through x:set", function()
    local x <close>, lines = quiet()
    local dp = assert(x:set("AC000W000000001", "decimal_in", 12.5))
    assert.equal(12.5, dp.value)
    assert(x:set("AC000W000000001", "cmd", "hello there"))
    local props = assert(x:twin("AC000W000000001"))
    assert.equal(12.5, props.decimal_in.value)
    assert.equal("hello there", props.cmd.value)
    assert.equal("10 properties of AC000W000000001", tostring(props))
    local n = 0
    for _ in pairs(props) do n = n + 1 end
    assert.equal(10, n) -- a plain list of the properties
    local header = lines[1]
    assert.matches("^PROPERTY +TYPE +DIRECTION +VALUE +FLAGS +UPDATED$", header)
    local col = header:find("VALUE", 1, true)
    local by_name = {}
    for _, l in ipairs(lines) do by_name[l:match("^(%S+)")] = l end
    -- each value starts under VALUE
    assert.equal('12.5', by_name.decimal_in:sub(col):match("^(%S+)"))
    assert.equal('"hello there"', by_name.cmd:sub(col):match('^("[^"]*")'))
    assert.matches("ack", by_name.Blue_LED:sub(col))
    assert.matches("read%-only", by_name.version)
    assert.matches("%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ$", by_name.cmd)
  end)

  it("tails the events a filter matches and returns how many it printed", function()
    local x <close>, lines = quiet()
    assert(x:set("AC000W000000001", "input", 3))
    assert(x:set("AC000W000000002", "input", 7))
    assert(x:set("AC000W000000001", "input", 9))
    assert(x:set("PL000W000000001", "power", 1, { wait_ack = 5 })) -- an echo and an ack
    assert(queued(x, 5))
    -- a table: the app:on filter language, `above` as a level
    local n = x:tail({ property = "input", above = 5 }, 0.2)
    assert.equal(2, n)
    assert.equal(2, #lines)
    assert.equal("AC000W000000002 input = 7", lines[1]:match("ledevb/(%S+ input = %d+)"))
    assert.equal("AC000W000000001 input = 9", lines[2]:match("ledevb/(%S+ input = %d+)"))
  end)

  it("takes a string as a dsn, a property, a model or an event type", function()
    local x <close>, lines = quiet()
    local total = 0
    -- Two writes (3 events: an echo, an echo and an ack), then one tail.
    local function tail(filter)
      clear(lines)
      assert(x:set("AC000W000000001", "input", 1))
      assert(x:set("PL000W000000001", "power", 1, { wait_ack = 5 }))
      total = total + 3
      assert(queued(x, total))
      local n = x:tail(filter, 0.1)
      assert.equal(#lines, n)
      local evs = {}
      for i, l in ipairs(lines) do evs[i] = l:match("^#%d+ (%S+ %S+ %S+)") end
      return n, evs
    end
    local _, evs = tail("datapointack")
    assert.same({ "datapointack plug/PL000W000000001 power" }, evs)
    _, evs = tail("AC000W000000001")
    assert.same({ "datapoint ledevb/AC000W000000001 input" }, evs)
    _, evs = tail("power")
    assert.same({ "datapoint plug/PL000W000000001 power", "datapointack plug/PL000W000000001 power" },
      evs)
    assert.equal(2, (tail("plug")))
    assert.equal(2, (tail(function(ev) return ev.value == 1 and ev.type == "datapoint" end)))
    assert.equal(2, (tail { type = "datapoint", dsn = { "AC000W000000001", "PL000W000000001" } }))
    assert.equal(1, (tail { type = { "datapointack" } }))
    assert.equal(0, (tail { property = "input", value = 2 }))
  end)

  it("prints the queued events, then the live ones until the time is up", function()
    local x <close>, lines = quiet { scenario = "examples/scenarios/seed.jsonl" }
    assert(queued(x, 5)) -- the scenario's 5 events, once the stream is open
    -- the filter sends one more event when it sees the first: a live one
    local sent = false
    local n = x:tail(function()
      if not sent then
        sent = true
        assert(x.sim:emit { metadata = { event_type = "datapoint", dsn = "LIVE", property_name = "n",
                                         base_type = "integer", oem_model = "m" },
                            datapoint = { value = 1 } })
      end
      return true
    end, 3)
    assert.equal(6, n)
    for i, l in ipairs(lines) do assert.matches("^#" .. i .. " ", l) end
    assert.matches("^#6 datapoint m/LIVE n = 1", lines[6])
    assert.equal(0, x:tail(0.1)) -- a number alone is the seconds; nothing new came
  end)

  it("shows only the last 20 queued matches, saying how many it left out", function()
    local x <close>, lines = quiet()
    for i = 1, 25 do
      assert(x.sim:emit { metadata = { event_type = "datapoint", dsn = "D1", property_name = "n",
                                       base_type = "integer", oem_model = "m" },
                          datapoint = { value = i } })
    end
    assert(queued(x, 25))
    assert.equal(20, x:tail("D1", 0.1))
    assert.equal("(5 earlier events not shown)", lines[1])
    assert.matches("^#6 datapoint m/D1 n = 6", lines[2])
    assert.matches("^#25 ", lines[21])
  end)

  it("needs a change seen during the tail for from/to; type '*' is any type", function()
    local x <close>, lines = quiet()
    assert(x:set("AC000W000000001", "input", 1))
    assert(queued(x, 1))
    -- the first value of a property is only remembered: no change seen yet
    assert.equal(0, x:tail({ property = "input", to = 1 }, 0.1))
    assert(x:set("AC000W000000001", "input", 2))
    assert(x:set("AC000W000000001", "input", 1))
    assert(queued(x, 3))
    assert.equal(1, x:tail({ property = "input", to = 1 }, 0.1)) -- 2 -> 1
    assert.matches(" input = 1 ", lines[1])
    assert(x:set("AC000W000000001", "input", 3))
    assert(x:set("PL000W000000001", "power", 1, { wait_ack = 5 }))
    assert(queued(x, 6))
    assert.equal(3, x:tail({ type = "*" }, 0.1))
    assert.equal(0, x:tail({ type = { "*" }, dsn = "NOPE" }, 0.1))
  end)

  it("keeps each value on one line and cuts long ones on a character", function()
    local x <close>, lines = quiet()
    assert(x:set("AC000W000000001", "cmd", "line one\nline two\tend"))
    assert(queued(x, 1))
    assert.equal(1, x:tail("cmd", 0.1))
    assert.equal(1, #lines)
    assert.matches([[cmd = "line one\nline two\tend"]], lines[1], 1, true)
    clear(lines)
    assert(x:set("AC000W000000001", "cmd", ("é"):rep(60)))
    assert(queued(x, 2))
    assert.equal(1, x:tail("cmd", 0.1))
    assert.truthy(utf8.len(lines[1]), lines[1])
    clear(lines)
    x:twin("AC000W000000001")
    for _, l in ipairs(lines) do
      assert.truthy(utf8.len(l), l)
      if l:find("^cmd ") then assert.matches(' "' .. ("é"):rep(37) .. '%.%.%." ', l) end
    end
  end)

  it("prints a JSON null device field as - (and null in tostring)", function()
    local dir = H.tmpdir()
    local f = assert(io.open(dir .. "/fleet.json", "w"))
    f:write([[{ "oem_id": "abcd1234", "devices": [
      { "dsn": "X1", "oem_model": "m", "product_name": null, "connection_status": "Online",
        "properties": [ { "name": "note", "base_type": "string", "direction": "input", "value": null } ] }
    ] }]])
    f:close()
    local x <close>, lines = quiet { fleet = dir .. "/fleet.json" }
    local list = assert(x:devices())
    H.rmdir(dir)
    assert.equal("X1   m      -             Online", lines[2])
    assert.equal("X1 m null Online", tostring(list[1]))
    clear(lines)
    x:twin("X1")
    assert.matches("^note +string +input +null", lines[2])
  end)

  it("shows the last 20 queued matches of several streams in time order", function()
    local sim <close> = assert(ayla.sim { behaviour_interval = 0 })
    local lines = {}
    local x <close> = assert(ayla.explore(sim:cloud_options { out = function(l) lines[#lines + 1] = l end }))
    local function at(i) return ("2026-01-01T00:00:%02dZ"):format(i) end
    for i = 1, 15 do -- datapoints at even seconds (2..30), then connectivity at odd ones
      assert(sim:emit { metadata = { event_type = "datapoint", dsn = "D1", property_name = "n",
                                     base_type = "integer", oem_model = "m" },
                        datapoint = { value = i, created_at = at(2 * i), updated_at = at(2 * i) } })
    end
    for i = 1, 15 do
      assert(sim:emit { metadata = { event_type = "connectivity", dsn = "D1", oem_model = "m" },
                        connection = { status = "Online", event_time = at(2 * i + 1) } })
    end
    assert(H.wait_until(function()
      local st = x:stats().streams
      return st[1].events >= 15 and st[3].events >= 15
    end, 10))
    assert.equal(20, x:tail("D1", 0.1))
    assert.equal("(10 earlier events not shown)", lines[1])
    local times = {}
    for i = 2, 21 do times[#times + 1] = lines[i]:match(" at (%S+)$") end
    for i = 1, 20 do assert.equal(at(i + 11), times[i], table.concat(lines, "\n")) end
  end)

  it("prints stats readably and keeps them plain tables of counters", function()
    local x <close>, lines = quiet()
    assert(x:set("AC000W000000001", "Blue_LED", 1, { wait_ack = 5 }))
    assert(queued(x, 2))
    x:tail(nil, 0.1)
    local st = x:stats()
    local text = tostring(st)
    assert.matches("ayla%.StreamStats: state=open events=2", text)
    assert.matches("events_by_type={datapoint=1 datapointack=1}", text, 1, true)
    assert.matches("ayla%.CloudStats: requests=%d+ sign_ins=1", text)
    assert.matches("ayla%.SimStats: clients=1 connections=1 ", text)
    assert_no_secret(text, x)
    assert.equal(2, st.stream.events)
    assert.equal(st.stream, st.streams[1])
    for k, v in pairs(x.stream:stats()) do -- counters only: no methods came with the printing
      assert.is_true(type(v) ~= "function", k)
    end
    for _, v in pairs(x.cloud.stats) do assert.is_number(v) end
    assert.matches("^ayla%.StreamStats%.events_by_type: datapoint=1 datapointack=1$",
      tostring(x.stream:stats().events_by_type))
    assert.equal("ayla.StreamStats.malformed: all 0", tostring(x.stream:stats().malformed))
    local counters = require("ayla.event").counters("T", { "a" }) -- floats: plain digits
    assert.equal("T: a=0 big=123456 ms=1234.5 small=0.012",
      tostring(setmetatable({ a = 0, big = 123456.0, ms = 1234.5, small = 0.012 }, counters)))
    assert.equal(#lines, 2)
  end)

  it("never shows a secret in what the prompt prints", function()
    local x <close> = quiet()
    local sub = assert(x.cloud:subscribe { oem_model = "*", dsn = "*", subscription_type = "datapoint" })
    local shown = table.concat({ tostring(x), tostring(x.cloud), tostring(x.stream), tostring(x.sim),
                                 tostring(x:stats()), tostring(sub), tostring(x.cloud.stats) }, "\n")
    assert_no_secret(shown, x)
    assert.is_nil(shown:find(sub.stream_key, 1, true))
  end)

  it("closes once, and says so; __close and the collector are safe", function()
    local x = quiet()
    local sim = x.sim
    x:close()
    x:close()
    assert.equal("ayla.Explorer (closed)", tostring(x))
    assert.equal("ayla.Sim (stopped)", tostring(sim))
    assert.equal("closed", x.stream:status())
    assert.error_matches(function() x:devices() end, "this explorer is closed")
    assert.error_matches(function() x:tail() end, "this explorer is closed")
    do
      local y <close> = quiet()
      assert.equal("open", y.stream:status())
    end
    -- dropped without a close: the collector closes the stream and stops the simulator
    local function dropped()
      local z = quiet()
      return z.stream, z.sim
    end
    local stream, zsim = dropped()
    collectgarbage()
    collectgarbage()
    assert.equal("closed", (stream:status()))
    assert.equal("ayla.Sim (stopped)", tostring(zsim))
  end)

  it("says when its simulator was stopped from outside", function()
    local x <close> = quiet()
    x.sim:stop()
    assert.equal("ayla.Explorer: the built-in simulator (simulator stopped), 10 devices, stream "
      .. x.stream:status(), tostring(x))
    local st = x:stats()
    assert.is_nil(st.sim)
    assert.is_true(st.sim_stopped)
    assert.matches("\nayla%.Sim %(simulator stopped%)$", tostring(st))
  end)

  it("returns nil and a message for outside failures", function()
    local x <close> = quiet()
    local p, err = x:twin("NOPE")
    assert.is_nil(p)
    assert.matches("HTTP 404 .*Device not found", err)
    local dp, serr = x:set("AC000W000000001", "version", "2.0")
    assert.is_nil(dp)
    assert.equal("cannot set AC000W000000001/version: it is an output property (device to cloud)", serr)
    -- the simulator as "the real cloud", with a wrong password
    local bad, berr = ayla.explore(x.sim:cloud_options { password = "wrong" })
    assert.is_nil(bad)
    assert.matches("HTTP 401 .*Invalid email or password", berr)
    assert.is_nil(berr:find("wrong", 1, true))
  end)

  it("raises on misuse", function()
    local x <close> = quiet()
    assert.error_matches(function() ayla.explore(5) end, "expects a table of options")
    assert.error_matches(function() ayla.explore { sim = 1 } end, "option 'sim' must be a table")
    assert.error_matches(function() ayla.explore { sim = {}, region = "us" } end, "not both")
    assert.error_matches(function() ayla.explore { subscribe = "datapoint" } end, "real cloud")
    assert.error_matches(function() ayla.explore { colour = "blue" } end,
      "unknown option 'colour' for ayla.cloud")
    assert.error_matches(function() x:twin(5) end, "twin%(dsn%) expects a DSN string")
    assert.error_matches(function() x:set("D", 5, 1) end, "expects two strings")
    assert.error_matches(function() x:tail(nil, -1) end, "positive number")
    assert.error_matches(function() x:tail(true) end, "tail's filter is a string")
    assert.error_matches(function() x:tail { bogus = 1 } end, "unknown filter 'bogus'")
    assert.error_matches(function() x:tail { rate = { max = 1, per = 1 } } end, "for rules")
    assert.error_matches(function() x.devices({}) end, "expected an ayla.Explorer")
    -- raised at the caller's level
    local ok, err = pcall(function() ayla.explore { sim = { bogus = 1 } } end)
    assert.is_false(ok)
    assert.matches("^.-spec/explore_spec%.lua:%d+: unknown option 'bogus' for ayla%.sim$", err)
  end)

  it("checks subscribe before any subscription, and leaves none behind on a failure", function()
    local sim <close> = assert(ayla.sim { behaviour_interval = 0 })
    local function explore(extra) return ayla.explore(sim:cloud_options(extra)) end
    local ok, err = pcall(function() explore { subscribe = "" } end)
    assert.is_false(ok)
    assert.matches("^.-spec/explore_spec%.lua:%d+: option 'subscribe' names no event type", err)
    assert.error_matches(function() explore { subscribe = "datapoint,bogus" } end,
      "option 'subscribe': unknown event type 'bogus'")
    local other = assert(ayla.cloud(sim:cloud_options()))
    assert.same({}, assert(other:subscriptions()))
    -- an error raised once the subscriptions were made: they are deleted, then it goes on
    local Cloud = getmetatable(other).__index
    local devices = Cloud.devices
    Cloud.devices = function() error("boom", 0) end
    local ok2, err2 = pcall(explore, {})
    Cloud.devices = devices
    assert.same({ false, "boom" }, { ok2, err2 })
    assert.same({}, assert(other:subscriptions()))
  end)

  it("against a cloud (here the simulator's REST), subscribes and tails those streams", function()
    local sim <close> = assert(ayla.sim { behaviour_interval = 0 })
    local lines = {}
    local x = assert(ayla.explore(sim:cloud_options { out = function(l) lines[#lines + 1] = l end }))
    assert.is_nil(x.sim)
    assert.equal(3, #x:stats().streams) -- one subscription and stream per event type
    assert.matches("^ayla%.Explorer: us/dev as demo@ayla%-sim%.local, 10 devices, stream open "
      .. "%(datapoint, datapointack, connectivity%)$", tostring(x))
    assert.equal(3, #assert(x.cloud:subscriptions()))
    assert(H.wait_until(function()
      for _, st in ipairs(x:stats().streams) do
        if st.state ~= "open" then return false end
      end
      return true
    end, 10))
    assert(x:set("PL000W000000001", "power", 1, { wait_ack = 5 }))
    assert(H.wait_until(function() return x:stats().streams[2].events >= 1 end, 10)) -- the ack
    assert.equal(2, x:tail("PL000W000000001", 0.2))
    assert.matches("stream 2: ayla%.StreamStats: state=open events=1", tostring(x:stats()))
    x:close()
    local other = assert(ayla.cloud(sim:cloud_options()))
    assert.same({}, assert(other:subscriptions())) -- the explorer's are gone
  end)
end)

describe("ayla.help", function()
  local printed
  local real_print = print
  before_each(function()
    printed = {}
    _G.print = function(...) printed[#printed + 1] = table.concat({ ... }, "\t") end
  end)
  after_each(function() _G.print = real_print end)

  it("prints an overview and returns nothing", function()
    assert.equal(0, select("#", ayla.help()))
    local text = table.concat(printed, "\n")
    assert.matches("ayla.explore()", text, 1, true)
    assert.matches('ayla.help("explore")', text, 1, true)
  end)

  it("prints each topic, with examples of its calls", function()
    for topic, call in pairs { explore = "x:tail(", stream = "s:next(", events = "ev.dsn",
                               cloud = "cloud:set(", app = "app:on(", sim = "sim:cloud_options()",
                               scheduler = "sched:spawn(", overview = "ayla.explore()",
                               Explore = "x:tail(" } do
      printed = {}
      ayla.help(topic)
      assert.matches(call, table.concat(printed, "\n"), 1, true)
    end
  end)

  it("names the calls a reader looks for", function()
    for _, topic in ipairs { "overview", "cloud", "app", "sim" } do ayla.help(topic) end
    local text = table.concat(printed, "\n")
    for _, call in ipairs { "ayla.regions", "ayla.scheduler()", "cloud:sign_out()", "app:cancel(",
                            "app:remove(", "sim:flood(", "sim:rest_fault(", "sim:expire_tokens()",
                            "sim:url()", "sim:key()", "sign_ins, refreshes, replays, retries" } do
      assert.matches(call, text, 1, true)
    end
  end)

  it("lists the topics for an unknown one, and raises for a non-string", function()
    ayla.help("nope")
    assert.equal('No help on "nope". Topics: overview, explore, stream, events, cloud, app, scheduler, '
      .. 'sim (ayla.help("stream"), ...)', printed[1])
    assert.error_matches(function() ayla.help(42) end, "expects a topic name")
  end)
end)
