"""ShareGPT conversations: a JSON array (or one object a line) of
{"conversations": [{"from": "human" | "gpt" | ..., "value": text}, ...]}.

Token counts. No tokenizer can be fetched here, so a turn's tokens are approximated as
ceil(UTF-8 bytes / 4), at least 1. OpenAI's rule of thumb for its tokenizers is "one token is
about 4 characters of English text" ("What are tokens and how to count them?",
https://help.openai.com/en/articles/4936856); counting bytes rather than characters extends it to
other scripts, as byte-level BPE tokenizers see bytes (a CJK character is 3 bytes, about 1 token).

Requests. Each answer ("gpt", "chatgpt", "assistant", "bard", "bing", "model") that follows one or
more prompt-side turns (every other role: "human", "user", "system", tools) is one request: its
prompt is the whole conversation so far (earlier turns, their answers, then the new turns), its
output is the answer. A conversation ending on a question has no answer to size, so that last
question is dropped.

Prefix sharing. A conversation's tokens form one stream: turn k's prompt extends turn k-1's prompt
and answer. Every full chunk of `chunk_tokens` tokens in that stream gets one id, reused by every
later turn of the same conversation; a partial last chunk gets an id of its own. Ids are counted
from 0 in file order, so they are deterministic.

Arrivals. ShareGPT has no timestamps: requests arrive in file order as a Poisson process at
`rate_per_s`, seeded (first request at 0). Later turns of a conversation follow earlier ones in that
order but do not wait for their answers.

A conversation that is not well formed is reported at the line where it starts; an undecodable
file or a broken JSON document stops the reading there (with skip_invalid, after what was read).
"""
from __future__ import annotations

import json
import math
import re
from typing import Iterator

import numpy as np

from workloads.formats import ReadOptions
from workloads.formats.jsontext import RowBuffer, field_at
from workloads.screen import Problem, Rows
from workloads.sources import NOT_UTF8, Source
from workloads.trace import TraceError

ANSWER_ROLES = frozenset({"gpt", "chatgpt", "assistant", "bard", "bing", "model"})
FIELDS = {
    "time_s": "conversations",
    "prompt_tokens": "conversations",
    "output_tokens": "conversations",
    "n": "n",
}
_SPACE = re.compile(r"\s*")


def chunk_tokens(options: ReadOptions) -> int:
    """ShareGPT's synthetic prefix hashes cover options.chunk_tokens tokens each."""
    return options.chunk_tokens


def approx_tokens(text: str) -> int:
    """Approximate tokens of a text: ceil(UTF-8 bytes / 4), at least 1 (see the module doc)."""
    return max(1, math.ceil(len(text.encode("utf-8")) / 4))


def read(source: Source, options: ReadOptions) -> Iterator[Rows]:
    """Rows of a ShareGPT file: every answered turn of every conversation, in file order."""
    text = _read_text(source)
    rng = np.random.default_rng(options.seed)
    chunk = options.chunk_tokens
    buffer = RowBuffer(hashed=True)
    next_id = 0
    clock_s = None
    conversations = 0
    for item in _json_values(text):
        conversations += 1
        if isinstance(item, Problem):
            buffer.problems.append(item)
            continue
        line, value = item
        requests = _requests(value, line)
        if isinstance(requests, Problem):
            buffer.problems.append(requests)
            continue
        full_ids: list[int] = []  # ids of this conversation's full chunks, in stream order
        for prompt, output in requests:
            while len(full_ids) < prompt // chunk:
                full_ids.append(next_id)
                next_id += 1
            hashes = tuple(full_ids[: prompt // chunk])
            if prompt % chunk:
                hashes += (next_id,)
                next_id += 1
            if clock_s is None:
                clock_s = 0.0
            else:
                clock_s += rng.exponential(1.0 / options.rate_per_s)
            buffer.add(line, clock_s, clock_s, prompt, output, hashes)
        if options.chunk_rows is not None and len(buffer) >= options.chunk_rows:
            yield buffer.take()
    if conversations == 0:
        raise TraceError(source.display, 1, "conversations", "no conversations in the file")
    yield buffer.take()


def _requests(value: object, line: int) -> list[tuple[int, int]] | Problem:
    """(prompt_tokens, output_tokens) of each answered turn of one conversation."""
    if not isinstance(value, dict) or not isinstance(value.get("conversations"), list):
        return Problem(line, "conversations", "missing, or not a list of turns", _kind(value))
    requests = []
    history = 0  # tokens of the conversation before the pending turns
    pending = 0  # tokens of prompt-side turns since the last answer
    for k, turn in enumerate(value["conversations"]):
        if not isinstance(turn, dict):
            return Problem(line, f"conversations[{k}]", "not an object", _kind(turn))
        for key in ("from", "value"):
            if not isinstance(turn.get(key), str):
                field = f"conversations[{k}].{key}"
                return Problem(line, field, "missing, or not a string", turn.get(key))
        tokens = approx_tokens(turn["value"])
        if turn["from"] not in ANSWER_ROLES:
            pending += tokens
            continue
        if pending:
            requests.append((history + pending, tokens))
        history += pending + tokens
        pending = 0
    return requests


def _read_text(source: Source) -> str:
    source.first_line()  # refuses UTF-16 and UTF-32 with a clear message
    with source.open() as handle:
        data = handle.read()
    if not data.strip():
        raise TraceError(source.display, 1, "conversations", "the file is empty")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        start = data.rfind(b"\n", 0, exc.start) + 1
        before = data[start : exc.start].decode("utf-8", errors="replace")
        raise TraceError(
            source.display, data.count(b"\n", 0, exc.start) + 1, field_at(before, len(before)),
            NOT_UTF8, data[exc.start : exc.start + 8],
        ) from None


def _json_values(text: str) -> Iterator[tuple[int, object] | Problem]:
    """(line, value) of each element of a JSON array, or of each value of a JSON-lines text."""
    decoder = json.JSONDecoder()
    pos = _SPACE.match(text).end()
    in_array = text.startswith("[", pos)
    if in_array:
        pos = _SPACE.match(text, pos + 1).end()
    line, counted = 1, 0
    while not (in_array and text.startswith("]", pos)):
        line += text.count("\n", counted, pos)
        counted = pos
        if pos >= len(text):
            if in_array:
                yield Problem(line, "(array)", "the array is not closed; a truncated file?", "")
            return
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            # Near the end of the text, the file is cut short: the field may be a cut key.
            seen = text[pos:] if len(text) - exc.pos < 200 else text[pos : exc.pos]
            yield Problem(
                line + text.count("\n", pos, exc.pos), field_at(seen, exc.pos - pos),
                f"invalid JSON ({exc.msg}); the rest of the file is not read",
                text[exc.pos : exc.pos + 40],
            )
            return
        yield line, value
        pos = _SPACE.match(text, end).end()
        if in_array and text.startswith(",", pos):
            pos = _SPACE.match(text, pos + 1).end()
        elif in_array and not text.startswith("]", pos):
            yield Problem(
                line + text.count("\n", counted, pos), "(array)",
                "expected ',' or ']' after a conversation; a truncated file?", text[pos : pos + 40],
            )
            return


def _kind(value: object) -> object:
    return sorted(value) if isinstance(value, dict) else type(value).__name__
