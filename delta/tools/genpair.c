/*
 * tp-genpair: write a synthetic base/fine-tune pair of bf16 safetensors for
 * benchmarks. Base weights ~ N(0, 0.02); the fine-tune adds N(0, 2e-4) to
 * every weight, a few ULP at typical magnitudes, as dense fine-tunes do.
 * Fixed seed: the same arguments always give the same files.
 *
 *   tp-genpair SIZE_MIB BASE_OUT FINETUNE_OUT
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ROWS 4096
#define COLS 4096 /* 32 MiB tensors */

static uint64_t rng = 20261128;

static uint64_t next(void)
{
	uint64_t z = (rng += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static double gauss(void)
{
	double u = ((double)(next() >> 11) + 0.5) / 9007199254740992.0;
	double v = (double)(next() >> 11) / 9007199254740992.0;
	return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

/* Round to nearest even, as frameworks convert fp32 to bf16. */
static uint16_t to_bf16(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	return (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}

static float from_bf16(uint16_t h)
{
	uint32_t u = (uint32_t)h << 16;
	float f;
	memcpy(&f, &u, 4);
	return f;
}

static void write_header(FILE *f, unsigned n)
{
	size_t cap = 128 + (size_t)n * 128, len = 0;
	char *h = malloc(cap);
	len += (size_t)snprintf(h + len, cap - len, "{\"__metadata__\":{\"format\":\"pt\"}");
	for (unsigned i = 0; i < n; i++) {
		uint64_t b = (uint64_t)i * ROWS * COLS * 2;
		len += (size_t)snprintf(h + len, cap - len,
					",\"layers.%u.weight\":{\"dtype\":\"BF16\",\"shape\":[%d,%d],"
					"\"data_offsets\":[%llu,%llu]}",
					i, ROWS, COLS, (unsigned long long)b,
					(unsigned long long)(b + (uint64_t)ROWS * COLS * 2));
	}
	len += (size_t)snprintf(h + len, cap - len, "}");
	while (len % 8)
		h[len++] = ' ';
	uint64_t l = len;
	fwrite(&l, 8, 1, f);
	fwrite(h, 1, len, f);
	free(h);
}

int main(int argc, char **argv)
{
	if (argc != 4 || atoi(argv[1]) < 32) {
		fputs("usage: tp-genpair SIZE_MIB(>=32) BASE_OUT FINETUNE_OUT\n", stderr);
		return 2;
	}
	unsigned n = (unsigned)atoi(argv[1]) / 32;
	FILE *b = fopen(argv[2], "wb"), *t = fopen(argv[3], "wb");
	uint16_t *bb = malloc(COLS * 2), *tt = malloc(COLS * 2);
	if (!b || !t || !bb || !tt)
		return 1;
	write_header(b, n);
	write_header(t, n);
	for (uint64_t r = 0; r < (uint64_t)n * ROWS; r++) {
		for (unsigned c = 0; c < COLS; c++) {
			bb[c] = to_bf16((float)(0.02 * gauss()));
			tt[c] = to_bf16(from_bf16(bb[c]) + (float)(2e-4 * gauss()));
		}
		fwrite(bb, 2, COLS, b);
		fwrite(tt, 2, COLS, t);
	}
	free(bb);
	free(tt);
	return fclose(b) == 0 && fclose(t) == 0 ? 0 : 1;
}
