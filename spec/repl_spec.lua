-- A real `lua5.4 -i` left idle at its prompt while the simulator sends
-- heartbeats every 0.2 s and drops clients after two unanswered ones.
describe("the lua5.4 -i prompt", function()
  it("keeps the stream up while the prompt sits idle, then hands back the events", function()
    local dir = H.tmpdir()
    local out = dir .. "/screen.txt"
    local repl = assert(io.popen(("cd %q && AYLA_BUILD_DIR=%q lua5.4 -i > %q 2>&1")
      :format(os.getenv("PWD") or ".", H.build, out), "w"))
    local function type_line(line)
      repl:write(line, "\n")
      repl:flush()
    end
    type_line([[package.path = "lua/?.lua;lua/?/init.lua;" .. package.path]])
    type_line([[package.cpath = os.getenv("AYLA_BUILD_DIR") .. "/?.so;" .. package.cpath]])
    type_line([[ayla = require "ayla"]])
    type_line([[sim = ayla.sim{ scenario = "examples/scenarios/seed.jsonl", event_interval = 0.1,
      heartbeat_interval = 0.2, heartbeat_misses = 2 }]])
    type_line([[s = sim:stream()]])
    -- The interpreter now blocks reading its next line, for 3 s: 15 heartbeats.
    H.sleep(3)
    type_line([[for ev in s:events(1) do print(ev) end]])
    type_line([[print("answered", s:stats().heartbeats_answered, "reconnects", s:stats().reconnects,
      "server drops", sim:stats().heartbeat_drops)]])
    type_line([[print(s)]])
    repl:close()
    local screen = H.read_file(out)
    H.rmdir(dir)
    assert.matches("#1 connectivity ledevb/AC000W000340649 Online", screen)
    assert.matches("#5 registration ledevb/AC000W000340649 unregistered", screen)
    local answered, reconnects, drops =
      screen:match("answered\t(%d+)\treconnects\t(%d+)\tserver drops\t(%d+)")
    assert.is_true(tonumber(answered) >= 10, screen)
    assert.equal("0", reconnects)
    assert.equal("0", drops)
    assert.matches("ayla.Stream %(open%) ws://127.0.0.1:%d+/stream key %x%x%x%x…%(32%)", screen)
  end)
end)
