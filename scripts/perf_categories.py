#!/usr/bin/env python3
"""Where a profile's CPU goes, by thread and by kind of work, in µs an event.

    perf_categories.py PROFILE.data US_PER_EVENT [BASELINE.data BASELINE_US]

PROFILE.data is a `perf record -p PID` of the service during one bench phase
and US_PER_EVENT the CPU per event the bench printed for that phase; each
sample's symbol is put in a category by the rules below. With a baseline (the
not-stored phase, or the HTTP floor), a third column shows the difference.
"""
import collections
import re
import subprocess
import sys

# Kernel symbols, first match wins.
KERNEL = [
    ("kernel: network", r"tcp|skb|sock|net_|ip_|inet|__dev|loopback|napi|softirq|netif|sk_|xmit"),
    ("kernel: files, WAL writes, fsync", r"ext4|jbd2|filemap|folio|block|bio|blk|iowrite|fsync|vfs_write|writev|iomap|page_cache|virtio"),
    ("kernel: scheduling, futex, epoll", r"futex|schedule|switch|wake|spin_unlock|raw_spin|enqueue_task|dequeue|select_task|ttwu|pick_next|update_curr|psi_|hrtimer|epoll|ep_"),
    ("kernel: other", r"."),
]
# User-space symbols, first match wins.
USER = [
    ("SQLite engine", r"^sqlite3|^wal|^pcache|^btree|^vdbe|Btree|Pager|^pager|^unix|^getPage|^moveTo|^insertCell|^balance|^fillInCell|Vdbe|^mem[A-Z]"),
    ("allocator", r"^_?mi_|malloc|free|realloc"),
    ("libc memory copies", r"memmove|memcpy|memset|memcmp|strlen"),
    ("rusqlite, sqlx", r"rusqlite|sqlx"),
    ("serde_json", r"serde_json|serde_core|serde::"),
    ("hyper, axum, tower, reqwest", r"hyper|h1::|httparse|http::|tower|axum|reqwest|matchit"),
    ("tokio, channels, wake-ups", r"tokio|mio|parking_lot|crossbeam|std::sync|futures|oneshot|mpsc|atomic_waker"),
    ("gzip", r"miniz|flate|deflate|crc32"),
    ("ingest: validation, message", r"produktly_segment::(ingest|segment::message)"),
    ("delivery, Segment batches", r"produktly_segment::(delivery|segment)"),
    ("committer, store", r"produktly_segment::(committer|store)"),
    ("the service, other", r"produktly_segment"),
    ("time, uuid", r"uuid|rand|chrono|clock_gettime|vdso"),
    ("metrics, hashing", r"prometheus|Family|Counter|hash|Hasher|sip|moka"),
    ("other (futures, drops, closures)", r"."),
]
LINE = re.compile(r"\s+([\d.]+)%\s+(\S+)\s+(\S+)\s+\[(.)\]\s+(.*)")


def shares(profile):
    report = subprocess.run(
        ["perf", "report", "-i", profile, "--no-children", "--sort", "comm,dso,sym", "--stdio", "-g", "none"],
        capture_output=True, text=True, check=True).stdout
    found = collections.Counter()
    for line in report.splitlines():
        match = LINE.match(line)
        if not match:
            continue
        percent, thread, _, kind, symbol = match.groups()
        rules = KERNEL if kind == "k" else USER
        category = next(name for name, pattern in rules if re.search(pattern, symbol))
        where = "SQLite writer thread: " if thread.startswith("sqlite") else ""
        found[where + category] += float(percent)
    total = sum(found.values())
    return {category: share / total for category, share in found.items()}


def main(args):
    runs = [(args[i], float(args[i + 1])) for i in range(0, len(args), 2)]
    columns = [{k: v * us for k, v in shares(profile).items()} for profile, us in runs]
    header = "| where | " + " | ".join(f"{p} ({us} µs)" for p, us in runs) + (" | difference |" if len(runs) == 2 else " |")
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for category in sorted(set().union(*columns), key=lambda c: -columns[0].get(c, 0)):
        values = [column.get(category, 0.0) for column in columns]
        if max(values) < 0.4:
            continue
        cells = " | ".join(f"{v:.1f}" for v in values)
        difference = f" | {values[0] - values[1]:+.1f}" if len(values) == 2 else ""
        print(f"| {category} | {cells}{difference} |")


if __name__ == "__main__":
    if len(sys.argv) not in (3, 5):
        sys.exit(__doc__)
    main(sys.argv[1:])
