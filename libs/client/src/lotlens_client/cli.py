"""`lotlens`: submit lots and follow jobs from the shell. JSON on stdout, messages on stderr.

    lotlens submit FILE [--languages en,de] [--webhook URL] [--idempotency-key K] [--wait]
    lotlens status JOB
    lotlens results JOB [--download FILE]
    lotlens cancel JOB
    lotlens retry-failed JOB
    lotlens jobs [--status S] [--limit N] [--offset N] [--cursor C]
    lotlens lots JOB [--status S] [--limit N] [--offset N] [--all]

FILE is JSON: `{"lots": [...], "languages": [...]}` or a bare list of lots, each in the API's shape
(`images: [{url}]`) or the v2.0 client's (`image_urls: [...]`). One lot is described at once; two
or more become a batch job. The service is `$LOTLENS_URL` (default http://127.0.0.1:18000), the
shared key `$LOTLENS_CLIENT_KEY`. Exit status: 0 done; 1 the API refused or failed, the described
lot or the waited-for job ended failed or cancelled (its JSON still printed), or a file (or stdout)
could not be written; 2 bad usage (nothing sent); 130 interrupted (Ctrl-C). Characters stdout's
encoding cannot hold are printed as JSON escapes (`\\u0416`), and a submission names its
Idempotency-Key on stderr before it is sent.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import httpx2

from lotlens_client.client import LotLensClient
from lotlens_client.errors import LotLensError, WaitTimeoutError, outcome_unknown
from lotlens_client.models import JobStatus, Lot, lots_from
from lotlens_client.output import NotPrinted, ReaderGone, as_json, emit, printed

DEFAULT_URL = "http://127.0.0.1:18000"
URL_ENV = "LOTLENS_URL"
KEY_ENV = "LOTLENS_CLIENT_KEY"
EXIT_OK, EXIT_API_ERROR, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it
STATES = ("pending", "processing", "translating", "completed", "failed", "cancelled")
BAR_WIDTH = 30
# What the gateway keeps its promise for (its defaults: LOTLENS_IDEMPOTENCY_TTL_S, and
# LOTLENS_SYNC_TIMEOUT_S + 60 s before an attempt that died with its gateway is taken over).
RESEND_TERMS = ("within 24 h a resend is answered from the first attempt, not carried out again (an attempt "
                "whose gateway died meanwhile is carried out anew, after about 6 minutes)")


class UsageError(Exception):
    """The command line or its input file cannot be used as given (exit status 2)."""


class NotCompleted(Exception):
    """The described lot or the waited-for job ended failed or cancelled (exit status 1)."""


class Interrupted(Exception):
    """Ctrl-C: what is left running on the service, and how to find it again (exit status 130)."""


def _seconds(text: str, *, zero: bool = True) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not zero):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds {'>=' if zero else '>'} 0")
    return seconds


def seconds(text: str) -> float:
    """An argument of 0 or more seconds."""
    return _seconds(text)


def positive_seconds(text: str) -> float:
    """An argument of more than 0 seconds."""
    return _seconds(text, zero=False)


def build_parser() -> argparse.ArgumentParser:
    """The `lotlens` argument parser."""
    parser = argparse.ArgumentParser(prog="lotlens", description="Describe car lots with the LotLens API.",
                                     epilog=f"Environment: {URL_ENV} (default {DEFAULT_URL}), {KEY_ENV}.")
    parser.add_argument("--url", help=f"the service's base URL (default: ${URL_ENV})")
    parser.add_argument("--timeout", type=positive_seconds, default=30.0,
                        help="seconds per request (default 30)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    submit = commands.add_parser("submit", help="describe one lot now, or submit 2+ lots as a batch job")
    submit.add_argument("file", type=Path, metavar="FILE",
                        help="JSON with `lots` (and `languages`), or a list of lots")
    submit.add_argument("--languages",
                        help="comma-separated BCP 47 tags, e.g. en,pt-BR (default: the file's, else en)")
    submit.add_argument("--webhook", help="URL the results are POSTed to (lots without their own)")
    submit.add_argument("--idempotency-key",
                        help="resending with the same key within 24 h never makes a second job (default: a "
                             "new one, named on stderr when the outcome is unknown)")
    submit.add_argument("--wait", action="store_true", help="wait for the job and print its results")
    submit.add_argument("--poll-interval", type=seconds, default=5.0,
                        help="seconds between polls (default 5, at least 0.5)")
    submit.add_argument("--wait-timeout", type=seconds, default=24 * 3600.0, help="give up after S seconds")

    commands.add_parser("status", help="a job's status and progress").add_argument("job_id", metavar="JOB")

    results = commands.add_parser("results", help="a finished job's results")
    results.add_argument("job_id", metavar="JOB")
    results.add_argument("--download", type=Path, metavar="FILE", help="stream the document to FILE instead")

    cancel = commands.add_parser("cancel", help="cancel a pending or running job")
    cancel.add_argument("job_id", metavar="JOB")

    retry = commands.add_parser("retry-failed", help="resubmit a finished job's failed lots as a new job")
    retry.add_argument("job_id", metavar="JOB")

    jobs = commands.add_parser("jobs", help="your jobs, newest first")
    jobs.add_argument("--status", choices=STATES)
    jobs.add_argument("--limit", type=int, default=10, help="at most 100 (default 10)")
    jobs.add_argument("--offset", type=int, default=0)
    jobs.add_argument("--cursor", help="a page's pagination.next_cursor: the jobs after that page")

    lots = commands.add_parser("lots", help="a job's lots, running jobs too, a page at a time")
    lots.add_argument("job_id", metavar="JOB")
    lots.add_argument("--status", choices=STATES, help="only the lots in this state")
    lots.add_argument("--limit", type=int, default=100, help="at most 500 (default 100)")
    lots.add_argument("--offset", type=int, default=0)
    lots.add_argument("--all", action="store_true",
                      help="every lot from --offset on, one JSON object a line (the pages walked for you)")
    return parser


def read_submission(path: Path) -> tuple[list[Lot], list[str] | None]:
    """The lots and (if given) languages of a submission file."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from exc
    raw_lots = document.get("lots") if isinstance(document, dict) else document
    languages = document.get("languages") if isinstance(document, dict) else None
    if not isinstance(raw_lots, list) or not raw_lots or not all(isinstance(lot, dict) for lot in raw_lots):
        raise UsageError(f"{path}: expected a non-empty list of lot objects (or an object with `lots`)")
    if languages is not None and not (isinstance(languages, list)
                                      and all(isinstance(code, str) for code in languages)):
        raise UsageError(f"{path}: `languages` must be a list of strings")
    try:
        return lots_from(raw_lots), languages
    except (KeyError, TypeError) as exc:
        raise UsageError(f"{path}: every lot needs a `lot_id` and image URLs ({exc})") from exc


