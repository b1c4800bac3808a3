"""An OpenAI-compatible stand-in server for LotLens tests and demos.

It speaks enough of the real API that the same client code works against api.openai.com:
the Files API (`/v1/files`, contents on disk), the Batch API (`/v1/batches`, statuses
`validating` → `in_progress` → `finalizing` → `completed` on configured wall-clock durations,
output and error files in OpenAI's JSONL formats) and direct calls (`/v1/responses`,
`/v1/chat/completions`). Errors use OpenAI's `{"error": {message, type, param, code}}` body.

Deterministic answers (tests assert on them exactly):

* T is the text of the LAST text part (`input_text` / chat `text`, or a plain string content)
  of the LAST user message; N is the number of image parts in the whole input
  (`input_image` for Responses, `image_url` for chat).
* Vision (no json_schema format requested):
  `<p>Standin vision: {N} image(s) reviewed. {html.escape(T)}</p>`, then paragraphs and a list
  as long as a real model's description (`descriptions.py`: 1.1-1.4 kB in all with notes of a
  line, chosen by N and T, ending with a paragraph). When T contains
  `standin:hostile-html`, hostile markup follows the first paragraph (`<script>`, `<img onerror>`,
  `<a href="javascript:…">`, `<b onclick>`): what a manipulated model could write. When T
  contains `standin:control-characters`, the answer is that text without its `<p>` tags and
  with NUL, U+0001 and DEL after "reviewed." (PostgreSQL text cannot hold a NUL).
* Translation (Responses `text.format.type == "json_schema"`, chat `response_format.type ==
  "json_schema"`): a JSON document valid against the schema, returned as the output text. Every
  string property whose name is a language code (`de`, `pt-BR`, `zh-Hant`) at any depth gets
  `<p>[{lang}] ` + T with whitespace trimmed and one outer `<p>…</p>` removed (a description of
  several blocks keeps them: its first `<p>` and last `</p>` go), in the language's
  script (`scripts.py`: each Latin letter outside tags and entities replaced by one of the
  script's, names and codes too: `BMW` → `БМЦ`; Chinese in Simplified or Traditional forms as
  its tag asks) + `</p>`; with the `untranslated_language` fault, that language gets T as it is,
  with the `other_variant_language` fault that Chinese language is in the other system's forms; other
  strings get that stripped T, numbers 0, booleans false, arrays one element.
* Markers in T: `[standin:error]` → HTTP 500 `server_error` (a batch line goes to the error file
  with `response.status_code` 500); `[standin:incomplete]` → `status: "incomplete"`,
  `incomplete_details: {"reason": "max_output_tokens"}` and no message item (chat:
  `finish_reason: "length"`, empty content).
* An image URL containing `standin-unfetchable`: HTTP 400 `invalid_image_url`, `param: "url"`,
  "Error while downloading {url}." (OpenAI could not fetch an image the check could).
* An image URL containing `standin-unsupported`: HTTP 400 `invalid_image_format`, `param: null`,
  "You uploaded an unsupported image. …" (OpenAI could not read it, a truncated JPEG, say; the
  real API names neither the image nor its place).
* Model rules (reasoning or not, image input, maximum output) come from `models.py`, a table
  taken from OpenAI's model documentation; parameters are checked per family (`parameter_checks.py`).

Batches run their requests a slice at a time while `in_progress`, expire after their completion
window and cancel with the finished requests kept. Faults and durable state: see README.md.
"""

from lotlens_openai_standin.app import create_app
from lotlens_openai_standin.config import StandinConfig, config_from_env

__all__ = ["StandinConfig", "config_from_env", "create_app"]
