"""LotLens Python SDK: signed requests, typed answers, one exception tree, and `lotlens` on the shell.

    from lotlens_client import LotLensClient, Lot

    with LotLensClient("https://lotlens.example.com", "shared-key") as client:
        job = client.submit_job([Lot("a-1", "BMW X5", ("https://.../1.jpg",)), ...], ["en", "de"])
        client.wait_for_job(job.job_id, on_progress=print)
        results = client.job_results(job.job_id)
"""

from lotlens_client.client import AsyncLotLensClient, LotLensClient, package_version
from lotlens_client.errors import (
    AuthenticationError,
    LotLensError,
    NetworkError,
    NotFoundError,
    RateLimitedError,
    ServerError,
    UnexpectedResponseError,
    ValidationError,
    WaitTimeoutError,
)
from lotlens_client.lot_pages import LotPage, LotPagination
from lotlens_client.models import (
    Cancellation,
    Description,
    JobAccepted,
    JobPage,
    JobPagination,
    JobResults,
    JobState,
    JobStatus,
    JobSummary,
    Lot,
    LotResult,
    Pagination,
    ProcessingDetails,
    ProcessingSummary,
    Progress,
)
from lotlens_client.signing import verify_standard_webhook, verify_webhook

__version__ = package_version()

__all__ = [
    "AsyncLotLensClient",
    "AuthenticationError",
    "Cancellation",
    "Description",
    "JobAccepted",
    "JobPage",
    "JobPagination",
    "JobResults",
    "JobState",
    "JobStatus",
    "JobSummary",
    "Lot",
    "LotLensClient",
    "LotLensError",
    "LotPage",
    "LotPagination",
    "LotResult",
    "NetworkError",
    "NotFoundError",
    "Pagination",
    "ProcessingDetails",
    "ProcessingSummary",
    "Progress",
    "RateLimitedError",
    "ServerError",
    "UnexpectedResponseError",
    "ValidationError",
    "WaitTimeoutError",
    "__version__",
    "verify_standard_webhook",
    "verify_webhook",
]
