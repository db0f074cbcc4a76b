"""The top floor: the `harness` command, one module per command, the demo, and the workflows that cross packages."""
