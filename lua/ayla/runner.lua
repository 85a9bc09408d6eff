-- ayla.runner: what the ayla-rules program does, in Lua: options, sandboxed
-- rule files with hot reload, the connection (built-in simulator, a stream,
-- or the cloud), replay with a virtual clock, recording, logs and status.
-- The C host (csrc/ayla_rules_main.c) adds a memory cap and signals.
local ayla = require "ayla"
local app_mod = require "ayla.app"
local cjson = require "cjson.safe"
local core = require "ayla.core"
local event = require "ayla.event"
local journal = require "ayla.journal"
local regions = require "ayla.regions"
local scheduler = require "ayla.scheduler"

local M = {}

M.USAGE = [[
usage: ayla-rules [options] RULES.lua...
Runs rule files against the Ayla cloud's event stream (or the built-in
simulator, or a recording).

  --sim                  the built-in simulator with its demo fleet (the default
                         when no --url, --region, --cloud-url or --replay is given)
  --replay FILE.jsonl    run offline over a recorded stream, on the events' own
                         clock, printing what each rule did
  --record FILE.jsonl    append every event received, as received
  --url URL --key KEY    one stream (or AYLA_STREAM_URL, AYLA_STREAM_KEY)
  --region R --deployment D
                         the cloud (credentials from AYLA_EMAIL, AYLA_PASSWORD,
                         AYLA_APP_ID, AYLA_APP_SECRET); subscriptions are made
                         for --subscribe and deleted at exit
  --cloud-url URL        the cloud's services all at one base URL (an ayla-sim,
                         a private deployment), credentials as for --region
  --journal FILE         an event journal: every event is on disk before a rule
                         sees it; a restart resumes the streams where they
                         stopped, replays what rules did not finish and never
                         repeats a write (subscriptions are then kept at exit)
  --subscribe TYPES      event types to subscribe to (default
                         datapoint,datapointack,connectivity)
  --oem-model M --dsn D  subscription scope (default * and *)
  --config FILE          a Lua file returning a table of these options
  --json                 log lines as JSON
  --status SECONDS       a status line this often (default 60, 0: never);
                         SIGUSR1 prints one at once
  --duration SECONDS     stop after this long
  --budget N             Lua instructions per callback (default 10000000)
  --trust                rule files get the whole standard library
  --memory MB            the runner's memory cap (default 256)
  -h, --help
SIGHUP reloads the rule files (they also reload when they change);
SIGINT and SIGTERM stop.
]]

-- ---- options -------------------------------------------------------------------

local FLAGS = {
  ["--sim"] = "sim", ["--json"] = "json", ["--trust"] = "trust", ["-h"] = "help", ["--help"] = "help",
}
local VALUES = {
  ["--replay"] = "replay", ["--record"] = "record", ["--url"] = "url", ["--key"] = "key",
  ["--region"] = "region", ["--deployment"] = "deployment", ["--subscribe"] = "subscribe",
  ["--oem-model"] = "oem_model", ["--dsn"] = "dsn", ["--config"] = "config", ["--status"] = "status",
  ["--duration"] = "duration", ["--budget"] = "budget", ["--memory"] = "memory",
  ["--replay-extra"] = "replay_extra", ["--journal"] = "journal", ["--cloud-url"] = "cloud_url",
}
local NUMBERS = { status = true, duration = true, budget = true, memory = true, replay_extra = true }

-- What a --config file may set: the options' names, and their types.
local CONFIG = {}
for _, name in pairs(FLAGS) do CONFIG[name] = "boolean" end
for _, name in pairs(VALUES) do CONFIG[name] = NUMBERS[name] and "number" or "string" end
CONFIG.help, CONFIG.config = nil, nil
CONFIG.memory = nil -- read by the C host from the command line only

local function read_config(o)
  local chunk, err = loadfile(o.config, "t", {})
  if not chunk then return nil, "cannot read the config: " .. err end
  local ok, t = pcall(chunk)
  if not ok or type(t) ~= "table" then return nil, "the config must return a table" end
  for k, v in pairs(t) do
    local want = CONFIG[k]
    if not want then
      return nil, ("the config sets %s, which is not an option it can set%s"):format(tostring(k),
        (k == "memory" or k == "files") and " (give it on the command line)" or "")
    end
    if type(v) ~= want then return nil, ("the config's %s must be a %s"):format(k, want) end
    if o[k] == nil then o[k] = v end
  end
  return true
end

