rockspec_format = "3.0"
package = "ayla"
version = "scm-1"
source = {
  -- TODO: the project's public repository (tools/rock.sh packs the work tree instead).
  url = "git+https://example.invalid/ayla.git",
}
description = {
  summary = "A live connection to the Ayla Datastream Service, a REST client and a rules engine",
  detailed = [[
A Lua 5.4 module with a C core (libwebsockets, OpenSSL): keeps a live
WebSocket to the Ayla Datastream Service and answers its heartbeats on its
own thread, decodes its events, writes device properties through the Ayla
REST API, and runs rule scripts (ayla-rules). Comes with ayla-sim, a local
Ayla cloud for tests and demos. Man pages for both programs are installed
into the rock's directory (share/man/man1).
]],
  -- TODO: homepage = the project's public page, once there is one.
  -- TODO: license = the project's license, once one is chosen (the repository has none yet).
  maintainer = "the ayla project",
  labels = { "ayla", "iot", "websocket", "rules" },
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
    -- Man pages go to the rock's own directory: LuaRocks passes no CMAKE_INSTALL_PREFIX, so
    -- an unset MANDIR would point at /usr/local. `luarocks remove` deletes them with the rock.
    MANDIR = "$(PREFIX)/share/man",
  },
}
