"""The `agrpo` subcommands, one module each; `options` holds the form they share (config, overrides, aliases)."""
