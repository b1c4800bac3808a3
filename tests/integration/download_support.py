"""Big finished jobs and clients that stop reading, for the download tests and the memory script.

No tests here. The two jobs are the reviewer's: many lots with ten long descriptions each, and a
few failed lots each listing hundreds of unreachable image URLs (no model cost to make).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from sqlalchemy import Engine, insert

from lotlens_common import signing
from lotlens_common.tables import descriptions, jobs, lots
from tests.conftest import new_id

TEN_LANGUAGES = ("en", "fr", "de", "es", "it", "pt", "nl", "pl", "sv", "da")
DOWNLOAD = "/api/v1/batch-results/{job_id}/download"


def _insert_job(engine: Engine, client_id: str, languages: tuple[str, ...], total: int, failed: int) -> str:
    job_id = new_id("job-")
    done = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(insert(jobs).values(
            job_id=job_id, client_id=client_id, status="completed", api_version="1.0.0",
            languages=list(languages), total_lots=total, processed_lots=total - failed, failed_lots=failed,
            images_processed=0, webhook_configured=False, created_at=done - timedelta(minutes=45),
            updated_at=done, estimated_completion=done, completed_at=done))
    return job_id


def insert_long_texts_job(engine: Engine, client_id: str, lot_count: int, text_bytes: int = 1500,
                          languages: tuple[str, ...] = TEN_LANGUAGES) -> str:
    """A completed job of `lot_count` lots, each with a `text_bytes` description per language."""
    job_id = _insert_job(engine, client_id, languages, lot_count, 0)
    text = "<p>" + "scratch on the left door, " * (text_bytes // 26) + "</p>"
    with engine.begin() as conn:
        for start in range(0, lot_count, 500):
            batch = range(start, min(start + 500, lot_count))
            conn.execute(insert(lots), [
                {"job_id": job_id, "lot_id": f"lot-{i}", "seq": i, "status": "completed",
                 "processed_images": 2, "missing_images": [], "processed_at": datetime.now(UTC)}
                for i in batch])
            conn.execute(insert(descriptions), [
                {"job_id": job_id, "lot_id": f"lot-{i}", "language": language, "damages": text}
                for i in batch for language in languages])
    return job_id


def insert_unreachable_images_job(engine: Engine, client_id: str, lot_count: int, urls_per_lot: int = 400,
                                  url_bytes: int = 2400) -> str:
    """A completed job of `lot_count` failed lots, each listing `urls_per_lot` missing image URLs of
    about `url_bytes` characters (what a submission of unreachable images costs nobody to make)."""
    job_id = _insert_job(engine, client_id, ("en",), lot_count, lot_count)
    with engine.begin() as conn:
        for i in range(lot_count):
            urls = [f"https://img.example.com/{i}/{n}/" + "x" * (url_bytes - 40) for n in range(urls_per_lot)]
            conn.execute(insert(lots).values(
                job_id=job_id, lot_id=f"lot-{i}", seq=i, status="failed", image_urls=urls,
                processed_images=0, missing_images=urls, processed_at=datetime.now(UTC),
                error_message=f"none of the lot's {urls_per_lot} images could be fetched"))
    return job_id


def start_download(base_url: str, key: str, job_id: str, path: str = DOWNLOAD,
                   close: bool = False) -> socket.socket:
    """A raw connection whose request is sent and whose answer's status (`HTTP/1.1 200`) is read, and
    that then reads nothing more (a receive buffer of a few KB, so the server cannot park the body in it)."""
    address = urlsplit(base_url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(30)
    sock.connect((address.hostname or "127.0.0.1", address.port or 80))
    target = path.format(job_id=job_id)
    lines = [f"GET {target} HTTP/1.1", f"Host: {address.netloc}",
             f"X-Signature: {signing.sign(key, job_id.encode())}", *(["Connection: close"] if close else [])]
    sock.sendall("\r\n".join([*lines, "", ""]).encode())
    head = b""
    while len(head) < len(b"HTTP/1.1 200") and (piece := sock.recv(12 - len(head))):
        head += piece
    if head != b"HTTP/1.1 200":
        sock.close()
        raise AssertionError(f"the download was not answered 200: {head[:300]!r}")
    return sock


@contextmanager
def stalled_downloads(base_url: str, key: str, job_id: str, count: int,
                      path: str = DOWNLOAD) -> Iterator[list[socket.socket]]:
    """`count` downloads of the job started and left unread; closed on exit."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            socks.append(start_download(base_url, key, job_id, path))
        yield socks
    finally:
        for sock in socks:
            sock.close()


def drain(sock: socket.socket, timeout_s: float = 60.0) -> tuple[int, str]:
    """Read until the server ends the connection: the bytes read and how it ended (`eof`, `reset`);
    a server that keeps it open past `timeout_s` ends it `open`."""
    deadline = time.monotonic() + timeout_s
    sock.settimeout(1.0)
    received = 0
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(1 << 20)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return received, "reset"
        if not chunk:
            return received, "eof"
        received += len(chunk)
    return received, "open"
