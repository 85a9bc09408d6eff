-- wss:// against the simulator with certificates made here, by the test.
local ayla = require "ayla"

local dir

local function make_cert(name, cn, san)
  assert(H.sh(("openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj '/CN=%s' "
    .. "-addext 'subjectAltName=%s' -keyout '%s/%s.key' -out '%s/%s.pem' 2>/dev/null")
    :format(cn, san, dir, name, dir, name)), "openssl could not make a certificate")
  return dir .. "/" .. name .. ".pem", dir .. "/" .. name .. ".key"
end

local function settle(s)
  return H.wait_until(function()
    return s:status() == "open" or s:stats().connect_failures > 0
  end, 5)
end

describe("wss://", function()
  local good_cert, good_key, other_cert, other_key
  setup(function()
    dir = H.tmpdir()
    good_cert, good_key = make_cert("good", "127.0.0.1", "IP:127.0.0.1,DNS:localhost")
    other_cert, other_key = make_cert("other", "other.example", "DNS:other.example")
  end)
  teardown(function() H.rmdir(dir) end)

  it("refuses an unknown certificate by default and says why", function()
    local sim <close> = assert(ayla.sim { cert_file = good_cert, key_file = good_key })
    assert.equal("wss", sim:url():match("^(%a+)"))
    local s <close> = assert(sim:stream())
    settle(s)
    local state, err = s:status()
    assert.are_not.equal("open", state)
    assert.matches("certificate .* refused: self.signed certificate", err)
    assert.matches("ca_file", err)
    assert.equal(0, sim:stats().connections)
    -- next() says why nothing comes
    local ev, timeout, why = s:next(0.3)
    assert.is_nil(ev)
    assert.equal("timeout", timeout)
    assert.matches("^not connected: TLS: the certificate", why)
  end)

  it("accepts the server when ca_file names its CA, and events flow", function()
    local sim <close> = assert(ayla.sim { cert_file = good_cert, key_file = good_key })
    local s <close> = assert(sim:stream { ca_file = good_cert })
    assert.equal("open", (H.wait_until(function() return s:status() == "open" and "open" end)))
    sim:emit { metadata = { event_type = "connectivity", dsn = "D" },
               connection = { status = "Online" } }
    local ev = assert(s:next(5))
    assert.equal("Online", ev.status)
  end)

  it("checks the certificate against the host name when connecting by name", function()
    if not H.localhost_resolves() then return pending("no name for localhost here") end
    local sim <close> = assert(ayla.sim { cert_file = good_cert, key_file = good_key })
    local s <close> = assert(ayla.stream { url = ("wss://localhost:%d/stream"):format(sim:port()),
                                           key = sim:key(), ca_file = good_cert })
    assert.equal("open", (H.wait_until(function() return s:status() == "open" and "open" end)))
    local o <close> = assert(ayla.sim { cert_file = other_cert, key_file = other_key })
    local bad <close> = assert(ayla.stream { url = ("wss://localhost:%d/stream"):format(o:port()),
                                             key = o:key(), ca_file = other_cert })
    settle(bad)
    local state, err = bad:status()
    assert.are_not.equal("open", state)
    assert.matches("mismatch", err)
  end)

  it("checks the host name even when the CA is trusted", function()
    local sim <close> = assert(ayla.sim { cert_file = other_cert, key_file = other_key })
    local s <close> = assert(sim:stream { ca_file = other_cert })
    settle(s)
    local state, err = s:status()
    assert.are_not.equal("open", state)
    assert.matches("mismatch", err)
  end)

  it("connects with verify = false and warns on stderr", function()
    local sim <close> = assert(ayla.sim { cert_file = other_cert, key_file = other_key })
    local out = dir .. "/stderr.txt"
    local script = ([[
      package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
      package.cpath = "%s/?.so;" .. package.cpath
      local ayla = require "ayla"
      local s = ayla.stream { url = "%s", key = "%s", verify = false }
      local t = os.time() + 5
      while s:status() ~= "open" and os.time() < t do require("ayla.core").sleep(0.01) end
      print((s:status()))
    ]]):format(H.build, sim:url(), sim:key())
    local p = io.popen("lua5.4 - 2>" .. out .. " <<'EOF'\n" .. script .. "\nEOF\n")
    local state = p:read("l")
    p:close()
    assert.equal("open", state)
    local warning = H.read_file(out)
    assert.matches("TLS verification is off for 127.0.0.1", warning)
  end)

  it("speaks HTTPS to the cloud services, verified the same way", function()
    local sim <close> = assert(ayla.sim { cert_file = good_cert, key_file = good_key })
    assert.matches("^https://", sim:http_url())
    local trusted = assert(ayla.cloud(sim:cloud_options { ca_file = good_cert }))
    assert.equal(10, #assert(trusted:devices()))
    local sub = assert(trusted:subscribe { oem_model = "plug", dsn = "*", subscription_type = "datapoint" })
    local s <close> = assert(sub:stream()) -- wss://, with the cloud's ca_file
    assert(H.wait_until(function() return s:status() == "open" end))
    local untrusted = assert(ayla.cloud(sim:cloud_options()))
    local none, err = untrusted:devices()
    assert.is_nil(none)
    assert.matches("TLS: the certificate of 127.0.0.1 was refused: self.signed certificate", err)
  end)

  it("reports an unreadable ca_file at once", function()
    local s, err = ayla.stream { url = "wss://127.0.0.1:1/stream", key = "k",
                                 ca_file = dir .. "/missing.pem" }
    assert.is_nil(s)
    assert.matches("cannot read ca_file: .*missing.pem", err)
  end)
end)
