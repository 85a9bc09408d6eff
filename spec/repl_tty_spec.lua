-- A real `lua5.4 -i` in a terminal (tmux), driven by keystrokes: the
-- explorer's tables, the twin, a write and the event it causes, stats, Ctrl-C
-- in a tail and in a loop of tails, and never a "table: 0x" or a secret on
-- the screen.
-- Set AYLA_TTY_SCREEN=FILE to keep the last screen.

local function shell_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local function have_tmux() return H.sh("command -v tmux >/dev/null 2>&1") end

-- A tmux server of our own (a private socket), one 160x50 window.
local function terminal(dir, command)
  local t = { socket = "ayla-spec-" .. dir:match("[^/]+$") }
  local conf = dir .. "/tmux.conf"
  local f = assert(io.open(conf, "w"))
  f:write("set -g history-limit 50000\nset -g remain-on-exit on\n")
  f:close()
  local function tmux(args) return ("tmux -L %s %s"):format(t.socket, args) end
  assert(H.sh(tmux(("-f %s -u new-session -d -x 160 -y 50 -s repl %s")
    :format(shell_quote(conf), shell_quote(command)))), "tmux did not start")

  -- The whole pane, history included, wrapped lines joined, blanks trimmed.
  function t.screen()
    local p = io.popen(tmux("capture-pane -p -J -S - -t repl 2>/dev/null"))
    local out = p:read("a")
    p:close()
    out = out:gsub("[ \t]+\n", "\n"):gsub("%s+$", "")
    return out
  end

  function t.keys(text) assert(H.sh(tmux("send-keys -t repl -l " .. shell_quote(text)))) end
  function t.key(name) assert(H.sh(tmux("send-keys -t repl " .. name))) end
  local p = io.popen(tmux("display-message -p '#{socket_path}' 2>/dev/null"))
  local socket_path = p:read("l")
  p:close()
  function t.kill() -- the server, and the socket file it leaves behind
    os.execute(tmux("kill-server 2>/dev/null"))
    if socket_path and socket_path:find(t.socket, 1, true) then os.remove(socket_path) end
  end

  -- Polls the screen until pred(screen) holds; the screen either way.
  function t.wait(pred, timeout)
    local deadline = H.now() + (timeout or 30)
    local s
    repeat
      s = t.screen()
      if pred(s) then return s, true end
      H.sleep(0.05)
    until H.now() > deadline
    return s, false
  end
  return t
end

-- Prompts on the screen ("> " lines), and whether the last line is an idle one.
local function prompts(screen)
  local n, last = 0, nil
  for line in (screen .. "\n"):gmatch("([^\n]*)\n") do
    if line == ">" or line:sub(1, 2) == "> " then n = n + 1 end
    last = line
  end
  return n, last == ">"
end