function M.parse(argv)
  local o = { files = {} }
  local i = 1
  while i <= #argv do
    local a = argv[i]
    if FLAGS[a] then
      o[FLAGS[a]] = true
    elseif VALUES[a] then
      local v = argv[i + 1]
      if v == nil then return nil, ("%s needs a value"):format(a) end
      if NUMBERS[VALUES[a]] then
        v = tonumber(v)
        if not v then return nil, ("%s needs a number"):format(a) end
      end
      o[VALUES[a]] = v
      i = i + 1
    elseif a:sub(1, 1) == "-" then
      return nil, ("unknown option %s (see --help)"):format(a)
    else
      o.files[#o.files + 1] = a
    end
    i = i + 1
  end
  if o.config then
    local ok, err = read_config(o)
    if not ok then return nil, err end
  end
  for t in (o.subscribe or ""):gmatch("[^,%s]+") do
    if not event.BODY[t] then
      return nil, ("--subscribe: unknown event type '%s' (%s)"):format(t, event.TYPE_NAMES)
    end
  end
  o.url = o.url or os.getenv("AYLA_STREAM_URL")
  o.key = o.key or os.getenv("AYLA_STREAM_KEY")
  if not o.help and #o.files == 0 then return nil, "no rule files given (see --help)" end
  if o.budget ~= nil then
    o.budget = math.tointeger(o.budget)
    if not o.budget or o.budget < 1000 then return nil, "--budget takes a whole number of at least 1000" end
  end
  if o.journal and o.replay then return nil, "--journal is for live streams, not --replay" end
  if o.replay then
    local f, err = io.open(o.replay, "r")
    if not f then return nil, "cannot read the --replay file: " .. err end
    f:close()
  end
  if not (o.url or o.region or o.cloud_url or o.replay) then o.sim = true end
  return o
end

-- ---- logging ---------------------------------------------------------------------

local function iso(t) return os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(t)) end

function M.logger(o, clock, out)
  out = out or io.stdout
  return function(level, msg)
    local when = iso(clock.wall())
    if o.json then
      out:write(cjson.encode { time = when, level = level, msg = msg }, "\n")
    else
      out:write(("%s %-6s %s\n"):format(when, level, msg))
    end
    out:flush()
  end
end

-- ---- the sandbox -------------------------------------------------------------------

local function copy(t)
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  return c
end

-- A read-only view of a table (events are shared by every rule that sees
-- them: one rule must not change what the next one reads).
local function read_only(t, views)
  if type(t) ~= "table" then return t end
  local v = views[t]
  if v then return v end
  v = setmetatable({}, {
    __index = function(_, k) return read_only(t[k], views) end,
    __newindex = function() error("events are read-only", 2) end,
    __len = function() return #t end,
    __pairs = function()
      return function(_, k)
        local nk, nv = next(t, k)
        return nk, read_only(nv, views)
      end, nil, nil
    end,
    __tostring = function() return tostring(t) end,
    __metatable = false,
  })
  views[t] = v
  return v
end

-- Patterns whose backtracking can run for hours inside C, where no budget
-- reaches: refuse those with more than two "match anything" repetitions
-- (.- .* .+); "%d+" and the like stay allowed.
local raw_gsub = string.gsub
local function pattern_guard(fn)
  return function(subject, pattern, ...)
    if type(pattern) == "string" then
      -- raw functions: method calls on strings come back through this guard
      local _, n = raw_gsub(raw_gsub(pattern, "%%.", ""), "%.[%*%-%+]", "") -- escapes dropped first
      if n > 2 then
        error("patterns with more than two .- .* or .+ are not allowed in rule files", 2)
      end
    end
    return fn(subject, pattern, ...)
  end
end

-- What a callback's second argument is in a rule file: the actions, and no
-- way to the engine (its cloud holds credentials).
function M.ctx_proxy(ctx)
  if not ctx then return nil end
  return setmetatable({
    set = function(_, ...) return ctx:set(...) end,
    get = function(_, ...) return ctx:get(...) end,
    sleep = function(_, s) return ctx:sleep(s) end,
    twin = function(_, dsn, prop) return ctx:twin(dsn, prop) end,
    log = function(_, ...) return ctx:log(...) end,
  }, { __metatable = false, __newindex = function() error("ctx is read-only", 2) end })
end

