/* target.c — a multi-threaded process for the remote-call engine's tests.
 *
 * "parked": the main thread reads commands from stdin; four workers loop on a blocking call
 * with a PARK_MS timeout (poll, epoll_wait, a condition-variable wait = futex, clock_nanosleep)
 * and count their wake-ups: each injection into them restarts a call with a timeout. PARK_MS
 * is 150: with 50 a worker woke up between the loader's sampling and its stop too often on a
 * loaded CI machine (5 s without one safe stop of the epoll_wait thread). "ping" prints "pong <main> <poll> <epoll> <futex> <sleep>";
 * a worker that stops counting after an injection was broken by it. "quit" exits.
 * "busy": the main thread and one worker compute forever (no thread is ever parked).
 * Prints "READY <pid> <tid of each worker>" when started.
 */
#define _GNU_SOURCE
#define PARK_MS 150
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static atomic_long counts[5];
static atomic_int tids[5];
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;

static void *w_poll(void *a)
{
	(void)a;
	tids[1] = syscall(SYS_gettid);
	int fd = eventfd(0, 0);
	struct pollfd p = {fd, POLLIN, 0};
	for (;;) {
		poll(&p, 1, PARK_MS);
		counts[1]++;
	}
	return NULL;
}

static void *w_epoll(void *a)
{
	(void)a;
	tids[2] = syscall(SYS_gettid);
	int ep = epoll_create1(0), fd = eventfd(0, 0);
	struct epoll_event ev = {.events = EPOLLIN}, out;
	epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
	for (;;) {
		epoll_wait(ep, &out, 1, PARK_MS);
		counts[2]++;
	}
	return NULL;
}

static void *w_futex(void *a)
{
	(void)a;
	tids[3] = syscall(SYS_gettid);
	for (;;) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += PARK_MS * 1000000L;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_mutex_lock(&mu);
		pthread_cond_timedwait(&cv, &mu, &ts);
		pthread_mutex_unlock(&mu);
		counts[3]++;
	}
	return NULL;
}

static void *w_sleep(void *a)
{
	(void)a;
	tids[4] = syscall(SYS_gettid);
	for (;;) {
		struct timespec ts = {0, PARK_MS * 1000000L};
		clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, NULL);
		counts[4]++;
	}
	return NULL;
}

static void *w_spin(void *a)
{
	(void)a;
	tids[1] = syscall(SYS_gettid);
	for (;;)
		counts[1]++;
	return NULL;
}

int main(int argc, char **argv)
{
	pthread_t t;
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc > 1 && !strcmp(argv[1], "busy")) {
		pthread_create(&t, NULL, w_spin, NULL);
		while (!tids[1])
			;
		printf("READY %d %d\n", getpid(), tids[1]);
		for (;;)
			counts[0]++;
	}
	void *(*fns[])(void *) = {w_poll, w_epoll, w_futex, w_sleep};
	for (int i = 0; i < 4; i++)
		pthread_create(&t, NULL, fns[i], NULL);
	for (int i = 1; i < 5; i++)
		while (!tids[i])
			usleep(1000);
	printf("READY %d %d %d %d %d\n", getpid(), tids[1], tids[2], tids[3], tids[4]);
	char line[128];
	while (fgets(line, sizeof line, stdin)) {
		counts[0]++;
		if (!strncmp(line, "ping", 4))
			printf("pong %ld %ld %ld %ld %ld\n", counts[0], counts[1], counts[2], counts[3], counts[4]);
		else if (!strncmp(line, "quit", 4))
			return 0;
	}
	return 0;
}
