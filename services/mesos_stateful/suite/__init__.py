"""`make run`: the whole suite on one machine, each service its own process, logs prefixed."""
