-- ayla.journal: an append-only event journal, so that a runner killed at any
-- moment restarts where it stopped: it resumes each stream with seq_start,
-- runs the rules again for the events they had not finished, and never
-- repeats a write a rule already made for an event.
--
-- One JSON record per line:
--   {"k":"run","n":N,"app":ID}                 a start: its number, the app's id
--   {"k":"subs","list":[{id,type,scope}...]}   the subscriptions the runner reads
--   {"k":"reset","s":STREAM}                   a new stream under a used name
--   {"k":"ev","e":KEY,"s":STREAM,"q":SEQ,"f":FP,"raw":JSON}   an event, as received
--   {"k":"act","e":KEY,"a":"RULE#N","w":WHAT,"st":"begin"|"ok"|"err", ...}
--                                                a rule's Nth write for the event
--   {"k":"done","e":KEY}                       every rule is through with it
--   {"k":"last","s":STREAM,"q":SEQ}            (compaction) the last seq seen
--   {"k":"seen","s":STREAM,"q":[SEQ...],"f":[FP...]}  (compaction) recent seqs
-- KEY is "STREAM@SEQ" (or "STREAM@-RUN.N" for an event without seq); FP
-- tells a resend (same seq, same event) from a new event under a reused seq.
-- Events are made durable (fsync) before any rule sees them, and a write's
-- "begin" before the write goes out: a write whose outcome the journal does
-- not know is reported and not repeated (at most once). Results and "done"
-- records reach the kernel at once (they survive kill -9) and the disk with
-- the next sync. A torn last line (the process died mid-write) is ignored.
local cjson = require "cjson.safe"
local core = require "ayla.core"

local M = {}

local Journal = { __name = "ayla.Journal" }
Journal.__index = Journal

local KEEP_SEEN = 10000 -- recent seqs kept per stream across a compaction
local COMPACT_BYTES = 64 << 20 -- rewrite the file when it grows past this,
local COMPACT_EVENTS = 50000   -- or when this many events were finished since

local function check(cond, level, fmt, ...)
  if not cond then error(fmt:format(...), level + 1) end
end

