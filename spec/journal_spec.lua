-- The event journal (--journal): events on disk before rules see them, a
-- restart that resumes the streams and replays what rules did not finish,
-- and no write made twice for one event, even after kill -9.
local ayla = require "ayla"
local app_mod = require "ayla.app"
local journal = require "ayla.journal"

local function dp(dsn, prop, value, id, seq)
  local ev = assert(ayla.decode(([[{"seq":"%d","metadata":{"event_type":"datapoint","dsn":"%s",
    "oem_model":"m","property_name":"%s","base_type":"integer"},
    "datapoint":{"id":"%s","value":%d,"updated_at":"2026-11-22T10:00:00Z"}}]])
    :format(seq or 0, dsn, prop, id, value)))
  ev._raw = ([[{"seq":"%d","metadata":{"event_type":"datapoint","dsn":"%s","oem_model":"m",
    "property_name":"%s","base_type":"integer"},"datapoint":{"id":"%s","value":%d,
    "updated_at":"2026-11-22T10:00:00Z"}}]]):format(seq or 0, dsn, prop, id, value):gsub("\n%s*", "")
  return ev
end

local function lines_of(path)
  local n = 0
  for _ in io.lines(path) do n = n + 1 end
  return n
end

describe("app deduplication by datapoint id", function()
  it("runs the rules once for a datapoint the server sends twice, and counts the resend", function()
    local a = app_mod.new { log = function() end }
    local seen = 0
    a:on("datapoint", { property = "p" }, function() seen = seen + 1 end)
    a:dispatch(dp("D", "p", 1, "dp-1", 1))
    a:dispatch(dp("D", "p", 1, "dp-1", 7)) -- the same datapoint, another seq (a second stream)
    a:dispatch(dp("D", "p", 2, "dp-2", 8))
    assert.equal(2, seen)
    assert.equal(1, a:stats().duplicates)
  end)

  it("does not take an ack for a duplicate of its datapoint (same id, other type)", function()
    local a = app_mod.new { log = function() end }
    local acks = 0
    a:on("datapointack", function() acks = acks + 1 end)
    a:dispatch(dp("D", "p", 1, "dp-1", 1))
    local ack = dp("D", "p", 1, "dp-1", 2)
    ack.type = "datapointack"
    a:dispatch(ack)
    assert.equal(1, acks)
    assert.equal(0, a:stats().duplicates)
  end)

  it("forgets the oldest ids past its window, so memory stays bounded", function()
    local a = app_mod.new { log = function() end, dedupe = 3 }
    local seen = 0
    a:on("datapoint", function() seen = seen + 1 end)
    for i = 1, 4 do a:dispatch(dp("D", "p", i, "dp-" .. i, i)) end
    a:dispatch(dp("D", "p", 4, "dp-4", 9)) -- still in the window: a duplicate
    assert.equal(4, seen)
    local n = 0
    for _ in pairs(a._seen.datapoint) do n = n + 1 end
    assert.equal(3, n)
  end)
end)