def base_url(url: str) -> str:
    """The service's URL, if it is an http(s) URL with a host."""
    try:
        parsed = httpx2.URL(url)
    except httpx2.InvalidURL as exc:
        raise UsageError(f"not a URL: {url!r} ({exc})") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise UsageError(f"the service's URL must be http(s)://HOST[:PORT], not {url!r}")
    return url


def check_download_target(path: Path) -> None:
    """Refuse, before asking anything, a `--download` FILE that names a folder or lies in none."""
    if path.is_dir():
        raise UsageError(f"--download {path}: is a folder; name a file")
    if not path.parent.is_dir():
        raise UsageError(f"--download {path}: no folder {path.parent}")


def progress_line(status: JobStatus) -> str:
    """One `\\r`-led line of the text progress bar."""
    progress = status.progress
    percentage = max(0.0, min(100.0, progress.completion_percentage))
    filled = round(BAR_WIDTH * percentage / 100)
    return (f"\r[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {percentage:5.1f}% "
            f"{progress.processed_lots}/{progress.total_lots} lots, {progress.failed_lots} failed  "
            f"{status.status:<11}")


def resend_hint(key: str) -> str:
    """How to send a submission whose outcome is unknown again, and what the gateway promises."""
    return f"send it again with --idempotency-key {key}: {RESEND_TERMS}"


