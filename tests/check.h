/* The smallest test harness: CHECK(cond, name) counts and reports; SKIP(why) counts a
 * check that could not be made here (never as passed); check_summary() ends a test
 * program with "N passed, N failed" (then ", N skipped" when something was skipped) and
 * the exit status. */
#ifndef K2P_CHECK_H
#define K2P_CHECK_H
#include <stdio.h>

static int check_passed, check_failed, check_skipped;

#define CHECK(cond, ...) do { \
	if (cond) { check_passed++; } \
	else { check_failed++; printf("FAIL %s:%d: ", __FILE__, __LINE__); \
	       printf(__VA_ARGS__); printf("\n"); } \
} while (0)

#define SKIP(...) do { \
	check_skipped++; printf("SKIP %s:%d: ", __FILE__, __LINE__); \
	printf(__VA_ARGS__); printf("\n"); \
} while (0)

static int check_summary(void)
{
	if (check_skipped)
		printf("%d passed, %d failed, %d skipped\n", check_passed, check_failed,
		       check_skipped);
	else
		printf("%d passed, %d failed\n", check_passed, check_failed);
	return check_failed ? 1 : 0;
}
#endif
