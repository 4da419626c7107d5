#!/usr/bin/env python3
"""The flusher's write after a push to 10,000 servers, on SQLite.

Builds `game_servers` as the migrations do, fills it with N servers, then
times (process CPU) the statement the flusher runs after a push,
`UPDATE ... FROM (VALUES ...)` with 200 servers a statement, four ways:

- `abort`: SQLite's default conflict handling (ABORT) keeps a statement
  journal, spilled to a temporary file past 64 KiB; one transaction, ids
  in hash order (what the flusher did before 2026-12-04);
- `fail`: `UPDATE OR FAIL`, no statement journal; otherwise the same;
- `fail-sorted`: the same with ids in key order (what `Hub::flush` does);
- `fail-chunks-sorted`: a thousand servers a transaction, each on the
  next of the pool's connections (sqlx hands idle connections out in
  turn): each commit writes every page its rows touched to the WAL, and
  rows stored in no order of their ids put a thousand of them on most of
  the table's pages (why the flusher writes one transaction).

    scripts/bench-flush.py [SERVERS] [ROUNDS] [connected|ids]

`connected` (the default) stores the rows in a random order of their ids,
as servers first seen in any order are; `ids` in id order (the harness's
servers connect in about that order). Uses Python's own SQLite
(`sqlite3.sqlite_version`), not the hub's bundled one; the statement
journal and the WAL work the same in both. Prints the median CPU per
flush of each (the four alternate), and the ratio of each to the first.
"""

import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time

SERVERS = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 7
PER_STATEMENT = 200
# `connected`: rows stored in a random order of their ids (servers first
# seen in any order); `ids`: stored in id order (the harness's servers
# connect in about that order).
LAYOUT = sys.argv[3] if len(sys.argv) > 3 else "connected"

SCHEMA = """CREATE TABLE game_servers (
    server_id TEXT PRIMARY KEY, key_id TEXT NOT NULL, region TEXT NOT NULL,
    environment TEXT NOT NULL, tags TEXT NOT NULL, operator_tags TEXT NOT NULL,
    capacity BIGINT NOT NULL, players BIGINT NOT NULL, hostname TEXT,
    address TEXT, build TEXT, sdk TEXT, subscriptions TEXT NOT NULL,
    applied TEXT NOT NULL, first_seen BIGINT NOT NULL, last_seen BIGINT NOT NULL)"""


def main():
    folder = tempfile.mkdtemp()
    path = os.path.join(folder, "hub.db")
    pool = [sqlite3.connect(path, isolation_level=None) for _ in range(4)]
    db = pool[0]
    db.execute("PRAGMA journal_mode = WAL")
    db.execute(SCHEMA)
    ids = [f"lt-{i:05}" for i in range(SERVERS)]
    # Stored in the order servers first connected, not by id: the table's
    # rows (by rowid) are in no order of their ids.
    connected = ids[:]
    if LAYOUT == "connected":
        random.shuffle(connected)
    db.execute("BEGIN")
    for i in connected:
        db.execute(
            "INSERT INTO game_servers VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (i, "key-1", "eu-west", "production", '["pvp","ranked"]', "[]", 100, 50,
             "host-" + i, "127.0.0.1:7000", "b-1042", "hotswap-sdk/0.1", '["loot"]',
             '{"loot":1}', 0, 0),
        )
    db.execute("COMMIT")

    revision = 1
    turn = 0

    def flush(verb, per_transaction, sort):
        nonlocal revision, turn
        revision += 1
        order = ids[:]
        random.shuffle(order)
        if sort:
            order.sort()
        started = time.process_time()
        for t in range(0, len(order), per_transaction):
            conn = pool[turn % len(pool)]
            turn += 1
            conn.execute("BEGIN IMMEDIATE")
            chunk = order[t:t + per_transaction]
            for k in range(0, len(chunk), PER_STATEMENT):
                part = chunk[k:k + PER_STATEMENT]
                values = ", ".join(["(?, ?, ?, ?)"] * len(part))
                sql = (f"{verb} game_servers SET players = CAST(v.column2 AS BIGINT), "
                       f"applied = v.column3, last_seen = CAST(v.column4 AS BIGINT) "
                       f"FROM (VALUES {values}) AS v WHERE game_servers.server_id = v.column1")
                args = []
                for i in part:
                    args += [i, 60, '{"loot":%d}' % revision, revision]
                conn.execute(sql, args)
            conn.execute("COMMIT")
        return (time.process_time() - started) * 1000

    ways = {
        "abort": ("UPDATE", SERVERS, False),
        "fail": ("UPDATE OR FAIL", SERVERS, False),
        "fail-sorted": ("UPDATE OR FAIL", SERVERS, True),
        "fail-chunks-sorted": ("UPDATE OR FAIL", 1000, True),
    }
    times = {way: [] for way in ways}
    for _ in range(ROUNDS):
        for way, args in ways.items():
            times[way].append(flush(*args))
    print(f"SQLite {sqlite3.sqlite_version}, {SERVERS} servers, {ROUNDS} flushes each (alternating)")
    medians = {way: statistics.median(t) for way, t in times.items()}
    first = medians["abort"]
    for way, median in medians.items():
        print(f"  {way:<21} {median:6.1f} ms CPU per flush, {median * 1000 / SERVERS:5.2f} µs a server, "
              f"{median / first:4.2f}× abort")


if __name__ == "__main__":
    main()
