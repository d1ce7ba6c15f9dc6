"""test_daemon_sessions.py — a chat session never bricks itself. With `memory: session` every
turn makes the next prompt longer; in a small context (256 tokens) a long session must keep
answering: the prompt keeps the system prompt, the task's input and as many of the NEWEST
turns as fit in the context less the task's max_tokens, the result and the task row say how
many older turns were left out (`turns_dropped`), `history` still holds every turn, and an
input that cannot fit by itself is still refused context_full (without harming the session).
One real nexusd, loopback, tiny synthesized model."""
import pytest

import daemon_util as du

CONTEXT = 256
MAX_TOKENS = 8
TURNS = 20
AGENTS = [
    du.agent("chat", "tq", system_prompt="You are a terse assistant.",
             memory={"type": "session", "turns": 1000}),
    du.agent("chat_once", "tq", system_prompt="You are a terse assistant."),
]


@pytest.fixture(scope="module")
def daemon():
    with du.running(AGENTS, conf={"context": CONTEXT}) as d:
        yield d


def say(i):
    return f"turn {i}: tell me something about the weather and the sea today, please"


def test_long_session_keeps_answering_with_the_newest_turns(daemon):
    with daemon.client() as c:
        results = []
        for i in range(TURNS):
            _, _, r = c.task("chat", say(i), session="long")
            assert r["op"] == "result", (i, r)  # before the fix: context_full, forever
            results.append(r)
        # the same input with no history: the floor a session prompt never goes under
        _, _, alone = c.task("chat_once", say(TURNS - 1))
        assert alone["op"] == "result", alone
        assert alone["turns_dropped"] == 0
        dropped = [r["turns_dropped"] for r in results]
        assert dropped[0] == 0, dropped
        assert dropped[-1] > 0, dropped  # the session did outgrow the context
        for i, r in enumerate(results):  # every prompt left room for max_tokens
            assert r["usage"]["prompt_tokens"] + MAX_TOKENS <= CONTEXT, (i, r)
            assert 0 <= r["turns_dropped"] <= i, (i, r)
        # the last prompt still kept the newest turns (a turn is far smaller than the context)
        assert results[-1]["turns_dropped"] < TURNS - 1, dropped
        assert results[-1]["usage"]["prompt_tokens"] > alone["usage"]["prompt_tokens"]

        rows = c.call({"op": "tasks", "agent": "chat", "limit": TURNS})["tasks"]
        by_task = {row["task"]: row for row in rows}
        for r in results:
            row = by_task[r["task"]]
            assert row["status"] == "done", row
            assert row["turns_dropped"] == r["turns_dropped"], (row, r)

        history = c.call({"op": "history", "session": "long"})["messages"]
        assert len(history) == 2 * TURNS  # history still shows every turn
        assert history[0]["content"] == say(0) and history[-2]["content"] == say(TURNS - 1)


def test_max_tokens_counts_against_the_room_for_turns(daemon):
    """A task asking for nearly the whole context keeps no turn at all (its input alone is
    already over context - max_tokens) and still runs; the session answers normally after."""
    with daemon.client() as c:
        for i in range(3):
            _, _, r = c.task("chat", say(i), session="greedy")
            assert r["op"] == "result", r
        _, _, r = c.task("chat", say(3), session="greedy",
                         params={"max_tokens": CONTEXT - 4})
        assert r["op"] == "result", r
        assert r["turns_dropped"] == 3, r
        _, _, alone = c.task("chat_once", say(3))
        assert r["usage"]["prompt_tokens"] == alone["usage"]["prompt_tokens"], (r, alone)
        _, _, r = c.task("chat", say(4), session="greedy")
        assert r["op"] == "result", r


def test_an_input_that_cannot_fit_alone_is_context_full(daemon):
    with daemon.client() as c:
        _, _, r = c.task("chat", say(0), session="big")
        assert r["op"] == "result", r
        huge = "the weather and the sea " * 200  # far over 256 tokens by itself
        accepted, _, r = c.task("chat", huge, session="big")
        assert r["op"] == "error" and r["code"] == "context_full", r
        assert "context of 256" in r["message"], r
        rows = c.call({"op": "tasks", "agent": "chat", "limit": 1})["tasks"]
        assert rows[0]["task"] == accepted["task"] and rows[0]["error_code"] == "context_full"
        # the session is not harmed: the next turn answers and the failed one is not in it
        _, _, r = c.task("chat", say(1), session="big")
        assert r["op"] == "result", r
        history = c.call({"op": "history", "session": "big"})["messages"]
        assert [m["content"] for m in history[::2]] == [say(0), say(1)]
