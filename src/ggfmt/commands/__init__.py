"""The ``fmt`` commands, a module each: its ``DESCRIPTION`` (the help's text), ``add_arguments
(parser)`` and ``run(args) -> int`` (the exit status). :data:`ggfmt.cli.COMMANDS` names them;
what they share is in :mod:`._common`. A new command is a module here and a row there."""
