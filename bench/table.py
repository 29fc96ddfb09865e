#!/usr/bin/env python3
"""Reads bench/run.sh's raw outputs (OUT directory) and prints the Markdown tables with ratios."""
import json
import os
import re
import sys

# table.py OUT "IDLE COUNTS" "GREETING VARIANTS" [--check PARTS]: OUT is one placement's directory.
out = sys.argv[1]
idle_counts = [int(n) for n in sys.argv[2].split()]
greetings = sys.argv[3].split()
# --check PARTS: instead of the tables, exit 1 naming every figure of PARTS that was not produced.
check = sys.argv[5].split(",") if len(sys.argv) > 5 and sys.argv[4] == "--check" else None
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
    if "http" in parts:
        want += [f"http-{s}-c{c}-{t}" for s in ("small", "big") for c in (4, 32)
                 for t in ("gateway", "nginx", "direct")]
    if "ws" in parts:
        want += [f"ws-{s}-{t}" for s in ("small", "big") for t in ("gateway", "nginx", "direct")]
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
print()
print("| figure | gateway | nginx | direct | gw/nginx | gw/direct | p50 / p99 gateway | p50 / p99 nginx "
      "| p50 / p99 direct | p99 gw/nginx | proxy CPU gw / nginx | errors gw/nginx/direct |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for label, key in rows:
    g, n, d = (result(f"{key}-{t}") for t in ("gateway", "nginx", "direct"))
    if not (g or n or d):
        continue
    unit = "req/s" if key.startswith("http") else "msg/s"
    gv, nv, dv = (x[0] if x else None for x in (g, n, d))

    def lat(x):
        return f"{fmt_us(x[1])} / {fmt_us(x[2])}" if x else "—"

    def cpu(x):
        return f"{x[4]}%" if x and x[4] is not None else "—"

    def err(x):
        return str(x[3]) if x else "—"

    print(f"| {label} ({unit}) | {fmt_rate(gv)} | {fmt_rate(nv)} | {fmt_rate(dv)} | {ratio(gv, nv)} "
          f"| {ratio(gv, dv)} | {lat(g)} | {lat(n)} | {lat(d)} | {ratio(g and g[2], n and n[2])} "
          f"| {cpu(g)} / {cpu(n)} | {err(g)}/{err(n)}/{err(d)} |")

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
