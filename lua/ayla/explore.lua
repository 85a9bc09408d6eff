-- ayla.explore: a helper for the lua5.4 -i prompt. It connects a cloud and a
-- stream (to the built-in simulator unless given cloud options), then lists
-- devices, shows a device's twin, writes properties and tails events.
-- Outside failures return nil and a message; misuse raises.
local cloud_mod = require "ayla.cloud"
local core = require "ayla.core"
local event = require "ayla.event"
local null = event.null
local sim_mod = require "ayla.sim"
local trigger = require "ayla.trigger"

local M = {}

local Explorer = { __name = "ayla.Explorer" }
Explorer.__index = Explorer
M.Explorer = Explorer

local OPEN_WAIT = 10   -- seconds explore() waits for the stream to open
local BACKLOG = 20     -- queued events tail shows at most before live ones
local SLICE = 0.1      -- longest blocking wait, so that Ctrl-C is seen soon

local function check(cond, level, fmt, ...)
  if not cond then error(fmt:format(...), level + 1) end
end

-- Options of the explorer itself; every other one goes to ayla.cloud.
local OWN = { sim = "table", subscribe = "string", oem_model = "string", dsn = "string",
              out = "function" }

-- The simulator's defaults: the demo fleet, a device event every second.
local SIM_DEFAULTS = { behaviour_interval = 1, seed = 1 }

-- ---- output -------------------------------------------------------------------

local function say(self, line) self._out(line) end

local function width(s) return utf8.len(s) or #s end

-- Prints rows (lists of strings) under a header, in aligned columns.
local function columns(self, header, rows)
  local w = {}
  for _, row in ipairs { header, table.unpack(rows) } do
    for i, cell in ipairs(row) do w[i] = math.max(w[i] or 0, width(cell)) end
  end
  local function line(row)
    local parts = {}
    for i, cell in ipairs(row) do
      parts[i] = i < #row and cell .. (" "):rep(w[i] - width(cell)) or cell
    end
    return (table.concat(parts, "  "):gsub("%s+$", ""))
  end
  say(self, line(header))
  for _, row in ipairs(rows) do say(self, line(row)) end
end

-- A string with each byte that is not part of a UTF-8 character as "?" (a
-- character cut short by a truncation, or text in another encoding).
local function valid_utf8(s)
  while true do
    local n, bad = utf8.len(s)
    if n then return s end
    s = s:sub(1, bad - 1) .. "?" .. s:sub(bad + 1)
  end
end

local function shown(v)
  if type(v) == "string" then return event.quote(v, 40) end
  if v == nil or v == null then return "null" end
  return tostring(v)
end

-- A device field: "-" for a missing or JSON null one.
local function field(v)
  if v == nil or v == null then return "-" end
  return event.escape(tostring(v))
end

-- Lists handed back to the prompt: plain arrays that print as a summary
-- (the table above them says the rest) and that can be indexed by name.
local function named_list(name, key, what)
  return {
    __name = name,
    __index = function(list, k)
      if type(k) ~= "string" then return nil end
      for _, item in ipairs(list) do
        if item[key] == k then return item end
      end
    end,
    __tostring = function(list) return what(list) end,
  }
end

