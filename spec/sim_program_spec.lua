-- The ayla-sim program: started as a process, driven through its stdin.
local ayla = require "ayla"

local function sim_path() return H.build .. "/ayla-sim" end

describe("ayla-sim", function()
  local dir, stdin, pid

  local function start(args)
    dir = H.tmpdir()
    stdin = assert(io.popen(("sh -c 'echo $$ > %s/pid; exec %s %s' > %s/out 2> %s/err")
      :format(dir, sim_path(), args, dir, dir), "w"))
    local out = H.wait_until(function()
      local f = io.open(dir .. "/out")
      local text = f and f:read("a")
      if f then f:close() end
      return text and text:match("key %S+\n") and text
    end, 5)
    assert(out, "ayla-sim printed no url and key")
    pid = H.read_file(dir .. "/pid"):match("%d+")
    return out:match("url (%S+)"), out:match("key (%S+)")
  end

  local function command(line)
    stdin:write(line, "\n")
    stdin:flush()
  end

  after_each(function()
    if pid then os.execute("kill " .. pid .. " 2>/dev/null") end
    if stdin then stdin:close() end
    H.rmdir(dir)
    pid, stdin, dir = nil, nil, nil
  end)

  it("prints its url and key, and replays a scenario renumbered from seq 1", function()
    local url, key = start("--scenario examples/scenarios/seed.jsonl --interval 0.02 --heartbeat 0.2")
    assert.matches("^ws://127%.0%.0%.1:%d+/stream$", url)
    assert.matches("^%x+$", key)
    local out = H.read_file(dir .. "/out")
    assert.matches("ayla%-sim: rest http://127%.0%.0%.1:%d+ %(user, device and subscription services%)", out)
    assert.matches("ayla%-sim: sign in as demo@ayla%-sim%.local / demo%-password", out)
    local s <close> = assert(ayla.stream { url = url, key = key })
    local types = {}
    for i = 1, 5 do
      local ev = assert(s:next(5))
      assert.equal(i, ev.seq)
      types[i] = ev.type
    end
    assert.same({ "connectivity", "datapoint", "datapointack", "location", "registration" }, types)
  end)

  it("takes fault commands on stdin", function()
    local url, key = start("--key testkey123 --heartbeat 0.1")
    assert.equal("testkey123", key)
    local s <close> = assert(ayla.stream { url = url, key = key,
                                           backoff = { min = 0.05, max = 0.1 } })
    assert(H.wait_until(function() return s:status() == "open" end))
    command("garble truncated")
    command([[emit {"metadata":{"event_type":"location","dsn":"X"}}]])
    local ev = assert(s:next(5))
    assert.equal("X", ev.dsn)
    assert.equal(1, s:stats().malformed.truncated)
    command("drop")
    assert(H.wait_until(function() return s:stats().connects == 2 end))
    command("stats")
    local line = H.wait_until(function() return H.read_file(dir .. "/out"):match("clients %d+[^\n]*") end)
    assert.matches("connections 2", line)
    command("behave 3")
    for _ = 1, 3 do assert(s:next(5)) end
    command("rest 5xx 1")
    command("expire")
    command("nonsense")
    assert(H.wait_until(function() return H.read_file(dir .. "/err"):match("cannot do 'nonsense'") end))
    assert.equal(0, s:stats().heartbeats - s:stats().heartbeats_answered)
  end)

  it("floods a client on connect when asked", function()
    local url, key = start("--flood 1000")
    local s <close> = assert(ayla.stream { url = url, key = key })
    for i = 1, 1000 do
      local ev = assert(s:next(5))
      assert.equal(i, ev.seq)
    end
    assert.is_nil(s:next(0.2))
    assert.equal(1000, s:stats().events_by_type.datapoint)
  end)

  it("answers an unknown key with a plain HTTP 401 at the handshake", function()
    local url = start("--key right-key")
    local port = url:match(":(%d+)/")
    local p = io.popen(([[bash -c 'exec 3<>/dev/tcp/127.0.0.1/%s
      printf "GET /stream?stream_key=wrong HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n]]
      .. [[Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n]]
      .. [[Sec-WebSocket-Version: 13\r\n\r\n" >&3; timeout 2 cat <&3']]):format(port))
    local answer = p:read("a")
    p:close()
    assert.matches("^HTTP/1%.%d 401", answer)
    assert.matches("\r\n\r\nunknown stream key\n$", answer)
  end)

  it("explains its usage and refuses bad arguments", function()
    local p = io.popen(sim_path() .. " --help")
    local text = p:read("a")
    assert.is_true(p:close())
    assert.matches("usage: ayla%-sim", text)
    assert.matches("garble", text)
    assert.is_false(H.sh(sim_path() .. " --bogus 2>/dev/null"))
    assert.is_false(H.sh(sim_path() .. " --cert only.pem 2>/dev/null"))
  end)

  it("refuses a scenario file that is not JSONL", function()
    local d = H.tmpdir()
    local f = assert(io.open(d .. "/bad.jsonl", "w"))
    f:write("# comment\n{\"seq\":\"1\"}\nnot json\n")
    f:close()
    local p = io.popen(sim_path() .. " --scenario " .. d .. "/bad.jsonl 2>&1")
    local text = p:read("a")
    local ok = p:close()
    H.rmdir(d)
    assert.is_falsy(ok)
    assert.matches("bad.jsonl:3: expected one JSON event object per line", text)
  end)
end)
