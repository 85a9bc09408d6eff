-- ayla.scheduler: coroutines that wait on the I/O thread without blocking
-- each other. Code that calls the network (ayla.cloud) asks to wait through
-- M.await or M.sleep: inside a task of a scheduler the task yields and the
-- others go on; anywhere else (the REPL, a plain script) the call blocks, in
-- short slices so that Ctrl-C still works.
local core = require "ayla.core"

local M = {}

local Scheduler = { __name = "ayla.Scheduler" }
Scheduler.__index = Scheduler

local SLICE = 0.25 -- seconds a blocking wait runs before Lua gets control back

-- The task each running coroutine belongs to (weak: finished ones go away).
local task_of = setmetatable({}, { __mode = "k" })

local WAIT = {} -- marks our own yields, so a task can tell them from others

-- opts.clock: { now = function() end } for a virtual time (replays);
-- opts.on_error(task, err): a task failed.
function M.new(opts)
  opts = opts or {}
  return setmetatable({
    clock = opts.clock or { now = core.monotime },
    tasks = {},       -- every live task, in creation order
    on_error = opts.on_error or function(task, err)
      io.stderr:write(("ayla: task %s failed: %s\n"):format(task.name, err))
    end,
  }, Scheduler)
end

-- The budget's error: one object, so that code running under a budget
-- cannot swallow it (see M.guard) and so that it prints plainly.
M.BUDGET = setmetatable({}, {
  __tostring = function() return "instruction budget exceeded (a runaway loop?)" end,
  __metatable = false,
})

-- Once spent, a budget stays spent: every further instruction raises again,
-- so a pcall that catches the first error gets nowhere.
local function spent() error(M.BUDGET, 0) end
local function over_budget()
  debug.sethook(spent, "", 1)
  error(M.BUDGET, 0)
end
M.over_budget = over_budget

-- Runs fn(...) to completion under a budget, in a coroutine of its own so
-- that a spent budget stays with it. Returns true and fn's results, or false
-- and the error. fn may not wait (it is not a task).
function M.run_budgeted(budget, fn, ...)
  local co = coroutine.create(fn)
  debug.sethook(co, over_budget, "", budget)
  local res = table.pack(coroutine.resume(co, ...))
  if res[1] and coroutine.status(co) ~= "dead" then
    return false, "it tried to wait here; only rules and timers may wait"
  end
  return table.unpack(res, 1, res.n)
end

-- A plain-text description of an error value that never runs user code
-- (an error object's __tostring could loop for ever).
function M.describe(err)
  if err == M.BUDGET then return tostring(err) end
  if type(err) == "string" then return err end
  if type(err) == "number" or type(err) == "boolean" or err == nil then return tostring(err) end
  return ("(a %s raised as an error)"):format(type(err))
end

-- Starts fn(...) as a task and runs it until it first waits. Returns the task.
function Scheduler:spawn(fn, ...)
  return self:start({}, fn, ...)
end

-- spawn with options: name (for reports), budget (Lua instructions the task
-- may run in all before it is stopped with an error), on_done(task) (called
-- when it returns normally), on_end(task) (called once when it ends in any
-- way: returned, failed, or dropped with its removed owner), and anything
-- else kept on the task.
function Scheduler:start(opts, fn, ...)
  if type(fn) ~= "function" then error("spawn expects a function", 2) end
  local task = { co = coroutine.create(fn), name = opts.name or tostring(#self.tasks + 1),
                 on_done = opts.on_done, on_end = opts.on_end, owner = opts.owner, ctx = opts.ctx,
                 sched = self }
  if opts.budget then debug.sethook(task.co, over_budget, "", opts.budget) end
  task_of[task.co] = task
  self.tasks[#self.tasks + 1] = task
  self:_resume(task, ...)
  return task
end

function Scheduler:_resume(task, ...)
  task.wait = nil
  local ok, what, detail = coroutine.resume(task.co, ...)
  if not ok then
    task.dead, task.error = true, debug.traceback(task.co, M.describe(what))
    self.on_error(task, task.error)
    self:_ended(task)
  elseif coroutine.status(task.co) == "dead" then
    task.dead = true
    if task.on_done then task.on_done(task) end
    self:_ended(task)
  elseif what == WAIT then
    task.wait = detail
  else
    -- A bare coroutine.yield() inside a task: run it again next step.
    task.wait = { until_t = 0 }
  end
end

function Scheduler._ended(_, task)
  local on_end = task.on_end
  task.on_end = nil -- once
  if on_end then on_end(task) end
end

local function ready(wait, now)
  if wait.request then return wait.request:wait(0) end
  return now >= wait.until_t
end

-- Runs every task whose wait is over; then, if none was, waits up to
-- `timeout` seconds for the I/O thread or the next timer. Returns the
-- number of live tasks.
function Scheduler:step(timeout)
  local now, ran, next_t = self.clock.now(), false, math.huge
  local live = {}
  for _, task in ipairs(self.tasks) do
    if task.owner and task.owner.removed and not task.dead then -- its rule is gone
      task.dead = true
      self:_ended(task)
    end
    if not task.dead then
      if task.wait and ready(task.wait, now) then
        self:_resume(task)
        ran = true
      elseif task.wait and task.wait.until_t then
        next_t = math.min(next_t, task.wait.until_t)
      end
      if not task.dead then live[#live + 1] = task end
    end
  end
  self.tasks = live
  if not ran and (timeout or 0) > 0 then -- with no task, still wait: callers loop on step
    local wait = math.min(timeout, math.max(0, next_t - self.clock.now()))
    if wait > 0 then core.wait_any(wait) end
  end
  return #self.tasks
end

-- Steps until no task is left or `timeout` seconds pass; returns true when
-- every task has finished.
function Scheduler:run(timeout)
  local deadline = timeout and core.monotime() + timeout
  while #self.tasks > 0 do
    local left = deadline and deadline - core.monotime()
    if left and left <= 0 then return false end
    self:step(math.min(left or SLICE, SLICE))
  end
  return true
end

-- The earliest time a sleeping task wants to run, or nil.
function Scheduler:next_wake()
  local t
  for _, task in ipairs(self.tasks) do
    local w = not task.dead and task.wait
    if w and w.until_t and (not t or w.until_t < t) then t = w.until_t end
  end
  return t
end

-- The scheduler task running now, if any.
function M.current_task()
  local co = coroutine.running()
  return task_of[co]
end

-- Waits until the core request has finished.
function M.await(request)
  if task_of[coroutine.running()] then
    coroutine.yield(WAIT, { request = request })
    return
  end
  while not request:wait(SLICE) do end
end

-- Sleeps; yields inside a task (on its scheduler's clock), blocks elsewhere.
function M.sleep(seconds)
  local task = task_of[coroutine.running()]
  if task then
    coroutine.yield(WAIT, { until_t = task.sched.clock.now() + seconds })
    return
  end
  local deadline = core.monotime() + seconds
  while true do
    local left = deadline - core.monotime()
    if left <= 0 then return end
    core.sleep(math.min(left, SLICE))
  end
end

M.Scheduler = Scheduler
return M
