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
    assert.matches("signed in", tostring(x.cloud))
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
    local x <close>, lines = quiet { scenario = "examples/scenarios/seed.jsonl", event_interval = 0.3 }
    -- the scenario starts once the stream is open: 5 events, 0.3 s apart
    local n = x:tail(nil, 3)
    assert.equal(5, n)
    for i, l in ipairs(lines) do assert.matches("^#" .. i .. " ", l) end
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
    quiet() -- dropped without a close
    collectgarbage()
    collectgarbage()
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
                               cloud = "cloud:set(", app = "app:on(", sim = "sim:cloud_options()" } do
      printed = {}
      ayla.help(topic)
      assert.matches(call, table.concat(printed, "\n"), 1, true)
    end
  end)

  it("lists the topics for an unknown one, and raises for a non-string", function()
    ayla.help("nope")
    assert.equal('No help on "nope". Topics: explore, stream, events, cloud, app, sim '
      .. '(ayla.help("stream"), ...)', printed[1])
    assert.error_matches(function() ayla.help(42) end, "expects a topic name")
  end)
end)
