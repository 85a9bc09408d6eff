-- ayla-rules as a program: options, the sandbox and its escapes, budgets and
-- the memory cap, hot reload, signals, recording, JSON logs.
local ayla = require "ayla"
local cjson = require "cjson"

local function rules_bin() return H.build .. "/ayla-rules" end

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

-- Runs ayla-rules to completion; returns its output and whether it exited 0.
local function run(args, env)
  local p = io.popen(("env -u AYLA_EMAIL -u AYLA_PASSWORD -u AYLA_APP_ID -u AYLA_APP_SECRET %s "
    .. "TZ=UTC %s %s 2>&1"):format(env or "", rules_bin(), args))
  local out = p:read("a")
  return out, p:close()
end

local REPLAY = "examples/replay/button_led.jsonl"

describe("ayla-rules", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(function() H.rmdir(dir) end)

  it("explains its usage and refuses bad arguments", function()
    local out, ok = run("--help")
    assert.is_true(ok)
    assert.matches("usage: ayla%-rules %[options%] RULES%.lua", out)
    out, ok = run("")
    assert.is_falsy(ok)
    assert.matches("no rule files given", out)
    out, ok = run("--bogus x.lua")
    assert.is_falsy(ok)
    assert.matches("unknown option %-%-bogus", out)
  end)

  it("gives rule files no way out of the sandbox", function()
    write(dir .. "/escape.lua", [[
      log("io=%s os.execute=%s os.exit=%s load=%s loadfile=%s dofile=%s require=%s debug=%s package=%s",
        type(io), type(os.execute), type(os.exit), type(load), type(loadfile), type(dofile),
        type(require), type(debug), type(package))
      log("string metatable=%s string.dump=%s", type(getmetatable("")), type(string.dump))
      log("set at load: %s", select(2, pcall(set, "D", "p", 1)))
      log("finalizer: %s", select(2, pcall(setmetatable, {}, { __gc = function() while true do end end })))
    ]])
    local out = run(("--replay %s %s/escape.lua"):format(REPLAY, dir))
    assert.matches("io=nil os.execute=nil os.exit=nil load=nil loadfile=nil dofile=nil require=nil "
      .. "debug=nil package=nil", out)
    assert.matches("string metatable=nil string.dump=nil", out)
    assert.matches("set at load: .*set%(%) can only be called inside a rule or a timer", out)
    assert.matches("finalizer: .*__gc metamethods are not allowed in rule files", out)
  end)

  it("cannot be fooled: pcall around a loop, looping filters, errors that loop when printed, "
    .. "timers re-arming at once, backtracking patterns", function()
    write(dir .. "/sly.lua", [[
      on("datapoint", { name = "swallow" }, function()
        for _ = 1, 50 do pcall(function() while true do end end) end
        log("survived")
      end)
      on("datapoint", { name = "pred", dsn = function() while true do end end }, function() end)
      on("datapoint", { name = "tostr" }, function()
        error(setmetatable({}, { __tostring = function() while true do end end }))
      end)
      on("datapoint", { name = "peek" }, function(ev, ctx)
        log("ctx.app=%s ev mt=%s mutate=%s", tostring(ctx.app), tostring(getmetatable(ev)),
          select(2, pcall(function() ev.dsn = "FORGED" end)))
      end)
      local function again() after(0, again) end
      on("datapoint", { name = "rearm" }, function() after(0, again) end)
      on("datapoint", { name = "pat" }, function()
        log("%s", select(2, pcall(string.find, ("a"):rep(600), ".-.-.-b")))
      end)
      on("datapoint", { name = "fine" }, function(ev) log("still here for %s", ev.dsn) end)
    ]])
    local out, ok = run(("--budget 100000 --replay %s %s/sly.lua"):format(REPLAY, dir))
    assert.is_true(ok)
    assert.matches("rule swallow failed %(1 in a row%): instruction budget exceeded", out)
    assert.is_nil(out:find("survived", 1, true))
    assert.matches("a filter of sly%.lua failed: instruction budget exceeded", out)
    assert.matches("rule tostr failed %(1 in a row%): %(a table raised as an error%)", out)
    assert.matches("ctx%.app=nil ev mt=nil mutate=%S*sly%.lua:%d+: events are read%-only", out)
    assert.matches("timers keep re%-arming themselves at the same moment", out)
    assert.matches("patterns with more than two %.%- %.%* or %.%+ are not allowed", out)
    assert.matches("fine: still here for AC000W000000002", out)
  end)

  it("stops runaway loops and memory bombs, and keeps the other rules going", function()
    write(dir .. "/bad.lua", [[
      on("datapoint", { name = "spin" }, function() while true do end end)
      on("datapoint", { name = "bomb" }, function() local s = ("x"):rep(1 << 20):rep(1 << 10) end)
      on("datapoint", { name = "fine" }, function(ev) log("still here for %s", ev.dsn) end)
    ]])
    local out, ok = run(("--memory 64 --budget 1000000 --replay %s %s/bad.lua"):format(REPLAY, dir))
    assert.is_true(ok)
    assert.matches("rule spin failed %(1 in a row%): .*instruction budget exceeded", out)
    assert.matches("rule bomb failed %(1 in a row%): .*not enough memory", out)
    assert.matches("fine: still here for AC000W000000001", out)
  end)

  it("exits 2 when a rule file does not load at start, live or replayed, and says why", function()
    write(dir .. "/fine.lua", [[on("datapoint", function() end)]])
    write(dir .. "/loops_at_load.lua", "while true do end")
    local out, ok, _, code = run(("--budget 1000000 --replay %s %s/fine.lua %s/loops_at_load.lua")
      :format(REPLAY, dir, dir))
    assert.is_falsy(ok)
    assert.equal(2, code)
    assert.matches("loops_at_load%.lua did not load: .*instruction budget exceeded", out)
    assert.is_nil(out:find("replayed %d+ events"))
    out, ok, _, code = run(("--sim --duration 5 %s/missing.lua"):format(dir))
    assert.is_falsy(ok)
    assert.equal(2, code)
    assert.matches("missing%.lua did not load: ", out)
    assert.is_nil(out:find("stream .* is open"), "it stopped before connecting")
  end)

  it("exits 2 for an unknown region or missing credentials, 3 for a refused sign-in", function()
    local out, _, _, code = run("--region eu examples/rules/button_led.lua")
    assert.equal(2, code)
    assert.matches("unknown Ayla region/deployment 'eu/dev'", out)
    out, _, _, code = run("--region us --deployment field examples/rules/button_led.lua")
    assert.equal(2, code)
    assert.matches("not set: AYLA_EMAIL, AYLA_PASSWORD, AYLA_APP_ID, AYLA_APP_SECRET", out)
    local sim = assert(ayla.sim {})
    local env = "AYLA_EMAIL=demo@ayla-sim.local AYLA_APP_ID=ayla-sim-app AYLA_APP_SECRET=ayla-sim-secret"
    out, _, _, code = run(("--cloud-url %s examples/rules/button_led.lua"):format(sim:http_url()), env)
    assert.equal(2, code)
    assert.matches("not set: AYLA_PASSWORD", out)
    out, _, _, code = run(("--cloud-url %s examples/rules/button_led.lua"):format(sim:http_url()),
      env .. " AYLA_PASSWORD=wrong-password")
    assert.equal(3, code)
    assert.matches("cannot connect: .*401", out)
    assert.is_nil(out:find("wrong%-password"), "no password in the log")
    sim:stop()
  end)

  it("refuses a bad --subscribe type and a config that sets what it cannot, with exit 2", function()
    local out, _, _, code = run("--subscribe datapoint,datapionts x.lua")
    assert.equal(2, code)
    assert.matches("unknown event type 'datapionts'", out)
    for body, says in pairs {
      ['return { ["oem-model"] = "ledevb" }'] = "sets oem%-model, which is not an option",
      ["return { memory = 64 }"] = "sets memory, which is not an option it can set %(give it on the",
      ['return { status = "x" }'] = "status must be a number",
    } do
      write(dir .. "/c.lua", body)
      out, _, _, code = run(("--config %s/c.lua x.lua"):format(dir))
      assert.equal(2, code)
      assert.matches(says, out)
    end
  end)

  it("opens the whole standard library with --trust, and only then", function()
    write(dir .. "/t.lua", [[log("io=%s require=%s", type(io), type(require))]])
    local out = run(("--trust --replay %s %s/t.lua"):format(REPLAY, dir))
    assert.matches("io=table require=function", out)
    out = run(("--replay %s %s/t.lua"):format(REPLAY, dir))
    assert.matches("io=nil require=nil", out)
  end)

  it("connects to a stream given by --url and --key, or by a --config file", function()
    local sim_out = dir .. "/sim.out"
    local sim = assert(io.popen(("sh -c 'echo $$; exec %s/ayla-sim --key k123 --behave 0.1 "
      .. "--heartbeat 1 > %s'"):format(H.build, sim_out)))
    local sim_pid = sim:read("l")
    finally(function()
      os.execute("kill " .. sim_pid)
      sim:close()
    end)
    local url = H.wait_until(function()
      local f = io.open(sim_out) -- it appears once the shell has exec'd the simulator
      local text = f and f:read("a") or ""
      if f then f:close() end
      return text:match("url (%S+)")
    end, 5)
    assert(url, "ayla-sim did not start")
    write(dir .. "/r.lua", [[on("*", { name = "any" }, function(ev) log("got %s", ev.type) end)]])
    local out, ok = run(("--url %s --key k123 --duration 2 --status 0 %s/r.lua"):format(url, dir))
    assert.is_true(ok)
    assert.matches("any: got %a+", out)
    write(dir .. "/config.lua",
      ("return { url = %q, key = %q, duration = 2, status = 0 }"):format(url, "k123"))
    out, ok = run(("--config %s/config.lua %s/r.lua"):format(dir, dir))
    assert.is_true(ok)
    assert.matches("any: got %a+", out)
    out = run(("--url %s --key wrong --duration 2 --status 0 %s/r.lua"):format(url, dir))
    assert.is_nil(out:find("any: got", 1, true))
    assert.matches("error  stream ws://127%.0%.0%.1:%d+/stream is refused: stream key refused by the "
      .. "server %(HTTP 401%)", out)
  end)

  it("prints JSON lines with --json", function()
    local out, ok = run(("--json --replay %s examples/rules/button_led.lua"):format(REPLAY))
    assert.is_true(ok)
    local levels = {}
    for line in out:gmatch("[^\n]+") do
      local t = cjson.decode(line)
      assert.is_string(t.time)
      levels[t.level] = true
    end
    assert.is_true(levels.event and levels.action and levels.status and levels.info)
  end)

  describe("running live against the built-in simulator", function()
    local pid, log

    local function start(args)
      log = dir .. "/log"
      local p = io.popen(("sh -c 'echo $$; exec %s %s > %s 2>&1' &"):format(rules_bin(), args, log))
      pid = p:read("l")
      p:close()
      assert(H.wait_until(function()
        local f = io.open(log)
        local text = f and f:read("a") or ""
        if f then f:close() end
        return text:find("simulator is serving", 1, true)
      end, 10), "ayla-rules did not start")
    end

    local function wait_log(pattern, timeout)
      return H.wait_until(function() return H.read_file(log):match(pattern) end, timeout or 10)
    end

    after_each(function()
      if pid then os.execute("kill -9 " .. pid .. " 2>/dev/null") end
      pid = nil
    end)

    it("reloads a changed file, keeps the old version when the new one is broken, "
      .. "reloads on SIGHUP and stops on SIGTERM", function()
      local rules = dir .. "/r.lua"
      write(rules, [[on("datapoint", { name = "v1" }, function() end)]])
      start("--sim --status 0 " .. rules)
      assert(wait_log("loaded r%.lua: 1 rules"))
      assert(wait_log("twin cache: %d+ values from 10 devices"))
      H.sleep(1.1) -- a different mtime
      write(rules, [[on("datapoint", { name = "v2a" }, function() end)
                     on("datapoint", { name = "v2b" }, function() end)]])
      assert(wait_log("reloaded r%.lua: 2 rules"))
      H.sleep(1.1)
      write(rules, [[on("datapoint", {}, function() end]]) -- a syntax error
      assert(wait_log("r%.lua did not load %(the previous version keeps running%)"))
      os.execute("kill -HUP " .. pid)
      assert(wait_log("reloading the rule files %(SIGHUP%)"))
      os.execute("kill -USR1 " .. pid)
      assert(wait_log("status +events %d+, rules 2 active of %d+"))
      os.execute("kill -TERM " .. pid)
      assert(wait_log("stopping %(signal%)"))
      assert(H.wait_until(function() return not H.sh("kill -0 " .. pid .. " 2>/dev/null") end, 10))
      pid = nil
    end)

    it("records the stream so that it can be replayed", function()
      local rec = dir .. "/rec.jsonl"
      write(dir .. "/r.lua", [[on("datapoint", { name = "seen" }, function(ev) log("saw %s", ev.dsn) end)]])
      start(("--sim --status 0 --record %s %s/r.lua"):format(rec, dir))
      assert(wait_log("saw %S+", 15))
      os.execute("kill -TERM " .. pid)
      assert(wait_log("stopping"))
      pid = nil
      local first = H.read_file(rec):match("^[^\n]+")
      local t = cjson.decode(first)
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT", t._received_at)
      assert.is_string(t.metadata.event_type)
      local out, ok = run(("--replay %s %s/r.lua"):format(rec, dir))
      assert.is_true(ok)
      assert.matches("saw %S+", out)
    end)
  end)
end)
