-- ayla.timers: a min-heap of things due at a time, in the order they were
-- added when times are equal. The app keeps its timers, holds and debounces
-- here, so that a replay's virtual clock can drive them like the real one.
local M = {}

local Timers = { __name = "ayla.Timers" }
Timers.__index = Timers

function M.new()
  return setmetatable({ heap = {}, n = 0, counter = 0 }, Timers)
end

local function before(a, b)
  return a.at < b.at or (a.at == b.at and a.order < b.order)
end

local function up(h, i)
  while i > 1 do
    local p = i // 2
    if not before(h[i], h[p]) then return end
    h[i], h[p] = h[p], h[i]
    h[i].slot, h[p].slot = i, p
    i = p
  end
end

local function down(h, n, i)
  while true do
    local l, r, m = 2 * i, 2 * i + 1, i
    if l <= n and before(h[l], h[m]) then m = l end
    if r <= n and before(h[r], h[m]) then m = r end
    if m == i then return end
    h[i], h[m] = h[m], h[i]
    h[i].slot, h[m].slot = i, m
    i = m
  end
end

-- Adds fn to run at time `at`; returns a handle for cancel.
function Timers:add(at, fn)
  self.counter = self.counter + 1
  self.n = self.n + 1
  local t = { at = at, fn = fn, order = self.counter, slot = self.n }
  self.heap[self.n] = t
  up(self.heap, self.n)
  return t
end

function Timers:cancel(t)
  local i = t and t.slot
  if not i or self.heap[i] ~= t then return end
  local h, n = self.heap, self.n
  h[i] = h[n]
  h[i].slot = i
  h[n] = nil
  self.n = n - 1
  t.slot = nil
  if i <= self.n then
    up(h, i)
    down(h, self.n, i)
  end
end

-- The time of the next timer, or nil.
function Timers:next_at()
  local t = self.heap[1]
  return t and t.at
end

-- Removes and returns the next timer if it is due at `now` (and, with
-- `upto`, was added no later than that mark: see Timers:mark).
function Timers:pop_due(now, upto)
  local t = self.heap[1]
  if not t or t.at > now or (upto and t.order > upto) then return nil end
  self:cancel(t)
  return t
end

function Timers:count() return self.n end

-- The newest timer so far: a pass that runs only timers up to this mark
-- cannot be kept busy by timers that add timers.
function Timers:mark() return self.counter end

return M
