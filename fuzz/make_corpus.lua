-- Writes the seed corpus of the fuzz targets: fuzz/corpus/{frame,event,http}/.
--   lua5.4 fuzz/make_corpus.lua      (from the repository root)
-- For frame and event every input is one raw DSS message, as the WebSocket
-- delivers it: the five documented events, heartbeats, and one file per
-- malformed class we know (the simulator's garble kinds of csrc/sim.c, and
-- what lua-cjson may meet). For http every input is what a server sends on a
-- pooled connection (csrc/http_parse.c): valid responses of each framing and
-- one file per malformed class.
-- The files are committed; rerun this after changing it and commit the result.

local function read_seeds()
  local seeds = {}
  for line in io.lines("examples/scenarios/seed.jsonl") do
    if line:find("^{") then seeds[#seeds + 1] = line end
  end
  assert(#seeds == 5, "examples/scenarios/seed.jsonl: expected the five documented events")
  return seeds
end

local function frame(json) return #json .. "|" .. json end

local seeds = read_seeds()
local NAMES = { "connectivity", "datapoint", "datapointack", "location", "registration" }
local dp = seeds[2] -- a datapoint, the shape most mutations start from

local common = {
  heartbeat = "1|Z",
  keepalive = "1|X",
  ["heartbeat-inside-event"] = frame('{"seq":"2","metadata":{"dsn":"1|Z"}}'),
  ["two-records"] = frame(seeds[1]) .. frame(seeds[2]),
  ["records-with-blanks"] = frame(seeds[1]) .. "\n " .. frame(seeds[3]) .. " \r\n",
  ["len-in-characters"] = "20|" .. '{"dsn":"\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}x"}',
  ["len-mismatch"] = "9999|" .. seeds[1],
  ["len-19-digits"] = "1234567890123456789|{}",
  ["len-leading-zeros"] = "0002|{}",
  ["bar-in-string"] = frame('{"seq":"3","metadata":{"dsn":"a|b|c"},"x":"{[\\"|"}'),
  ["escaped-quotes"] = frame('{"seq":"4","s":"\\\\\\"}\\"","metadata":{"event_type":"location"}}'),
  -- the simulator's garble kinds (csrc/sim.c ayla_sim_garble)
  ["garble-no_separator"] = "garbage without a separator",
  ["garble-bad_prefix"] = '4x8|{"seq":"1"}',
  ["garble-empty_payload"] = "12|",
  ["garble-not_object"] = "5|[1,2]",
  ["garble-truncated"] = '200|{"seq":"1","metadata":{"event_type":"datapoint"',
  ["garble-trailing_data"] = "2|{}}junk",
  ["garble-binary"] = "\1\2 binary",
  empty = "",
  ["only-bar"] = "|",
  ["blank-payload"] = "3|   ",
  ["unterminated-string"] = '9|{"seq":"1',
  ["backslash-at-end"] = '4|{"a\\',
  ["seq-number"] = frame('{"seq":42,"metadata":{"event_type":"connectivity"}}'),
  ["seq-oversized"] = frame('{"seq":"99999999999999999999999","metadata":{}}'),
  ["seq-19-digits"] = frame('{"seq":"9999999999999999999"}'),
  ["seq-not-digits"] = frame('{"seq":"-1"}'),
  ["seq-nested-only"] = frame('{"metadata":{"seq":"5"}}'),
}
for i, json in ipairs(seeds) do common["seed-" .. i .. "-" .. NAMES[i]] = frame(json) end

-- JSON the frame scanner accepts and lua-cjson must judge: decode gives an
-- event or nil + message, never an error.
local depth_ok, depth_over = 900, 1100
local event_only = {
  ["json-truncated-inside"] = frame(dp:sub(1, 80) .. "}"),
  ["json-bad-literal"] = frame('{"seq":"1","x":tru}'),
  ["json-trailing-comma"] = frame('{"seq":"1",}'),
  ["json-single-quotes"] = frame("{'seq':'1'}"),
  ["types-metadata-string"] = frame('{"seq":"1","metadata":"datapoint"}'),
  ["types-metadata-null"] = frame('{"seq":"1","metadata":null,"dsn":{}}'),
  ["types-event_type-number"] = frame('{"seq":"1","metadata":{"event_type":5}}'),
  ["types-dsn-table"] = frame('{"metadata":{"event_type":"location","dsn":{"a":1}}}'),
  ["types-dsn-null-toplevel"] = frame('{"dsn":[1],"oem_model":true,'
    .. '"metadata":{"dsn":null,"oem_model":null}}'),
  ["types-body-array"] = frame('{"metadata":{"event_type":"datapoint"},"datapoint":[1,2]}'),
  ["types-value-object"] = frame('{"metadata":{"event_type":"datapoint","base_type":"integer"},'
    .. '"datapoint":{"value":{"v":1},"updated_at":{"t":1}}}'),
  ["types-time-table"] = frame('{"seq":"1","time":{},"metadata":{"event_type":"connectivity"},'
    .. '"connection":{"status":[],"event_time":null}}'),
  ["types-seq-object"] = frame('{"seq":{"n":1}}'),
  ["types-ack-strings"] = frame('{"metadata":{"event_type":"datapointack","base_type":"boolean"},'
    .. '"datapoint":{"value":"true","ack_status":"200","ack_message":1.5}}'),
  ["types-registration-bool"] = frame('{"metadata":{"event_type":"registration"},'
    .. '"registration_event":{"registered":true,"registered_at":5,"dsn":"D"}}'),
  ["types-location-numbers"] = frame('{"metadata":{"event_type":"location"},'
    .. '"location_event":{"lat":1.5,"long":null,"provider":{}}}'),
  ["unknown-event-type"] = frame('{"seq":"5","metadata":{"event_type":"firmware","dsn":"D1",'
    .. '"oem_model":"m"},"firmware_event":{"version":"1.2.3"}}'),
  ["huge-numbers"] = frame('{"seq":1e400,"metadata":{"event_type":"datapoint","base_type":"integer"},'
    .. '"datapoint":{"value":123456789012345678901234567890,"x":-1e309}}'),
  ["nan-inf-hex"] = frame('{"seq":nan,"metadata":{"event_type":"datapoint","dsn":inf,'
    .. '"base_type":"decimal"},"datapoint":{"value":0x1F}}'),
  ["invalid-utf8"] = frame('{"seq":"1","metadata":{"dsn":"\xff\xfe\xc0\x80","event_type":"d\xe9"}}'),
  ["escapes-unicode"] = frame('{"s\\u0065q":"7","seq":"8","metadata":{"dsn":"\\u0000\\ud800x"}}'),
  ["duplicate-keys"] = frame('{"seq":"1","seq":"2","metadata":{"event_type":"datapoint"},'
    .. '"metadata":{"event_type":"location"}}'),
  ["deep-nesting-ok"] = frame('{"a":' .. ("["):rep(depth_ok) .. ("]"):rep(depth_ok) .. "}"),
  ["deep-nesting-over"] = frame('{"a":' .. ("["):rep(depth_over) .. ("]"):rep(depth_over) .. "}"),
  ["empty-object"] = "2|{}",
  ["long-strings"] = frame('{"metadata":{"event_type":"datapoint","property_name":"'
    .. ("p"):rep(200) .. '"},"datapoint":{"value":"' .. ("v"):rep(300) .. '"}}'),
}

local function write_dir(dir, inputs)
  os.execute("mkdir -p " .. dir)
  for name, data in pairs(inputs) do
    local f = assert(io.open(dir .. "/" .. name, "wb"))
    f:write(data)
    f:close()
  end
end

local event = {}
for k, v in pairs(common) do event[k] = v end
for k, v in pairs(event_only) do event[k] = v end
write_dir("fuzz/corpus/frame", common)
write_dir("fuzz/corpus/event", event)

-- HTTP/1.1 responses (fuzz_http): the end of the input is the server's close.
local function resp(status_line, headers, body)
  return status_line .. "\r\n" .. table.concat(headers, "\r\n")
    .. (#headers > 0 and "\r\n" or "") .. "\r\n" .. (body or "")
end
local json = '{"datapoint":{"value":1}}'
local cl = "Content-Length: " .. #json
local te = "Transfer-Encoding: chunked"
local http = {
  ["ok-200-length"] = resp("HTTP/1.1 200 OK", { "Content-Type: application/json", cl }, json),
  ["ok-204"] = resp("HTTP/1.1 204 No Content", {}),
  ["ok-304"] = resp("HTTP/1.1 304 Not Modified", { "ETag: \"x\"" }),
  ["ok-401"] = resp("HTTP/1.1 401 Unauthorized", { "Content-Length: 40" },
    '{"error":"Your access token is invalid"}'),
  ["ok-429-retry-after"] = resp("HTTP/1.1 429 Too Many Requests",
    { "Retry-After: 30", "Content-Length: 0" }),
  ["ok-503-retry-after-date"] = resp("HTTP/1.1 503 Service Unavailable",
    { "Retry-After: Wed, 21 Oct 2015 07:28:00 GMT", "Content-Length: 2" }, "{}"),
  ["ok-chunked-ext-trailers"] = resp("HTTP/1.1 200 OK", { te },
    "5;name=\"v\"\r\nhello\r\n6 ; x\r\n world\r\nA\r\n0123456789\r\n0\r\nX-Trailer: 1\r\n\r\n"),
  ["ok-chunked-empty"] = resp("HTTP/1.1 200 OK", { te }, "0\r\n\r\n"),
  ["ok-length-0"] = resp("HTTP/1.1 200 OK", { "Content-Length: 0" }),
  ["ok-http10-to-close"] = resp("HTTP/1.0 200 OK", { "Content-Type: text/plain" }, "read to the close"),
  ["ok-http10-length"] = resp("HTTP/1.0 200 OK", { "Content-Length: 2" }, "ok"),
  ["ok-connection-close"] = resp("HTTP/1.1 200 OK", { "Connection: close", cl }, json),
  ["ok-continue-then-200"] = resp("HTTP/1.1 100 Continue", {})
    .. resp("HTTP/1.1 200 OK", { cl }, json),
  ["ok-bare-lf"] = "HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
  ["ok-no-reason"] = resp("HTTP/1.1 200", { "Content-Length: 2" }, "ok"),
  ["ok-length-list"] = resp("HTTP/1.1 200 OK", { "Content-Length: 2, 2" }, "ok"),
  ["ok-obs-fold"] = resp("HTTP/1.1 200 OK", { "X-A: a", " b", "Connection: keep-alive,", "\tclose",
    "Content-Length: 2" }, "ok"),
  ["extra-bytes-after-body"] = resp("HTTP/1.1 200 OK", { "Content-Length: 2" }, "okHTTP/1.1 200 OK\r\n"),
  ["two-responses"] = resp("HTTP/1.1 200 OK", { "Content-Length: 2" }, "ok")
    .. resp("HTTP/1.1 200 OK", { "Content-Length: 2" }, "ok"),
  ["no-content-with-body"] = resp("HTTP/1.1 204 No Content", { "Content-Length: 5" }, "hello"),
  ["not-modified-chunked"] = resp("HTTP/1.1 304 Not Modified", { te }, "5\r\nhello\r\n0\r\n\r\n"),
  ["chunk-size-huge"] = resp("HTTP/1.1 200 OK", { te }, "ffffffffffffffffffff\r\nabc"),
  ["chunk-size-15-digits"] = resp("HTTP/1.1 200 OK", { te }, "fffffffffffffff\r\nabc"),
  ["chunk-size-negative"] = resp("HTTP/1.1 200 OK", { te }, "-1\r\nabc"),
  ["chunk-size-0x"] = resp("HTTP/1.1 200 OK", { te }, "0x5\r\nhello\r\n0\r\n\r\n"),
  ["chunk-end-not-crlf"] = resp("HTTP/1.1 200 OK", { te }, "5\r\nhelloXY0\r\n\r\n"),
  ["chunk-cut"] = resp("HTTP/1.1 200 OK", { te }, "a\r\nhello"),
  ["length-negative"] = resp("HTTP/1.1 200 OK", { "Content-Length: -1" }, "abc"),
  ["length-overflow"] = resp("HTTP/1.1 200 OK", { "Content-Length: 18446744073709551617" }, "abc"),
  ["length-garbage"] = resp("HTTP/1.1 200 OK", { "Content-Length: 2abc" }, "ok"),
  ["length-conflict"] = resp("HTTP/1.1 200 OK", { "Content-Length: 2", "Content-Length: 3" }, "okk"),
  ["length-cut"] = resp("HTTP/1.1 200 OK", { "Content-Length: 100" }, "short"),
  ["length-and-chunked"] = resp("HTTP/1.1 200 OK", { "Content-Length: 3", te },
    "2\r\nok\r\n0\r\n\r\n"),
  ["chunked-not-last"] = resp("HTTP/1.1 200 OK", { "Transfer-Encoding: chunked, gzip" },
    "2\r\nok\r\n0\r\n\r\n"),
  ["space-before-colon"] = resp("HTTP/1.1 200 OK", { "Content-Length : 2" }, "ok"),
  ["fold-after-status"] = resp("HTTP/1.1 200 OK", { " Content-Length: 2" }, "ok"),
  ["missing-crlf"] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n",
  ["bare-cr"] = "HTTP/1.1 200 OK\rContent-Length: 2\r\n\r\nok",
  ["nul-in-head"] = resp("HTTP/1.1 200 OK", { "X: a\0", te, "Content-Length: 2" }, "ok"),
  ["nul-in-body"] = resp("HTTP/1.1 200 OK", { "Content-Length: 3" }, "a\0b"),
  ["status-bad"] = resp("HTTP/1.1 2x0 OK", { "Content-Length: 0" }),
  ["status-099"] = resp("HTTP/1.1 099 Low", {}),
  ["status-http2"] = resp("HTTP/2 200 OK", {}),
  ["blank-lines-first"] = "\r\n\n" .. resp("HTTP/1.1 200 OK", { "Content-Length: 2" }, "ok"),
  ["empty"] = "",
}
write_dir("fuzz/corpus/http", http)
