#!/usr/bin/env python3
"""The hand-written psutil collector (the common Python baseline) for wk-agent's benchmark.

It gathers the same data as wk-agent's default inputs (cpu, mem, swap, system, kernel,
processes, disk, diskio, net, netstat, nstat) the way such scripts usually do, with
python3-psutil, and formats it as line protocol (written nowhere). The benchmark drives it
over stdin so that interpreter start-up is not charged to a collection:

    c        -> one full collection, answers "ok <lines>"
    t        -> TCP state counting only (psutil.net_connections('tcp')), answers "ok <sockets>"
    (EOF)    -> exit
"""

import os
import sys
import time

import psutil

IGNORE_FS = {"tmpfs", "devtmpfs", "devfs", "iso9660", "overlay", "aufs", "squashfs"}


def line(name, tags, fields, ts):
    t = "".join(",%s=%s" % (k, v) for k, v in sorted(tags.items()) if v)
    f = ",".join(
        "%s=%s" % (k, ("%di" % v) if isinstance(v, int) else repr(float(v)))
        for k, v in fields.items()
    )
    return "%s%s %s %d" % (name, t, f, ts)


def read_counters(path):
    """/proc/net/netstat and /proc/net/snmp: header line + value line per protocol."""
    out = {}
    try:
        with open(path) as fh:
            rows = fh.read().splitlines()
    except OSError:
        return out
    for head, vals in zip(rows[0::2], rows[1::2]):
        proto, names = head.split(":", 1)
        _, values = vals.split(":", 1)
        for n, v in zip(names.split(), values.split()):
            out[proto + n] = int(v)
    return out


def collect():
    ts = time.time_ns()
    out = []
    for i, c in enumerate(psutil.cpu_times(percpu=True)):
        out.append(line("cpu", {"cpu": "cpu%d" % i}, c._asdict(), ts))
    out.append(line("cpu", {"cpu": "cpu-total"}, psutil.cpu_times()._asdict(), ts))
    out.append(line("mem", {}, psutil.virtual_memory()._asdict(), ts))
    out.append(line("swap", {}, psutil.swap_memory()._asdict(), ts))
    load = os.getloadavg()
    out.append(
        line(
            "system",
            {},
            {
                "load1": load[0],
                "load5": load[1],
                "load15": load[2],
                "n_cpus": psutil.cpu_count(),
                "n_users": len(psutil.users()),
                "uptime": int(time.time() - psutil.boot_time()),
            },
            ts,
        )
    )
    st = psutil.cpu_stats()
    out.append(line("kernel", {}, st._asdict(), ts))
    states = {}
    threads = 0
    for p in psutil.process_iter(["status", "num_threads"]):
        s = p.info["status"]
        states[s] = states.get(s, 0) + 1
        threads += p.info["num_threads"] or 0
    states["total_threads"] = threads
    out.append(line("processes", {}, states, ts))
    for part in psutil.disk_partitions(all=False):
        if part.fstype in IGNORE_FS:
            continue
        try:
            u = psutil.disk_usage(part.mountpoint)
        except OSError:
            continue
        out.append(
            line("disk", {"path": part.mountpoint, "fstype": part.fstype}, u._asdict(), ts)
        )
    for name, d in psutil.disk_io_counters(perdisk=True).items():
        out.append(line("diskio", {"name": name}, d._asdict(), ts))
    for name, n in psutil.net_io_counters(pernic=True).items():
        out.append(line("net", {"interface": name}, n._asdict(), ts))
    out.append(line("netstat", {}, count_tcp(), ts))
    nstat = read_counters("/proc/net/netstat")
    nstat.update(read_counters("/proc/net/snmp"))
    out.append(line("nstat", {}, nstat, ts))
    return out


def count_tcp():
    counts = {}
    for c in psutil.net_connections("tcp"):
        counts[c.status] = counts.get(c.status, 0) + 1
    return counts


def main():
    for cmd in sys.stdin:
        cmd = cmd.strip()
        if cmd == "c":
            n = len("\n".join(collect()))
        elif cmd == "t":
            n = sum(count_tcp().values())
        else:
            n = -1
        sys.stdout.write("ok %d\n" % n)
        sys.stdout.flush()


if __name__ == "__main__":
    main()
