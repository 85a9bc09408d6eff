/*
 * ayla-rules: runs rule files. A small C host around lua/ayla/runner.lua:
 * it embeds Lua 5.4 with the ayla module built in, caps the interpreter's
 * memory, and turns signals into flags the runner polls (SIGHUP reloads,
 * SIGINT and SIGTERM stop, SIGUSR1 prints the status line).
 */
#include "util.h"

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int luaopen_ayla_core(lua_State *L);

/* Set by signal handlers, read by the runner: the only globals here. */
static volatile sig_atomic_t got_hup, got_stop, got_usr1;

static void on_signal(int sig)
{
	if (sig == SIGHUP)
		got_hup = 1;
	else if (sig == SIGUSR1)
		got_usr1 = 1;
	else if (got_stop)
		_exit(128 + sig); /* a second stop: the runner is stuck (a C-level loop) */
	else
		got_stop = 1;
}

/* host.take_signal() -> "int" | "hup" | "usr1" | nil */
static int take_signal(lua_State *L)
{
	if (got_stop) { /* stays set: a second signal then ends the process */
		lua_pushliteral(L, "int");
	} else if (got_hup) {
		got_hup = 0;
		lua_pushliteral(L, "hup");
	} else if (got_usr1) {
		got_usr1 = 0;
		lua_pushliteral(L, "usr1");
	} else {
		lua_pushnil(L);
	}
	return 1;
}

struct memory_cap {
	size_t used, limit;
};

/* Lua's allocator with a ceiling: past it, allocations fail and the Lua code
 * that asked gets "not enough memory" (a rule's string.rep bomb, say). */
static void *capped_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
	struct memory_cap *cap = ud;
	size_t old = ptr ? osize : 0;
	if (nsize == 0) {
		free(ptr);
		cap->used -= old;
		return NULL;
	}
	if (nsize > old && cap->used + (nsize - old) > cap->limit)
		return NULL;
	void *p = realloc(ptr, nsize);
	if (p)
		cap->used = cap->used - old + nsize;
	return p;
}

static int panic(lua_State *L)
{
	const char *msg = lua_tostring(L, -1);
	fprintf(stderr, "ayla-rules: unprotected error: %s\n", msg ? msg : "(not a string)");
	return 0;
}

static void warn_off(void *ud, const char *msg, int tocont)
{
	(void)ud, (void)msg, (void)tocont;
}

static int has_ayla(const char *dir)
{
	char probe[PATH_MAX + 32];
	snprintf(probe, sizeof probe, "%s/ayla/init.lua", dir);
	return access(probe, R_OK) == 0;
}

/* Where the ayla Lua files are: AYLA_LUA_DIR if set; else the source tree
 * this binary was built from while it exists (a development build); else
 * share/lua/5.4 beside the bin/ this program is in (a LuaRocks tree: the
 * rock's build directory is gone by then); else where CMake installed them. */
static void set_path(lua_State *L)
{
	char beside[PATH_MAX + 32] = "";
	const char *dir = getenv("AYLA_LUA_DIR");
	if (!dir && has_ayla(AYLA_SOURCE_LUA))
		dir = AYLA_SOURCE_LUA;
	if (!dir) {
		char exe[PATH_MAX];
		ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
		if (n > 0) {
			exe[n] = '\0';
			char *slash = strrchr(exe, '/'); /* .../bin/ayla-rules -> .../bin */
			if (slash)
				*slash = '\0';
			snprintf(beside, sizeof beside, "%s/../share/lua/5.4", exe);
			if (has_ayla(beside))
				dir = beside;
		}
	}
	if (!dir)
		dir = AYLA_INSTALL_LUA;
	lua_getglobal(L, "package");
	lua_getfield(L, -1, "path");
	lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s", dir, dir, lua_tostring(L, -1));
	lua_setfield(L, -3, "path");
	lua_pop(L, 2);
}

static int run(lua_State *L)
{
	int argc = (int)lua_tointeger(L, 1);
	char **argv = lua_touserdata(L, 2);
	luaL_openlibs(L);
	luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
	lua_pushcfunction(L, luaopen_ayla_core);
	lua_setfield(L, -2, "ayla.core"); /* built in: no core.so to find */
	lua_pop(L, 1);
	set_path(L);
	lua_getglobal(L, "require");
	lua_pushliteral(L, "ayla.runner");
	lua_call(L, 1, 1);
	lua_getfield(L, -1, "main");
	lua_createtable(L, argc, 0);
	for (int k = 1; k < argc; k++) {
		lua_pushstring(L, argv[k]);
		lua_rawseti(L, -2, k);
	}
	lua_createtable(L, 0, 1);
	lua_pushcfunction(L, take_signal);
	lua_setfield(L, -2, "take_signal");
	lua_call(L, 2, 1);
	return 1;
}

static int traceback(lua_State *L)
{
	const char *msg = lua_tostring(L, 1);
	luaL_traceback(L, L, msg ? msg : "(error object is not a string)", 1);
	return 1;
}

int main(int argc, char **argv)
{
	struct memory_cap cap = {0, (size_t)256 << 20};
	for (int k = 1; k + 1 < argc; k++)
		if (!strcmp(argv[k], "--memory")) {
			double mb;
			if (ayla_parse_number(argv[k + 1], 16, 1 << 20, &mb)) {
				fprintf(stderr,
					"ayla-rules: --memory takes a number of MB from 16 to 1048576\n");
				return 2;
			}
			cap.limit = (size_t)mb << 20;
		}
	lua_State *L = lua_newstate(capped_alloc, &cap);
	if (!L) {
		fprintf(stderr, "ayla-rules: cannot create the Lua state\n");
		return 1;
	}
	lua_atpanic(L, panic);
	lua_setwarnf(L, warn_off, NULL);

	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigaction(SIGHUP, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGUSR1, &sa, NULL);

	lua_pushcfunction(L, traceback);
	lua_pushcfunction(L, run);
	lua_pushinteger(L, argc);
	lua_pushlightuserdata(L, argv);
	int status = lua_pcall(L, 2, 1, 1);
	int code = 1;
	if (status != LUA_OK)
		fprintf(stderr, "ayla-rules: %s\n", lua_tostring(L, -1));
	else
		code = (int)luaL_optinteger(L, -1, 0);
	lua_close(L);
	return code;
}
