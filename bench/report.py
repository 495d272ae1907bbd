#!/usr/bin/env python3
"""Turns bench/run.sh's runs.tsv into results.md (medians over rounds, ratios to the relay and to
nginx) and latency.svg (latency by percentile, one panel per scenario). Standard library only.

    python3 bench/report.py OUT/runs.tsv OUT "caption"
"""
import csv
import math
import statistics
import sys
from collections import defaultdict

PCTS = ["p50_us", "p75_us", "p90_us", "p99_us", "p99.9_us", "p99.99_us", "max_us"]
PCT_LABELS = ["50", "75", "90", "99", "99.9", "99.99", "max"]
ORDER = ["direct", "relay", "skifftcp", "skiff", "nginx", "haproxy", "envoy"]
COLORS = {"direct": "#777777", "relay": "#2a9d8f", "skifftcp": "#8ecae6", "skiff": "#e63946", "nginx": "#457b9d", "haproxy": "#f4a261",
          "envoy": "#6a4c93"}


def base(system):
    """relay1 -> relay: the 1-shard systems share colours and reference roles."""
    return system.rstrip("1")


def num(v):
    return None if v in ("-", "") else float(v)


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, digits=0):
    if v is None:
        return "–"
    return f"{v:,.{digits}f}"


def read_runs(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def scenario_of(r):
    """(tool, connection mode, connections, body, 1-shard row?): what a run is a run of."""
    return (r["tool"], r["conn_mode"], int(r["conns"]), r["body"], r["shards"] == "1")


def load(path):
    groups = defaultdict(list)
    for r in read_runs(path):
        groups[(scenario_of(r), r["system"])].append(r)
    med = {}
    for key, runs in groups.items():
        m = {k: median([num(r[k]) for r in runs]) for k in ["rps", "proxy_cpu_us_per_req", "backend_cpu_us_per_req", "peak_rss_kib"] + PCTS}
        m["errors"] = sum(max(0, int(r["errors"])) for r in runs)
        m["failed"] = sum(int(r["errors"]) < 0 for r in runs)
        m["shards"] = runs[0]["shards"]
        med[key] = m
    scenarios = sorted({k[0] for k in med}, key=lambda s: (s[4], s[0] != "wrk", s[1] != "keepalive", s[2], s[3] != "small"))
    return med, scenarios


def scenario_name(s):
    tool, cm, conns, body, one = s
    name = f"{tool} {'keep-alive' if cm == 'keepalive' else 'conn/req'} c={conns} {body}"
    return name + (" · 1 shard" if one else "")


def systems_of(med, s):
    present = [k[1] for k in med if k[0] == s]
    return sorted(present, key=lambda x: ORDER.index(base(x)))


def ratio(a, b):
    return None if a is None or not b else a / b


def markdown(med, scenarios, caption):
    out = [f"Medians over rounds; {caption}. CPU-µs/req is Δ(utime+stime) of the proxy's process tree over the run ÷ requests; "
           "×relay, ×nginx and ×envoy divide it by the relay's, nginx's and Envoy's in the same scenario; "
           "p99 ×relay divides p99 latency likewise. Peak RSS is the tree's VmHWM during the run.", ""]
    head = "| scenario | system | shards | req/s | p50 µs | p99 µs | p99.9 µs | CPU-µs/req | ×relay | ×nginx | ×envoy | p99 ×relay | backend CPU-µs/req | peak RSS MiB | errors |"
    out += [head, "|" + "---|" * (head.count("|") - 1)]
    for s in scenarios:
        systems = systems_of(med, s)
        ref = {base(x): med[(s, x)] for x in systems}
        for x in systems:
            m = med[(s, x)]
            relay, nginx, envoy = ref.get("relay"), ref.get("nginx"), ref.get("envoy")
            cpu = m["proxy_cpu_us_per_req"]
            err = str(m["errors"]) + (f" ({m['failed']} run(s) without output)" if m["failed"] else "")
            out.append("| " + " | ".join([
                scenario_name(s), x, m["shards"], fmt(m["rps"]), fmt(m["p50_us"]), fmt(m["p99_us"]), fmt(m["p99.9_us"]),
                fmt(cpu, 1),
                fmt(ratio(cpu, relay and relay["proxy_cpu_us_per_req"]), 2),
                fmt(ratio(cpu, nginx and nginx["proxy_cpu_us_per_req"]), 2),
                fmt(ratio(cpu, envoy and envoy["proxy_cpu_us_per_req"]), 2),
                fmt(ratio(m["p99_us"], relay and relay["p99_us"]), 2),
                fmt(m["backend_cpu_us_per_req"], 1),
                fmt(m["peak_rss_kib"] and m["peak_rss_kib"] / 1024, 1),
                err]) + " |")
    return "\n".join(out) + "\n"


def svg(med, scenarios, caption):
    cols, pw, ph, pad = 3, 360, 250, 50
    rows = math.ceil(len(scenarios) / cols)
    width, height = cols * pw, rows * ph + 70
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">',
             f'<rect width="{width}" height="{height}" fill="white"/>',
             f'<text x="10" y="18" font-size="14">Latency by percentile (µs, log scale), medians over rounds — {escape(caption)}</text>']
    for i, name in enumerate(ORDER):
        x = 10 + i * 110
        parts.append(f'<line x1="{x}" y1="38" x2="{x + 20}" y2="38" stroke="{COLORS[name]}" stroke-width="3"/>'
                     f'<text x="{x + 25}" y="42">{name}</text>')
    for n, s in enumerate(scenarios):
        ox, oy = (n % cols) * pw, 60 + (n // cols) * ph
        x0, x1, y0, y1 = ox + pad, ox + pw - 15, oy + 25, oy + ph - 35
        series = {x: [med[(s, x)][p] for p in PCTS] for x in systems_of(med, s)}
        values = [v for vs in series.values() for v in vs if v]
        if not values:
            continue
        lo = 10 ** math.floor(math.log10(min(values)))
        hi = 10 ** math.ceil(math.log10(max(values)))
        if hi <= lo:
            hi = lo * 10

        def ypos(v):
            return y1 - (math.log10(max(v, lo)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * (y1 - y0)

        def xpos(i):
            return x0 + i * (x1 - x0) / (len(PCTS) - 1)

        parts.append(f'<text x="{ox + pad}" y="{oy + 15}" font-weight="bold">{escape(scenario_name(s))}</text>')
        parts.append(f'<rect x="{x0}" y="{y0}" width="{x1 - x0}" height="{y1 - y0}" fill="none" stroke="#ccc"/>')
        decade = lo
        while decade <= hi:
            y = ypos(decade)
            parts.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x1}" y2="{y:.1f}" stroke="#eee"/>'
                         f'<text x="{x0 - 4}" y="{y + 4:.1f}" text-anchor="end">{decade:g}</text>')
            decade *= 10
        for i, label in enumerate(PCT_LABELS):
            parts.append(f'<text x="{xpos(i):.1f}" y="{y1 + 14}" text-anchor="middle">{label}</text>')
        for x, vs in series.items():
            pts = " ".join(f"{xpos(i):.1f},{ypos(v):.1f}" for i, v in enumerate(vs) if v)
            parts.append(f'<polyline points="{pts}" fill="none" stroke="{COLORS[base(x)]}" stroke-width="2"/>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def escape(text):
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def per_round(path):
    """skiff's ratios to each peer computed within each round (both measured minutes apart at
    most), then their median and spread: the figures to quote, since drift between rounds cancels."""
    by = defaultdict(dict)
    for r in read_runs(path):
        by[(scenario_of(r), r["round"])][base(r["system"])] = r
    ratios = defaultdict(lambda: defaultdict(list))
    for (scenario, _), systems in by.items():
        skiff = systems.get("skiff")
        if not skiff:
            continue
        for peer in ["relay", "nginx", "envoy"]:
            other = systems.get(peer)
            if not other:
                continue
            for metric, label in [("proxy_cpu_us_per_req", "CPU"), ("p99_us", "p99")]:
                r = ratio(num(skiff[metric]), num(other[metric]))
                if r is not None:
                    ratios[scenario][f"{label} ÷{peer}"].append(r)
    return ratios


def spread_table(ratios, scenarios):
    cols = ["CPU ÷relay", "CPU ÷nginx", "CPU ÷envoy", "p99 ÷relay", "p99 ÷nginx"]
    out = ["", "Per-round ratios, skiff ÷ peer in the same round and scenario: median [min–max] over rounds.", "",
           "| scenario | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 1)]
    for s in scenarios:
        if s not in ratios:
            continue
        cells = []
        for c in cols:
            v = ratios[s].get(c)
            cells.append(f"{statistics.median(v):.2f} [{min(v):.2f}–{max(v):.2f}]" if v else "–")
        out.append(f"| {scenario_name(s)} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def main():
    tsv, out, caption = sys.argv[1:4]
    med, scenarios = load(tsv)
    with open(f"{out}/results.md", "w") as f:
        f.write(markdown(med, scenarios, caption))
        f.write(spread_table(per_round(tsv), scenarios))
    with open(f"{out}/latency.svg", "w") as f:
        f.write(svg(med, scenarios, caption))


if __name__ == "__main__":
    main()
