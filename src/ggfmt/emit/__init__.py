"""Writers of ggfmt's output formats."""
