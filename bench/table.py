#!/usr/bin/env python3
"""Reads bench/run.sh's raw outputs (OUT directory) and prints the Markdown tables with ratios."""
import json
import os
import re
import sys

# table.py OUT "IDLE COUNTS" "GREETING VARIANTS" [--check PARTS [ROUNDS]]: OUT is one placement's
# directory. A rate row measured in several rounds (NAME.out, NAME-r2.out, …) is shown as the
# median of each figure, and its ratios as the median of the rounds' ratios, each round's listed.
out = sys.argv[1]
idle_counts = [int(n) for n in sys.argv[2].split()]
greetings = sys.argv[3].split()
# --check PARTS: instead of the tables, exit 1 naming every figure of PARTS that was not produced
# (in every one of ROUNDS rounds).
check = sys.argv[5].split(",") if len(sys.argv) > 5 and sys.argv[4] == "--check" else None
check_rounds = int(sys.argv[6]) if check is not None and len(sys.argv) > 6 else 1
GREETING_LABEL = {
    "immediate": "greets at once (client reads it: relay phase)",
    "first-frame": "greets after the client's first frame (client sends one call: relay phase)",
    "never": "never greets, quiet client (settle phase)",
}


def read(name):
    try:
        with open(os.path.join(out, name)) as f:
            return f.read()
    except OSError:
        return ""


def dur_us(v):
    m = re.match(r"([\d.]+)(us|ms|s)", v)
    return float(m.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6}[m.group(2)] if m else None


def result(name):
    """(rate, p50 us, p99 us, errors, proxy CPU %) of one measurement, or None."""
    text = read(name + ".out")
    cpu = read(name + ".cpu").strip()
    cpu = int(cpu) if cpu else None
    if "Requests/sec" in text:
        rate = float(re.search(r"Requests/sec:\s*([\d.]+)", text).group(1))
        p50 = dur_us(re.search(r"\s50%\s+(\S+)", text).group(1))
        p99 = dur_us(re.search(r"\s99%\s+(\S+)", text).group(1))
        errs = 0
        m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
        if m:
            errs += int(m.group(1))
        m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
        if m:
            errs += sum(int(g) for g in m.groups())
        return rate, p50, p99, errs, cpu
    for line in text.splitlines():
        if line.startswith("{"):
            j = json.loads(line)
            if "rate" in j:
                return j["rate"], j["p50_us"], j["p99_us"], j["errors"], cpu
    return None


def suffix(r):
    """The file-name suffix of round r's outputs (bench/run.sh: none for round 1)."""
    return "" if r == 1 else f"-r{r}"


def rounds_measured(name):
    """How many rounds of NAME were measured."""
    r = 1
    while os.path.exists(os.path.join(out, f"{name}{suffix(r + 1)}.out")):
        r += 1
    return r


def median(xs):
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    m = len(xs) // 2
    return xs[m] if len(xs) % 2 else (xs[m - 1] + xs[m]) / 2


def rounds_of(key):
    """{target: [result per round]} of one row, rounds in order (None where one is missing)."""
    n = rounds_measured(f"{key}-gateway")
    return {t: [result(f"{key}-{t}{suffix(r)}") for r in range(1, n + 1)]
            for t in ("gateway", "nginx", "direct")}


def fmt_rate(x):
    return "—" if x is None else f"{x:,.0f}"


def fmt_us(x):
    if x is None:
        return "—"
    return f"{x / 1000:.2f} ms" if x >= 1000 else f"{x:.0f} µs"


def ratio(a, b):
    return "—" if a is None or not b else f"{a / b:.2f}"


def missing_figures(parts):
    """The measurements of `parts` without a result (a rate, latencies, an error count)."""
    want = []
    suffixes = [suffix(r) for r in range(1, check_rounds + 1)]
    if "http" in parts:
        want += [f"http-{s}-c{c}-{t}{x}" for s in ("small", "big") for c in (4, 32)
                 for t in ("gateway", "nginx", "direct") for x in suffixes]
    if "ws" in parts:
        want += [f"ws-{s}-{t}{x}" for s in ("small", "big") for t in ("gateway", "nginx", "direct")
                 for x in suffixes]
    if "login" in parts:
        want.append("login-gateway")
    gone = [w for w in want if result(w) is None or any(v is None for v in result(w)[:4])]
    if "memory" in parts:
        for g in greetings:
            for n in idle_counts:
                for t in ("gateway", "nginx"):
                    r = read(f"idle-{g}-{t}-{n}.rss").strip()
                    o = read(f"idle-{g}-{t}-{n}.out").strip().splitlines()
                    j = json.loads(o[-1]) if o and o[-1].startswith("{") else {}
                    if not r.isdigit() or int(r) == 0 or "open" not in j or "errors" not in j:
                        gone.append(f"idle-{g}-{t}-{n}")
                    elif n > 0 and j["open"] != n:
                        gone.append(f"idle-{g}-{t}-{n} (only {j['open']} of {n} opened)")
    return gone


if check is not None:
    gone = missing_figures(check)
    if gone:
        print("benchmark figures not produced: " + ", ".join(gone), file=sys.stderr)
        sys.exit(1)
    print("every benchmark figure was produced")
    sys.exit(0)

