"""The tamper-evident history (SPEC 14): sealed by the engine, checked by `history verify`,
exported as JSON lines anyone can check again without sluice."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3

from conftest import Proj

from core.chain import link

W = "name: w\ninputs: {n: {}}\njobs:\n  a: {steps: [{run: 'true'}]}\n"


def sealed(proj: Proj, at_least: int = 1) -> dict:
    """Wait until the engine has sealed every event written so far; the verify verdict."""

    def check() -> dict | None:
        v = proj.sluice("history", "verify", "--json").json
        return v if v["unsealed"] == 0 and v["events"] >= at_least else None

    return proj.wait_for(check, what="the history sealed")  # type: ignore[return-value]


def some_history(proj: Proj, n: int = 4) -> list[int]:
    proj.write("workflows/w.yaml", W)
    ids = [proj.ok("workflow", "queue", "w", "-i", f"n={i}", "--json").json["id"] for i in range(n)]
    proj.ok("queue", "purge", str(ids[0]), "--yes")
    proj.ok("engine", "start")
    return ids


def events(proj: Proj) -> list[dict]:
    return proj.service().db.all("SELECT * FROM events ORDER BY seq")


def quiet_history(proj: Proj) -> list[dict]:
    """Some history, all sealed, and no engine writing any more: what an auditor finds."""
    some_history(proj)
    sealed(proj, at_least=6)
    proj.ok("engine", "stop")
    assert proj.sluice("history", "verify", "--json").json["unsealed"] == 0  # sealed on the way out
    return events(proj)


def edit(proj: Proj, sql: str, params: tuple = ()) -> None:
    """What someone with write access to the database could do, bypassing sluice."""
    with proj.service().db.write(fenced=False) as tx:
        tx.execute(sql, params)


def test_verify_says_intact_with_the_head(proj: Proj) -> None:
    some_history(proj)
    v = sealed(proj, at_least=6)
    assert v["intact"] is True and v["problem"] is None
    assert re.fullmatch(r"[0-9a-f]{64}", v["head"])
    r = proj.ok("history", "verify")
    assert re.fullmatch(r"[\d,]+ events, chain intact, head [0-9a-f]{12}…\n", r.out), r.out
    assert v["head"].startswith(r.out.split("head ")[1][:12])


def test_a_changed_event_is_named(proj: Proj) -> None:
    victim = quiet_history(proj)[2]
    edit(proj, "UPDATE events SET actor = 'someone-else' WHERE id = ?", (victim["id"],))
    r = proj.sluice("history", "verify")
    assert r.code == 1
    assert f"event #{victim['id']} ({victim['kind']}) was changed after it was sealed" in r.out
    v = proj.sluice("history", "verify", "--json").json
    assert v["intact"] is False and v["problem"] == "changed" and v["broken_at"] == victim["id"]


def test_a_removed_event_is_found(proj: Proj) -> None:
    evs = quiet_history(proj)
    edit(proj, "DELETE FROM events WHERE id = ?", (evs[3]["id"],))
    r = proj.sluice("history", "verify")
    assert r.code == 1
    assert f"1 event was removed between #{evs[2]['id']} and #{evs[4]['id']}" in r.out


def test_an_inserted_event_is_found_even_with_a_link_made_to_fit(proj: Proj) -> None:
    evs = quiet_history(proj)
    k = evs[2]["seq"]
    # make room after position k (in two steps: the unique index checks each row), then put in
    # an event whose link is computed exactly as sluice computes it
    edit(proj, "UPDATE events SET seq = -seq - 1 WHERE seq > ?", (k,))
    edit(proj, "UPDATE events SET seq = -seq WHERE seq < 0")
    forged = {
        "id": 10_000,
        "at": evs[2]["at"] + 0.001,
        "actor": "mallory@host",
        "kind": "job.released",
        "run_id": None,
        "job_id": None,
        "item_id": None,
        "workflow": "w",
        "message": "released by the approver",
        "details": "{}",
    }
    edit(
        proj,
        "INSERT INTO events (id, at, actor, kind, run_id, job_id, item_id, workflow, message, details, seq, hash) "
        "VALUES (:id, :at, :actor, :kind, :run_id, :job_id, :item_id, :workflow, :message, :details, :seq, :hash)",
        {**forged, "seq": k + 1, "hash": link(evs[2]["hash"], forged)},
    )
    r = proj.sluice("history", "verify", "--json")
    assert r.code == 1
    assert r.json["problem"] == "inserted" and r.json["broken_at"] == 10_000


def test_export_can_be_checked_without_sluice(proj: Proj) -> None:
    ids = some_history(proj)
    v = sealed(proj, at_least=6)
    lines = proj.ok("history", "export").out.splitlines()
    assert len(lines) == v["events"]
    previous = ""
    for line in lines:
        event = json.loads(line)
        body = {k: v for k, v in event.items() if k not in ("seq", "hash")}
        text = json.dumps(body, sort_keys=True, separators=(",", ":"))
        previous = hashlib.sha256((previous + text).encode()).hexdigest()
        assert previous == event["hash"]
    assert previous == v["head"]
    assert any(json.loads(x)["kind"] == "queue.purged" and json.loads(x)["item_id"] == ids[0] for x in lines)

    third = json.loads(lines[2])
    since = proj.ok("history", "export", "--since", str(third["id"])).out.splitlines()
    assert since == lines[3:]
    assert proj.sluice("history", "export", "--since", "999999").code == 4


def test_many_writers_at_once_give_one_unbroken_chain(proj: Proj) -> None:
    """CLIs queueing side by side while the engine runs jobs and seals: every event sealed once."""
    proj.write("workflows/w.yaml", W)
    proj.ok("engine", "start")
    procs = [proj.popen("workflow", "queue", "w", "-i", f"n={p}-{i}") for p in range(6) for i in range(4)]
    for p in procs:
        assert p.wait(60) == 0, p.stderr.read() if p.stderr else ""
    proj.ok("queue", "execute", "--all", "--yes", "--wait")
    total = int(proj.service().db.scalar("SELECT COUNT(*) FROM events") or 0)
    v = sealed(proj, at_least=total)
    assert v["intact"] is True
    rows = proj.service().db.all("SELECT seq FROM events ORDER BY seq")
    assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))


def test_the_migration_seals_the_history_that_exists(fresh_proj: Proj) -> None:
    from core.store.migrate import upgrade

    path = fresh_proj.root / ".sluice" / "state.db"
    path.parent.mkdir()
    upgrade(f"sqlite:///{path}", "0008")
    db = sqlite3.connect(path)
    for i in range(3):
        db.execute(
            "INSERT INTO events (at, actor, kind, message, details) VALUES (?, 'old@host', 'queue.queued', ?, '{}')",
            (1700000000 + i, f"old {i}"),
        )
    db.commit()
    db.close()
    v = fresh_proj.sluice("history", "verify", "--json").json
    assert v["intact"] is True and v["events"] == 3 and v["unsealed"] == 0