describe("lua5.4 -i in a terminal", function()
  it("explores the simulator: devices, twin, a write, its event, stats, Ctrl-C", function()
    if not have_tmux() then
      pending("tmux is not installed (apt-get install tmux; the CI has it): the terminal test did not run")
      return
    end
    local p = io.popen("pwd") -- the specs run from the source tree ($PWD may be stale under ctest)
    local root = p:read("l")
    p:close()
    local build = H.build:sub(1, 1) == "/" and H.build or (root .. "/" .. H.build)
    local dir = H.tmpdir()
    -- What `eval "$(./dev env)"` sets, for this build.
    local command = ("cd %s && exec env LUA_PATH_5_4=%s LUA_CPATH_5_4=%s lua5.4 -i"):format(
      shell_quote(root), shell_quote(root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;;"),
      shell_quote(build .. "/?.so;;"))
    local t = terminal(dir, command)
    local screen = ""
    finally(function()
      t.kill()
      local keep = os.getenv("AYLA_TTY_SCREEN")
      if keep then
        local f = io.open(keep, "w")
        if f then f:write(screen, "\n"):close() end
      end
      H.rmdir(dir)
    end)

    -- Types one line at an idle prompt and waits for the next idle prompt;
    -- returns what the line printed.
    local function run(line, timeout)
      local before = prompts(t.screen())
      t.keys(line)
      t.key("Enter")
      local ok
      screen, ok = t.wait(function(s)
        local n, idle = prompts(s)
        return n > before and idle
      end, timeout)
      assert(ok, ("no prompt came back after %q:\n%s"):format(line, screen))
      local at = 1
      while true do -- the output starts after the last echo of the line
        local i = screen:find("\n> " .. line, at, true)
        if not i then break end
        at = i + 1
      end
      return screen:sub(at):match("^[^\n]*\n(.*)\n>$") or ""
    end

    screen = select(1, t.wait(function(s) return select(2, prompts(s)) end, 30))
    assert.matches("Lua 5%.4", screen)
    run([[ayla = require "ayla"]])
    local out = run([[ayla.help()]])
    assert.matches("x = ayla.explore()", out, 1, true)
    assert.matches('More: ayla.help("explore")', out, 1, true)

    assert.equal("", run([[x = ayla.explore()]], 60))
    out = run([[x]])
    assert.matches("^ayla%.Explorer: the built%-in simulator at http://127%.0%.0%.1:%d+, 10 devices, "
      .. "stream open$", out)

    out = run([[x:devices()]])
    assert.matches("DSN              MODEL   PRODUCT NAME  STATUS\n", out, 1, true)
    assert.matches("AC000W000000003  ledevb  Dev kit 3     Offline\n", out, 1, true)
    assert.matches("TH000W000000002  thermo  Kitchen       Online\n", out, 1, true)
    assert.matches("\n10 devices$", out)

    local dsn = "AC000W000000001"
    out = run(([[x:twin(%q)]]):format(dsn))
    assert.matches("\nBlue_LED +boolean +input +0 +ack +%d%d%d%d%-", out)
    assert.matches('\nversion +string +output +"demo 1%.0" +read%-only +', out)
    assert.matches("\n10 properties of " .. dsn .. "$", out)

    out = run(([[x:set(%q, "Blue_LED", 1)]]):format(dsn))
    assert.matches("^datapoint %x+%-[%x-]+ = 1 at %d%d%d%d%-%d%d%-%d%dT[%d:]+Z$", out)

    -- The write's echo and the device's ack, found by the filter among the
    -- demo fleet's other events.
    out = run(([[x:tail({ dsn = %q, property = "Blue_LED" }, 2)]]):format(dsn))
    local lines = {}
    for l in (out .. "\n"):gmatch("([^\n]*)\n") do lines[#lines + 1] = l end
    assert.equal(3, #lines, out)
    assert.matches("^#%d+ datapoint ledevb/" .. dsn .. " Blue_LED = 1 %(boolean%) echo at ", lines[1])
    assert.matches("^#%d+ datapointack ledevb/" .. dsn .. " Blue_LED = 1 ack 200 0 at ", lines[2])
    assert.equal("2", lines[3])

    out = run(([[x:twin(%q)]]):format(dsn))
    assert.matches("\nBlue_LED +boolean +input +1 +ack ", out)

    out = run([[x:stats()]])
    assert.matches("^ayla%.StreamStats: state=open events=%d+", out)
    assert.matches("\nayla%.CloudStats: requests=%d+ sign_ins=1 refreshes=0 replays=0 retries=0\n", out)
    assert.matches("\nayla%.SimStats: clients=1 connections=1 ", out)
    assert.matches("^ayla%.StreamStats: state=open", run([[x.stream:stats()]]))
    assert.matches("^ayla%.SimStats: clients=1", run([[x.sim:stats()]]))
    assert.matches("^ayla%.CloudStats: requests=", run([[x.cloud.stats]]))
    assert.matches("^ayla%.Cloud us/dev demo@ayla%-sim%.local %(signed in, token expires in %d+s%)$",
      run([[x.cloud]]))
    assert.matches("^ayla%.Stream %(open%) ws://127%.0%.0%.1:%d+/stream key %x%x%x%x…%(%d+%)$",
      run([[x.stream]]))
    assert.matches("^ayla%.Sim ws://127%.0%.0%.1:%d+/stream$", run([[x.sim]]))
    assert.equal("ayla 0.1.0 (ayla.help() for a tour)", run([[ayla]]))

    -- Ctrl-C during a long tail ends the tail, not the interpreter.
    local before = prompts(t.screen())
    t.keys([[print("tailing") print(x:tail("no-such-device", 120))]])
    t.key("Enter")
    local ok
    screen, ok = t.wait(function(s) return s:find("\ntailing$") ~= nil end)
    assert(ok, "the tail did not start:\n" .. screen)
    t.key("C-c")
    screen, ok = t.wait(function(s)
      local n, idle = prompts(s)
      return n > before and idle
    end, 10)
    assert(ok, "Ctrl-C did not stop the tail:\n" .. screen)
    -- the tail says so, then ends the line with the interrupt (no traceback)
    assert.matches("%(tail stopped%)\ninterrupted!\n>$", screen)
    assert.equal("open", run([[x.stream:status()]]))

    -- In a loop: the first Ctrl-C ends the whole line, so that no second one
    -- (which the stock interpreter does not catch) is needed.
    before = prompts(t.screen())
    t.keys([[for i = 1, 3 do print("tail " .. i) print(x:tail("nothing", 30)) end]])
    t.key("Enter")
    screen, ok = t.wait(function(s) return s:find("\ntail 1$") ~= nil end)
    assert(ok, "the tails did not start:\n" .. screen)
    t.key("C-c")
    screen, ok = t.wait(function(s)
      local n, idle = prompts(s)
      return n > before and idle
    end, 10)
    assert(ok, "Ctrl-C did not end the loop:\n" .. screen)
    assert.matches("\ntail 1\n[^\n]*%(tail stopped%)\ninterrupted!\n>$", screen)
    H.sleep(0.5) -- the interpreter is still there, the loop did not go on
    screen = t.screen()
    assert.is_nil(screen:find("\ntail 2", 1, true), screen)
    assert.matches("\n>$", screen)
    assert.equal("0", run([[x:tail("nothing", 0.2)]])) -- a new tail works
    assert.equal("open", run([[x.stream:status()]]))

    -- Secrets, read into a file so that they never show on the screen.
    local secrets = dir .. "/secrets"
    run(([[f = io.open(%q, "w") f:write(x.sim:key(), "\n", x.cloud._token, "\n") f:close()]])
      :format(secrets))
    local key, token = H.read_file(secrets):match("^([^\n]+)\n([^\n]+)\n$")
    assert.truthy(key and token)

    run([[x:close()]])
    assert.equal("ayla.Explorer (closed)", run([[x]]))

    assert.is_nil(screen:find("table: 0x", 1, true), screen)
    for _, secret in ipairs { key, token, "demo-password", "ayla-sim-secret" } do
      assert.is_nil(screen:find(secret, 1, true), "a secret is on the screen")
    end
  end)
end)