describe("ayla.journal", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(function() H.rmdir(dir) end)

  it("gives back, after a restart, what rules had not finished, and resumes after the last seq", function()
    local path = dir .. "/j"
    local j = assert(journal.open(path))
    for seq = 1, 3 do assert.is_true(j:received("s1", dp("D", "p", seq, "dp" .. seq, seq))) end
    j:sync()
    j:finished(dp("D", "p", 1, "dp1", 1)) -- no key: ignored
    local first = dp("D", "p", 1, "dp1", 1)
    first._journal_key = "s1@1"
    j:finished(first)
    j:close() -- as if the process stopped here
    local again = assert(journal.open(path))
    assert.equal(4, again:resume_seq("s1"))
    assert.is_nil(again:resume_seq("other"))
    local replay = again:replay(ayla.decode)
    assert.equal(2, #replay)
    assert.equal(2, replay[1].seq)
    assert.equal(3, replay[2].seq)
    assert.is_true(replay[1].replayed)
    assert.is_false(again:received("s1", dp("D", "p", 3, "dp3", 3))) -- a resend
    assert.is_true(again:received("s1", dp("D", "p", 4, "dp4", 4)))
    again:close()
  end)

  it("makes a write at most once per event and rule: a known result is returned, not redone", function()
    local path = dir .. "/j"
    local j = assert(journal.open(path))
    local ev = dp("D", "p", 1, "dp1", 5)
    assert.is_true(j:received("s", ev))
    j:sync()
    local calls = 0
    local function write() calls = calls + 1; return { id = "w" .. calls, value = 1 } end
    local res = j:action(ev, "echo", 1, "D/q=1", write)
    assert.equal("w1", res.id)
    local failed, err = j:action(ev, "echo", 2, "D/q=2", function() return nil, "HTTP 500" end)
    assert.is_nil(failed)
    assert.equal("HTTP 500", err)
    j:close()

    local again = assert(journal.open(path))
    local ev2 = again:replay(ayla.decode)[1]
    assert.equal("w1", again:action(ev2, "echo", 1, "D/q=1", write).id) -- recorded, not redone
    local r2, e2 = again:action(ev2, "echo", 2, "D/q=2", write)
    assert.is_nil(r2)
    assert.equal("HTTP 500", e2)
    assert.equal(1, calls)
    assert.equal(2, again:stats().skipped_actions)
    again:close()
  end)

  it("does not repeat a write whose outcome it cannot know, and says so", function()
    local path = dir .. "/j"
    local j = assert(journal.open(path))
    local ev = dp("D", "p", 1, "dp1", 5)
    j:received("s", ev)
    j:sync()
    -- The process dies during the write: "begin" is on disk, the result is not.
    local function dies() error("killed", 0) end
    assert.has_error(function() j:action(ev, "echo", 1, "D/q=1", dies) end, "killed")
    j:close()
    local warnings = {}
    local function log(level, msg) warnings[#warnings + 1] = level .. " " .. msg end
    local again = assert(journal.open(path, { log = log }))
    local ev2 = again:replay(ayla.decode)[1]
    local calls = 0
    local res, err = again:action(ev2, "echo", 1, "D/q=1", function() calls = calls + 1; return {} end)
    assert.is_nil(res)
    assert.matches("not repeated", err)
    assert.equal(0, calls)
    assert.matches("^warn not repeated: .*rule echo for event s@5", warnings[#warnings])
    again:close()
  end)

  it("skips a torn last line (a crash mid-write) and goes on appending cleanly", function()
    local path = dir .. "/j"
    local j = assert(journal.open(path))
    j:received("s", dp("D", "p", 1, "dp1", 1))
    j:sync()
    j:close()
    local f = assert(io.open(path, "a"))
    f:write('{"k":"ev","e":"s@2","s":"s","q":2,"raw":"{\\"se') -- no end, no newline
    f:close()
    local warnings = {}
    local again = assert(journal.open(path, { log = function(_, msg) warnings[#warnings + 1] = msg end }))
    assert.matches("1 unreadable record", warnings[1])
    assert.equal(2, again:resume_seq("s"))
    again:received("s", dp("D", "p", 2, "dp2", 2))
    again:sync()
    again:close()
    local third = assert(journal.open(path))
    assert.equal(3, third:resume_seq("s"))
    assert.equal(2, #third:replay(ayla.decode))
    third:close()
  end)

  it("compacts: finished events leave the file, the resume point and recent seqs stay", function()
    local path = dir .. "/j"
    local j = assert(journal.open(path))
    for seq = 1, 200 do
      local ev = dp("D", "p", seq, "dp" .. seq, seq)
      j:received("s", ev)
      j:finished(ev)
    end
    j:sync()
    assert.is_true(lines_of(path) >= 400)
    j:compact()
    assert.is_true(lines_of(path) <= 4, "compacted to a few records")
    assert.is_false(j:received("s", dp("D", "p", 150, "dp150", 150))) -- still known
    j:close()
    local again = assert(journal.open(path))
    assert.equal(201, again:resume_seq("s"))
    assert.equal(0, #again:replay(ayla.decode))
    again:close()
  end)

  it("lets the app replay an unfinished event through its rules with the write made once", function()
    local sim = assert(ayla.sim {})
    local cloud = assert(ayla.cloud(sim:cloud_options()))
    local DSN = "AC000W000000001"
    local path = dir .. "/j"
    local j = assert(journal.open(path))
    local a = app_mod.new { log = function() end, journal = j, cloud = cloud }
    local results = {}
    a:on("datapoint", { property = "input", name = "echo" }, function(ev, ctx)
      results[#results + 1] = assert(ctx:set(ev.dsn, "cmd", "echo"))
      ctx:sleep(3600) -- the process "dies" here, after the write
    end)
    local ev = dp(DSN, "input", 1, "dp1", 1)
    j:received("s", ev)
    j:sync()
    a:dispatch(ev)
    assert(H.wait_until(function() a:step(0.01); return results[1] end, 10))
    j:close() -- killed with the rule unfinished

    local j2 = assert(journal.open(path))
    local b = app_mod.new { log = function() end, journal = j2, cloud = cloud }
    local ran = 0
    b:on("datapoint", { property = "input", name = "echo" }, function(e, ctx)
      ran = ran + 1
      results[#results + 1] = assert(ctx:set(e.dsn, "cmd", "echo"))
    end)
    local requests = cloud.stats.requests
    for _, e in ipairs(j2:replay(ayla.decode)) do b:dispatch(e) end
    assert(H.wait_until(function() b:step(0.01); return #b.scheduler.tasks == 0 end, 10))
    assert.equal(1, ran) -- the rule ran again for the unfinished event
    assert.equal(requests, cloud.stats.requests) -- but its write was not made again
    assert.equal(results[1].id, results[2].id) -- it got the first write's result
    j2:close()
    sim:stop()
    local j3 = assert(journal.open(path))
    assert.equal(0, #j3:replay(ayla.decode)) -- finished now
    j3:close()
  end)
end)

describe("ayla.journal, the edge cases a review found", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(function() H.rmdir(dir) end)

  local function at(ev, time) ev.time = time; return ev end

  it("takes a new stream under a reused name, and a renumbered server's new events", function()
    local j = assert(journal.open(dir .. "/j"))
    assert.is_true(j:received("sub:1", dp("D", "p", 1, "a", 1)))
    assert.is_false(j:received("sub:1", dp("D", "p", 1, "a", 1))) -- a resend: same seq, same event
    assert.is_true(j:received("sub:1", dp("D", "p", 2, "b", 1))) -- same seq, another event
    j:reset_stream("sub:1") -- a new subscription that got id 1 again
    assert.is_nil(j:resume_seq("sub:1"))
    assert.is_true(j:received("sub:1", dp("D", "p", 1, "a", 1)))
    j:close()
  end)

  it("keeps keys of events without seq apart across runs", function()
    local keys = {}
    for run = 1, 2 do
      local j = assert(journal.open(dir .. "/j"))
      local ev = dp("D", "p", run, "n" .. run)
      ev.seq = nil
      assert.is_true(j:received("s", ev))
      keys[run] = ev._journal_key
      j:close()
    end
    assert.are_not.equal(keys[1], keys[2])
  end)

  it("holds no finished event in memory after opening, and one subscription list for ever", function()
    local j = assert(journal.open(dir .. "/j"))
    for seq = 1, 50 do
      local ev = dp("D", "p", seq, "e" .. seq, seq)
      j:received("s", ev)
      j:finished(ev)
    end
    j:close()
    for _ = 1, 3 do
      local again = assert(journal.open(dir .. "/j"))
      again:set_subscriptions { { id = 7, type = "datapoint", scope = "*/*" } }
      assert.is_nil(next(again.st.events))
      again:close()
    end
    local last = assert(journal.open(dir .. "/j"))
    assert.equal(1, #last:subscriptions())
    assert.equal("integer", math.type(last:subscriptions()[1].id))
    last:close()
  end)

  it("puts a write's result and a finished event in the file at once (they survive kill -9)", function()
    local path = dir .. "/j"
    local j = assert(journal.open(path))
    local ev = dp("D", "p", 1, "x", 3)
    j:received("s", ev)
    j:sync()
    j:action(ev, "r", 1, "D/q=1", function() return { id = "w1" } end)
    j:finished(ev)
    -- Not closed, not synced: what another reader (the next run) sees now.
    local text = H.read_file(path)
    assert.matches('"st":"ok"', text)
    assert.matches('"k":"done"', text)
    local perm = io.popen("stat -c %a " .. path):read("l")
    assert.equal("600", perm)
    j:close()
  end)

  it("makes a write again, and says so, when the rule now writes something else", function()
    local path = dir .. "/j"
    local warnings = {}
    local j = assert(journal.open(path))
    local ev = dp("D", "p", 1, "x", 3)
    j:received("s", ev)
    j:sync()
    j:action(ev, "r", 1, "D/q=1", function() return { id = "w1" } end)
    j:close()
    local again = assert(journal.open(path, { log = function(_, m) warnings[#warnings + 1] = m end }))
    local ev2 = again:replay(ayla.decode)[1]
    local res = again:action(ev2, "r", 1, "D/q=2", function() return { id = "w2" } end)
    assert.equal("w2", res.id)
    assert.matches("was D/q=1 in the last run and is D/q=2 now", warnings[#warnings])
    again:close()
  end)

  it("keeps one rule's writes apart from another's of the same name", function()
    local sim = assert(ayla.sim {})
    local cloud = assert(ayla.cloud(sim:cloud_options()))
    local j = assert(journal.open(dir .. "/j"))
    local a = app_mod.new { log = function() end, journal = j, cloud = cloud }
    local got = {}
    for i, v in ipairs { "A", "B" } do
      a:on("datapoint", { property = "input", name = "x" }, function(ev, ctx)
        got[i] = ctx:set(ev.dsn, "cmd", v)
      end)
    end
    local ev = dp("AC000W000000001", "input", 1, "i1", 1)
    j:received("s", ev)
    j:sync()
    a:dispatch(ev)
    assert(H.wait_until(function() a:step(0.01); return got[1] and got[2] end, 10))
    assert.are_not.equal(got[1].id, got[2].id)
    j:close()
    sim:stop()
  end)

  it("resumes edges after a restart: a backlog change fires, a replayed hold starts again", function()
    local a = app_mod.new { log = function() end }
    local to, alarms = 0, 0
    a:on("datapoint", { property = "LED", to = 1 }, function() to = to + 1 end)
    a:on("datapoint", { property = "temp", above = 30, ["for"] = 60 }, function() alarms = alarms + 1 end)
    -- REST, read at the restart, already shows what the backlog will bring.
    a.twin:update("D", "LED", 1, "2026-11-22T10:05:00Z", true)
    a.twin:update("D", "temp", 20, "2026-11-22T10:05:00Z", true)
    a:dispatch(at(dp("D", "LED", 0, "l0", 4), "2026-11-22T10:00:00Z"))
    a:dispatch(at(dp("D", "LED", 1, "l1", 5), "2026-11-22T10:05:00Z")) -- the change REST shows
    a:dispatch(at(dp("D", "LED", 1, "l2", 6), "2026-11-22T10:05:00Z")) -- no change: no firing
    assert.equal(1, to)
    local replayed = at(dp("D", "temp", 35, "t1", 3), "2026-11-22T09:59:00Z")
    replayed.replayed = true
    a:dispatch(replayed)
    assert.is_truthy(next(a.rules[2].holds), "the hold started again")
    assert.equal(20, a.twin:get("D", "temp")) -- the newer REST value stays
    a:dispatch(at(dp("D", "temp", 36, "t2", 7), "2026-11-22T10:06:00Z")) -- a real crossing from 20
    assert.is_truthy(next(a.rules[2].holds))
  end)

  it("hands a restarted app the datapoint ids it saw: a resend under a new seq is a duplicate", function()
    local j = assert(journal.open(dir .. "/j"))
    local first = dp("D", "p", 1, "dp-a", 1)
    j:received("s", first)
    j:finished(first)
    j:close()
    local again = assert(journal.open(dir .. "/j"))
    local a = app_mod.new { log = function() end, journal = again }
    for _, t in ipairs(again:seen_datapoints(a._seen_size)) do a:_seen_before(t[1], t[2]) end
    local n = 0
    a:on("datapoint", function() n = n + 1 end)
    local resent = dp("D", "p", 1, "dp-a", 9) -- the same datapoint, renumbered
    assert.is_true(again:received("s", resent))
    a:dispatch(resent)
    local ack = dp("D", "p", 1, "dp-a", 10) -- its ack is not a duplicate
    ack.type = "datapointack"
    a:dispatch(ack)
    assert.equal(0, n)
    assert.equal(1, a:stats().duplicates)
    again:close()
  end)

  it("still runs the rules for an unfinished event it replays, whose id it handed over", function()
    local j = assert(journal.open(dir .. "/j"))
    j:received("s", dp("D", "p", 1, "dp-u", 1)) -- never finished
    j:close()
    local again = assert(journal.open(dir .. "/j"))
    local a = app_mod.new { log = function() end, journal = again }
    for _, t in ipairs(again:seen_datapoints(a._seen_size)) do a:_seen_before(t[1], t[2]) end
    local n = 0
    a:on("datapoint", function() n = n + 1 end)
    for _, ev in ipairs(again:replay(ayla.decode)) do a:dispatch(ev) end
    assert.equal(1, n)
    assert.equal(0, a:stats().duplicates)
    again:close()
  end)

  it("turns deduplication off with dedupe = 0 and refuses a bad value", function()
    local a = app_mod.new { log = function() end, dedupe = 0 }
    local n = 0
    a:on("datapoint", function() n = n + 1 end)
    a:dispatch(dp("D", "p", 1, "same", 1))
    a:dispatch(dp("D", "p", 1, "same", 2))
    assert.equal(2, n)
    assert.has_error(function() app_mod.new { dedupe = -1 } end, "dedupe must be a whole number (0: off)")
  end)
end)

-- The whole runner against an ayla-sim process: kill -9 mid-stream, restart.
describe("ayla-rules --journal, killed with SIGKILL mid-stream and restarted", function()
  local dir, sim_pid, runner_pid

  local function spawn(cmd, pidfile, out)
    assert(H.sh(("sh -c 'echo $$ > %s; exec %s' >> %s 2>&1 < /dev/null &"):format(pidfile, cmd, out)))
    return H.wait_until(function()
      local f = io.open(pidfile)
      local pid = f and f:read("n")
      if f then f:close() end
      return pid
    end, 5)
  end

  local function kill(pid, sig)
    if pid then os.execute(("kill -%s %d 2>/dev/null"):format(sig, pid)) end
  end

  after_each(function()
    kill(runner_pid, "KILL")
    kill(sim_pid, "TERM")
    H.rmdir(dir)
  end)

  it("resumes, makes every write once, and misses no event", function()
    dir = H.tmpdir()
    sim_pid = spawn(H.build .. "/ayla-sim --heartbeat 1 --ack-delay 0", dir .. "/sim.pid", dir .. "/sim.out")
    local rest = H.wait_until(function()
      return H.read_file(dir .. "/sim.out"):match("ayla%-sim: rest (http://[%d.:]+)")
    end, 10)
    assert.is_string(rest, "the simulator printed its address")
    local sim_opts = { hosts = { user = rest, ads = rest, stream = rest, mstream = rest },
                       email = "demo@ayla-sim.local", password = "demo-password",
                       app_id = "ayla-sim-app", app_secret = "ayla-sim-secret" }
    local cloud = assert(ayla.cloud(sim_opts))
    local DSN = "AC000W000000001"
    -- An observer: every write the runner makes comes back as a datapoint.
    local sub = assert(cloud:subscribe { oem_model = "*", dsn = DSN, subscription_type = "datapoint" })
    local watch = assert(sub:stream())
    assert(H.wait_until(function() return watch:status() == "open" end, 10))

    local rules = dir .. "/echo.lua"
    local f = assert(io.open(rules, "w"))
    f:write([[
on("datapoint", { property = "input", name = "echo" }, function(ev)
  set(ev.dsn, "cmd", "echo " .. ev.value)
end)
]])
    f:close()
    local cmd = ("env AYLA_EMAIL=demo@ayla-sim.local AYLA_PASSWORD=demo-password "
      .. "AYLA_APP_ID=ayla-sim-app AYLA_APP_SECRET=ayla-sim-secret %s/ayla-rules --cloud-url %s "
      .. "--journal %s/journal --subscribe datapoint --dsn %s --status 0 %s")
      :format(H.build, rest, dir, DSN, rules)
    local log = dir .. "/runner.log"
    local function log_has(pattern)
      local ok, text = pcall(H.read_file, log)
      return ok and text:find(pattern) ~= nil
    end
    runner_pid = spawn(cmd, dir .. "/runner1.pid", log)
    assert.is_truthy(H.wait_until(function() return log_has("is open") end, 15), "runner 1 connected")

    local echoes = {} -- value -> { datapoint id = true }
    local function drain()
      for ev in watch:events(0) do
        if ev.property == "cmd" then
          local n = tonumber(tostring(ev.value):match("^echo (%d+)$"))
          if n then
            echoes[n] = echoes[n] or {}
            echoes[n][ev.datapoint.id] = true
          end
        end
      end
    end
    local N, KILL_AT, RESTART_AT = 120, 40, 70
    for k = 1, N do
      assert(cloud:set(DSN, "input", k))
      if k == KILL_AT then
        H.wait_until(function() drain(); return echoes[KILL_AT - 5] end, 10) -- mid-stream, busy
        kill(runner_pid, "KILL")
        os.execute("sleep 0.2")
      elseif k == RESTART_AT then -- inputs KILL_AT..RESTART_AT were sent while it was down
        runner_pid = spawn(cmd, dir .. "/runner2.pid", log)
      end
      drain()
      H.sleep(0.01)
    end
    local function not_repeated()
      local ok, text = pcall(H.read_file, log)
      return ok and select(2, text:gsub("not repeated:", "")) or 0
    end
    assert.is_truthy(H.wait_until(function()
      drain()
      local n = 0
      for k = 1, N do if echoes[k] then n = n + 1 end end
      return n + not_repeated() >= N
    end, 30), "every input was echoed after the restart")
    H.sleep(0.5) -- a late double write would show up now
    drain()
    kill(runner_pid, "TERM")

    local text = H.read_file(log)
    local missing, doubled = {}, {}
    for k = 1, N do
      local ids = 0
      for _ in pairs(echoes[k] or {}) do ids = ids + 1 end
      if ids == 0 then missing[#missing + 1] = k end
      if ids > 1 then doubled[#doubled + 1] = k end
    end
    assert.same({}, doubled, "a write made twice for one event")
    assert.is_true(#missing <= not_repeated(), "an event was missed: " .. table.concat(missing, ","))
    assert.matches("resuming subscription %d+ %(datapoint%) from seq %d+", text)
    assert.is_nil(text:find("demo%-password"), "no secret in the log")
    watch:close()
  end)
end)
