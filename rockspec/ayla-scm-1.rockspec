rockspec_format = "3.0"
package = "ayla"
version = "scm-1"
source = {
  url = "git+https://example.invalid/ayla.git", -- replace with the project's repository
}
description = {
  summary = "A live connection to the Ayla Datastream Service, a REST client and a rules engine",
  detailed = [[
A Lua 5.4 module with a C core (libwebsockets, OpenSSL): keeps a live
WebSocket to the Ayla Datastream Service and answers its heartbeats on its
own thread, decodes its events, writes device properties through the Ayla
REST API, and runs rule scripts (ayla-rules). Comes with ayla-sim, a local
Ayla cloud for tests and demos.
]],
}
dependencies = {
  "lua >= 5.4, < 5.5",
  "lua-cjson",
}
external_dependencies = {
  LIBWEBSOCKETS = { header = "libwebsockets.h", library = "websockets" },
  OPENSSL = { header = "openssl/ssl.h", library = "ssl" },
  JANSSON = { header = "jansson.h", library = "jansson" },
}
build = {
  type = "cmake",
  variables = {
    CMAKE_BUILD_TYPE = "Release",
    AYLA_WERROR = "OFF", -- a user's newer compiler must not fail the install over a warning
    LIBDIR = "$(LIBDIR)",
    LUADIR = "$(LUADIR)",
    BINDIR = "$(BINDIR)",
  },
}
