"""Progress fan-out and the terminal bar (drawn only on a TTY)."""

from __future__ import annotations

import io
import logging
import threading

from minart.progress import TerminalProgress, emit, listen, note, notes_to


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_listeners_receive_emits_only_while_listening():
    seen = []
    emit("a", 1, 2)
    with listen(lambda *args: seen.append(args)), listen(lambda *args: seen.append(("2nd",))):
        emit("a", 1, 2)
    emit("a", 2, 2)
    assert seen == [("a", 1, 2), ("2nd",)]


def test_bar_draws_on_a_tty_with_counts_and_rate():
    stream = _Tty()
    with TerminalProgress(stream) as bar:
        assert bar.enabled
        for done in range(1, 6):
            bar("soften", done, 5)
        bar("art", 3, 10)
    text = stream.getvalue()
    assert "soften" in text and "5/5" in text and "art" in text and "3/10" in text
    assert "ETA" in text


def test_bar_is_silent_when_not_a_tty():
    stream = io.StringIO()
    with TerminalProgress(stream) as bar:
        bar("soften", 1, 5)
    assert not bar.enabled and stream.getvalue() == ""


def test_bar_is_thread_safe():
    stream = _Tty()
    with TerminalProgress(stream) as bar:
        threads = [threading.Thread(target=lambda n=n: [bar(f"s{n}", i, 50) for i in range(51)])
                   for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert all(f"s{n}" in stream.getvalue() for n in range(4))


def test_notes_go_to_the_receiver_of_their_own_context_and_else_to_the_minart_log(caplog):
    caplog.set_level(logging.INFO, logger="minart")
    note("outside")
    assert [r.getMessage() for r in caplog.records if r.name == "minart"] == ["outside"]
    seen: dict[int, list[str]] = {0: [], 1: []}
    both = threading.Barrier(2)

    def step(n: int) -> None:  # two steps at once in threads, as Prefect runs them
        with notes_to(seen[n].append):
            both.wait()
            note(f"from {n}")
        note(f"after {n}")

    threads = [threading.Thread(target=step, args=(n,)) for n in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {0: ["from 0"], 1: ["from 1"]}
    assert sorted(r.getMessage() for r in caplog.records if r.name == "minart") == [
        "after 0", "after 1", "outside"]
