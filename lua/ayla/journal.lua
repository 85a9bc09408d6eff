-- ayla.journal: an append-only event journal, so that a runner killed at any
-- moment restarts where it stopped: it resumes each stream with seq_start,
-- runs the rules again for the events they had not finished, and never
-- repeats a write a rule already made for an event.
--
-- One JSON record per line:
--   {"k":"sub","id":N,"type":T}                a subscription the runner reads
--   {"k":"ev","e":KEY,"s":STREAM,"q":SEQ,"raw":JSON}   an event, as received
--   {"k":"act","e":KEY,"a":"RULE#N","st":"begin"|"ok"|"err", ...}
--                                                a rule's Nth write for the event
--   {"k":"done","e":KEY}                       every rule is through with it
--   {"k":"last","s":STREAM,"q":SEQ}            (compaction) the last seq seen
--   {"k":"seen","s":STREAM,"q":[SEQ...]}       (compaction) recent finished seqs
-- KEY is "STREAM@SEQ". Events are made durable (fsync) before any rule sees
-- them, and a write's "begin" before the write goes out: a write whose
-- outcome the journal does not know is reported and not repeated (at most
-- once). A torn last line (the process died mid-write) is ignored.
local cjson = require "cjson.safe"
local core = require "ayla.core"

local M = {}

local Journal = { __name = "ayla.Journal" }
Journal.__index = Journal

local KEEP_SEEN = 10000 -- finished seqs kept per stream across a compaction
local COMPACT_BYTES = 64 << 20 -- rewrite the file when it grows past this,
local COMPACT_EVENTS = 50000   -- or when this many events were finished since

local function check(cond, level, fmt, ...)
  if not cond then error(fmt:format(...), level + 1) end
end

-- ---- reading ---------------------------------------------------------------------

local function new_state()
  return { subs = {}, last = {}, events = {}, order = {}, actions = {}, done = {}, seen = {} }
end

