"""The one client of the collector's gRPC API, used by the CLI and the TUI: a gRPC implementation
(:mod:`.grpc_collector`) and a recorded-stream implementation (:mod:`.replay_collector`)."""
