/*
 * A plain main() for the libFuzzer targets: replays files and directories
 * through LLVMFuzzerTestOneInput, so the normal (gcc) build checks the corpus
 * and the crash regressions on every test run without clang.
 *
 *   fuzz_frame PATH...   (a directory means every file in it, by name)
 *
 * Each input runs in a child process, so one that aborts is reported by name
 * and the others still run. The last line is "<target>: N passed, N failed",
 * where <target> is the program name without its "fuzz_" prefix.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/* Optional, as in libFuzzer: targets that set up state once define it. */
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

static int passed, failed;

static int run_one(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		perror(path);
		return -1;
	}
	size_t cap = 4096, len = 0;
	uint8_t *buf = malloc(cap);
	size_t n;
	while (buf && (n = fread(buf + len, 1, cap - len, f)) > 0) {
		len += n;
		if (len == cap) {
			uint8_t *bigger = realloc(buf, cap *= 2);
			if (!bigger)
				free(buf);
			buf = bigger;
		}
	}
	fclose(f);
	if (!buf) {
		fprintf(stderr, "%s: out of memory\n", path);
		return -1;
	}
	/* libFuzzer never passes NULL, not even for an empty input. */
	LLVMFuzzerTestOneInput(buf, len);
	free(buf);
	return 0;
}

static void replay_file(const char *path)
{
	fflush(NULL);
	pid_t pid = fork();
	if (pid == 0)
		_exit(run_one(path) == 0 ? 0 : 2);
	int status = 0;
	if (pid < 0 || waitpid(pid, &status, 0) < 0) {
		perror("fork");
		status = -1;
	}
	if (status == 0) {
		passed++;
		return;
	}
	failed++;
	if (WIFSIGNALED(status))
		fprintf(stderr, "FAILED %s (signal %d)\n", path, WTERMSIG(status));
	else
		fprintf(stderr, "FAILED %s (exit %d)\n", path, WEXITSTATUS(status));
}

static int by_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every regular file of dir in name order; dot files and READMEs are not inputs. */
static void replay_dir(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d) {
		perror(dir);
		return;
	}
	char **names = NULL;
	size_t count = 0, cap = 0;
	struct dirent *e;
	/* one thread here; readdir_r is deprecated in glibc */
	// cppcheck-suppress readdirCalled
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.' || strncmp(e->d_name, "README", 6) == 0)
			continue;
		if (count == cap) {
			char **more = realloc(names, (cap = cap ? cap * 2 : 64) * sizeof *names);
			if (!more)
				break;
			names = more;
		}
		names[count] = strdup(e->d_name);
		if (names[count])
			count++;
	}
	closedir(d);
	qsort(names, count, sizeof *names, by_name);
	for (size_t k = 0; k < count; k++) {
		size_t plen = strlen(dir) + strlen(names[k]) + 2;
		char *path = malloc(plen);
		struct stat st;
		if (path) {
			snprintf(path, plen, "%s/%s", dir, names[k]);
			if (stat(path, &st) == 0 && S_ISREG(st.st_mode))
				replay_file(path);
		}
		free(path);
		free(names[k]);
	}
	free(names);
}

int main(int argc, char **argv)
{
	const char *name = strrchr(argv[0], '/');
	name = name ? name + 1 : argv[0];
	if (strncmp(name, "fuzz_", 5) == 0)
		name += 5;

	if (LLVMFuzzerInitialize)
		LLVMFuzzerInitialize(&argc, &argv);
	for (int i = 1; i < argc; i++) {
		struct stat st;
		if (stat(argv[i], &st) == 0 && S_ISDIR(st.st_mode))
			replay_dir(argv[i]);
		else if (stat(argv[i], &st) == 0)
			replay_file(argv[i]);
		else /* a target with no regressions yet has no directory */
			fprintf(stderr, "%s: not found, skipped\n", argv[i]);
	}
	if (passed + failed == 0) { /* a replay of nothing proves nothing */
		fprintf(stderr, "no inputs\n");
		failed++;
	}
	printf("%s: %d passed, %d failed\n", name, passed, failed);
	return failed != 0;
}
