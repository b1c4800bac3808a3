"""lotlens_result_store: the only writer of the read models, and the judge of when a job is done.

Flow: `handlers.handle` gets a consumer batch → `projections.project` applies it (set-based SQL
in `sql.py` and `webhooks.py`, job effects folded in `changes.py`) → `completion.settle_jobs`
gives finished jobs their terminal status (rules in `status.py`) → after the commit,
`completion.publish_completions` announces them with `JobCompleted`; `sweeps` announces those no
batch touches (left by a crash, or finished by a rebuild's swap).
"""
