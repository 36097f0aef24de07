/*
 * Corpus replay for the fuzz targets, included by tests/fuzz_*.c under K2P_FUZZ_REPLAY
 * after their LLVMFuzzerTestOneInput() and an int fz_failed, in which a target counts the
 * broken invariants of the current input (a target that aborts instead leaves it at 0).
 *
 * fz_replay_main(NAME, argc, argv) feeds every file named in argv[1..], directories
 * walked, one call per file; an input passes when it returns with fz_failed still 0 (a
 * crash ends the run).  It ends with the lines
 *   fuzz replay: NAME: N inputs
 *   N passed, N failed
 * and returns the exit status: 0 only if there was an input and none failed.
 */
#ifndef K2P_FUZZ_REPLAY_H
#define K2P_FUZZ_REPLAY_H

#include <dirent.h>
#include <sys/stat.h>

struct fz_replay_count {
	int pass, fail;
};

static int fz_replay_file(const char *path, struct fz_replay_count *c)
{
	FILE *fp = fopen(path, "rb");
	if (fp == NULL) {
		perror(path);
		c->fail++;
		return 1;
	}
	fseek(fp, 0, SEEK_END);
	long sz = ftell(fp);
	fseek(fp, 0, SEEK_SET);
	uint8_t *b = malloc(sz > 0 ? (size_t)sz : 1);
	size_t n = fread(b, 1, sz > 0 ? (size_t)sz : 0, fp);
	fclose(fp);
	fz_failed = 0;
	LLVMFuzzerTestOneInput(b, n);
	free(b);
	if (fz_failed) {
		printf("FAIL %s\n", path);
		c->fail++;
		return 1;
	}
	c->pass++;
	return 0;
}

static int fz_replay_path(const char *path, struct fz_replay_count *c)
{
	struct stat st;
	if (stat(path, &st) != 0) {
		perror(path);
		c->fail++;
		return 1;
	}
	if (!S_ISDIR(st.st_mode))
		return fz_replay_file(path, c);
	DIR *dp = opendir(path);
	struct dirent *de;
	int bad = 0;
	if (dp == NULL) {
		perror(path);
		c->fail++;
		return 1;
	}
	while ((de = readdir(dp)) != NULL) {
		char p[4096];
		if (de->d_name[0] == '.')
			continue;
		snprintf(p, sizeof p, "%s/%s", path, de->d_name);
		bad |= fz_replay_path(p, c);
	}
	closedir(dp);
	return bad;
}

static int fz_replay_main(const char *name, int argc, char **argv)
{
	struct fz_replay_count c = { 0, 0 };
	int bad = 0;
	for (int i = 1; i < argc; i++)
		bad |= fz_replay_path(argv[i], &c);
	printf("fuzz replay: %s: %d inputs\n", name, c.pass + c.fail);
	printf("%d passed, %d failed\n", c.pass, c.fail);
	return bad || c.pass + c.fail == 0;
}
#endif
