"""The `mabeam` command line: one module per family of commands, assembled in `main`."""