class WaitDisplay:
    """`--wait` on stderr: the progress bar; once, that status polls are failing and why, and once
    more when they are answered again (a gateway gone for good froze the bar without a word)."""

    def __init__(self, job_id: str, err: TextIO) -> None:
        self._job_id, self._err, self._failing = job_id, err, False

    def progress(self, status: JobStatus) -> None:
        """Draw the bar (after a notice that polls are answered again, if they were failing)."""
        if self._failing:
            self._failing = False
            self._err.write(f"\nlotlens: status polls of job {self._job_id} are answered again\n")
        self._err.write(progress_line(status))
        self._err.flush()

    def poll_failed(self, error: LotLensError) -> None:
        """Say, the first time in a row, that polls fail (they go on until --wait-timeout)."""
        if not self._failing:
            self._failing = True
            self._err.write(f"\nlotlens: status polls are failing ({error.code}: {error.message}); "
                            f"polling job {self._job_id} again until --wait-timeout\n")
            self._err.flush()


def _finished(answer: Any, status: str, what: str, reason: str | None) -> Any:
    """The answer of a submission that ended completed; otherwise it is printed, then NotCompleted."""
    if status == "completed":
        return answer
    emit(answer)
    raise NotCompleted(f"{what} ended {status}" + (f": {reason}" if reason else ""))


def _submit(client: LotLensClient, args: argparse.Namespace, err: TextIO) -> Any:
    lots, file_languages = read_submission(args.file)
    languages = [code.strip() for code in args.languages.split(",") if code.strip()] if args.languages \
        else file_languages or ["en"]
    # Made here rather than by the SDK, and named before the request is sent, so that an answer
    # lost on the way (no answer, Ctrl-C, a stdout that fails) is fetched again, not paid again.
    key = args.idempotency_key or str(uuid.uuid4())
    if args.idempotency_key is None:
        err.write(f"lotlens: if the answer is lost, {resend_hint(key)}\n")
    if len(lots) == 1 and args.webhook and not lots[0].webhook:
        err.write("note: a single lot is described at once; --webhook is not used\n")
    try:
        if len(lots) == 1:
            lot = client.describe_lot(lots[0], languages, idempotency_key=key)
            return _finished(lot, lot.status, f"lot {lot.lot_id}", lot.error_message)
        accepted = client.submit_job(lots, languages, webhook=args.webhook, idempotency_key=key)
    except KeyboardInterrupt:
        raise Interrupted("interrupted before the answer; the submission may have been received: "
                          + resend_hint(key)) from None
    if not args.wait:
        return accepted
    err.write(f"job {accepted.job_id}: {accepted.total_lots} lots accepted\n")

    display = WaitDisplay(accepted.job_id, err)
    try:
        final = client.wait_for_job(accepted.job_id, args.poll_interval, args.wait_timeout,
                                    on_progress=display.progress, on_poll_failed=display.poll_failed)
    except KeyboardInterrupt:
        raise Interrupted(f"job {accepted.job_id} continues; `lotlens status {accepted.job_id}`") from None
    finally:
        err.write("\n")
    results = client.job_results(final.job_id) or final
    return _finished(results, final.status, f"job {final.job_id}", final.error_message)


