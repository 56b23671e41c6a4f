"""The buffer with outputs: an event leaves only when the broker acked it and every cursor passed."""

from __future__ import annotations

from test_buffer import make, pending

from agent.pipeline import missed


def seqs(buf, *, published: bool) -> list[int]:
    return [r.seq for r in buf.fetch(0, 1000, published=published)]


def test_acked_events_stay_until_every_output_passed_them(tmp_path):
    buf = make(tmp_path, outputs=["vms", "hook"])
    buf.commit([pending(n=i) for i in range(6)])
    buf.commit([], acked=[1, 2, 3, 4])
    assert seqs(buf, published=False) == [5, 6], "the publisher must not see acked events again"
    assert seqs(buf, published=True) == [1, 2, 3, 4, 5, 6], "outputs still need them"
    buf.commit([], cursors={"vms": 6, "hook": 2})
    assert seqs(buf, published=True) == [3, 4, 5, 6]
    assert buf.stats().depth == 4
    buf.commit([], acked=[5], cursors={"hook": 6})
    assert seqs(buf, published=True) == [6], "acked and passed by both: gone"
    buf.commit([], acked=[6])
    assert buf.stats().depth == 0


def test_cursors_survive_reopen_new_output_starts_at_head_removed_one_is_forgotten(tmp_path):
    buf = make(tmp_path, outputs=["vms"])
    buf.commit([pending(n=i) for i in range(5)])
    buf.commit([], acked=[1, 2, 3, 4, 5], cursors={"vms": 2})
    buf.close()
    buf = make(tmp_path, outputs=["vms", "new"])
    assert buf.cursors == {"vms": 2, "new": 5}
    assert seqs(buf, published=True) == [3, 4, 5]
    assert seqs(buf, published=False) == []
    buf.close()
    buf = make(tmp_path)  # every output removed: nothing holds acked events back
    assert buf.cursors == {}
    assert buf.stats().depth == 0


def test_without_outputs_acked_events_are_deleted_at_once(tmp_path):
    buf = make(tmp_path)
    buf.commit([pending(n=i) for i in range(3)])
    buf.commit([], acked=[1, 2])
    assert seqs(buf, published=True) == [3]


def test_a_capacity_drop_is_split_per_output_by_its_cursor(tmp_path):
    buf = make(tmp_path, outputs=["vms"], max_bytes=20_000)
    buf.commit([pending("eas.alarm", n=i) for i in range(50)])
    buf.commit([], acked=list(range(1, 51)), cursors={"vms": 10})
    committed, drops = buf.commit([pending("eas.alarm", n=i) for i in range(200)])
    assert drops and drops[0].first_seq == 11, "1..10 were acked and passed: already gone"
    report = committed[-1]
    assert report["type"] == "agent.events_dropped"
    assert report["data"]["first_seq"] == 51, "the broker's report names only what it never had"
    assert report["data"]["count"] == drops[0].count - 40
    lost = missed(drops[0], buf.cursors["vms"])
    assert lost is not None and lost.first_seq == 11 and lost.count == drops[0].count
    assert missed(drops[0], drops[0].last_seq) is None
    assert buf.lag(buf.cursors["vms"])[0] == buf.stats().next_seq - 1 - 10


def test_free_on_a_full_disk_commits_the_cursors_with_the_deletes(tmp_path):
    buf = make(tmp_path, outputs=["vms"])
    buf.commit([pending(n=i) for i in range(4)])
    buf.free([1, 2, 3], {"vms": 2})
    assert seqs(buf, published=True) == [3, 4]
    assert buf.cursors == {"vms": 2}
    buf.free([], {"vms": 4})
    assert seqs(buf, published=True) == [4], "3 was acked and is now passed; 4 is not acked"