local function remember_seen(st, stream, seq)
  local per = st.seen[stream]
  if not per then
    per = { set = {}, list = {} }
    st.seen[stream] = per
  end
  if not per.set[seq] then
    per.set[seq] = true
    per.list[#per.list + 1] = seq
  end
end

local function note_last(st, stream, seq)
  if math.type(seq) == "integer" and seq > (st.last[stream] or -1) then st.last[stream] = seq end
end

local function apply(st, r)
  if type(r.q) == "number" then r.q = math.tointeger(r.q) end -- cjson reads numbers as floats
  if r.k == "ev" then
    if not st.events[r.e] then st.order[#st.order + 1] = r.e end
    st.events[r.e] = r
    if r.q then
      note_last(st, r.s, r.q)
      remember_seen(st, r.s, r.q)
    end
  elseif r.k == "done" then
    st.done[r.e] = true
  elseif r.k == "act" then
    local per = st.actions[r.e] or {}
    st.actions[r.e] = per
    per[r.a] = r
  elseif r.k == "sub" then
    st.subs[#st.subs + 1] = { id = r.id, type = r.type }
  elseif r.k == "last" then
    note_last(st, r.s, r.q)
  elseif r.k == "seen" and type(r.q) == "table" then
    for _, q in ipairs(r.q) do remember_seen(st, r.s, math.tointeger(q) or q) end
  end
end

local function read(path)
  local st, bad = new_state(), 0
  local f = io.open(path, "r")
  if not f then return st, 0 end
  for line in f:lines() do
    local r = cjson.decode(line)
    if type(r) == "table" and type(r.k) == "string" then apply(st, r) else bad = bad + 1 end
  end
  f:close()
  return st, bad
end

-- ---- writing ---------------------------------------------------------------------

local function put(file, record)
  local ok, err = file:write(cjson.encode(record), "\n")
  if not ok then error("the journal cannot be written: " .. tostring(err), 0) end
end

-- Rewrites the journal with only what a restart needs, through a new file
-- renamed over the old one (a crash leaves one or the other, whole).
local function compact(path, st)
  local tmp = path .. ".compact"
  local f, err = io.open(tmp, "w")
  if not f then return nil, err end
  for _, s in ipairs(st.subs) do put(f, { k = "sub", id = s.id, type = s.type }) end
  for stream, seq in pairs(st.last) do put(f, { k = "last", s = stream, q = seq }) end
  for stream, per in pairs(st.seen) do
    local from = math.max(1, #per.list - KEEP_SEEN + 1)
    put(f, { k = "seen", s = stream, q = table.move(per.list, from, #per.list, 1, {}) })
  end
  for _, key in ipairs(st.order) do
    if not st.done[key] then
      put(f, st.events[key])
      for _, a in pairs(st.actions[key] or {}) do put(f, a) end
    end
  end
  local synced, serr = core.fsync(f)
  f:close()
  if not synced then return nil, serr end
  local renamed, rerr = os.rename(tmp, path)
  if not renamed then return nil, rerr end
  return true
end

-- ---- the journal -------------------------------------------------------------------

-- journal.open(path [, { log = function(level, message) end }]) -> journal,
-- or nil, message. Reads what an earlier run left and compacts it.
function M.open(path, opts)
  check(type(path) == "string", 2, "journal.open expects a file path")
  opts = opts or {}
  local st, bad = read(path)
  local log = opts.log or function() end
  if bad > 0 then
    log("warn", ("journal %s: %d unreadable record(s) skipped (a torn last line after a crash is one)")
      :format(path, bad))
  end
  local ok, err = compact(path, st)
  if not ok then return nil, ("cannot write the journal %s: %s"):format(path, err) end
  -- Keep only what the rewritten file holds.
  local unfinished = {}
  for _, key in ipairs(st.order) do
    if not st.done[key] then unfinished[#unfinished + 1] = st.events[key] end
  end
  local file, ferr = io.open(path, "a")
  if not file then return nil, ("cannot open the journal %s: %s"):format(path, ferr) end
  file:setvbuf("full")
  return setmetatable({
    path = path, file = file, log = log, st = st, unfinished = unfinished,
    counts = { events = 0, duplicates = 0, replayed = 0, actions = 0, skipped_actions = 0,
               unknown_actions = 0, syncs = 0 },
    bytes = file:seek("end"), dirty = false, finished_since = 0,
  }, Journal)
end

-- The subscriptions recorded by an earlier run: { { id =, type = }, ... }.
function Journal:subscriptions()
  return self.st.subs
end

function Journal:set_subscriptions(list)
  self.st.subs = {}
  for _, s in ipairs(list) do
    self.st.subs[#self.st.subs + 1] = { id = s.id, type = s.type }
    put(self.file, { k = "sub", id = s.id, type = s.type })
  end
  self:sync()
end

-- The seq to resume a stream from (the last one journaled + 1), or nil.
function Journal:resume_seq(stream)
  local last = self.st.last[stream]
  return last and last + 1 or nil
end

-- Records a received event (ev._raw, ev.seq) for `stream`. Returns false
-- when this stream's seq was journaled already (a resend after resuming):
-- the caller skips it. Durable only after sync().
function Journal:received(stream, ev)
  check(type(ev) == "table" and type(ev._raw) == "string", 2,
    "journal:received needs an event with its raw text (open the stream with raw = true)")
  local seq = math.tointeger(ev.seq)
  local key
  if seq then
    local per = self.st.seen[stream]
    if per and per.set[seq] then
      self.counts.duplicates = self.counts.duplicates + 1
      return false
    end
    key = ("%s@%d"):format(stream, seq)
  else -- no seq: journaled, but it cannot be told from a resend
    self.anon = (self.anon or 0) + 1
    key = ("%s@-%d.%d"):format(stream, os.time(), self.anon)
  end
  local r = { k = "ev", e = key, s = stream, q = seq, raw = ev._raw }
  apply(self.st, r)
  put(self.file, r)
  self.dirty = true
  self.counts.events = self.counts.events + 1
  ev._journal_key = key
  return true
end

-- Makes every record written so far durable.
function Journal:sync()
  local ok, err = core.fsync(self.file)
  if not ok then error("the journal cannot be synced: " .. tostring(err), 0) end
  self.dirty = false
  self.counts.syncs = self.counts.syncs + 1
  if self.finished_since >= COMPACT_EVENTS or self.file:seek("end") > self.bytes + COMPACT_BYTES then
    self:compact()
  end
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
-- recorded, or perform()'s. perform returns a result or nil, message.
function Journal:action(ev, rule, n, perform)
  local key = ev._journal_key
  if not key then return perform() end
  local name = ("%s#%d"):format(rule, n)
  local known = self.st.actions[key] and self.st.actions[key][name]
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
  local begin = { k = "act", e = key, a = name, st = "begin" }
  apply(self.st, begin)
  put(self.file, begin)
  self:sync() -- on disk before the write goes out
  self.counts.actions = self.counts.actions + 1
  local res, err = perform()
  local r = { k = "act", e = key, a = name, st = res and "ok" or "err",
              res = res and result_record(res) or nil, err = not res and tostring(err) or nil }
  apply(self.st, r)
  put(self.file, r)
  self.dirty = true
  return res, err
end

-- Every rule is through with the event: a restart need not replay it.
function Journal:finished(ev)
  local key = ev._journal_key
  if not key or self.st.done[key] then return end
  self.st.done[key] = true
  self.st.events[key], self.st.actions[key] = nil, nil -- the raw text is not needed again
  self.finished_since = self.finished_since + 1
  put(self.file, { k = "done", e = key })
  self.dirty = true
end

-- Rewrites the file with only what a restart needs.
function Journal:compact()
  self.file:flush()
  local done = {}
  for _, key in ipairs(self.st.order) do
    if self.st.done[key] then done[key] = true end
  end
  local keep = {}
  for _, key in ipairs(self.st.order) do
    if done[key] then self.st.events[key] = nil else keep[#keep + 1] = key end
  end
  self.st.order, self.st.done = keep, {}
  for stream, per in pairs(self.st.seen) do -- bounded memory too
    if #per.list > 2 * KEEP_SEEN then
      local list = table.move(per.list, #per.list - KEEP_SEEN + 1, #per.list, 1, {})
      local set = {}
      for _, q in ipairs(list) do set[q] = true end
      self.st.seen[stream] = { list = list, set = set }
    end
  end
  self.file:close()
  local ok, err = compact(self.path, self.st)
  self.file = assert(io.open(self.path, "a"))
  self.file:setvbuf("full")
  self.bytes, self.finished_since = self.file:seek("end"), 0
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
  return ("ayla.Journal %s: %d events, %d replayed, %d writes (%d not repeated)"):format(self.path,
    self.counts.events, self.counts.replayed, self.counts.actions, self.counts.skipped_actions)
end

return M
