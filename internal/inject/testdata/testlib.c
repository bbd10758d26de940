/* testlib.c — a stand-in agent for the remote-call engine's tests.
 *
 * Exports pm_inject_start(conf) like the agent: it appends "pid tid loads calls" to
 * <conf>.calls and returns 0 on the first call, 1 after (already running). Keys read from the
 * conf file: sleep_ms=N (sleep in the call first: lets a test kill the target mid-call),
 * ret=N (return N instead).
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static int loads, calls;

__attribute__((constructor)) static void ctor(void) { loads++; }

__attribute__((visibility("default"))) int pm_inject_start(const char *conf)
{
	long sleep_ms = 0, ret = -1000;
	char line[256];
	FILE *f = fopen(conf, "r");
	if (!f)
		return -2;
	while (fgets(line, sizeof line, f)) {
		if (!strncmp(line, "sleep_ms=", 9))
			sleep_ms = atol(line + 9);
		else if (!strncmp(line, "ret=", 4))
			ret = atol(line + 4);
	}
	fclose(f);
	if (sleep_ms > 0) {
		struct timespec ts = {sleep_ms / 1000, (sleep_ms % 1000) * 1000000L};
		nanosleep(&ts, NULL);
	}
	calls++;
	char path[4096];
	snprintf(path, sizeof path, "%s.calls", conf);
	FILE *m = fopen(path, "a");
	if (!m)
		return -3;
	fprintf(m, "%d %ld %d %d\n", getpid(), (long)syscall(SYS_gettid), loads, calls);
	fclose(m);
	if (ret != -1000)
		return (int)ret;
	return calls > 1 ? 1 : 0;
}
