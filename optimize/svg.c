/* A small SVG writer for the quality-versus-price scatter plot. */
#include "tp_optimize.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define W 800
#define H 500
#define X0 90.0  /* plot area */
#define X1 620.0 /* the legend goes right of it */
#define Y0 60.0
#define Y1 420.0
#define FONT "font-family=\"DejaVu Sans, Arial, sans-serif\""

/* s with XML's special characters escaped. */
static void put_text(FILE *f, const char *s)
{
	for (; *s; s++) {
		switch (*s) {
		case '&': fputs("&amp;", f); break;
		case '<': fputs("&lt;", f); break;
		case '>': fputs("&gt;", f); break;
		case '"': fputs("&quot;", f); break;
		default: fputc(*s, f);
		}
	}
}

/* A 1-2-5 step giving about `want` intervals over span. */
static double nice_step(double span, int want)
{
	double raw = span / want, p = pow(10, floor(log10(raw))), m = raw / p;
	return (m < 1.5 ? 1 : m < 3.5 ? 2 : m < 7.5 ? 5 : 10) * p;
}

typedef struct axes {
	double xmin, xmax, lmin, lmax; /* cost range; log10 KL range */
	double floor_kl;               /* where KL 0 is drawn */
} axes;

static double px(const axes *a, double cost)
{
	return X0 + (cost - a->xmin) / (a->xmax - a->xmin) * (X1 - X0);
}

static double py(const axes *a, double kl)
{
	double l = log10(kl > 0 ? kl : a->floor_kl);
	return Y1 - (l - a->lmin) / (a->lmax - a->lmin) * (Y1 - Y0);
}

static void set_axes(const tp_candidate_figures *c, size_t n, axes *a)
{
	double cmin = INFINITY, cmax = 0, kmin = INFINITY, kmax = 0;
	for (size_t i = 0; i < n; i++) {
		cmin = fmin(cmin, c[i].cost_per_1m);
		cmax = fmax(cmax, c[i].cost_per_1m);
		if (c[i].kl_mean > 0) {
			kmin = fmin(kmin, c[i].kl_mean);
			kmax = fmax(kmax, c[i].kl_mean);
		}
	}
	if (!isfinite(cmin))
		cmin = cmax = 0;
	if (!isfinite(kmin))
		kmin = kmax = 1e-3;
	/* KL 0 (an unquantized candidate) sits one decade under the least. */
	a->floor_kl = pow(10, floor(log10(kmin)) - 1);
	bool zero = false;
	for (size_t i = 0; i < n; i++)
		zero |= !(c[i].kl_mean > 0);
	a->lmin = zero ? log10(a->floor_kl) : floor(log10(kmin));
	a->lmax = ceil(log10(kmax));
	if (a->lmax <= a->lmin)
		a->lmax = a->lmin + 1;
	double span = cmax - cmin > 0 ? cmax - cmin : fmax(cmax, 1e-9);
	double step = nice_step(span * 1.1, 5);
	a->xmin = floor(fmax(0, cmin - 0.05 * span) / step) * step;
	a->xmax = ceil((cmax + 0.05 * span) / step) * step;
	if (a->xmax <= a->xmin)
		a->xmax = a->xmin + step;
}


/* Indices of the Pareto front in cost order into front; returns the count. */
static size_t pareto(const tp_candidate_figures *c, size_t n, size_t *front)
{
	size_t *ord = malloc(n * sizeof(*ord)), m = 0;
	if (!ord)
		return 0;
	for (size_t i = 0; i < n; i++)
		ord[i] = i;
	/* Insertion sort by cost, then KL: n is small. */
	for (size_t i = 1; i < n; i++)
		for (size_t j = i; j > 0; j--) {
			const tp_candidate_figures *p = &c[ord[j - 1]], *q = &c[ord[j]];
			if (p->cost_per_1m < q->cost_per_1m ||
			    (p->cost_per_1m == q->cost_per_1m && p->kl_mean <= q->kl_mean))
				break;
			size_t t = ord[j];
			ord[j] = ord[j - 1];
			ord[j - 1] = t;
		}
	double best = INFINITY;
	for (size_t i = 0; i < n; i++)
		if (c[ord[i]].kl_mean < best) {
			best = c[ord[i]].kl_mean;
			front[m++] = ord[i];
		}
	free(ord);
	return m;
}

static void axes_draw(FILE *f, const axes *a, const tp_report_info *r, bool projected)
{
	fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#fafafa\" "
		   "stroke=\"#444\"/>\n", X0, Y0, X1 - X0, Y1 - Y0);
	double step = nice_step(a->xmax - a->xmin, 5);
	for (double x = a->xmin; x <= a->xmax + step * 1e-6; x += step) {
		double p = px(a, x);
		fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n",
			p, Y0, p, Y1);
		fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"13\" text-anchor=\"middle\" %s>"
			   "%.4g</text>\n", p, Y1 + 18, FONT, x);
	}
	for (int l = (int)a->lmin; l <= (int)a->lmax; l++) {
		double p = Y1 - (l - a->lmin) / (a->lmax - a->lmin) * (Y1 - Y0);
		fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n",
			X0, p, X1, p);
		bool zero = fabs(pow(10, l) - a->floor_kl) < 1e-3 * a->floor_kl &&
			    a->lmin == log10(a->floor_kl) && l == (int)a->lmin;
		fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"13\" text-anchor=\"end\" %s>",
			X0 - 6, p + 4, FONT);
		if (zero)
			fputs("0", f);
		else
			fprintf(f, "1e%d", l);
		fputs("</text>\n", f);
	}
	fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"14\" text-anchor=\"middle\" %s>"
		   "$ per 1M tokens on ", (X0 + X1) / 2, Y1 + 42, FONT);
	put_text(f, r->hw->name);
	fprintf(f, " (blended %g:%g input:output, %s)</text>\n", r->io_in, r->io_out,
		projected ? "projected" : "measured");
	fprintf(f, "<text x=\"22\" y=\"%.1f\" font-size=\"14\" text-anchor=\"middle\" "
		   "transform=\"rotate(-90 22 %.1f)\" %s>KL(original || candidate), nats/token, "
		   "log scale</text>\n", (Y0 + Y1) / 2, (Y0 + Y1) / 2, FONT);
	fprintf(f, "<text x=\"%d\" y=\"30\" font-size=\"17\" font-weight=\"bold\" "
		   "text-anchor=\"middle\" %s>Quality loss against price: ", W / 2, FONT);
	put_text(f, r->model);
	fputs("</text>\n", f);
}

