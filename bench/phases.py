#!/usr/bin/env python3
"""Where the gateway's time per proxied request went during each HTTP run of bench/run.sh.

    bench/phases.py RESULTS_DIR           # one placement's directory (bench/run.sh's $OUT/<placement>)
    bench/phases.py RESULTS_DIR --check   # exit 1 unless every scraped run counted every phase

For each run NAME with NAME.metrics.before and NAME.metrics.after (scrapes of the gateway's
/_gateway/metrics around the run), prints one row per step of a proxied request: the requests
counted, the mean, and p50 / p99 / p99.9 estimated from the histogram's buckets (linear within a
bucket, as Prometheus' histogram_quantile does), for `qlik_gateway_http_request_duration_seconds`
(route_class="qlik": the whole time to the response head) and for each phase of
`qlik_gateway_proxy_phase_duration_seconds`. "gateway's own" is the mean total less the phases'
means: parsing, routing, header work and the wake-ups between them.
"""
import glob
import math
import os
import re
import sys

LINE = re.compile(r'^(\w+)\{([^}]*)\} (\S+)$')
PHASES = ["session", "qlik_session", "upstream_connection", "upstream_response"]


def parse(path):
    """{(metric name, frozenset of labels): value} of one scrape."""
    out = {}
    for line in open(path):
        m = LINE.match(line.strip())
        if not m:
            continue
        labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def series(before, after, name, key, value):
    """(buckets [(le, cumulative count)], count, sum) of one histogram series, after - before."""
    def d(metric, extra=()):
        labels = frozenset(((key, value),) + tuple(extra))
        return after.get((metric, labels), 0.0) - before.get((metric, labels), 0.0)
    buckets = []
    for (metric, labels), _ in after.items():
        lab = dict(labels)
        if metric == name + "_bucket" and lab.get(key) == value:
            le = float(lab["le"].replace("+Inf", "inf"))
            buckets.append((le, d(metric, (("le", lab["le"]),))))
    buckets.sort()
    return buckets, d(name + "_count"), d(name + "_sum")


def quantile(buckets, count, q):
    """histogram_quantile: the bound where the cumulative count reaches q * count."""
    if count <= 0:
        return None
    rank = q * count
    lo, below = 0.0, 0.0
    for le, cum in buckets:
        if cum >= rank:
            if math.isinf(le):
                return lo  # above the largest finite bound: no better estimate
            inside = cum - below
            return lo + (le - lo) * ((rank - below) / inside if inside else 1.0)
        lo, below = le, cum
    return None


def us(seconds):
    if seconds is None:
        return "—"
    v = seconds * 1e6
    return f"{v / 1000:.2f} ms" if v >= 1000 else f"{v:.0f} µs" if v >= 10 else f"{v:.1f} µs"


def scrapes(results):
    """(run name, path of the scrape before, path of the one after or None) of each scraped run."""
    for b in sorted(glob.glob(os.path.join(results, "*.metrics.before"))):
        a = b[: -len(".before")] + ".after"
        yield os.path.basename(b)[: -len(".metrics.before")], b, a if os.path.exists(a) else None


def check(runs):
    """The smoke run's check: each run's scrapes exist and every step counted requests."""
    bad = []
    for name, b, a in runs:
        if a is None:
            bad.append(f"{name}: no scrape after the run")
            continue
        before, after = parse(b), parse(a)
        for p in PHASES:
            if series(before, after, "qlik_gateway_proxy_phase_duration_seconds", "phase", p)[1] <= 0:
                bad.append(f"{name}: phase {p} counted nothing")
    for line in bad:
        print(f"phase timings not produced: {line}", file=sys.stderr)
    return 1 if bad or not runs else 0


def main():
    results = sys.argv[1]
    runs = list(scrapes(results))
    if "--check" in sys.argv[2:]:
        sys.exit(check(runs))
    if not runs:
        return
    print()
    print("Where the gateway's time went (its own histograms, scraped around each run; quantiles from buckets):")
    print()
    print("| run | step | requests | mean | p50 | p99 | p99.9 |")
    print("|---|---|---|---|---|---|---|")
    for name, b, a in runs:
        if a is None:
            continue
        before, after = parse(b), parse(a)
        rows = [("total (to the response head)",
                 series(before, after, "qlik_gateway_http_request_duration_seconds", "route_class", "qlik"))]
        rows += [(p, series(before, after, "qlik_gateway_proxy_phase_duration_seconds", "phase", p)) for p in PHASES]
        means = {}
        for step, (buckets, count, total) in rows:
            mean = total / count if count else None
            means[step] = mean
            print(f"| {name} | {step} | {int(count):,} | {us(mean)} | {us(quantile(buckets, count, 0.5))} | "
                  f"{us(quantile(buckets, count, 0.99))} | {us(quantile(buckets, count, 0.999))} |")
        total = means[rows[0][0]]
        if total is not None and all(means[p] is not None for p in PHASES):
            print(f"| {name} | gateway's own (total less the phases) | | {us(total - sum(means[p] for p in PHASES))} | | | |")


if __name__ == "__main__":
    main()
