-- Review of the connection pool (csrc/http.c): what a server sends at the
-- edges of a response, against a toy python3 server.
local core = require "ayla.core"
local http = require "ayla.http"

local pool = http.stats

local function request(t)
  local r = assert(core.request(t))
  assert(r:wait(20), "the request should finish")
  local status, body = r:result()
  r:cancel()
  return status, body
end

-- python3 toy.py PORTFILE [CERT KEY]: the path says how to answer.
--   /early   answers a POST after its head, waits 1 s, then reads its body
--   /tls-cut read-to-close body, then a TCP close without TLS close_notify
--   /tls-end read-to-close body, then close_notify
--   /len-cut Content-Length: 100 and 5 bytes, then a TCP close without close_notify
--   anything else: 200 "ok", kept alive
local TOY = [[
import socket, ssl, sys, threading, time
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(16)
ctx = None
if len(sys.argv) > 3:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[2], sys.argv[3])
open(sys.argv[1], "w").write(str(srv.getsockname()[1]))
def serve(c):
    if ctx:
        c = ctx.wrap_socket(c, server_side=True)
    buf = b""
    while True:
        while b"\r\n\r\n" not in buf:
            d = c.recv(65536)
            if not d:
                c.close(); return
            buf += d
        head, buf = buf.split(b"\r\n\r\n", 1)
        path = head.split(b" ")[1]
        length = 0
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v)
        if path == b"/early":
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nearly")
            time.sleep(1) # the client reads the answer with the body unsent
        if path in (b"/tls-cut", b"/tls-end"):
            c.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nthe whole body")
            if path == b"/tls-end":
                try:
                    c.unwrap()
                except Exception:
                    pass
            else:
                c.shutdown(socket.SHUT_RDWR) # no close_notify
            c.close(); return
        if path == b"/len-cut":
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort")
            c.shutdown(socket.SHUT_RDWR)
            c.close(); return
        while len(buf) < length:
            d = c.recv(1 << 20)
            if not d:
                c.close(); return
            buf += d
        buf = buf[length:]
        if path != b"/early":
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
]]

local function start_toy(dir, tls)
  return H.start_toy(dir, TOY, tls and ("'%s/c.pem' '%s/k.pem'"):format(dir, dir) or "")
end
local stop_toy = H.stop_toy

describe("HTTP pool review", function()
  -- lws 4.1 delivers the answer only once the buffered request has gone out
  -- (http.c checks lws_partial_buffered as well): either way, the request
  -- after an early answer must get its own answer.
  it("a request answered before it was all sent does not shift the next answer", function()
    local dir = H.tmpdir()
    finally(function() stop_toy(dir) end)
    local port = start_toy(dir, false)
    local before = pool()
    -- big enough that lws still holds part of it when the answer comes
    local status, body = request { host = "127.0.0.1", port = port, tls = false,
                                   method = "POST", path = "/early",
                                   body = ("x"):rep(32 << 20), content_type = "text/plain" }
    assert.equal(200, status)
    assert.equal("early", body)
    status, body = request { host = "127.0.0.1", port = port, tls = false, path = "/next" }
    assert.equal(200, status)
    assert.equal("ok", body)
    assert.is_true(pool().connections - before.connections <= 2)
  end)

  it("over TLS, a body up to the close needs close_notify; a cut Content-Length body fails",
    function()
    local dir = H.tmpdir()
    finally(function() stop_toy(dir) end)
    assert(H.sh(("openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj '/CN=127.0.0.1' "
      .. "-addext 'subjectAltName=IP:127.0.0.1' -keyout '%s/k.pem' "
      .. "-out '%s/c.pem' 2>/dev/null"):format(dir, dir)), "openssl could not make a certificate")
    local port = start_toy(dir, true)
    local t = { host = "127.0.0.1", port = port, tls = true, ca_file = dir .. "/c.pem" }
    t.path = "/tls-end"
    local status, body = request(t)
    assert.equal(200, status)
    assert.equal("the whole body", body)
    t.path = "/tls-cut"
    status, body = request(t)
    assert.is_nil(status)
    assert.matches("without close_notify", body)
    t.path = "/len-cut"
    status, body = request(t)
    assert.is_nil(status)
    assert.equal("the connection closed before the response was complete", body)
  end)
end)
