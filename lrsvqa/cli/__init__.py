"""The ``lrsvqa`` command line: one module per subcommand."""
