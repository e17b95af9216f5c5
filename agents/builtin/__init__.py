"""Agent types every runner hosts: `demo` and `coordinator`."""
