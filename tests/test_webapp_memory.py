"""webapp/memory.py: the server's malloc arenas limited and freed memory handed back (glibc; no-ops elsewhere)."""

import pytest

import webapp.streaming
from webapp.memory import libc, limit_arenas, trim
from webapp.streaming import ResultFolders


def test_bad_arena_counts_are_refused_by_name():
    for bad in (0, -2, 1.5, "2"):
        with pytest.raises(ValueError, match="arenas"):
            limit_arenas(bad)


def test_on_glibc_both_calls_take_effect_and_elsewhere_do_nothing():
    supported = libc() is not None
    assert limit_arenas() is supported
    assert isinstance(trim(), bool) and (supported or trim() is False)


def test_each_finished_request_trims_the_heap(monkeypatch):
    calls = []
    monkeypatch.setattr(webapp.streaming, "trim", lambda: calls.append(1) or True)
    folders = ResultFolders(keep=2)
    folder = folders.new()
    assert not calls
    folders.release(folder)
    assert calls == [1]
