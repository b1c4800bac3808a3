"""A result file read chunk by chunk gives the lines a split of the whole file gives, however the
network cut it: `split_lines` finds the newlines with `bytes.find`, where a split was the reference."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Sequence

import httpx2
import openai

from lotlens_common.model.batch_files import split_lines
from lotlens_common.model.openai_client import OpenAIBatches

# What a file holds around its lines: blank lines, whitespace, CRLF ends, a long answer.
PIECES = [b"", b"\n", b"\n\n", b" ", b" \n", b"\t\n", b"\r\n", b"\r", b'{"custom_id":"lot-1","response":{}}',
          b"x" * 3000, "Ünïcödé ДТП".encode(), b"\x00", b"\x0b", b"\x0c"]


def _files(rng: random.Random) -> list[tuple[bytes, list[bytes]]]:
    """Files of random pieces, each cut into random chunks (some empty)."""
    made = []
    for _ in range(3000):
        data = b"".join(rng.choice(PIECES) for _ in range(rng.randrange(0, 30)))
        cuts = sorted(rng.choices(range(len(data) + 1), k=rng.randrange(0, 10)))
        made.append((data, [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]))
    return made


def _whole(data: bytes) -> list[bytes]:
    """The lines a split of the whole file gives, blank ones left out."""
    return [line for line in data.split(b"\n") if line.strip()]


def _read(chunks: list[bytes]) -> list[bytes]:
    pending: list[bytes] = []
    lines = [line for chunk in chunks for line in split_lines(chunk, pending)]
    tail = b"".join(pending)
    return lines + ([tail] if tail.strip() else [])


def test_lines_read_chunk_by_chunk_are_those_of_the_whole_file() -> None:
    for data, chunks in _files(random.Random(8812)):
        assert _read(chunks) == _whole(data), (data, chunks)


class _Chunk(bytes):
    """A chunk of the file as the network hands it, whose `split` fails the test."""

    def split(self, *args: object, **kwargs: object) -> list[bytes]:
        raise AssertionError("a chunk was split byte by byte")


def _streamed(chunks: Sequence[bytes]) -> list[bytes]:
    """The lines `OpenAIBatches.iter_file_lines` reads of a file the API sends in these chunks."""
    async def body() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=body())

    async def read() -> list[bytes]:
        client = openai.AsyncOpenAI(api_key="sk-test", base_url="http://127.0.0.1:9/v1",
                                    http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(answer)))
        return [line async for line in OpenAIBatches(client).iter_file_lines("file-out")]

    return asyncio.run(read())


def test_a_result_file_streamed_from_the_api_reads_as_its_whole_lines() -> None:
    for data, chunks in _files(random.Random(8813))[:300]:
        assert _streamed(chunks) == _whole(data), (data, chunks)


def test_a_result_file_is_cut_into_lines_without_comparing_every_byte_in_python() -> None:
    # `bytes.split(b"\n")` compares byte by byte: 1.46 us of a 2.5 kB output line, 12,000 of the
    # 186,000 instructions a vision lot's collection took. `find` is memchr.
    lines = [b'{"custom_id":"lot-%d","response":{}}' % number for number in range(40)]
    data = b"\n".join(lines) + b"\n"
    chunks = [_Chunk(data[start:start + 100]) for start in range(0, len(data), 100)]
    assert _streamed(chunks) == lines
