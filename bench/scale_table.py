#!/usr/bin/env python3
"""Reads bench/scale.sh's raw outputs (OUT directory) and prints its Markdown tables.

scale_table.py OUT "SESSIONS" "SOCKETS" ONLY USERS QLIK_SESSIONS LOGIN_CONNS [--check]
--check: instead of the tables, exit 1 naming every figure that was not produced (never a value).
"""
import json
import os
import re
import sys

out = sys.argv[1]
sessions = [int(n) for n in sys.argv[2].split()]
sockets = [int(n) for n in sys.argv[3].split()]
only = sys.argv[4].split(",")
users = int(sys.argv[5])
qlik_sessions = sys.argv[6] == "1"
login_conns = sys.argv[7]
check = "--check" in sys.argv[8:]
missing = []


def read(name):
    try:
        with open(os.path.join(out, name)) as f:
            return f.read()
    except OSError:
        return ""


def dur_us(v):
    m = re.match(r"([\d.]+)(us|ms|s)", v)
    return float(m.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6}[m.group(2)] if m else None


def cpu(name):
    """(CPU seconds, wall seconds) of a measurement's processes, or None."""
    text = read(name + ".cpu").split()
    if len(text) != 3:
        return None
    return int(text[0]) / int(text[1]), float(text[2])


def wrk(name):
    """(rate, p99 us, requests, errors) of a wrk run, or None."""
    text = read(name + ".out")
    m = re.search(r"Requests/sec:\s*([\d.]+)", text)
    if not m:
        return None
    p99 = re.search(r"\s99%\s+(\S+)", text)
    n = re.search(r"(\d+) requests in", text)
    errs = 0
    e = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if e:
        errs += int(e.group(1))
    e = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if e:
        errs += sum(int(g) for g in e.groups())
    return float(m.group(1)), dur_us(p99.group(1)) if p99 else None, int(n.group(1)) if n else None, errs


def jline(name):
    for line in read(name + ".out").splitlines():
        if line.startswith("{"):
            j = json.loads(line)
            if "rate" in j:
                return j
    return None


def kv(name):
    return dict(line.split(None, 1) for line in read(name).splitlines() if " " in line)


def need(what, value):
    if value is None:
        missing.append(what)
    return value


def rate(x):
    return "—" if x is None else f"{x:,.0f}"


def us(x):
    if x is None:
        return "—"
    return f"{x / 1000:.2f} ms" if x >= 1000 else f"{x:.0f} µs"


def mib(kib):
    return "—" if kib is None else f"{kib / 1024:,.1f} MiB"


def per_session(a, b, n):
    """KiB (or bytes → KiB) per session between two steps."""
    return "—" if a is None or b is None or n <= 0 else f"{(b - a) / n:,.2f} KiB"


who = "one user (static provider)" if users <= 1 else f"{users} users (trusted_header provider)"
each = "login + proxied GET (gateway creates the Qlik session through QPS)" if qlik_sessions else "login only (no Qlik session)"
lines = []
p = lines.append

if "sessions" in only:
    p("")
    p("## Live gateway sessions: memory and request cost")
    p("")
    p(f"Sessions made by `bench-loadgen logins` ({login_conns} loops; each: {each}; sessions of {who}). "
      "Request cost: `wrk -t1 -cN` on `GET /mashup/small.bin` with one logged-in session's cookie; "
      "CPU = gateway utime+stime per request. Per-session = RSS growth since the previous step / sessions added.")
    p("")
    p("| store | sessions | made at (logins/s) | errors | gateway RSS | per session | Redis used_memory | per session | c4 req/s | c4 p99 | c4 CPU/req | c32 req/s | c32 p99 | c32 CPU/req |")
    p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for store in ("memory", "redis"):
        prev_n, prev_rss, prev_red = None, None, None
        for n in sessions:
            name = f"sess-{store}-{n}"
            lg = jline(name + ".logins") if n > (prev_n or 0) else None
            if n > (prev_n or 0):
                need(f"{name} logins", lg)
            rss_t = read(name + ".rss").strip()
            rss = need(f"{name} rss", int(rss_t) if rss_t else None)
            red = kv(name + ".redis")
            used = int(red["used_memory"]) / 1024 if "used_memory" in red else None
            if store == "redis":
                need(f"{name} redis used_memory", used)
            cells = []
            for c in (4, 32):
                w = need(f"{name}-c{c}", wrk(f"{name}-c{c}"))
                cp = cpu(f"{name}-c{c}")
                per = f"{cp[0] / w[2] * 1e6:.0f} µs" if w and cp and w[2] else "—"
                cells += [rate(w[0]) if w else "—", us(w[1]) if w else "—", per]
                if w and w[3]:
                    cells[-3] += f" ({w[3]} errors)"
            added = n - (prev_n or 0)
            p(f"| {store} | {n:,} | {rate(lg['rate']) if lg else '—'} | {lg['errors'] if lg else '—'} | {mib(rss)} | "
              f"{per_session(prev_rss, rss, added) if prev_n is not None else '—'} | "
              f"{mib(used) if store == 'redis' else '—'} | "
              f"{per_session(prev_red, used, added) if store == 'redis' and prev_n is not None else '—'} | " + " | ".join(cells) + " |")
            prev_n, prev_rss, prev_red = n, rss, used
    errs = [jline(f"sess-{s}-{n}.logins") for s in ("memory", "redis") for n in sessions]
    fe = next((j["first_error"] for j in errs if j and j.get("first_error")), None)
    if fe:
        p("")
        p(f"first login error: `{fe}`")

