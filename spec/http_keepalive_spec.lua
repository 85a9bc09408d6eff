-- HTTP keep-alive: REST requests to the same scheme, host and port share a
-- small pool of kept-alive connections (csrc/http.c). The simulator's HTTP
-- server keeps connections alive (lws_http_transaction_completed) and closes
-- an idle one after lws' default keepalive_timeout of 5 s.
local ayla = require "ayla"
local core = require "ayla.core"
local http = require "ayla.http"

local DSN = "AC000W000000001"
local CAP = 6 -- POOL_PER_HOST in csrc/http.c

local pool = http.stats

local function request(t)
  local before = pool().reused
  local r = assert(core.request(t))
  assert(r:wait(10), "the request should finish")
  local status, body, extra = r:result()
  r:cancel()
  return status, body, extra, pool().reused > before -- went over a connection used before
end

-- A toy HTTP/1.1 server (python3): the first request on a connection gets
-- "200 ok <n>" kept alive; the second is read, logged and answered by
-- closing the connection, as a server that dropped an idle connection just
-- as the request came.
local TOY = [[
import socket, sys, threading
log = open(sys.argv[2], "a", buffering=1)
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(16)
open(sys.argv[1], "w").write(str(srv.getsockname()[1]))
count = [0]
def serve(c):
    buf, n = b"", 0
    while True:
        while b"\r\n\r\n" not in buf:
            d = c.recv(4096)
            if not d:
                c.close(); return
            buf += d
        head, buf = buf.split(b"\r\n\r\n", 1)
        length = 0
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v)
        while len(buf) < length:
            buf += c.recv(4096)
        buf = buf[length:]
        n += 1
        log.write(head.split(b"\r\n")[0].decode() + " #%d\n" % n)
        if n >= 2:
            c.close(); return
        count[0] += 1
        body = b"ok %d" % count[0]
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
]]

