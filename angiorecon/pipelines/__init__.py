"""Tasks runnable from the CLI and by the background worker (one module per task).

Each task module defines ``HELP`` (one line), ``add_arguments(parser)``,
``job_from_args(args) -> dict`` and ``run(job, ctx)``; see :mod:`angiorecon.cli`.
"""
