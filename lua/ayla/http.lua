-- ayla.http: one HTTP request on the I/O thread, waited for through the
-- scheduler (blocks at the REPL, yields inside a task).
local core = require "ayla.core"
local scheduler = require "ayla.scheduler"

local M = {}

-- M.stats() -> { requests, connections, reused, retries, open, idle }: the
-- counters of this Lua state's pool of kept-alive connections (csrc/http.c):
-- requests started, connections opened, requests sent over a connection
-- used before, requests sent again after a stale one (see http.c), and the
-- connections open (or opening) and idle now.
function M.stats()
  return core._http_stats()
end

-- "https://host:port/base" -> { tls, host, port, prefix }
function M.parse_base(url)
  local scheme, authority, prefix = url:match("^(https?)://([^/]+)(.*)$")
  if not scheme then return nil, ("not an http(s) URL: %s"):format(url) end
  local host, port = authority:match("^%[(.+)%]:?(%d*)$")
  if not host then host, port = authority:match("^([^:]+):?(%d*)$") end
  if not host then return nil, ("bad host in %s"):format(url) end
  port = tonumber(port) or (scheme == "https" and 443 or 80)
  return { tls = scheme == "https", host = host, port = port, prefix = prefix:gsub("/$", "") }
end

-- M.request(base, { method, path, authorization, body, timeout, verify, ca_file })
-- -> status, body, retry_after | nil, message
function M.request(base, opts)
  local req, err = core.request {
    method = opts.method or "GET", host = base.host, port = base.port, tls = base.tls,
    verify = opts.verify, ca_file = opts.ca_file, path = base.prefix .. opts.path,
    authorization = opts.authorization,
    content_type = opts.body and "application/json" or nil, body = opts.body,
    timeout = opts.timeout,
  }
  if not req then return nil, err end
  scheduler.await(req)
  local status, body, retry_after = req:result()
  req:cancel()
  return status, body, retry_after
end

return M
