"""Query parameters of the listings: one sent empty is one not sent."""

from __future__ import annotations

from pydantic import BeforeValidator
from pydantic_core import PydanticUseDefault


def _absent_when_empty(value: object) -> object:
    # `?status=&limit=&offset=` is the contract's own notation, and a template with nothing filled
    # in (`offset=${OFFSET}` on the first page) sends it: no filter, or the default page, as 1.x read
    # it. It was 422 "unable to parse string as an integer" on the lots and webhook listings.
    if value == "":
        raise PydanticUseDefault()  # the parameter's own default, written once, in the route
    return value


# Put in every listing parameter's `Annotated[...]`, before its `Query(...)`.
EMPTY_IS_ABSENT = BeforeValidator(_absent_when_empty)