def _results(client: LotLensClient, args: argparse.Namespace, _err: TextIO) -> Any:
    if args.download is not None:
        saved = client.download_results(args.job_id, args.download)
        if saved is not None:
            return {"job_id": args.job_id, "downloaded_to": str(saved)}
    else:
        results = client.job_results(args.job_id)
        if results is not None:
            return results
    status = client.job_status(args.job_id)
    raise LotLensError(None, "JOB_NOT_COMPLETED", f"Job {args.job_id} is still {status.status} "
                       f"({status.progress.completion_percentage:.1f}%)")


def _jobs(client: LotLensClient, args: argparse.Namespace, _err: TextIO) -> Any:
    return client.list_jobs(args.status, args.limit, args.offset, cursor=args.cursor)


def _lots(client: LotLensClient, args: argparse.Namespace, _err: TextIO) -> Any:
    if not args.all:
        return client.list_lots(args.job_id, args.status, args.limit, args.offset)
    # One lot a line, written as each page arrives: a 50,000-lot job is never held whole.
    for lot in client.iter_lots(args.job_id, args.status, args.limit, args.offset):
        printed(as_json(lot) + "\n")
    return None


COMMANDS: dict[str, Callable[[LotLensClient, argparse.Namespace, TextIO], Any]] = {
    "submit": _submit,
    "status": lambda client, args, _err: client.job_status(args.job_id),
    "results": _results,
    "cancel": lambda client, args, _err: client.cancel_job(args.job_id),
    "retry-failed": lambda client, args, _err: client.retry_failed(args.job_id),
    "jobs": _jobs,
    "lots": _lots,
}


def main(argv: Sequence[str] | None = None, *, transport: httpx2.BaseTransport | None = None) -> int:
    """Run one `lotlens` command; returns the exit status (`transport` is for tests)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    key = os.environ.get(KEY_ENV, "")
    if not key:
        sys.stderr.write(f"lotlens: set {KEY_ENV} to your shared key\n")
        return EXIT_USAGE
    try:
        url = base_url(args.url or os.environ.get(URL_ENV) or DEFAULT_URL)
        if getattr(args, "download", None) is not None:
            check_download_target(args.download)
        with LotLensClient(url, key, timeout=args.timeout, transport=transport) as client:
            answer = COMMANDS[args.command](client, args, sys.stderr)
            if answer is not None:
                emit(answer)
    except ReaderGone:
        # Stop quietly, as Unix tools do; what is still buffered goes nowhere, so the interpreter's
        # last flush raises nothing either. (A broken pipe anywhere else is an error below.)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_OK
    except (UsageError, ValueError, httpx2.InvalidURL) as exc:
        sys.stderr.write(f"lotlens: {exc}\n")
        return EXIT_USAGE
    except LotLensError as exc:  # before OSError: WaitTimeoutError is a TimeoutError, an OSError
        report(exc)
        return EXIT_API_ERROR
    except (NotCompleted, NotPrinted, OSError) as exc:  # OSError: the --download file, a full disk
        sys.stderr.write(f"lotlens: {exc}\n")
        return EXIT_API_ERROR
    except Interrupted as exc:
        sys.stderr.write(f"lotlens: {exc}\n")
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        sys.stderr.write("lotlens: interrupted\n")
        return EXIT_INTERRUPTED
    return EXIT_OK


def report(error: LotLensError) -> None:
    """The error on stderr, and for a request that may have been carried out, how to resend it."""
    details = f" {json.dumps(error.details, ensure_ascii=False)}" if error.details else ""
    sys.stderr.write(f"lotlens: {error.status or 'error'} {error.code}: {error.message}{details}\n")
    if error.idempotency_key is not None and outcome_unknown(error):
        sys.stderr.write(f"lotlens: it may have been received: {resend_hint(error.idempotency_key)}\n")
    if isinstance(error, WaitTimeoutError) and "job_id" in error.details:
        job_id = error.details["job_id"]
        sys.stderr.write(f"lotlens: job {job_id} continues; `lotlens status {job_id}`\n")


if __name__ == "__main__":
    sys.exit(main())