rows = [
    ("HTTP 512 B, 4 conns", "http-small-c4"),
    ("HTTP 512 B, 32 conns", "http-small-c32"),
    ("HTTP 512 B, 128 conns", "http-small-c128"),
    ("HTTP 1 MiB, 4 conns", "http-big-c4"),
    ("HTTP 1 MiB, 32 conns", "http-big-c32"),
    ("HTTP 1 MiB, 128 conns", "http-big-c128"),
    ("WS 200 B JSON-RPC echo, 32 sockets", "ws-small"),
    ("WS 1 MiB binary echo, 4 sockets", "ws-big"),
]
many = any(rounds_measured(f"{key}-gateway") > 1 for _, key in rows)
print()
if many:
    print("Medians over the rounds; the ratios are the medians of each round's ratio (each round's in "
          "the last columns).")
    print()
print("| figure | gateway | nginx | direct | gw/nginx | gw/direct | p50 / p99 gateway | p50 / p99 nginx "
      "| p50 / p99 direct | p99 gw/nginx | proxy CPU gw / nginx | errors gw/nginx/direct |"
      + (" gw/nginx per round | p99 gw/nginx per round |" if many else ""))
print("|---|---|---|---|---|---|---|---|---|---|---|---|" + ("---|---|" if many else ""))
for label, key in rows:
    per = rounds_of(key)
    if not any(x for t in per for x in per[t]):
        continue
    unit = "req/s" if key.startswith("http") else "msg/s"

    def med(t, i):
        return median(x[i] for x in per[t] if x)

    def lat(t):
        return f"{fmt_us(med(t, 1))} / {fmt_us(med(t, 2))}" if any(per[t]) else "—"

    def cpu(t):
        c = med(t, 4)
        return f"{c:.0f}%" if c is not None else "—"

    def err(t):
        return str(sum(x[3] for x in per[t] if x)) if any(per[t]) else "—"

    def ratios(a, b, i):
        """Each round's a/b of figure i (None where either is missing)."""
        return [x[i] / y[i] if x and y and y[i] else None for x, y in zip(per[a], per[b])]

    def rmed(a, b, i):
        m = median(ratios(a, b, i))
        return "—" if m is None else f"{m:.2f}"

    def rlist(a, b, i):
        return " / ".join("—" if v is None else f"{v:.2f}" for v in ratios(a, b, i))

    extra = f" {rlist('gateway', 'nginx', 0)} | {rlist('gateway', 'nginx', 2)} |" if many else ""
    print(f"| {label} ({unit}) | {fmt_rate(med('gateway', 0))} | {fmt_rate(med('nginx', 0))} "
          f"| {fmt_rate(med('direct', 0))} | {rmed('gateway', 'nginx', 0)} | {rmed('gateway', 'direct', 0)} "
          f"| {lat('gateway')} | {lat('nginx')} | {lat('direct')} | {rmed('gateway', 'nginx', 2)} "
          f"| {cpu('gateway')} / {cpu('nginx')} | {err('gateway')}/{err('nginx')}/{err('direct')} |{extra}")

login = result("login-gateway")
if login:
    print()
    print("Logins + Qlik session creations (GET /_gateway/login, then a proxied GET with the new cookie, "
          f"16 loops): **{login[0]:,.0f}/s**, p50 {fmt_us(login[1])}, p99 {fmt_us(login[2])}, "
          f"errors {login[3]}, gateway CPU {login[4]}%")
    fe = re.search(r'"first_error":"([^"]*)"', read("login-gateway.out"))
    if fe and fe.group(1):
        print(f"(first error: {fe.group(1)})")

if idle_counts:
    print()
    print("| upstream greeting | idle proxied websockets | gateway RSS | nginx RSS (master + workers) "
          "| gateway open/errors | nginx open/errors |")
    print("|---|---|---|---|---|---|")
    rss = {}
    for g in greetings:
        for n in idle_counts:
            cells = []
            for t in ("gateway", "nginx"):
                r = read(f"idle-{g}-{t}-{n}.rss").strip()
                rss[(g, t, n)] = int(r) if r.isdigit() else None
                o = read(f"idle-{g}-{t}-{n}.out").strip().splitlines()
                j = json.loads(o[-1]) if o and o[-1].startswith("{") else {}
                retried = f" ({j['retried']} retried)" if j.get("retried") else ""
                cells.append((rss[(g, t, n)] or 0, f"{j.get('open', '?')}/{j.get('errors', '?')}{retried}"))
            print(f"| {g} | {n:,} | {cells[0][0] / 1024:.1f} MiB | {cells[1][0] / 1024:.1f} MiB "
                  f"| {cells[0][1]} | {cells[1][1]} |")
    big = max(idle_counts)
    if big > 0:
        print()
        print(f"Per proxied websocket, (RSS at {big:,} − RSS at 0) / {big:,}:")
        print()
        print("| upstream greeting | gateway | nginx | gw/nginx |")
        print("|---|---|---|---|")
        for g in greetings:
            per = {}
            for t in ("gateway", "nginx"):
                a, b = rss.get((g, t, 0)), rss.get((g, t, big))
                per[t] = (b - a) / big if a is not None and b is not None else None
            gw, ng = per["gateway"], per["nginx"]
            f = lambda x: "—" if x is None else f"{x:.1f} KiB"
            print(f"| {GREETING_LABEL.get(g, g)} | **{f(gw)}** | {f(ng)} | {ratio(gw, ng)} |")