int tp_svg_plot_write(const char *path, const tp_report_info *r, const tp_candidate_figures *c,
		      size_t n)
{
	FILE *f = fopen(path, "w");
	size_t *front = malloc((n ? n : 1) * sizeof(*front)), nf = 0;
	int rc = 0;
	if (!f || !front) {
		rc = f ? tp_error_set(TP_ENOMEM, "out of memory")
		       : tp_error_set_errno(TP_EIO, errno, "writing %s", path);
		goto done;
	}
	axes a;
	set_axes(c, n, &a);
	nf = pareto(c, n, front);
	bool projected = false;
	for (size_t i = 0; i < n; i++)
		projected |= c[i].projected;
	fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
		   "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
		   "viewBox=\"0 0 %d %d\">\n<rect width=\"%d\" height=\"%d\" fill=\"white\"/>\n",
		W, H, W, H, W, H);
	axes_draw(f, &a, r, projected);
	if (nf > 1) {
		fputs("<polyline fill=\"none\" stroke=\"#e67e22\" stroke-width=\"2\" "
		      "stroke-dasharray=\"6 4\" points=\"", f);
		for (size_t i = 0; i < nf; i++)
			fprintf(f, "%s%.1f,%.1f", i ? " " : "", px(&a, c[front[i]].cost_per_1m),
				py(&a, c[front[i]].kl_mean));
		fputs("\"/>\n", f);
	}
	for (size_t i = 0; i < n; i++) {
		double x = px(&a, c[i].cost_per_1m), y = py(&a, c[i].kl_mean);
		bool win = r->sel && r->sel->winner == (long)i;
		fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"5\" fill=\"%s\" stroke=\"%s\" "
			   "stroke-width=\"1.5\"/>\n", x, y, c[i].passed ? "#2c7fb8" : "white",
			c[i].passed ? "#2c7fb8" : "#888");
		if (win)
			fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"11\" fill=\"none\" "
				   "stroke=\"#d7301f\" stroke-width=\"3\"/>\n", x, y);
		/* Labels alternate above and below so that neighbours overlap less. */
		bool left = x > X1 - 110; /* near the right edge: label on the left */
		fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"%s\"%s %s%s>",
			left ? x - 8 : x + 8, y + (i % 2 ? 15 : -8), win ? "13" : "11",
			left ? " text-anchor=\"end\"" : "", FONT,
			win ? " font-weight=\"bold\" fill=\"#d7301f\"" : " fill=\"#333\"");
		put_text(f, c[i].codec);
		if (win)
			fputs(" (winner)", f);
		fputs("</text>\n", f);
	}
	/* Legend, right of the plot. */
	double lx = X1 + 12, ly = Y0;
	fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"160\" height=\"96\" fill=\"white\" "
		   "stroke=\"#bbb\"/>\n", lx, ly);
	fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"5\" fill=\"#2c7fb8\"/>"
		   "<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\" %s>meets the constraints</text>\n",
		lx + 14, ly + 16, lx + 26, ly + 20, FONT);
	fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"5\" fill=\"white\" stroke=\"#888\" "
		   "stroke-width=\"1.5\"/><text x=\"%.1f\" y=\"%.1f\" font-size=\"12\" %s>"
		   "rejected</text>\n", lx + 14, ly + 34, lx + 26, ly + 38, FONT);
	fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e67e22\" "
		   "stroke-width=\"2\" stroke-dasharray=\"6 4\"/><text x=\"%.1f\" y=\"%.1f\" "
		   "font-size=\"12\" %s>Pareto front</text>\n", lx + 6, ly + 52, lx + 22, ly + 52,
		lx + 26, ly + 56, FONT);
	fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"7\" fill=\"none\" stroke=\"#d7301f\" "
		   "stroke-width=\"3\"/><text x=\"%.1f\" y=\"%.1f\" font-size=\"12\" %s>winner"
		   "</text>\n", lx + 14, ly + 68, lx + 26, ly + 72, FONT);
	fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" fill=\"#555\" %s>KL 0: on the bottom "
		   "line</text>\n", lx + 8, ly + 88, FONT);
	fputs("</svg>\n", f);
	if (ferror(f))
		rc = tp_error_set_errno(TP_EIO, errno, "writing %s", path);
done:
	if (f && fclose(f) != 0 && rc == 0)
		rc = tp_error_set_errno(TP_EIO, errno, "writing %s", path);
	free(front);
	return rc;
}

int tp_optimize_outcome_write_svg(const tp_optimize_outcome *o, const char *path)
{
	return tp_svg_plot_write(path, &o->info, o->figures, o->nfigures);
}