local Devices = named_list("ayla.Devices", "dsn", function(list)
  return ("%d device%s"):format(#list, #list == 1 and "" or "s")
end)

local dsn_of = setmetatable({}, { __mode = "k" }) -- twin lists -> their device, kept out of pairs
local Properties = named_list("ayla.Properties", "name", function(list)
  return ("%d properties of %s"):format(#list, tostring(dsn_of[list]))
end)

-- ---- construction --------------------------------------------------------------

-- Closes what was opened so far (a failed start, or close()).
local function shut(self, unsubscribe)
  for _, s in ipairs(self._streams or {}) do pcall(s.close, s) end
  if unsubscribe and self.cloud then
    for _, sub in ipairs(self._subs or {}) do pcall(self.cloud.unsubscribe, self.cloud, sub) end
  end
  if self.sim then pcall(self.sim.stop, self.sim) end
end

-- Waits until the stream is open or can never be; nil and why in that case.
local function await_open(s)
  local deadline = core.monotime() + OPEN_WAIT
  while core.monotime() < deadline do
    local state, err = s:status()
    if state == "open" then return true end
    if state == "refused" or state == "ended" or state == "closed" then
      return nil, ("the stream did not open (%s): %s"):format(state, tostring(err))
    end
    core.sleep(0.02)
  end
  return true -- still trying; tostring(x) and x:stats() say how it goes
end

-- A mistake of the caller's found during start-up: raised at its level once
-- what was opened is closed.
local Misuse = {}
local function misuse(msg) error(setmetatable({ msg = msg }, Misuse), 0) end

local function start_sim(self, sim_opts)
  local o = {}
  for k, v in pairs(SIM_DEFAULTS) do o[k] = v end
  for k, v in pairs(sim_opts or {}) do o[k] = v end
  -- ayla.sim checks its own options; a mistake there is the caller's.
  local ok, sim, err = pcall(sim_mod.new, o)
  if not ok then misuse((tostring(sim):gsub("^.-:%d+: ", ""))) end
  if not sim then return nil, "the simulator did not start: " .. tostring(err) end
  self.sim = sim
  self.cloud = assert(cloud_mod.new(sim:cloud_options()))
  local s, serr = sim:stream() -- the simulator's own key: every event
  if not s then return nil, serr end
  self.stream, self._streams = s, { s }
  return true
end

-- The event types of opts.subscribe, checked before any subscription is made.
local function sub_kinds(subscribe)
  local kinds = {}
  for kind in (subscribe or "datapoint,datapointack,connectivity"):gmatch("[^,%s]+") do
    check(event.BODY[kind], 3, "option 'subscribe': unknown event type '%s' (known: %s)", kind,
      event.TYPE_NAMES)
    kinds[#kinds + 1] = kind
  end
  check(#kinds > 0, 3, "option 'subscribe' names no event type "
    .. "(a list such as \"datapoint,datapointack,connectivity\")")
  return kinds
end

local function start_cloud(self, cloud, opts, kinds)
  self.cloud = cloud
  self._subs, self._streams = {}, {}
  for _, kind in ipairs(kinds) do
    local sub, serr = cloud:subscribe { oem_model = opts.oem_model or "*", dsn = opts.dsn or "*",
                                        subscription_type = kind, name = "ayla explore " .. kind }
    if not sub then return nil, serr end
    self._subs[#self._subs + 1] = sub
    local s, terr = sub:stream()
    if not s then return nil, terr end
    self._streams[#self._streams + 1] = s
  end
  self.stream = self._streams[1]
  return true
end

-- Everything that talks to the network: the simulator or the subscriptions,
-- the sign-in (the device list shows bad credentials at once), the stream.
local function start(self, real, cloud, own, kinds)
  local ok, err
  if real then ok, err = start_cloud(self, cloud, own, kinds) else ok, err = start_sim(self, own.sim) end
  if not ok then return nil, err end
  local list, lerr = self.cloud:devices()
  if not list then return nil, lerr end
  self._count = #list
  return await_open(self.stream)
end

-- ayla.explore([opts]): with no cloud options, the built-in simulator
-- (opts.sim: its options); otherwise ayla.cloud(opts) and a subscription
-- stream per type in opts.subscribe ("datapoint,datapointack,connectivity").
function M.new(opts)
  check(opts == nil or type(opts) == "table", 2, "ayla.explore expects a table of options or nothing")
  opts = opts or {}
  local own, cloud_opts, real = {}, {}, false
  for k, v in pairs(opts) do
    if OWN[k] then
      check(type(v) == OWN[k], 2, "option '%s' must be a %s", k, OWN[k])
      own[k] = v
    else
      cloud_opts[k], real = v, true
    end
  end
  check(not (real and own.sim), 2, "give either sim = {...} or cloud options, not both")
  check(real or not (own.subscribe or own.oem_model or own.dsn), 2,
    "subscribe, oem_model and dsn are for the real cloud; the simulator's stream has every event")
  local cloud, kinds
  if real then
    kinds = sub_kinds(own.subscribe)
    -- ayla.cloud checks its own options; a mistake there is the caller's.
    local ok, c, cerr = pcall(cloud_mod.new, cloud_opts)
    if not ok then error((tostring(c):gsub("^.-:%d+: ", "")), 2) end
    if not c then return nil, cerr end
    cloud = c
  end
  local self = setmetatable({ _out = own.out or print, _closed = false, _subs = {} }, Explorer)
  -- Whatever happens, nothing opened so far is left behind.
  local done, ok, err = pcall(start, self, real, cloud, own, kinds)
  if not (done and ok) then
    shut(self, true)
    self._closed = true
    if not done then
      if getmetatable(ok) == Misuse then error(ok.msg, 2) end
      error(ok, 0)
    end
    return nil, err
  end
  return self
end

-- ---- methods -------------------------------------------------------------------

local function check_open(self)
  check(getmetatable(self) == Explorer, 3, "expected an ayla.Explorer (use x:method())")
  check(not self._closed, 3, "this explorer is closed; start another with ayla.explore()")
end

-- x:devices(): prints the devices in a table and returns the list.
function Explorer:devices()
  check_open(self)
  local list, err = self.cloud:devices()
  if not list then return nil, err end
  local rows = {}
  for i, d in ipairs(list) do
    rows[i] = { field(d.dsn), field(d.oem_model), field(d.product_name), field(d.connection_status) }
  end
  columns(self, { "DSN", "MODEL", "PRODUCT NAME", "STATUS" }, rows)
  self._count = #list
  return setmetatable(list, Devices)
end

-- x:twin(dsn): prints the device's properties and their values (from REST).
function Explorer:twin(dsn)
  check_open(self)
  check(type(dsn) == "string", 2, "twin(dsn) expects a DSN string")
  local props, err = self.cloud:properties(dsn)
  if not props then return nil, err end
  local rows = {}
  for i, p in ipairs(props) do
    local flags = {}
    if p.read_only then flags[#flags + 1] = "read-only" end
    if p.ack_enabled then flags[#flags + 1] = "ack" end
    local at = p.data_updated_at
    rows[i] = { field(p.name), field(p.base_type), field(p.direction), shown(p.value),
                table.concat(flags, ","), type(at) == "string" and at or "" }
  end
  columns(self, { "PROPERTY", "TYPE", "DIRECTION", "VALUE", "FLAGS", "UPDATED" }, rows)
  dsn_of[props] = dsn
  return setmetatable(props, Properties)
end

-- x:set(dsn, name, value [, opts]): cloud:set, as it returns.
function Explorer:set(dsn, name, value, opts)
  check_open(self)
  check(type(dsn) == "string" and type(name) == "string", 2,
    "set(dsn, name, value) expects two strings first")
  return self.cloud:set(dsn, name, value, opts)
end

-- The error a Ctrl-C in a tail ends the line with: it prints as
-- "interrupted!" (the prompt shows no traceback for it).
M.interrupted = setmetatable({}, { __name = "ayla.Interrupted",
                                   __tostring = function() return "interrupted!" end })

local function time_of(ev) return type(ev.time) == "string" and ev.time or nil end

-- The queues of the streams as one list in time order (stable: an event
-- without a time, or with the same time, keeps its place).
local function merged(queues)
  local out, pos = {}, {}
  for i = 1, #queues do pos[i] = 1 end
  while true do
    local best, best_t
    for i, q in ipairs(queues) do
      local ev = q[pos[i]]
      if ev then
        local t = time_of(ev)
        if t == nil then best = i break end
        if best == nil or t < best_t then best, best_t = i, t end
      end
    end
    if not best then return out end
    out[#out + 1] = queues[best][pos[best]]
    pos[best] = pos[best] + 1
  end
end

local TAIL_ONLY_RULES = { ["for"] = true, rate = true, debounce = true, own = true }
local STATEFUL = trigger.STATEFUL

-- The test tail applies to each event. A string names a dsn, a property, an
-- oem_model or an event type; a table is an app:on filter (plus `type`); a
-- function is called with the event.
local function event_filter(filter)
  if filter == nil then return function() return true end end
  if type(filter) == "function" then return filter end
  if type(filter) == "string" then
    return function(ev)
      return ev.dsn == filter or ev.property == filter or ev.oem_model == filter
        or ev.type == filter
    end
  end
  check(type(filter) == "table", 3,
    "tail's filter is a string (dsn, property, model or event type), a table or a function")
  local f, types = {}, nil
  for k, v in pairs(filter) do
    check(not TAIL_ONLY_RULES[k], 3, "filter '%s' is for rules (app:on), not for tail", tostring(k))
    if k == "type" then types = v elseif k ~= "name" then f[k] = v end
  end
  check(types == nil or type(types) == "string" or type(types) == "table", 3,
    "filter 'type' must be an event type or a list of them")
  local edge = f.from ~= nil or f.to ~= nil or f.above ~= nil or f.below ~= nil
  local kind = type(types) == "string" and types ~= "*" and types or (edge and "datapoint") or "*"
  local ok, t = pcall(trigger.compile, kind, f)
  if not ok then error((tostring(t):gsub("^.-:%d+: ", "")), 3) end
  local want = nil -- nil: any type ("*", as in app:on)
  if types then
    want = {}
    for _, ty in ipairs(type(types) == "table" and types or { types }) do
      if ty == "*" then want = nil break end
      want[ty] = true
    end
  end
  local conditional = edge or f.value ~= nil or f.status ~= nil or f.online ~= nil
  local changes = f.from ~= nil or f.to ~= nil
  local last = {} -- for from/to: the state each dsn/property had in this tail
  return function(ev)
    if want and not want[ev.type] then return false end
    if not t.static(ev) then return false end
    if not conditional then return true end
    if not STATEFUL[ev.type] then return false end
    local state = trigger.state_of(ev)
    local key = (ev.dsn or "?") .. "/" .. (ev.type == "connectivity" and "$status" or ev.property or "?")
    local prev, known = last[key], last[key] ~= nil
    last[key] = state
    -- a change seen during the tail: the first value of each is only remembered
    if changes then return known and t.edge(state, prev, known) end
    return t.holds(state) -- above/below as a level: every value in range shows
  end
end

-- x:tail([filter], [seconds]): prints matching events for `seconds` (10),
-- the recent queued ones first; returns how many it printed. Ctrl-C stops it.
function Explorer:tail(filter, seconds)
  check_open(self)
  if type(filter) == "number" and seconds == nil then filter, seconds = nil, filter end
  seconds = seconds or 10
  check(type(seconds) == "number" and seconds > 0, 2, "tail's seconds must be a positive number")
  local match = event_filter(filter)
  local count, streams = 0, self._streams
  local function show(ev)
    -- one line, whatever the values hold (%q leaves a newline as \ and a newline)
    say(self, valid_utf8(tostring(ev)))
    count = count + 1
  end
  local function run()
    -- What came while the prompt sat idle: the last BACKLOG matches only,
    -- in time order over the streams.
    local queues, total = {}, 0
    for i, s in ipairs(streams) do
      local q = {}
      for ev in function() return (s:next(0)) end do
        if match(ev) then
          total = total + 1
          q[#q + 1] = ev
          if #q > BACKLOG then table.remove(q, 1) end -- the last ones of all are among these
        end
      end
      queues[i] = q
    end
    local backlog = merged(queues)
    while #backlog > BACKLOG do table.remove(backlog, 1) end
    if total > #backlog then
      say(self, ("(%d earlier events not shown)"):format(total - #backlog))
    end
    for _, ev in ipairs(backlog) do show(ev) end
    local deadline = core.monotime() + seconds
    while true do
      local got = false
      for _, s in ipairs(streams) do
        local ev, err = s:next(0)
        if ev then
          got = true
          if match(ev) then show(ev) end
        elseif err ~= "timeout" then
          say(self, ("(the stream stopped: %s)"):format(err))
          return
        end
      end
      local left = deadline - core.monotime()
      if left <= 0 then return end
      if not got then
        if #streams == 1 then
          local ev = streams[1]:next(math.min(left, SLICE))
          if ev and match(ev) then show(ev) end
        else
          core.sleep(math.min(left, SLICE))
        end
      end
    end
  end
  -- The stock interpreter turns Ctrl-C into an "interrupted!" error at the
  -- next Lua instruction, and until the line ends a second Ctrl-C kills it
  -- (its handler is reset): say so, and end the whole line with the
  -- interrupt, so that a loop of tails does not go on.
  local ok, err = pcall(run)
  if not ok then
    if err == M.interrupted or type(err) == "string" and err:find("interrupted!", 1, true) then
      say(self, "(tail stopped)")
      error(M.interrupted, 0)
    end
    error(err, 0)
  end
  return count
end

local function sim_stopped(self) return self.sim and rawget(self.sim, "_stopped") end

local Stats = { __name = "ayla.ExplorerStats" }
function Stats.__tostring(st)
  local lines = {}
  for i, s in ipairs(st.streams) do
    local label = #st.streams > 1 and ("stream %d: "):format(i) or ""
    lines[#lines + 1] = label .. tostring(s)
  end
  lines[#lines + 1] = tostring(st.cloud)
  if st.sim then lines[#lines + 1] = tostring(st.sim) end
  if st.sim_stopped then lines[#lines + 1] = "ayla.Sim (simulator stopped)" end
  return table.concat(lines, "\n")
end

-- x:stats() -> { stream =, streams = {...}, cloud =, sim = } (sim: simulator only)
function Explorer:stats()
  check_open(self)
  local list = {}
  for i, s in ipairs(self._streams) do list[i] = s:stats() end
  local cloud = setmetatable({}, getmetatable(self.cloud.stats))
  for k, v in pairs(self.cloud.stats) do cloud[k] = v end -- a snapshot, like the others
  local sim, stopped = nil, nil
  if self.sim then -- stopped from outside (x.sim:stop()): no counters, and it says so
    if sim_stopped(self) then stopped = true else sim = self.sim:stats() end
  end
  return setmetatable({ stream = list[1], streams = list, cloud = cloud, sim = sim,
                        sim_stopped = stopped }, Stats)
end

-- x:close(): the streams, the subscriptions explore() made, the simulator.
function Explorer:close()
  check(getmetatable(self) == Explorer, 2, "expected an ayla.Explorer (use x:close())")
  if self._closed then return end
  self._closed = true
  shut(self, true)
end
Explorer.__close = Explorer.close

-- No network from a finalizer: the subscriptions stay (the service keeps
-- them); streams and the simulator stop.
function Explorer:__gc()
  if not self._closed then
    self._closed = true
    shut(self, false)
  end
end

function Explorer:__tostring()
  if self._closed then return "ayla.Explorer (closed)" end
  local state = self.stream and (self.stream:status()) or "no stream"
  if sim_stopped(self) then
    return ("ayla.Explorer: the built-in simulator (simulator stopped), %d devices, stream %s")
      :format(self._count or 0, state)
  end
  if self.sim then
    return ("ayla.Explorer: the built-in simulator at %s, %d devices, stream %s"):format(
      self.sim:http_url(), self._count or 0, state)
  end
  local kinds = {}
  for _, sub in ipairs(self._subs) do kinds[#kinds + 1] = tostring(sub.subscription_type) end
  return ("ayla.Explorer: %s/%s as %s, %d devices, stream %s (%s)"):format(self.cloud.region,
    self.cloud.deployment, tostring(self.cloud._creds.email or "(token)"), self._count or 0, state,
    table.concat(kinds, ", "))
end

return M
