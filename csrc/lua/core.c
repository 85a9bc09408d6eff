/*
 * ayla.core: the C half of the module. It exposes the DSS client and the
 * simulator as two userdata types; policy and friendliness live in
 * the Lua files of lua/ayla on top of it.
 */
#include "lcommon.h"

#include "io.h"
#include "util.h"

#include <libwebsockets.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int opt_field(lua_State *L, int t, const char *name, int type, const char *tname)
{
	/* rawget: a value from an __index metamethod would be owned by nobody,
	 * and the C strings read here must live as long as the table does. */
	lua_pushstring(L, name);
	int got = lua_rawget(L, t);
	if (got == LUA_TNIL) {
		lua_pop(L, 1);
		return 0;
	}
	if (got != type)
		luaL_error(L, "option '%s' must be a %s, not a %s", name, tname,
			   luaL_typename(L, -1));
	return 1;
}

const char *ayla_opt_string(lua_State *L, int t, const char *name, const char *def)
{
	if (!opt_field(L, t, name, LUA_TSTRING, "string"))
		return def;
	const char *s = lua_tostring(L, -1);
	lua_pop(L, 1); /* still referenced by the options table */
	return s;
}

double ayla_opt_number(lua_State *L, int t, const char *name, double def)
{
	if (!opt_field(L, t, name, LUA_TNUMBER, "number"))
		return def;
	double v = (double)lua_tonumber(L, -1);
	lua_pop(L, 1);
	return v;
}

lua_Integer ayla_opt_integer(lua_State *L, int t, const char *name, lua_Integer def)
{
	if (!opt_field(L, t, name, LUA_TNUMBER, "number"))
		return def;
	int isint;
	lua_Integer v = lua_tointegerx(L, -1, &isint);
	if (!isint)
		luaL_error(L, "option '%s' must be an integer", name);
	lua_pop(L, 1);
	return v;
}

int ayla_opt_boolean(lua_State *L, int t, const char *name, int def)
{
	if (!opt_field(L, t, name, LUA_TBOOLEAN, "boolean"))
		return def;
	int v = lua_toboolean(L, -1);
	lua_pop(L, 1);
	return v;
}

void ayla_set_number(lua_State *L, const char *name, double value)
{
	lua_pushnumber(L, value);
	lua_setfield(L, -2, name);
}

void ayla_set_integer(lua_State *L, const char *name, lua_Integer value)
{
	lua_pushinteger(L, value);
	lua_setfield(L, -2, name);
}

void ayla_set_string(lua_State *L, const char *name, const char *value)
{
	lua_pushstring(L, value);
	lua_setfield(L, -2, name);
}

void ayla_new_type(lua_State *L, const char *name, const luaL_Reg *meta, const luaL_Reg *methods)
{
	luaL_newmetatable(L, name);
	luaL_setfuncs(L, meta, 0);
	lua_newtable(L);
	luaL_setfuncs(L, methods, 0);
	lua_setfield(L, -2, "__index");
	lua_pop(L, 1);
}

#define IO_MT  "ayla.core.IO"
#define IO_KEY "ayla.core.io" /* registry: weak table holding this state's hub */

typedef struct {
	struct ayla_io *io;
	unsigned long long seen; /* notifications already waited for */
} LIO;

static int io_gc(lua_State *L)
{
	LIO *lio = luaL_checkudata(L, 1, IO_MT);
	ayla_io_unref(lio->io);
	lio->io = NULL;
	return 0;
}

/* Pushes this Lua state's I/O hub, starting it if no live object holds it:
 * one I/O thread per module instance, ended by the collector with the last
 * stream. Returns NULL (with a message pushed instead) on failure. */
