"""What is wrong with this environment's settings, in the one line an operator acts on: the
variable to fix and why, never its value (a URL or a key may be in it)."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError
from pydantic_settings import BaseSettings
from sqlalchemy import make_url
from sqlalchemy.exc import ArgumentError

from lotlens_common.settings import DatabaseSettings


def settings_problem(exc: ValidationError) -> str | None:
    """`VARIABLE: why` for the first setting refused, or None when the error is no settings
    class's (a defect, which keeps its traceback)."""
    model = _settings_classes().get(exc.title)
    if model is None:
        return None
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{_variable(model, errors[0]['loc'])}: {errors[0]['msg']}{more}"


def url_problem() -> str | None:
    """`DATABASE_URL: why` when SQLAlchemy cannot parse it or it names no installed driver (the
    message holds neither the URL nor its password); None when it is usable, so that an
    `ArgumentError` was a defect's."""
    try:
        make_url(DatabaseSettings().database_url).get_dialect()
    except ArgumentError as refused:
        return f"DATABASE_URL: {refused}"
    return None


def _variable(model: type[BaseSettings], loc: Sequence[int | str]) -> str:
    """The environment variable behind an error's location: a field's alias is one already."""
    name = str(loc[0]) if loc else "?"
    field = model.model_fields.get(name)
    if field is not None and field.validation_alias is None:
        name = f"{model.model_config.get('env_prefix', '')}{name}".upper()
    return ".".join([name, *map(str, loc[1:])])


def _settings_classes() -> dict[str, type[BaseSettings]]:
    found: dict[str, type[BaseSettings]] = {}
    waiting: list[type[BaseSettings]] = [BaseSettings]
    while waiting:
        for subclass in waiting.pop().__subclasses__():
            found[subclass.__name__] = subclass
            waiting.append(subclass)
    return found