-- What a rule file sees: the rule API and the safe parts of the standard
-- library. No io, os.execute, load, require, debug, package, coroutine, the
-- engine's own objects, or metatables the file did not set itself.
local function sandbox(runner, file)
  local app = runner.app
  local budget = runner.opts.budget or 1e7
  local own_mts = setmetatable({}, { __mode = "k" }) -- metatables this file set
  local handles = setmetatable({}, { __mode = "k" }) -- opaque handle -> timer
  local function live()
    if file.retired then error("this version of " .. file.name .. " was replaced by a reload", 3) end
  end
  -- pcall and xpcall that cannot swallow a spent budget
  local function passthrough(ok, ...)
    if not ok and (...) == scheduler.BUDGET then error(scheduler.BUDGET, 0) end
    return ok, ...
  end
  local env = {
    assert = assert, error = error, ipairs = ipairs, next = next, pairs = pairs,
    select = select, tonumber = tonumber, tostring = tostring, type = type,
    rawequal = rawequal, rawget = rawget, rawlen = rawlen, rawset = rawset,
    pcall = function(...) return passthrough(pcall(...)) end,
    xpcall = function(f, h, ...) return passthrough(xpcall(f, h, ...)) end,
    setmetatable = function(t, mt)
      -- A finalizer would run wherever the collector happens to be, outside
      -- any rule's budget: a way out of the sandbox.
      if type(mt) == "table" and rawget(mt, "__gc") ~= nil then
        error("__gc metamethods are not allowed in rule files", 2)
      end
      if type(mt) == "table" then own_mts[mt] = true end
      return setmetatable(t, mt)
    end,
    getmetatable = function(v) -- only metatables this file set itself
      local mt = getmetatable(v)
      if type(mt) == "table" and own_mts[mt] then return mt end
      return nil
    end,
    string = copy(string), table = copy(table), math = copy(math), utf8 = copy(utf8),
    os = {
      clock = os.clock, difftime = os.difftime,
      -- on the app's clock: a replay's time, not the host's
      time = function(t)
        if t then return os.time(t) end
        return math.floor(runner.clock.wall())
      end,
      date = function(f, t) return os.date(f, t or math.floor(runner.clock.wall())) end,
    },
    null = ayla.null,
  }
  env.string.dump = nil
  for _, k in ipairs { "find", "match", "gmatch", "gsub" } do env.string[k] = pattern_guard(string[k]) end
  -- s:find(p) goes through the strings' shared metatable: guard it there too
  -- (the runner's own patterns are simple and pass).
  local string_mt = getmetatable("")
  if not runner.strings_guarded then
    runner.strings_guarded = true
    string_mt.__index = env.string
  end
  -- A predicate in a filter runs during dispatch: give it the budget too.
  local function guarded(pred)
    if type(pred) ~= "function" then return pred end
    return function(v)
      local ok, r = scheduler.run_budgeted(budget, pred, v)
      if not ok then
        runner.log("error", ("a filter of %s failed: %s"):format(file.name, scheduler.describe(r)))
        return false
      end
      return r
    end
  end
  function env.on(event_type, filter, fn)
    live()
    if type(filter) == "function" and fn == nil then filter, fn = nil, filter end
    if type(fn) ~= "function" then error("on(event_type, filter, fn) expects a function", 2) end
    if filter ~= nil and type(filter) ~= "table" then error("the filter must be a table", 2) end
    -- A plain copy: a filter table's own metamethods would run outside any budget.
    local f = {}
    for k, v in next, filter or {} do
      if type(v) == "table" then
        local plain = {}
        for kk, vv in next, v do plain[kk] = vv end
        v = plain
      end
      f[k] = guarded(v)
    end
    if f.name ~= nil and type(f.name) ~= "string" then error("a rule's name must be a string", 2) end
    local rule = app:on(event_type, f, function(ev, ctx)
      return fn(read_only(ev, {}), M.ctx_proxy(ctx))
    end)
    file.rules[#file.rules + 1] = rule
    -- The same in every run while the file is unchanged (names need not be
    -- unique, and default names count every rule since the start).
    rule.journal_id = ("%s:%d"):format(file.path or file.name, #file.rules)
    return nil -- nothing of the engine leaks out
  end
  local function timer(kind)
    return function(a, fn)
      live()
      if type(fn) ~= "function" then error(kind .. " expects a function", 2) end
      local h = {}
      local t = app[kind](app, a, function(ctx)
        if kind == "after" then file.timers[h] = nil end -- fired: forget it
        return fn(M.ctx_proxy(ctx))
      end)
      handles[h] = t
      file.timers[h] = t
      return h
    end
  end
  env.every, env.after, env.at = timer("every"), timer("after"), timer("at")
  function env.cancel(h)
    local t = handles[h]
    if t then
      app:cancel(t)
      file.timers[h] = nil
    end
  end
  local function ctx(name)
    local c = app_mod.current_ctx()
    if not c then error(name .. "() can only be called inside a rule or a timer", 3) end
    return c
  end
  function env.set(...) return ctx("set"):set(...) end
  function env.get(...) return ctx("get"):get(...) end
  function env.sleep(s) return ctx("sleep"):sleep(s) end
  function env.twin(dsn, prop)
    if prop == nil then return read_only(app.twin:device(dsn), {}) end
    return (app.twin:get(dsn, prop))
  end
  function env.log(fmt, ...)
    local msg = select("#", ...) > 0 and tostring(fmt):format(...) or tostring(fmt)
    local c = app_mod.current_ctx()
    local who = c and (c.rule and c.rule.name or "timer") or file.name
    runner.log("info", ("%s: %s"):format(who, msg))
  end
  env.print = function(...)
    local parts = table.pack(...)
    for i = 1, parts.n do parts[i] = tostring(parts[i]) end
    env.log("%s", table.concat(parts, "\t"))
  end
  env._G = env
  return env
end

-- ---- loading and reloading -----------------------------------------------------------

local function teardown(app, file)
  file.retired = true -- its running callbacks can no longer register anything
  for _, r in ipairs(file.rules) do app:remove(r) end
  for _, t in pairs(file.timers) do app:cancel(t) end
end

-- Loads (or reloads) one rule file. A file that fails keeps its previous
-- version running. Returns true, or nil and why.
function M.load(runner, path)
  local name = path:match("([^/]+)$")
  local fresh = { name = name, path = path, rules = {}, timers = {} } -- timers: handle -> timer
  local env = runner.opts.trust and setmetatable({}, { __index = _G }) or sandbox(runner, fresh)
  if runner.opts.trust then
    local api = sandbox(runner, fresh)
    for _, k in ipairs { "on", "every", "after", "at", "cancel", "set", "get", "sleep", "twin", "log" } do
      env[k] = api[k]
    end
  end
  local chunk, err = loadfile(path, "t", env)
  local ok = chunk ~= nil
  if ok then
    -- The file's own top level runs under the same budget as a callback.
    local budget = runner.opts.budget or 1e7
    ok, err = scheduler.run_budgeted(budget, function()
      local done, e = xpcall(chunk, function(x) return debug.traceback(scheduler.describe(x), 2) end)
      if not done then error(e, 0) end
    end)
    if not ok then err = scheduler.describe(err) end
  end
  if not ok then
    teardown(runner.app, fresh)
    local old = runner.files[path]
    local why = ("%s did not load%s: %s"):format(name, old and " (the previous version keeps running)" or "",
      tostring(err))
    runner.log("error", why)
    return nil, why
  end
  local old = runner.files[path]
  if old then teardown(runner.app, old) end
  fresh.mtime = core.mtime(path)
  runner.files[path] = fresh
  local timers = 0
  for _ in pairs(fresh.timers) do timers = timers + 1 end
  runner.log("info", ("%s %s: %d rules, %d timers"):format(old and "reloaded" or "loaded", name,
    #fresh.rules, timers))
  return true
end

-- (Re)loads the files that changed, or all with `force`; true if every file
-- it loaded loaded.
function M.reload_changed(runner, force)
  local all_loaded = true
  for _, path in ipairs(runner.opts.files) do
    local file = runner.files[path]
    local mtime = core.mtime(path)
    if not mtime and file and file.rules and file.mtime and not file.gone then
      file.gone = true -- keeps running what it had; say so once
      runner.log("error", ("%s is gone; its rules keep running until it is back or the runner "
        .. "stops"):format(path))
    end
    if force or (mtime and (not file or mtime ~= file.mtime)) then
      if not M.load(runner, path) then all_loaded = false end
      if not runner.files[path] then -- keep trying this version only once
        runner.files[path] = { name = path, rules = {}, timers = {}, mtime = mtime }
      elseif runner.files[path].mtime ~= mtime then
        runner.files[path].mtime = mtime
      end
    end
  end
  return all_loaded
end

-- ---- status ----------------------------------------------------------------------------

function M.status(runner)
  local st = runner.app:stats()
  local active = 0
  for _, r in ipairs(runner.app.rules) do if not r.disabled then active = active + 1 end end
  local hb, hba, rc, dr = 0, 0, 0, 0
  for _, s in ipairs(runner.streams or {}) do
    local ss = s:stats()
    hb, hba, rc, dr = hb + ss.heartbeats, hba + ss.heartbeats_answered, rc + ss.reconnects, dr + ss.dropped
  end
  local j = runner.journal and runner.journal:stats()
  runner.log("status", ("events %d, rules %d active of %d, fired %d, failed %d, own writes %d, "
    .. "heartbeats %d/%d, reconnects %d, dropped %d, duplicates %d%s"):format(st.events, active,
    st.rules, st.fired, st.failures, st.own, hba, hb, rc, dr, st.duplicates,
    j and (", journal: %d replayed, %d resends skipped, %d writes not repeated")
      :format(j.replayed, j.resends, j.skipped_actions) or ""))
end

-- ---- the connection ---------------------------------------------------------------------

-- With a journal, the subscriptions an earlier run left (kept at its exit or
-- after a crash) are reused, so their streams resume with seq_start.
local function scope_of(o)
  return ("%s/%s"):format(o.oem_model or "*", o.dsn or "*")
end

-- The journal's subscriptions that still exist with the same type and
-- scope, by type; those that exist but no longer fit are deleted.
local function journaled_subscriptions(runner, cloud)
  local j, reuse = runner.journal, {}
  if not j or #j:subscriptions() == 0 then return reuse end
  local live, err = cloud:subscriptions()
  if not live then
    runner.log("warn", "cannot list the subscriptions to resume them: " .. tostring(err))
    return reuse
  end
  local by_id = {}
  for _, sub in ipairs(live) do by_id[sub.id] = sub end
  local scope = scope_of(runner.opts)
  for _, rec in ipairs(j:subscriptions()) do
    local sub = by_id[rec.id]
    if not sub then
      runner.log("warn", ("subscription %s (%s) is gone: events sent while the runner was down "
        .. "cannot be resumed"):format(tostring(rec.id), tostring(rec.type)))
    elseif rec.scope ~= scope or reuse[rec.type] then
      runner.log("info", ("subscription %d (%s, %s) does not fit this run's scope %s: deleting it")
        :format(rec.id, tostring(rec.type), tostring(rec.scope), scope))
      cloud:unsubscribe(rec.id)
    else
      reuse[rec.type] = sub
    end
  end
  return reuse
end

local function subscribe_all(runner, cloud)
  local streams, subs, ids = {}, {}, {}
  local j = runner.journal
  local reuse = journaled_subscriptions(runner, cloud)
  for t in (runner.opts.subscribe or "datapoint,datapointack,connectivity"):gmatch("[^,%s]+") do
    local sub, seq_start = reuse[t], nil
    if sub then
      seq_start = j:resume_seq("sub:" .. sub.id)
      runner.resumed = runner.resumed or seq_start ~= nil
      runner.log("info", ("resuming subscription %d (%s) from seq %s"):format(sub.id, t,
        tostring(seq_start or "its start")))
    else
      local err
      sub, err = cloud:subscribe { oem_model = runner.opts.oem_model or "*",
                                   dsn = runner.opts.dsn or "*", subscription_type = t }
      if not sub then return nil, err end
      if j then j:reset_stream("sub:" .. sub.id) end -- a reused id is a new stream
    end
    subs[#subs + 1] = sub
    local s, serr = sub:stream { raw = (runner.opts.record or j) and true or nil, seq_start = seq_start }
    if not s then return nil, serr end
    streams[#streams + 1], ids[#ids + 1] = s, "sub:" .. sub.id
  end
  runner.subscriptions, runner.stream_ids = subs, ids
  if j then
    local list = {}
    for i, sub in ipairs(subs) do
      list[i] = { id = sub.id, type = sub.subscription_type, scope = scope_of(runner.opts) }
    end
    j:set_subscriptions(list)
  end
  return streams
end

-- A name for a --url stream in the journal: not the key itself (a secret).
local function stream_id(url, key)
  local text, h = url .. "\0" .. (key or ""), 2166136261 -- FNV-1a, 32 bits
  for i = 1, #text do h = ((h ~ text:byte(i)) * 16777619) & 0xffffffff end
  return ("url:%08x"):format(h)
end

local function connect(runner)
  local o = runner.opts
  if o.sim then
    runner.sim = assert(ayla.sim { behaviour_interval = 1, seed = 1, ack_delay = 0.2,
                                   heartbeat_interval = 5 })
    runner.cloud = assert(ayla.cloud(runner.sim:cloud_options()))
    runner.log("info", ("the built-in simulator is serving %s (demo fleet, a device event every second)")
      :format(runner.sim:http_url()))
    return subscribe_all(runner, runner.cloud)
  end
  if o.region or o.cloud_url then
    local u = o.cloud_url
    local cloud, err = ayla.cloud { region = o.region, deployment = o.deployment,
                                    hosts = u and { user = u, ads = u, stream = u, mstream = u } }
    if not cloud then return nil, err end
    runner.cloud = cloud
    return subscribe_all(runner, cloud)
  end
  local id = stream_id(o.url, o.key)
  runner.resumed = runner.journal and runner.journal:resume_seq(id) ~= nil
  local s, err = ayla.stream { url = o.url, key = o.key, raw = (o.record or runner.journal) and true or nil,
                               seq_start = runner.journal and runner.journal:resume_seq(id) }
  if not s then return nil, err end
  runner.stream_ids = { id }
  return { s }
end

local function record(runner, ev)
  local raw = ev._raw
  if not raw then return end
  if not runner.record_file then
    runner.record_file = assert(io.open(runner.opts.record, "a"))
  end
  local stamped = raw:gsub("^%s*{", ('{"_received_at":"%s",'):format(iso(os.time())), 1)
  runner.record_file:write(stamped, "\n")
  runner.record_file:flush()
end

-- Dispatches one event; an error escaping the app is logged, not raised.
local function dispatch(runner, ev)
  local ok, err = pcall(runner.app.dispatch, runner.app, ev)
  if not ok then runner.log("error", "dispatching failed: " .. scheduler.describe(err)) end
end

-- ---- replay ----------------------------------------------------------------------------

-- ISO 8601 UTC ("2018-09-24T10:25:14Z") to seconds since the epoch.
function M.epoch(s)
  local y, mo, d, h, mi, se = tostring(s):match("^(%d+)-(%d+)-(%d+)T(%d+):(%d+):(%d+)")
  if not y then return nil end
  -- days from civil (Howard Hinnant's algorithm): no dependence on the local zone
  y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
  y = mo <= 2 and y - 1 or y
  local era = y // 400
  local yoe = y - era * 400
  local doy = (153 * (mo + (mo > 2 and -3 or 9)) + 2) // 5 + d - 1
  local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  local days = era * 146097 + doe - 719468
  return days * 86400 + tonumber(h) * 3600 + tonumber(mi) * 60 + tonumber(se)
end

local function event_time(ev, line_t)
  local body = ev.datapoint or ev.connection or ev.location_event or ev.registration_event or {}
  return M.epoch(line_t) or M.epoch(body.updated_at) or M.epoch(body.created_at)
    or M.epoch(body.event_time) or M.epoch(body.registered_at) or M.epoch(body.unregistered_at)
end

function M.replay(runner)
  local vt = nil
  local app = runner.app
  -- Runs timers and sleeping tasks, in time order, up to t.
  local function run_until(t)
    local spins, at = 0, nil
    while true do
      local next_at, wake = app.timers:next_at(), app.scheduler:next_wake()
      if wake and (not next_at or wake < next_at) then next_at = wake end
      if not next_at or next_at > t then break end
      vt = math.max(vt, next_at)
      spins = at == vt and spins + 1 or 0
      at = vt
      if spins > 10000 then -- timers that keep re-arming at the same instant
        runner.log("error", "timers keep re-arming themselves at the same moment: dropped")
        while app.timers:pop_due(vt) do end
        break
      end
      app:_due()
      app.scheduler:step(0)
    end
    vt = math.max(vt, t)
    app.scheduler:step(0)
  end
  math.randomseed(1) -- the same output every time
  runner.clock.now = function() return vt or 0 end
  runner.clock.wall = function() return vt or 0 end
  local n, lineno = 0, 0
  for line in io.lines(runner.opts.replay) do
    lineno = lineno + 1
    if line:match("^%s*{") then
      local t, err = cjson.decode(line)
      if type(t) ~= "table" then
        runner.log("error", ("%s:%d: not an event: %s"):format(runner.opts.replay, lineno, tostring(err)))
      else
        local received = t._received_at
        t._received_at = nil
        local ev = assert(ayla.decode(assert(cjson.encode(t))))
        local when = event_time(ev, received)
        if vt == nil and when then -- the clock starts at the first event with a time
          vt = when
          if not M.start_timers(runner) then break end -- a rule file did not load
        end
        if vt == nil then
          runner.log("error", ("%s:%d: an event with no time before any with one: skipped")
            :format(runner.opts.replay, lineno))
          goto next_line
        end
        local sig = runner.host and runner.host.take_signal and runner.host.take_signal()
        if sig == "int" then
          runner.log("info", "stopping (signal)")
          break
        elseif sig == "usr1" then
          M.status(runner)
        end
        run_until(when and math.max(when, vt) or vt)
        n = n + 1
        runner.log("event", tostring(ev))
        dispatch(runner, ev)
        app.scheduler:step(0)
      end
    end
    ::next_line::
  end
  if vt then run_until(vt + (runner.opts.replay_extra or 0)) end
  return n
end

-- Is `value` in a subscription's scope ("*", or a comma list)?
local function in_scope(scope, value)
  if not scope or scope == "*" then return true end
  for item in scope:gmatch("[^,%s]+") do
    if item == value then return true end
  end
  return false
end

-- Fills the twin cache from REST for the devices in scope, so that rules
-- read current values from the start.
function M.seed(runner)
  local o = runner.opts
  local devices, err = runner.cloud:devices()
  if not devices then
    runner.log("error", "cannot read the devices for the twin cache: " .. tostring(err))
    return
  end
  local dsns = {}
  for _, d in ipairs(devices) do
    local model_ok = in_scope(o.oem_model, d.oem_model)
    local dsn_ok = in_scope(o.dsn, d.dsn)
    if model_ok and dsn_ok then dsns[#dsns + 1] = d.dsn end
  end
  -- Resumed streams first deliver what was sent while the runner was down,
  -- older than REST's values: those events must still reach the rules.
  local n, serr = runner.app.twin:seed(runner.cloud, dsns, runner.resumed)
  if not n then
    runner.log("error", "seeding the twin cache failed: " .. tostring(serr))
  else
    runner.log("info", ("twin cache: %d values from %d devices%s"):format(n, #dsns,
      runner.resumed and " (giving way to the resumed streams' older events)" or ""))
  end
end

-- ---- main -------------------------------------------------------------------------------

-- Loads the rule files (once); false if one of them did not load.
function M.start_timers(runner)
  -- The rule files' timers start on the app's clock: load them once it runs.
  if runner.loaded then return not runner.load_failed end
  runner.loaded = true
  runner.load_failed = not M.reload_changed(runner, true)
  return not runner.load_failed
end

-- Runs fn(...); if it raises (the journal's disk full, say), the runner
-- stops with exit code 1: going on would break the journal's promises.
local function or_stop(runner, fn, ...)
  local ok, err = pcall(fn, ...)
  if not ok then
    runner.log("error", "stopping: " .. scheduler.describe(err))
    runner.exit_code = 1
  end
  return ok
end

-- What makes a cloud connection impossible before trying: an unknown
-- region or deployment, missing credentials. Returns the reason, or nil.
function M.check_cloud_settings(o)
  if not (o.region or o.cloud_url) then return nil end
  if o.region then
    local ok, err = regions.resolve(o.region, o.deployment)
    if not ok then return err end
  end
  local missing = {}
  for _, name in ipairs { "AYLA_EMAIL", "AYLA_PASSWORD", "AYLA_APP_ID", "AYLA_APP_SECRET" } do
    if (os.getenv(name) or "") == "" then missing[#missing + 1] = name end
  end
  if #missing > 0 then
    return "cannot sign in: the credentials come from AYLA_EMAIL, AYLA_PASSWORD, AYLA_APP_ID and "
      .. "AYLA_APP_SECRET; not set: " .. table.concat(missing, ", ")
  end
end

-- Exit codes: 1 for a connection or runtime failure (worth restarting), 3
-- for a refused sign-in (restarting would count toward Ayla's lockout).
local function connect_failed(runner, err)
  runner.log("error", "cannot connect: " .. tostring(err))
  return runner.cloud and runner.cloud._sign_in_refused and 3 or 1
end

-- host = { take_signal = function() return "hup" | "int" | "term" | "usr1" | nil end }
function M.main(argv, host)
  host = host or {}
  local o, err = M.parse(argv)
  if not o then
    io.stderr:write("ayla-rules: ", err, "\n")
    return 2
  end
  if o.help then
    io.stdout:write(M.USAGE)
    return 0
  end
  local clock = { now = core.monotime, wall = os.time }
  local runner = { opts = o, files = {}, clock = clock, host = host }
  runner.log = M.logger(o, clock)
  runner.app = assert(ayla.app { clock = clock, budget = o.budget, log = runner.log,
                                 dry_run = o.replay ~= nil })

  if o.replay then
    local n = M.replay(runner)
    if runner.load_failed then return 2 end
    M.status(runner)
    runner.log("info", ("replayed %d events"):format(n))
    return 0
  end

  if o.journal then
    local j, jerr = journal.open(o.journal, { log = runner.log, app_id = runner.app.id })
    if not j then
      runner.log("error", jerr)
      return 1
    end
    runner.journal, runner.app.journal = j, j
    runner.app.id = j:app_id() -- its earlier writes are still its own
    for _, t in ipairs(j:seen_datapoints(runner.app._seen_size)) do -- and resends still resends
      runner.app:_seen_before(t[1], t[2])
    end
  end
  if not M.start_timers(runner) then return 2 end
  local unusable = M.check_cloud_settings(o)
  if unusable then -- mistakes no restart can fix
    runner.log("error", "cannot connect: " .. unusable)
    return 2
  end
  local streams, cerr = connect(runner)
  if not streams then return connect_failed(runner, cerr) end
  runner.streams = streams
  runner.app.cloud = runner.cloud
  if runner.cloud then M.seed(runner) end
  runner.app.streams = {}
  if runner.journal then -- what the last run received but did not finish, first
    for _, ev in ipairs(runner.journal:replay(ayla.decode)) do
      runner.log("info", "replaying from the journal: " .. tostring(ev))
      dispatch(runner, ev)
    end
  end
  local start, last_status, last_check = core.monotime(), core.monotime(), core.monotime()
  local period = o.status or 60
  while true do
    local sig = host.take_signal and host.take_signal()
    if sig == "int" or sig == "term" then
      runner.log("info", "stopping (signal)")
      break
    elseif sig == "hup" then
      runner.log("info", "reloading the rule files (SIGHUP)")
      M.reload_changed(runner, true)
    elseif sig == "usr1" then
      M.status(runner)
    end
    for i, s in ipairs(streams) do
      local state, why = s:status()
      if state ~= (runner.states or {})[i] then -- say when a stream opens, drops or is refused
        runner.states = runner.states or {}
        runner.states[i] = state
        local bad = state == "refused" or state == "ended" or (state == "backoff" and why)
        runner.log(bad and "error" or "info", ("stream %s is %s%s"):format(s.url, state,
          why and (": " .. why) or ""))
      end
      local batch, j = {}, runner.journal
      if not or_stop(runner, function()
        for _ = 1, 1000 do
          local ev = s:next(0)
          if not ev then break end
          if o.record then record(runner, ev) end
          if not j or j:received(runner.stream_ids[i], ev) then batch[#batch + 1] = ev end
        end
        if j and #batch > 0 then j:sync() end -- on disk before any rule sees them
      end) then break end
      for _, ev in ipairs(batch) do
        runner.log("event", tostring(ev))
        dispatch(runner, ev)
      end
    end
    if runner.exit_code then break end
    runner.app:_check_drops(streams)
    -- Write results and finished events: on disk within a second.
    if runner.journal and not or_stop(runner, runner.journal.sync_if_due, runner.journal, 1) then
      break
    end
    -- Rule code runs in tasks with their own error handling; this catches
    -- what escapes them (the memory cap hit by the runner itself, say).
    local ok, step_err = pcall(runner.app.step, runner.app, 0.1)
    if not ok then
      runner.log("error", "the runner hit an error: " .. scheduler.describe(step_err))
      collectgarbage()
    end
    local now = core.monotime()
    if now - last_check >= 1 then
      last_check = now
      M.reload_changed(runner)
    end
    if period > 0 and now - last_status >= period then
      last_status = now
      M.status(runner)
    end
    if o.duration and now - start >= o.duration then break end
  end
  M.status(runner)
  for _, sub in ipairs(runner.subscriptions or {}) do
    if not o.sim and not runner.journal then runner.cloud:unsubscribe(sub) end
  end
  if runner.journal then
    runner.app.scheduler:run(5) -- let writes under way finish and be journaled
    runner.journal:close()
  end
  for _, s in ipairs(streams) do s:close() end
  if runner.record_file then runner.record_file:close() end
  if runner.sim then runner.sim:stop() end
  return runner.exit_code or 0
end

return M