struct ayla_io *ayla_push_io(lua_State *L)
{
	if (luaL_getsubtable(L, LUA_REGISTRYINDEX, IO_KEY) == 0) {
		lua_createtable(L, 0, 1);
		lua_pushliteral(L, "v");
		lua_setfield(L, -2, "__mode");
		lua_setmetatable(L, -2);
	}
	if (lua_getfield(L, -1, "hub") == LUA_TUSERDATA) {
		LIO *lio = lua_touserdata(L, -1);
		if (lio->io) {
			lua_remove(L, -2);
			return lio->io;
		}
	}
	lua_pop(L, 1);
	LIO *lio = lua_newuserdatauv(L, sizeof *lio, 0);
	lio->io = NULL;
	lio->seen = 0;
	if (luaL_newmetatable(L, IO_MT)) {
		lua_pushcfunction(L, io_gc);
		lua_setfield(L, -2, "__gc");
	}
	lua_setmetatable(L, -2);
	char err[256];
	lio->io = ayla_io_new(err, sizeof err);
	if (!lio->io) {
		lua_pop(L, 2);
		lua_pushstring(L, err);
		return NULL;
	}
	lua_pushvalue(L, -1);
	lua_setfield(L, -3, "hub");
	lua_remove(L, -2);
	return lio->io;
}

/* core.wait_any(seconds) -> true when something finished on the I/O thread
 * (a request completed, events became pending) since the last call */
static int core_wait_any(lua_State *L)
{
	double seconds = luaL_checknumber(L, 1);
	if (!ayla_push_io(L))
		return lua_error(L);
	LIO *lio = lua_touserdata(L, -1);
	lua_pushboolean(L, ayla_io_wait(lio->io, seconds, &lio->seen));
	return 1;
}

/* core.monotime() -> seconds on a clock that never jumps */
static int core_monotime(lua_State *L)
{
	lua_pushnumber(L, ayla_monotime());
	return 1;
}

/* core.mtime(path) -> modification time in seconds, or nil, message */
static int core_mtime(lua_State *L)
{
	struct stat st;
	const char *path = luaL_checkstring(L, 1);
	if (stat(path, &st) != 0)
		return luaL_fileresult(L, 0, path);
	lua_pushnumber(L, (lua_Number)st.st_mtim.tv_sec + (lua_Number)st.st_mtim.tv_nsec / 1e9);
	return 1;
}

/* core.sleep(seconds): blocks the calling thread (the I/O threads go on) */
static int core_sleep(lua_State *L)
{
	double s = luaL_checknumber(L, 1);
	if (s > 0) {
		struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
		while (nanosleep(&ts, &ts) != 0)
			;
	}
	return 0;
}

/* core.fsync(file) -> true, or nil, message: the file's buffered writes and
 * then the kernel's reach the disk (the event journal's durability point).
 * core.fsync(path) does it for a file or directory by name: after a rename,
 * the directory's entry. */
static int core_fsync(lua_State *L)
{
	if (lua_type(L, 1) == LUA_TSTRING) {
		const char *path = lua_tostring(L, 1);
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			return luaL_fileresult(L, 0, path);
		int ok = fsync(fd) == 0;
		int saved = errno;
		close(fd);
		errno = saved;
		return luaL_fileresult(L, ok, path);
	}
	luaL_Stream *p = luaL_checkudata(L, 1, LUA_FILEHANDLE);
	luaL_argcheck(L, p->closef != NULL, 1, "attempt to use a closed file");
	if (fflush(p->f) != 0)
		return luaL_fileresult(L, 0, NULL);
	return luaL_fileresult(L, fsync(fileno(p->f)) == 0, NULL);
}

/* core.create_private(path) -> true, or nil, message: creates the file if it
 * is missing, readable by its owner only (0600), whatever the umask */
static int core_create_private(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1);
	int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (fd < 0)
		return luaL_fileresult(L, 0, path);
	close(fd);
	lua_pushboolean(L, 1);
	return 1;
}

int luaopen_ayla_core(lua_State *L);
int luaopen_ayla_core(lua_State *L)
{
	static const luaL_Reg functions[] = {
		{"monotime", core_monotime},
		{"sleep", core_sleep},
		{"mtime", core_mtime},
		{"fsync", core_fsync},
		{"create_private", core_create_private},
		{"wait_any", core_wait_any},
		{NULL, NULL},
	};
	luaL_newlib(L, functions);
	ayla_open_request(L);
	lua_setfield(L, -2, "request");
	ayla_open_stream(L);
	lua_setfield(L, -2, "stream");
	ayla_open_sim(L);
	lua_setfield(L, -2, "sim");
	lua_pushstring(L, lws_get_library_version());
	lua_setfield(L, -2, "lws_version");
	return 1;
}