if "logins" in only:
    p("")
    p("## Logins/s by store and replicas")
    p("")
    p(f"Each row from an empty store: `bench-loadgen logins` ({login_conns} loops; each: {each}; sessions of {who}). "
      "Two replicas: two gateway processes on one Redis; login k goes to replica k mod 2 and its proxied GET to the other one. "
      "CPU = all replicas' utime+stime per login.")
    p("")
    p("| store | replicas | logins | logins/s | p50 | p99 | errors | gateway CPU/login | Redis used_memory after |")
    p("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in ("memory-1", "redis-1", "redis-2"):
        store, replicas = row.split("-")
        j = need(f"logins-{row}", jline(f"logins-{row}"))
        cp = cpu(f"logins-{row}")
        red = kv(f"logins-{row}.redis")
        used = int(red["used_memory"]) / 1024 if "used_memory" in red else None
        if store == "redis":
            need(f"logins-{row} redis used_memory", used)
        per = f"{cp[0] / j['count'] * 1e6:.0f} µs" if j and cp and j["count"] else "—"
        if j:
            p(f"| {store} | {replicas} | {j['count']:,} | {rate(j['rate'])} | {us(j['p50_us'])} | {us(j['p99_us'])} | "
              f"{j['errors']} | {per} | {mib(used) if store == 'redis' else '—'} |")
        else:
            p(f"| {store} | {replicas} | — | — | — | — | — | — | — |")
    fe = next((j["first_error"] for j in (jline(f"logins-{r}") for r in ("memory-1", "redis-1", "redis-2")) if j and j.get("first_error")), None)
    if fe:
        p("")
        p(f"first login error: `{fe}`")

if "ws" in only:
    p("")
    p("## Engine websocket echo by socket count")
    p("")
    p("`bench-loadgen ws-echo … N 200 text`: N sockets on the engine path of qlik-sim, each in a closed loop "
      "(a ~200 B JSON-RPC `SimEcho` call, wait for its reply); one-second warm-up not counted. "
      "CPU = the proxy's utime+stime over the run as % of one CPU (warm-up and socket set-up included).")
    p("")
    p("| sockets | gateway msg/s | p50 | p99 | errors | CPU | nginx msg/s | p50 | p99 | errors | CPU | direct msg/s | p50 | p99 | errors | gateway / nginx |")
    p("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for s in sockets:
        cells = []
        rates = {}
        for t in ("gateway", "nginx", "direct"):
            j = need(f"ws-{s}-{t}", jline(f"ws-{s}-{t}"))
            rates[t] = j["rate"] if j else None
            cells += [rate(j["rate"]), us(j["p50_us"]), us(j["p99_us"]), str(j["errors"])] if j else ["—"] * 4
            if t != "direct":
                cp = cpu(f"ws-{s}-{t}")
                cells.append(f"{100 * cp[0] / cp[1]:.0f}%" if cp else "—")
        ratio = f"{rates['gateway'] / rates['nginx']:.2f}" if rates["gateway"] and rates["nginx"] else "—"
        p(f"| {s:,} | " + " | ".join(cells) + f" | {ratio} |")

if check:
    for m in missing:
        print(f"missing: {m}", file=sys.stderr)
    sys.exit(1 if missing else 0)
print("\n".join(lines))