describe("HTTP keep-alive", function()
  it("N sequential writes open one connection", function()
    local sim <close> = assert(ayla.sim {})
    local before = pool()
    local cloud = assert(ayla.cloud(sim:cloud_options()))
    assert(cloud:properties(DSN)) -- signs in: the first connection
    for i = 1, 20 do assert(cloud:set(DSN, "input", i)) end
    local st = http.stats()
    assert.equal(1, st.connections - before.connections)
    assert.equal(cloud.stats.requests, st.requests - before.requests)
    assert.equal(cloud.stats.requests - 1, st.reused - before.reused)
    assert.equal(22, sim:stats().rest_requests)
    assert.equal(1, st.idle - before.idle) -- kept for the next one
  end)

  it("reports each request's connection: new, then reused", function()
    local sim <close> = assert(ayla.sim {})
    local t = { host = "127.0.0.1", port = sim:port(), tls = false, path = "/apiv1/devices.json" }
    local status, _, _, reused = request(t)
    assert.equal(401, status)
    assert.is_false(reused)
    status, _, _, reused = request(t)
    assert.equal(401, status)
    assert.is_true(reused)
  end)

  it("over TLS: one handshake for N writes, verified as before", function()
    local dir = H.tmpdir()
    finally(function() H.rmdir(dir) end)
    assert(H.sh(("openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj '/CN=127.0.0.1' "
      .. "-addext 'subjectAltName=IP:127.0.0.1,DNS:localhost' -keyout '%s/k.pem' "
      .. "-out '%s/c.pem' 2>/dev/null"):format(dir, dir)), "openssl could not make a certificate")
    assert(H.sh(("openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj '/CN=other.example' "
      .. "-addext 'subjectAltName=DNS:other.example' -keyout '%s/ok.pem' "
      .. "-out '%s/oc.pem' 2>/dev/null"):format(dir, dir)), "openssl could not make a certificate")
    local sim <close> = assert(ayla.sim { cert_file = dir .. "/c.pem", key_file = dir .. "/k.pem" })
    local before = pool()
    local cloud = assert(ayla.cloud(sim:cloud_options { ca_file = dir .. "/c.pem" }))
    assert(cloud:properties(DSN))
    for i = 1, 20 do assert(cloud:set(DSN, "input", i)) end
    local st = http.stats()
    assert.equal(1, st.connections - before.connections)
    assert.equal(cloud.stats.requests - 1, st.reused - before.reused)
    -- untrusted: refused, and the message is the one it always was
    local untrusted = assert(ayla.cloud(sim:cloud_options()))
    local none, err = untrusted:devices()
    assert.is_nil(none)
    assert.matches("TLS: the certificate of 127.0.0.1 was refused: self.signed certificate", err)
    -- trusted CA, wrong name: the host-name check still applies
    local other <close> = assert(ayla.sim { cert_file = dir .. "/oc.pem", key_file = dir .. "/ok.pem" })
    local status, why = request { host = "127.0.0.1", port = other:port(), tls = true,
                                  ca_file = dir .. "/oc.pem", path = "/apiv1/devices.json" }
    assert.is_nil(status)
    assert.matches("^TLS: the certificate of 127.0.0.1 was refused: .*mismatch", why)
    if H.localhost_resolves() then -- by name, with SNI
      status = request { host = "localhost", port = sim:port(), tls = true,
                         ca_file = dir .. "/c.pem", path = "/apiv1/devices.json" }
      assert.equal(401, status)
    end
  end)

  it("concurrent requests use up to the cap per host, the rest wait their turn", function()
    local sim <close> = assert(ayla.sim {})
    local cloud = assert(ayla.cloud(sim:cloud_options()))
    assert(cloud:properties(DSN))
    local before = pool()
    sim:rest_fault("slow", 16, 0.2) -- so that they overlap
    local sched = ayla.scheduler()
    local done, peak = 0, 0
    for i = 1, 16 do
      sched:spawn(function()
        assert(cloud:set(DSN, "input", 100 + i))
        done = done + 1
      end)
    end
    while sched:step(0.05) > 0 do peak = math.max(peak, pool().open) end
    assert.equal(16, done)
    local st = pool()
    local opened = st.connections - before.connections
    assert.is_true(opened >= 2, "opened " .. opened)
    assert.is_true(opened <= CAP - 1, "opened " .. opened) -- one was idle already
    assert.is_true(peak <= CAP + before.open, "peak " .. peak)
    assert.equal(16, st.requests - before.requests)
  end)

  it("a connection the server closed while idle is dropped, and the next request opens another",
    function()
    -- the servers of the tests before are gone: so are their connections
    assert(H.wait_until(function() return pool().open == 0 end, 5))
    local sim <close> = assert(ayla.sim {})
    local t = { host = "127.0.0.1", port = sim:port(), tls = false, path = "/apiv1/devices.json" }
    local before = pool()
    assert.equal(401, (request(t)))
    assert.equal(1, pool().idle)
    -- the sim closes idle connections after 5 s
    assert(H.wait_until(function() return pool().idle == 0 end, 10),
      "the server should have closed the idle connection")
    local status, _, _, reused = request(t)
    assert.equal(401, status)
    assert.is_false(reused)
    assert.equal(2, pool().connections - before.connections)
    assert.equal(0, pool().retries - before.retries)
  end)

  it("requests after the server went away and came back succeed", function()
    local sim = assert(ayla.sim {})
    local port = sim:port()
    local cloud = assert(ayla.cloud(sim:cloud_options()))
    assert(cloud:properties(DSN))
    local opts = sim:cloud_options()
    sim:stop() -- closes every connection, the idle one too
    assert(H.wait_until(function() return pool().idle == 0 end, 5))
    local again <close> = assert(ayla.sim { port = port }) -- luacheck: ignore
    local c2 = assert(ayla.cloud(opts))
    assert(c2:properties(DSN))
    assert(c2:set(DSN, "input", 7))
  end)

  it("a stale connection: an idempotent request is sent again once, a written POST is not",
    function()
    local dir = H.tmpdir()
    finally(function() H.stop_toy(dir) end)
    local port = H.start_toy(dir, TOY, ("'%s/log'"):format(dir))
    local t = { host = "127.0.0.1", port = port, tls = false, path = "/a" }
    local before = pool()
    local status, body = request(t)
    assert.equal(200, status)
    assert.equal("ok 1", body)
    -- GET on the idle connection: the server closes it without an answer;
    -- retried once on a fresh connection
    status, body = request(t)
    assert.equal(200, status)
    assert.equal("ok 2", body)
    assert.equal(1, pool().retries - before.retries)
    assert.equal(2, pool().connections - before.connections)
    -- POST on the idle connection: written, so perhaps processed: not retried
    local why
    status, why = request { host = "127.0.0.1", port = port, tls = false, method = "POST",
                            path = "/b", body = "{}", content_type = "application/json" }
    assert.is_nil(status)
    assert.equal("the connection closed before the response was complete", why)
    assert.equal(1, pool().retries - before.retries)
    local log = H.read_file(dir .. "/log")
    assert.matches("GET /a HTTP/1.1 #1\nGET /a HTTP/1.1 #2\nGET /a HTTP/1.1 #1\nPOST /b HTTP/1.1 #2\n",
      log, 1, true)
  end)

  it("errors are the ones they were", function()
    local sim <close> = assert(ayla.sim {})
    local status, why = request { host = "127.0.0.1", port = 1, tls = false }
    assert.is_nil(status)
    assert.equal("cannot reach 127.0.0.1:1: Unable to connect", why)
    local t = { host = "127.0.0.1", port = sim:port(), tls = false, path = "/apiv1/devices.json" }
    t.max_response = 5
    status, why = request(t)
    assert.is_nil(status)
    assert.equal("the response is larger than max_response", why)
    t.max_response = nil
    sim:rest_fault("slow", 1, 1)
    t.timeout = 0.3
    status, why = request(t)
    assert.is_nil(status)
    assert.equal("no complete answer within 0.3 s (timeout)", why)
    t.timeout = nil
    assert.equal(401, (request(t))) -- and the pool goes on
  end)

  it("closing with idle connections leaves nothing behind", function()
    -- a child process ends with kept-alive connections open: lua_close must
    -- free them (ASan and valgrind runs of the specs check the leak part)
    local dir = H.tmpdir()
    finally(function() H.rmdir(dir) end)
    local f = assert(io.open(dir .. "/child.lua", "w"))
    f:write(([[
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = %q .. "/?.so;" .. package.cpath
local ayla = require "ayla"
local http = require "ayla.http"
local sim = assert(ayla.sim {})
local cloud = assert(ayla.cloud(sim:cloud_options()))
assert(cloud:properties("AC000W000000001"))
assert(http.stats().idle == 1)
local s = assert(ayla.sim {})
local c2 = assert(ayla.cloud(s:cloud_options()))
assert(c2:properties("AC000W000000001"))
assert(http.stats().idle == 2)
print("ok")
]]):format(H.build))
    f:close()
    local p = io.popen(("lua5.4 '%s/child.lua' 2>&1; echo \"exit=$?\""):format(dir))
    local out = p:read("a")
    p:close()
    assert.matches("ok\nexit=0\n$", out)
  end)
end)