-- What tells one event from another under the same seq: its type and
-- datapoint id ("datapoint:ID"), else the raw text's length and the time.
local function fingerprint(ev, raw)
  local dp = ev.datapoint
  if type(dp) == "table" and type(dp.id) == "string" then
    return ("%s:%s"):format(tostring(ev.type), dp.id)
  end
  return ("%d@%s"):format(#raw, tostring(ev.time))
end

-- ---- reading ---------------------------------------------------------------------

local function new_state()
  -- events: the unfinished ones by key (a finished event leaves it), in the
  -- order they came in `order` (which may still name finished ones)
  return { run = 0, subs = {}, last = {}, events = {}, order = {}, actions = {}, seen = {} }
end

local function remember_seen(st, stream, seq, fp)
  local per = st.seen[stream]
  if not per then
    per = { set = {}, list = {} }
    st.seen[stream] = per
  end
  if per.set[seq] == nil then per.list[#per.list + 1] = seq end
  per.set[seq] = fp or false
end

local function note_last(st, stream, seq)
  if math.type(seq) == "integer" and seq > (st.last[stream] or -1) then st.last[stream] = seq end
end

local function integer(v) return type(v) == "number" and math.tointeger(v) or v end

local function apply(st, r)
  r.q = integer(r.q) -- cjson reads numbers as floats
  local k = r.k
  if k == "ev" then
    if not st.events[r.e] then st.order[#st.order + 1] = r.e end
    st.events[r.e] = r
    if r.q then
      note_last(st, r.s, r.q)
      remember_seen(st, r.s, r.q, r.f)
    end
  elseif k == "done" then
    st.events[r.e], st.actions[r.e] = nil, nil -- the raw text is not needed again
  elseif k == "act" then
    local per = st.actions[r.e] or {}
    st.actions[r.e] = per
    per[r.a] = r
  elseif k == "run" then
    st.run, st.app = integer(r.n) or st.run, r.app or st.app
  elseif k == "subs" and type(r.list) == "table" then
    st.subs = {}
    for _, s in ipairs(r.list) do
      st.subs[#st.subs + 1] = { id = integer(s.id), type = s.type, scope = s.scope }
    end
  elseif k == "reset" then
    st.seen[r.s], st.last[r.s] = nil, nil
  elseif k == "last" then
    note_last(st, r.s, r.q)
  elseif k == "seen" and type(r.q) == "table" then
    local fps = type(r.f) == "table" and r.f or {}
    for i, q in ipairs(r.q) do remember_seen(st, r.s, integer(q), fps[i]) end
  end
end

-- Drops finished events from `order` (and a key named twice, once).
local function prune_order(st)
  local keep, kept = {}, {}
  for _, key in ipairs(st.order) do
    if st.events[key] and not kept[key] then
      keep[#keep + 1], kept[key] = key, true
    end
  end
  st.order = keep
end

-- Reads a journal; a file that does not exist is an empty one.
local function read(path)
  local st, bad = new_state(), 0
  local f, err, code = io.open(path, "r")
  if not f then
    if code == 2 then return st, 0 end -- ENOENT: a first start
    return nil, err
  end
  for line in f:lines() do
    local r = cjson.decode(line)
    if type(r) == "table" and type(r.k) == "string" then apply(st, r) else bad = bad + 1 end
  end
  f:close()
  prune_order(st)
  return st, bad
end

-- ---- writing ---------------------------------------------------------------------

local function put(file, record)
  local ok, err = file:write(cjson.encode(record), "\n")
  if not ok then error("the journal cannot be written: " .. tostring(err), 0) end
end

local function dir_of(path)
  return path:match("^(.*)/[^/]*$") or "."
end

-- Rewrites the journal with only what a restart needs, through a new file
-- renamed over the old one and the directory synced: a crash (or a power
-- loss) leaves one or the other, whole.
local function compact(path, st)
  local tmp = path .. ".compact"
  os.remove(tmp)
  local made, merr = core.create_private(tmp)
  if not made then return nil, merr end
  local f, err = io.open(tmp, "w")
  if not f then return nil, err end
  local ok, perr = pcall(function()
    put(f, { k = "run", n = st.run, app = st.app })
    put(f, { k = "subs", list = st.subs })
    for stream, seq in pairs(st.last) do put(f, { k = "last", s = stream, q = seq }) end
    for stream, per in pairs(st.seen) do
      local from = math.max(1, #per.list - KEEP_SEEN + 1)
      local q, fps = table.move(per.list, from, #per.list, 1, {}), {}
      for i, seq in ipairs(q) do fps[i] = per.set[seq] or "" end
      put(f, { k = "seen", s = stream, q = q, f = fps })
    end
    for _, key in ipairs(st.order) do
      if st.events[key] then
        put(f, st.events[key])
        for _, a in pairs(st.actions[key] or {}) do put(f, a) end
      end
    end
  end)
  local synced, serr = true, nil
  if ok then synced, serr = core.fsync(f) end
  f:close()
  if not ok or not synced then
    os.remove(tmp)
    return nil, ok and serr or perr
  end
  local renamed, rerr = os.rename(tmp, path)
  if not renamed then return nil, rerr end
  core.fsync(dir_of(path)) -- the new name on disk too
  return true
end

local function open_append(path)
  local file, err = io.open(path, "a")
  if not file then return nil, err end
  file:setvbuf("full")
  return file
end

-- ---- the journal -------------------------------------------------------------------

-- journal.open(path [, { log = function(level, message) end, app_id = ID }])
-- -> journal, or nil, message. Reads what an earlier run left, compacts it,
-- and starts a new run (app_id: the app's id to keep if the journal has none).
function M.open(path, opts)
  check(type(path) == "string", 2, "journal.open expects a file path")
  check(opts == nil or type(opts) == "table", 2, "journal.open expects a table of options")
  opts = opts or {}
  local log = opts.log or function() end
  local st, bad = read(path)
  if not st then return nil, ("cannot read the journal %s: %s"):format(path, bad) end
  if bad > 0 then
    log("warn", ("journal %s: %d unreadable record(s) skipped (a torn last line after a crash is one)")
      :format(path, bad))
  end
  st.run, st.app = st.run + 1, st.app or opts.app_id
  local ok, err = compact(path, st)
  if not ok then return nil, ("cannot write the journal %s: %s"):format(path, err) end
  local unfinished = {}
  for _, key in ipairs(st.order) do unfinished[#unfinished + 1] = st.events[key] end
  local file, ferr = open_append(path)
  if not file then return nil, ("cannot open the journal %s: %s"):format(path, ferr) end
  return setmetatable({
    path = path, file = file, log = log, st = st, unfinished = unfinished,
    counts = { events = 0, resends = 0, replayed = 0, actions = 0, skipped_actions = 0,
               unknown_actions = 0, syncs = 0 },
    bytes = file:seek("end"), dirty = false, finished_since = 0, anon = 0,
    synced_at = core.monotime(),
  }, Journal)
end

-- The app id the journal keeps across runs, so that events caused by an
-- earlier run's writes are still recognised as the app's own.
function Journal:app_id()
  return self.st.app
end

-- The datapoints (and acks) of the recent events the journal knows, as
-- { type, id } pairs, at most `limit` (the newest): for the app's duplicate
-- window, so a datapoint resent under a new seq after a restart is still
-- known.
function Journal:seen_datapoints(limit)
  local out = {}
  for _, per in pairs(self.st.seen) do
    local list = per.list
    for i = math.max(1, #list - limit + 1), #list do
      local kind, id = tostring(per.set[list[i]] or ""):match("^(datapoint%a*):(.+)$")
      if kind then out[#out + 1] = { kind, id } end
    end
  end
  return out
end

-- The subscriptions recorded by an earlier run: { { id =, type =, scope = }, ... }.
function Journal:subscriptions()
  return self.st.subs
end

function Journal:set_subscriptions(list)
  self.st.subs = {}
  for i, s in ipairs(list) do self.st.subs[i] = { id = s.id, type = s.type, scope = s.scope } end
  put(self.file, { k = "subs", list = self.st.subs })
  self:sync()
end

-- A stream that starts its numbering afresh under a name the journal knows
-- (a new subscription with a reused id): forget the old one's seqs.
function Journal:reset_stream(stream)
  self.st.seen[stream], self.st.last[stream] = nil, nil
  put(self.file, { k = "reset", s = stream })
  self.dirty = true
end

-- The seq to resume a stream from (the last one journaled + 1), or nil.
function Journal:resume_seq(stream)
  local last = self.st.last[stream]
  return last and last + 1 or nil
end

-- Records a received event (ev._raw, ev.seq) for `stream`. Returns false
-- for a resend of an event journaled already (same seq, same event): the
-- caller skips it. Durable only after sync().
function Journal:received(stream, ev)
  check(type(ev) == "table" and type(ev._raw) == "string", 2,
    "journal:received needs an event with its raw text (open the stream with raw = true)")
  local seq = math.tointeger(ev.seq)
  local fp = fingerprint(ev, ev._raw)
  local key
  if seq then
    local per = self.st.seen[stream]
    if per and per.set[seq] == fp then
      self.counts.resends = self.counts.resends + 1
      return false
    end
    key = ("%s@%d"):format(stream, seq)
    if self.st.events[key] then -- the server renumbered: keep both apart
      self.anon = self.anon + 1
      key = ("%s@%d.%d.%d"):format(stream, seq, self.st.run, self.anon)
    end
  else -- no seq: journaled, but it cannot be told from a resend
    self.anon = self.anon + 1
    key = ("%s@-%d.%d"):format(stream, self.st.run, self.anon)
  end
  local r = { k = "ev", e = key, s = stream, q = seq, f = fp, raw = ev._raw }
  apply(self.st, r)
  put(self.file, r)
  self.dirty = true
  self.counts.events = self.counts.events + 1
  ev._journal_key = key
  return true
end

-- Makes every record written so far durable; compacts now and then.
function Journal:sync()
  local ok, err = core.fsync(self.file)
  if not ok then error("the journal cannot be synced: " .. tostring(err), 0) end
  self.dirty, self.synced_at = false, core.monotime()
  self.counts.syncs = self.counts.syncs + 1
  if self.finished_since >= COMPACT_EVENTS or self.file:seek("end") > self.bytes + COMPACT_BYTES then
    self:compact()
  end
end

-- Syncs if something was written and `seconds` passed since the last sync.
function Journal:sync_if_due(seconds)
  if self.dirty and core.monotime() - self.synced_at >= seconds then self:sync() end
end

-- The events an earlier run received but did not finish, in the order they
-- came, decoded with `decode` (ayla.decode); each is marked ev.replayed.
function Journal:replay(decode)
  local out = {}
  for _, r in ipairs(self.unfinished) do
    local ev, err = decode(r.raw)
    if ev then
      ev._raw, ev._journal_key, ev.replayed = r.raw, r.e, true
      out[#out + 1] = ev
    else
      self.log("error", ("journal: cannot decode the event %s again (%s); left out"):format(r.e, err))
      self:finished({ _journal_key = r.e })
    end
  end
  self.counts.replayed = #out
  self.unfinished = {}
  return out
end

local function result_record(res)
  if type(res) ~= "table" then return res end
  local plain = {}
  for k, v in pairs(res) do
    local t = type(v)
    if type(k) == "string" and k:sub(1, 1) ~= "_" and (t == "string" or t == "number" or t == "boolean") then
      plain[k] = v
    end
  end
  return plain
end

-- A rule's write for an event, at most once: the result an earlier run
-- recorded, or perform()'s. `rule` names the rule the same way in every run
-- (ayla-rules: FILE:N); `what` describes the write ("DSN/PROP=VALUE"), so a
-- rule that changed between runs is noticed. perform returns a result or
-- nil, message.
function Journal:action(ev, rule, n, what, perform)
  local key = ev._journal_key
  if not key then return perform() end
  local name = ("%s#%d"):format(rule, n)
  local known = self.st.actions[key] and self.st.actions[key][name]
  if known and known.w ~= what then
    self.log("warn", ("journal: write %d of rule %s for event %s was %s in the last run and is %s "
      .. "now (the rule changed?): making it"):format(n, rule, key, tostring(known.w), what))
    known = nil
  end
  if known then
    self.counts.skipped_actions = self.counts.skipped_actions + 1
    if known.st == "ok" then return known.res end
    if known.st == "err" then return nil, known.err end
    self.counts.unknown_actions = self.counts.unknown_actions + 1
    local msg = ("not repeated: the runner stopped during write %d of rule %s for event %s, "
      .. "so whether it reached the cloud is unknown"):format(n, rule, key)
    self.log("warn", msg)
    return nil, msg
  end
  local begin = { k = "act", e = key, a = name, w = what, st = "begin" }
  apply(self.st, begin)
  put(self.file, begin)
  self:sync() -- on disk before the write goes out
  self.counts.actions = self.counts.actions + 1
  local res, err = perform()
  local r = { k = "act", e = key, a = name, w = what, st = res and "ok" or "err",
              res = res and result_record(res) or nil, err = not res and tostring(err) or nil }
  apply(self.st, r)
  put(self.file, r)
  self.file:flush() -- survives kill -9 now, the disk with the next sync
  self.dirty = true
  return res, err
end

-- Every rule is through with the event: a restart need not replay it.
function Journal:finished(ev)
  local key = ev._journal_key
  if not key or not self.st.events[key] then return end -- not journaled, or finished
  apply(self.st, { k = "done", e = key })
  put(self.file, { k = "done", e = key })
  self.file:flush()
  self.dirty = true
  self.finished_since = self.finished_since + 1
end

-- Rewrites the file with only what a restart needs.
function Journal:compact()
  self.file:flush()
  prune_order(self.st)
  for stream, per in pairs(self.st.seen) do -- bounded memory too
    if #per.list > 2 * KEEP_SEEN then
      local list = table.move(per.list, #per.list - KEEP_SEEN + 1, #per.list, 1, {})
      local set = {}
      for _, q in ipairs(list) do set[q] = per.set[q] end
      self.st.seen[stream] = { list = list, set = set }
    end
  end
  self.file:close()
  local ok, err = compact(self.path, self.st)
  local file, ferr = open_append(self.path)
  if not file then error("the journal cannot be opened again: " .. tostring(ferr), 0) end
  self.file, self.bytes, self.finished_since = file, file:seek("end"), 0
  if not ok then self.log("error", ("journal: compaction failed: %s"):format(err)) end
end

function Journal:stats()
  local out = {}
  for k, v in pairs(self.counts) do out[k] = v end
  return out
end

function Journal:close()
  if not self.file then return end
  if self.dirty then pcall(core.fsync, self.file) end
  self.file:close()
  self.file = nil
end
Journal.__close = Journal.close
Journal.__gc = Journal.close

function Journal:__tostring()
  return ("ayla.Journal %s: %d events, %d replayed, %d resends skipped, %d writes (%d not repeated)")
    :format(self.path, self.counts.events, self.counts.replayed, self.counts.resends,
      self.counts.actions, self.counts.skipped_actions)
end

return M
