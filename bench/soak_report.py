#!/usr/bin/env python3
"""The report of bench/soak.sh, from the files it left in OUT; exits 1 when the soak failed.

    soak_report.py OUT SMOKE

A full run fails on any client error, mustAuthenticate: true seen by a client, lost message, or
Qlik session left alive at qlik-sim after every user logged out (the gateway orphaned it).
SMOKE=1 (the test command's run, debug binaries on a busy machine) checks only that the soak ran
(logins, selections and Qlik session expiries happened) and that no client saw mustAuthenticate
or lost a message.
"""
import json
import re
import sys


def series_line(name, values, unit):
    if not values:
        return f"| {name} | – | – | – | – |"
    return f"| {name} | {values[0]:,}{unit} | {min(values):,}{unit} | {max(values):,}{unit} | {values[-1]:,}{unit} |"


def metric(text, name, labels=""):
    pat = re.compile(r"^" + re.escape(name) + (r"\{[^}]*" + re.escape(labels) + r"[^}]*\}" if labels else r"(\{\})?") + r" (\S+)$", re.M)
    m = pat.search(text)
    return m.group(m.lastindex) if m else "?"


def main():
    out, smoke = sys.argv[1], sys.argv[2] == "1"
    samples = []
    with open(f"{out}/samples.txt") as f:
        for line in f:
            t, label, rss, fds, live = line.split()
            samples.append((int(t), label, int(rss), int(fds), int(live)))
    try:
        with open(f"{out}/clients.json") as f:
            c = json.loads(f.read().strip().splitlines()[-1])
    except (OSError, ValueError, IndexError) as e:
        print(f"the load generator left no result ({e}); see {out}/loadgen.log")
        return 1
    with open(f"{out}/sim-counters.json") as f:
        sim = json.load(f)
    try:
        metrics = open(f"{out}/metrics.txt").read()
    except OSError:
        metrics = ""
    log = open(f"{out}/gateway.log", errors="replace").read().splitlines()
    warn = sum(1 for line in log if " WARN " in line or '"level":"WARN"' in line)
    err = sum(1 for line in log if " ERROR " in line or '"level":"ERROR"' in line)

    load = [s for s in samples if s[1] == "load"]
    before = [s for s in samples if s[1] == "idle-before"]
    after = [s for s in samples if s[1] == "idle-after"]
    rss = [s[2] for s in load]
    fds = [s[3] for s in load]
    print(f"Soak: {c['users']} users, {c['secs']:.0f} s; {len(load)} samples under load")
    print()
    print("| gateway | start | min | max | end |")
    print("|---|---|---|---|---|")
    print(series_line("RSS under load (KiB)", rss, ""))
    print(series_line("open fds under load", fds, ""))
    print(series_line("Qlik sessions alive at qlik-sim under load", [s[4] for s in load], ""))
    if before and after:
        print(f"| idle before → after (RSS KiB / fds) | {before[0][2]:,} / {before[0][3]} | | | {after[-1][2]:,} / {after[-1][3]} |")
        try:
            proxy, qps = open(f"{out}/pooled.txt").read().split()
            print()
            print(f"Idle after the load, {after[-1][3]} fds, of which pooled keep-alive connections: "
                  f"{proxy} to Qlik's proxy, {qps} to the QPS API; "
                  f"Qlik sessions alive at qlik-sim after every user logged out: {after[-1][4]}")
        except (OSError, ValueError):
            pass
    if len(rss) >= 6:
        third = len(rss) // 3
        first, last = rss[:third], rss[-third:]
        print()
        print(f"RSS mean, first third → last third of the run: {sum(first)//len(first):,} → {sum(last)//len(last):,} KiB")
    print()
    print("| clients | count |")
    print("|---|---|")
    for k in ["logins", "logouts", "http_requests", "websockets", "selections", "requests_sent", "replies",
              "interrupted", "reconnects", "session_notices", "lost", "must_authenticate", "errors"]:
        print(f"| {k} | {c[k]:,} |")
    print()
    print(f"qlik-sim: {sim['sessions_created']:,} Qlik sessions created, {sim['sessions_expired']:,} expired at random, "
          f"{sim['ws_must_authenticate']:,} mustAuthenticate sent to the gateway, {sim['ws_upgrades']:,} websocket upgrades")
    sessions = {e: metric(metrics, "qlik_gateway_qlik_sessions_total", f'event="{e}"') for e in ["created", "recreated", "failed"]}
    print(f"gateway metrics: login prompts (mustAuthenticate sent to clients) {metric(metrics, 'qlik_gateway_login_prompts_total')}, "
          f"Qlik sessions created {sessions['created']}, re-created {sessions['recreated']}, failed {sessions['failed']}")
    print(f"gateway log: {warn} WARN, {err} ERROR lines")
    for e in c["first_errors"]:
        print(f"  error: {e}")
    for e in c["must_authenticate_frames"]:
        print(f"  mustAuthenticate: {e}")
    unanswered = c["requests_sent"] - c["replies"] - c["interrupted"] - c["lost"]

    failures = []
    if c["must_authenticate"]:
        failures.append(f"{c['must_authenticate']} mustAuthenticate: true reached clients")
    if c["lost"] or unanswered:
        failures.append(f"{c['lost']} messages lost ({unanswered} unaccounted for)")
    if not c["logins"] or not c["selections"]:
        failures.append("no logins or no selections: the soak did not run")
    if smoke:
        if not sim["sessions_expired"]:
            failures.append("qlik-sim expired no session: nothing was soaked")
    else:
        if c["errors"]:
            failures.append(f"{c['errors']} client errors")
        if after and after[-1][4]:
            failures.append(f"{after[-1][4]} Qlik sessions left alive at Qlik after every user logged out")
    print()
    if failures:
        print("FAILED: " + "; ".join(failures))
        return 1
    print("passed" + (" (smoke: ran, no mustAuthenticate, no lost message)" if smoke else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
